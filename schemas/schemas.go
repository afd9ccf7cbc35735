package schemas

import (
	"bytes"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"slices"
	"strings"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"golang.org/x/text/language"
	"golang.org/x/text/message"
)

//go:embed common.json events/*.json
var files embed.FS

// baseURL is only an identifier: schemas are never fetched from it.
const baseURL = "https://inthub.dev/schemas/"

// ErrUnknownSchema is returned (wrapped) for a name that has no schema.
var ErrUnknownSchema = errors.New("schemas: unknown schema")

// Validator checks JSON values against the embedded schemas. It is
// immutable once built and safe for concurrent use.
type Validator struct {
	schemas  map[string]*jsonschema.Schema
	messages map[string]string // schema location → its x-message
	printer  *message.Printer
}

// Names lists the schemas that Validate accepts, sorted: "envelope" and
// one per event subject.
func Names() []string {
	entries, err := fs.ReadDir(files, "events")
	if err != nil {
		// The directory is embedded: a failure here is a broken build.
		panic(err)
	}
	names := make([]string, 0, len(entries))
	for _, e := range entries {
		if n, ok := strings.CutSuffix(e.Name(), ".json"); ok {
			names = append(names, n)
		}
	}
	slices.Sort(names)
	return names
}

// Source returns the text of the named schema, for tools and documentation
// that show the contract as it is enforced.
func Source(name string) ([]byte, error) {
	b, err := files.ReadFile(fileOf(name))
	if err != nil {
		return nil, fmt.Errorf("%w %q", ErrUnknownSchema, name)
	}
	return b, nil
}

func fileOf(name string) string { return path.Join("events", name+".json") }

// New compiles every embedded schema. Compiling takes a few milliseconds, so
// build one Validator and share it.
func New() (*Validator, error) {
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	// Formats (uuid, date-time, uri) are only annotations in 2020-12 unless
	// asserted; the contract means them as rules.
	c.AssertFormat()
	c.UseLoader(noLoader{})

	v := &Validator{
		schemas:  map[string]*jsonschema.Schema{},
		messages: map[string]string{},
		printer:  message.NewPrinter(language.English),
	}
	err := fs.WalkDir(files, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := files.ReadFile(p)
		if err != nil {
			return err
		}
		doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
		if err != nil {
			return fmt.Errorf("schemas: %s: %w", p, err)
		}
		if err := c.AddResource(baseURL+p, doc); err != nil {
			return fmt.Errorf("schemas: %s: %w", p, err)
		}
		collectMessages(v.messages, baseURL+p+"#", doc)
		return nil
	})
	if err != nil {
		return nil, err
	}
	for _, name := range Names() {
		sch, err := c.Compile(baseURL + fileOf(name))
		if err != nil {
			return nil, fmt.Errorf("schemas: compile %s: %w", name, err)
		}
		v.schemas[name] = sch
	}
	return v, nil
}

// noLoader keeps the compiler from reading files or the network: every
// schema a $ref may reach is embedded and added up front.
type noLoader struct{}

func (noLoader) Load(url string) (any, error) {
	return nil, fmt.Errorf("schemas: %s is not embedded", url)
}

// collectMessages records the x-message of every subschema under the
// location the validator reports for it (base URL + JSON pointer).
func collectMessages(into map[string]string, loc string, v any) {
	switch v := v.(type) {
	case map[string]any:
		if m, ok := v["x-message"].(string); ok {
			into[loc] = m
		}
		for k, child := range v {
			collectMessages(into, loc+"/"+escapePointer(k), child)
		}
	case []any:
		for i, child := range v {
			collectMessages(into, fmt.Sprintf("%s/%d", loc, i), child)
		}
	}
}

func escapePointer(tok string) string {
	return strings.NewReplacer("~", "~0", "/", "~1").Replace(tok)
}

// Has reports whether name has a schema.
func (v *Validator) Has(name string) bool {
	_, ok := v.schemas[name]
	return ok
}

// Validate checks instance against the named schema. instance is a decoded
// JSON value (as from encoding/json with UseNumber); any other Go value is
// first converted through encoding/json. A violation is returned as
// [FieldErrors]; an unknown name wraps [ErrUnknownSchema].
func (v *Validator) Validate(name string, instance any) error {
	sch, ok := v.schemas[name]
	if !ok {
		return fmt.Errorf("%w %q", ErrUnknownSchema, name)
	}
	instance, err := jsonValue(instance)
	if err != nil {
		return FieldErrors{{Reason: "cannot convert to JSON: " + err.Error()}}
	}
	err = sch.Validate(instance)
	if err == nil {
		return nil
	}
	var ve *jsonschema.ValidationError
	if !errors.As(err, &ve) {
		return FieldErrors{{Reason: err.Error()}}
	}
	return v.fieldErrors(ve, instance)
}

// ValidateJSON decodes data and validates it against the named schema. Data
// that is not one JSON value is reported as a FieldError with an empty Field.
func (v *Validator) ValidateJSON(name string, data []byte) error {
	if !v.Has(name) {
		return fmt.Errorf("%w %q", ErrUnknownSchema, name)
	}
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(data))
	if err != nil {
		return FieldErrors{{Reason: "invalid JSON: " + err.Error()}}
	}
	return v.Validate(name, doc)
}

// jsonValue converts Go values to the generic form the validator walks; a
// value already in that form is returned as is, without a copy.
func jsonValue(x any) (any, error) {
	switch x.(type) {
	case nil, bool, string, json.Number, float64, map[string]any, []any:
		return x, nil
	}
	b, err := json.Marshal(x)
	if err != nil {
		return nil, err
	}
	return jsonschema.UnmarshalJSON(bytes.NewReader(b))
}
