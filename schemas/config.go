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

// The config schemas have their own embed variable so that New, which
// walks files, does not compile them as event schemas.
//
//go:embed config/*.json
var configFS embed.FS

// SecretKeyword marks a config property whose value is a credential. Such a
// property holds an AuthRef URI, never the secret; see [CompileConfig].
const SecretKeyword = "x-secret"

// secretVocabURL names the vocabulary that gives x-secret a meaning. It is
// an identifier only, never fetched.
const secretVocabURL = baseURL + "vocab/x-secret"

// ConfigTypes lists the integration types that have a built-in config
// schema (config/<type>.json), sorted.
func ConfigTypes() []string {
	entries, err := fs.ReadDir(configFS, "config")
	if err != nil {
		// The directory is embedded: a failure here is a broken build.
		panic(err)
	}
	var types []string
	for _, e := range entries {
		if t, ok := strings.CutSuffix(e.Name(), ".json"); ok {
			types = append(types, t)
		}
	}
	slices.Sort(types)
	return types
}

// ConfigSchema returns the built-in config schema of an integration type.
// An unknown type wraps [ErrUnknownSchema].
func ConfigSchema(typ string) ([]byte, error) {
	if strings.ContainsAny(typ, `/\`) {
		return nil, fmt.Errorf("%w %q", ErrUnknownSchema, typ)
	}
	b, err := configFS.ReadFile(path.Join("config", typ+".json"))
	if err != nil {
		return nil, fmt.Errorf("%w %q", ErrUnknownSchema, typ)
	}
	return b, nil
}

// ConfigField describes one property of a config schema, as found by a
// static walk of "properties", "items", "additionalProperties", the
// applicators (allOf, anyOf, oneOf, if/then/else, dependentSchemas) and
// local $refs.
type ConfigField struct {
	// Path is the dotted path of the property ("auth.password"), with "[]"
	// for any array item and ".*" for any key of a map.
	Path string
	// Secret is true for properties marked x-secret.
	Secret bool
	// Format is the declared format ("uri", ...), if any.
	Format string
	// Shaped is true when the schema declares what the values look like
	// (pattern, format, enum or const), so a value that merely looks random
	// (a digest, an id) is what the type expects.
	Shaped bool
}

// ConfigValidator checks configs against one compiled config schema. It is
// immutable and safe for concurrent use.
type ConfigValidator struct {
	sch    *jsonschema.Schema
	v      *Validator
	fields []ConfigField
}

// SecretCheck decides whether a value of an x-secret property is
// acceptable. Its error message is shown to the user, so it must not quote
// the value.
type SecretCheck func(value string) error

// CompileConfig compiles a config schema (draft 2020-12; an integration
// type's stored schema or a built-in one from [ConfigSchema]). x-secret
// must be a boolean; where it is true, every value is passed to check and a
// non-string value is refused. A nil check only requires the authref://
// prefix. The schema may $ref nothing but itself: nothing is fetched.
func CompileConfig(schema []byte, check SecretCheck) (*ConfigValidator, error) {
	if check == nil {
		check = prefixCheck
	}
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(schema))
	if err != nil {
		return nil, fmt.Errorf("schemas: config schema: %w", err)
	}
	obj, ok := doc.(map[string]any)
	if !ok {
		return nil, errors.New("schemas: config schema: not a JSON object")
	}
	// Errors report locations under the schema's $id, so the x-messages
	// must be recorded under it too.
	loc := baseURL + "config/inline.json"
	if id, ok := obj["$id"].(string); ok && strings.Contains(id, "://") {
		loc, _, _ = strings.Cut(id, "#")
	}

	vocab, err := secretVocabulary(check)
	if err != nil {
		return nil, err
	}
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	c.AssertFormat()
	c.UseLoader(noLoader{})
	c.RegisterVocabulary(vocab)
	c.AssertVocabs()
	if err := c.AddResource(loc, doc); err != nil {
		return nil, fmt.Errorf("schemas: config schema: %w", err)
	}
	sch, err := c.Compile(loc)
	if err != nil {
		return nil, fmt.Errorf("schemas: compile config schema: %w", err)
	}
	v := &Validator{messages: map[string]string{}, printer: message.NewPrinter(language.English)}
	collectMessages(v.messages, loc+"#", doc)
	return &ConfigValidator{sch: sch, v: v, fields: walkFields(obj)}, nil
}

// Validate checks a config (a decoded JSON value, as from encoding/json
// with UseNumber, or any value encoding/json can marshal). A violation is
// returned as [FieldErrors] whose fields are relative to the config.
func (cv *ConfigValidator) Validate(config any) error {
	config, err := jsonValue(config)
	if err != nil {
		return FieldErrors{{Reason: "cannot convert to JSON: " + err.Error()}}
	}
	err = cv.sch.Validate(config)
	if err == nil {
		return nil
	}
	var ve *jsonschema.ValidationError
	if !errors.As(err, &ve) {
		return FieldErrors{{Reason: err.Error()}}
	}
	return cv.v.fieldErrors(ve, config)
}

// Fields lists the properties the schema declares, sorted by path.
func (cv *ConfigValidator) Fields() []ConfigField { return slices.Clone(cv.fields) }

// SecretFields returns the dotted paths of the properties of a config
// schema marked x-secret, sorted (see [ConfigField.Path] for the notation).
func SecretFields(schema []byte) ([]string, error) {
	var obj map[string]any
	if err := json.Unmarshal(schema, &obj); err != nil {
		return nil, fmt.Errorf("schemas: config schema: %w", err)
	}
	var out []string
	for _, f := range walkFields(obj) {
		if f.Secret {
			out = append(out, f.Path)
		}
	}
	return out, nil
}

// JoinField appends an object key to a dotted field path the way
// FieldError.Field spells it, quoting keys that are not identifiers.
func JoinField(at, key string) string { return joinKey(at, key) }

// SecretKind is the error kind of an x-secret value that its check refused.
type SecretKind struct{ Reason string }

func (*SecretKind) KeywordPath() []string                     { return []string{SecretKeyword} }
func (k *SecretKind) LocalizedString(*message.Printer) string { return k.Reason }

type secretExt struct{ check SecretCheck }

func (s secretExt) Validate(ctx *jsonschema.ValidatorContext, v any) {
	str, ok := v.(string)
	if !ok {
		ctx.AddError(&SecretKind{Reason: "must be an AuthRef URI string; secrets are never stored in clear"})
		return
	}
	if err := s.check(str); err != nil {
		ctx.AddError(&SecretKind{Reason: err.Error()})
	}
}

func secretVocabulary(check SecretCheck) (*jsonschema.Vocabulary, error) {
	meta, err := jsonschema.UnmarshalJSON(strings.NewReader(`{"properties": {"x-secret": {"type": "boolean"}}}`))
	if err != nil {
		return nil, err
	}
	c := jsonschema.NewCompiler()
	if err := c.AddResource(secretVocabURL, meta); err != nil {
		return nil, err
	}
	sch, err := c.Compile(secretVocabURL)
	if err != nil {
		return nil, err
	}
	return &jsonschema.Vocabulary{
		URL:    secretVocabURL,
		Schema: sch,
		Compile: func(_ *jsonschema.CompilerContext, obj map[string]any) (jsonschema.SchemaExt, error) {
			if secret, _ := obj[SecretKeyword].(bool); secret {
				return secretExt{check: check}, nil
			}
			return nil, nil
		},
	}, nil
}

func prefixCheck(s string) error {
	if !strings.HasPrefix(s, "authref://") {
		return errors.New("must be an AuthRef URI: authref://env/<VAR>, authref://file/<path> or authref://vault/<path>#<field>")
	}
	return nil
}

// walkFields lists the properties of a schema document statically.
func walkFields(root map[string]any) []ConfigField {
	found := map[string]*ConfigField{}
	var walk func(at string, sch map[string]any, depth int)
	walk = func(at string, sch map[string]any, depth int) {
		// Recursive schemas ($ref to an ancestor) would never end.
		if sch == nil || depth > 32 {
			return
		}
		if ref, ok := sch["$ref"].(string); ok {
			walk(at, localRef(root, ref), depth+1)
		}
		if at != "" {
			f := found[at]
			if f == nil {
				f = &ConfigField{Path: at}
				found[at] = f
			}
			if secret, _ := sch[SecretKeyword].(bool); secret {
				f.Secret = true
			}
			if format, ok := sch["format"].(string); ok {
				f.Format, f.Shaped = format, true
			}
			for _, k := range []string{"pattern", "enum", "const"} {
				if _, ok := sch[k]; ok {
					f.Shaped = true
				}
			}
		}
		if props, ok := sch["properties"].(map[string]any); ok {
			for k, p := range props {
				sub, _ := p.(map[string]any)
				walk(joinKey(at, k), sub, depth+1)
			}
		}
		for _, k := range []string{"additionalProperties", "patternProperties"} {
			switch v := sch[k].(type) {
			case map[string]any:
				if k == "patternProperties" {
					for _, p := range v {
						sub, _ := p.(map[string]any)
						walk(at+".*", sub, depth+1)
					}
				} else {
					walk(at+".*", v, depth+1)
				}
			}
		}
		if items, ok := sch["items"].(map[string]any); ok {
			walk(at+"[]", items, depth+1)
		}
		if prefix, ok := sch["prefixItems"].([]any); ok {
			for _, p := range prefix {
				sub, _ := p.(map[string]any)
				walk(at+"[]", sub, depth+1)
			}
		}
		for _, k := range []string{"allOf", "anyOf", "oneOf"} {
			if list, ok := sch[k].([]any); ok {
				for _, p := range list {
					sub, _ := p.(map[string]any)
					walk(at, sub, depth+1)
				}
			}
		}
		for _, k := range []string{"if", "then", "else"} {
			sub, _ := sch[k].(map[string]any)
			walk(at, sub, depth+1)
		}
		if deps, ok := sch["dependentSchemas"].(map[string]any); ok {
			for _, p := range deps {
				sub, _ := p.(map[string]any)
				walk(at, sub, depth+1)
			}
		}
	}
	walk("", root, 0)
	out := make([]ConfigField, 0, len(found))
	for _, f := range found {
		out = append(out, *f)
	}
	slices.SortFunc(out, func(a, b ConfigField) int { return strings.Compare(a.Path, b.Path) })
	return out
}

// localRef resolves a same-document reference ("#/$defs/x"); others give nil.
func localRef(root map[string]any, ref string) map[string]any {
	ptr, ok := strings.CutPrefix(ref, "#")
	if !ok {
		return nil
	}
	var cur any = root
	for _, tok := range strings.Split(strings.TrimPrefix(ptr, "/"), "/") {
		if tok == "" {
			continue
		}
		tok = strings.NewReplacer("~1", "/", "~0", "~").Replace(tok)
		m, ok := cur.(map[string]any)
		if !ok {
			return nil
		}
		cur = m[tok]
	}
	m, _ := cur.(map[string]any)
	return m
}
