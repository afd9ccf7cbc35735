// Package configcheck decides whether an integration's config may be
// stored: it must match its type's JSON Schema, hold credentials only as
// AuthRef URIs, and name only endpoints the egress policy lets the hub call.
//
// The secret rules are the catalog's promise that config never holds a
// secret (DESIGN §5): config travels in integration.created/updated events
// to other teams, into audit logs and into every listing, so a token pasted
// into the wrong field would leak far. Fields marked x-secret in the schema
// must hold a valid AuthRef; every other field is scanned for secrets by
// name and by shape, and an AuthRef is allowed anywhere.
//
// Errors never quote a value: "looks like a GitHub token", not the token.
package configcheck

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"

	"inthub.dev/pkg/authref"
	"inthub.dev/pkg/egress"
	"inthub.dev/schemas"
)

// FieldError is one refused field. Field is "authRef", "type", "config" or
// a dotted path under it ("config.privateKey", "config.hosts[0].url").
// It is the schemas package's type, so one problem-details mapper serves
// both.
type FieldError = schemas.FieldError

// FieldErrors is what Check returns for a refused config, sorted by Field;
// errors.As with a *FieldError target yields the first.
type FieldErrors = schemas.FieldErrors

// maxCached bounds the compiled-schema cache. Types are few; the bound
// only matters if plugin schemas churn.
const maxCached = 256

// Checker checks configs. It is safe for concurrent use.
type Checker struct {
	policy   egress.Policy
	resolver egress.Resolver

	mu       sync.Mutex
	compiled map[[sha256.Size]byte]*schemas.ConfigValidator
}

// New returns a Checker that applies policy to endpoints, resolving host
// names with resolver (net.DefaultResolver in production).
func New(policy egress.Policy, resolver egress.Resolver) (*Checker, error) {
	if resolver == nil {
		return nil, errors.New("configcheck: nil resolver: pass net.DefaultResolver, or a fake in tests")
	}
	return &Checker{
		policy:   policy,
		resolver: resolver,
		compiled: map[[sha256.Size]byte]*schemas.ConfigValidator{},
	}, nil
}

// Check checks one integration's config and authRef. schema is the type's
// stored config schema; when empty, the built-in schema of typ is used.
//
// A refusal is returned as [FieldErrors] (the user's fault: answer 400).
// Any other error (a stored schema that does not compile, a resolver
// failure) is the hub's and is returned wrapped.
func (c *Checker) Check(ctx context.Context, typ string, schema, config json.RawMessage, authRef string) error {
	var errs FieldErrors
	if authRef != "" {
		if _, err := authref.Parse(authRef); err != nil {
			errs = append(errs, &FieldError{Field: "authRef", Reason: err.Error()})
		}
	}
	if len(schema) == 0 {
		b, err := schemas.ConfigSchema(typ)
		if err != nil {
			return append(errs, &FieldError{Field: "type", Reason: "unknown integration type"})
		}
		schema = b
	}
	cv, err := c.validator(schema)
	if err != nil {
		return fmt.Errorf("configcheck: config schema of %s: %w", typ, err)
	}

	doc, ok := decodeObject(config)
	if !ok {
		return append(errs, &FieldError{Field: "config", Reason: "must be a JSON object"})
	}
	var schemaErrs FieldErrors
	if err := cv.Validate(doc); err != nil && !errors.As(err, &schemaErrs) {
		return fmt.Errorf("configcheck: validate %s config: %w", typ, err)
	}
	for _, fe := range schemaErrs {
		errs = append(errs, &FieldError{Field: underConfig(fe.Field), Reason: fe.Reason})
	}

	s := scan{fields: map[string]schemas.ConfigField{}}
	for _, f := range cv.Fields() {
		s.fields[f.Path] = f
	}
	s.walk("", "", doc, false)
	errs = append(errs, s.errs...)

	failed := map[string]bool{}
	for _, fe := range errs {
		failed[fe.Field] = true
	}
	for _, u := range s.urls {
		field := underConfig(u.path)
		if failed[field] {
			continue
		}
		err := c.policy.CheckURL(ctx, u.value, c.resolver)
		var denied *egress.DeniedError
		switch {
		case errors.As(err, &denied):
			errs = append(errs, &FieldError{Field: field, Reason: denied.Reason})
		case err != nil:
			return fmt.Errorf("configcheck: check %s: %w", field, err)
		}
	}

	if len(errs) == 0 {
		return nil
	}
	slices.SortStableFunc(errs, func(a, b *FieldError) int { return strings.Compare(a.Field, b.Field) })
	return slices.CompactFunc(errs, func(a, b *FieldError) bool { return *a == *b })
}

// validator compiles schema once per distinct content.
func (c *Checker) validator(schema []byte) (*schemas.ConfigValidator, error) {
	key := sha256.Sum256(schema)
	c.mu.Lock()
	cv, ok := c.compiled[key]
	c.mu.Unlock()
	if ok {
		return cv, nil
	}
	// Compiled outside the lock: two racing callers compile twice, which
	// is cheaper than making every check wait on one compile.
	cv, err := schemas.CompileConfig(schema, checkSecretField)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.compiled) >= maxCached {
		for k := range c.compiled {
			delete(c.compiled, k)
			break
		}
	}
	c.compiled[key] = cv
	return cv, nil
}

// checkSecretField is the rule for x-secret fields.
func checkSecretField(s string) error {
	if !authref.IsRef(s) {
		return errors.New("must be an AuthRef URI (" + authref.Forms + "), never the secret itself")
	}
	if _, err := authref.Parse(s); err != nil {
		return err
	}
	return nil
}

func decodeObject(raw json.RawMessage) (map[string]any, bool) {
	if len(bytes.TrimSpace(raw)) == 0 {
		return map[string]any{}, true
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var doc map[string]any
	if err := dec.Decode(&doc); err != nil || doc == nil {
		return nil, false
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, false
	}
	return doc, true
}

func underConfig(field string) string {
	switch {
	case field == "":
		return "config"
	case strings.HasPrefix(field, "["):
		return "config" + field
	}
	return "config." + field
}

// scan walks a config for secrets in clear and for endpoints.
type scan struct {
	fields map[string]schemas.ConfigField // by schema path
	errs   FieldErrors
	urls   []urlField
}

type urlField struct{ path, value string }

// walk visits v at instance path at, whose schema path is sp; key is the
// nearest object key, secretAncestor whether a key above it names a secret.
func (s *scan) walk(at, sp string, v any, secretAncestor bool) {
	switch v := v.(type) {
	case map[string]any:
		for k, child := range v {
			csp := schemas.JoinField(sp, k)
			if _, ok := s.fields[csp]; !ok {
				if _, ok := s.fields[sp+".*"]; ok {
					csp = sp + ".*"
				}
			}
			s.walkKey(schemas.JoinField(at, k), csp, k, child, secretAncestor)
		}
	case []any:
		for i, child := range v {
			s.walkKey(fmt.Sprintf("%s[%d]", at, i), sp+"[]", "", child, secretAncestor)
		}
	}
}

func (s *scan) walkKey(at, sp, key string, v any, secretAncestor bool) {
	f := s.fields[sp]
	named := secretAncestor || (key != "" && secretName(key))
	switch v := v.(type) {
	case map[string]any, []any:
		if f.Secret {
			return // the schema's x-secret rule reports it
		}
		s.walk(at, sp, v, named)
	case string:
		s.leaf(at, key, f, v, named)
	case json.Number:
		if named && !f.Secret {
			s.refuse(at, "looks like a secret in clear (by its field name)")
		}
	}
}

func (s *scan) leaf(at, key string, f schemas.ConfigField, v string, named bool) {
	if f.Secret || v == "" {
		return // x-secret values are checked against the schema
	}
	if authref.IsRef(v) {
		if _, err := authref.Parse(v); err != nil {
			s.errs = append(s.errs, &FieldError{Field: underConfig(at), Reason: err.Error()})
		}
		return
	}
	if named {
		s.refuse(at, "looks like a secret in clear (by its field name)")
		return
	}
	if what := secretShape(v, !f.Shaped); what != "" {
		s.refuse(at, "looks like "+what)
		return
	}
	if urlName(key) || isURIFormat(f.Format) {
		s.urls = append(s.urls, urlField{path: at, value: v})
	}
}

func (s *scan) refuse(at, what string) {
	s.errs = append(s.errs, &FieldError{
		Field:  underConfig(at),
		Reason: what + "; config never holds secrets: store it in a secret store and put an AuthRef URI here (" + authref.Forms + ")",
	})
}

func isURIFormat(format string) bool {
	switch format {
	case "uri", "url", "iri":
		return true
	}
	return false
}

// urlName reports whether a key names an endpoint the hub will call.
func urlName(key string) bool {
	k := strings.ToLower(key)
	return strings.HasSuffix(k, "url") || strings.HasSuffix(k, "endpoint") || strings.HasSuffix(k, "uri")
}
