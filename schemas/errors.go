package schemas

import (
	"cmp"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"github.com/santhosh-tekuri/jsonschema/v6/kind"
	"golang.org/x/text/message"
)

// FieldError is one violation of a schema.
type FieldError struct {
	// Field is the dotted path of the offending value, with indexes in
	// brackets: "checkRun.annotations[0].level". Empty means the whole
	// document. For a missing or unknown property it names that property.
	Field string
	// Reason says what the rule is. It never quotes the offending value,
	// which could be a secret in the wrong field.
	Reason string
}

func (e *FieldError) Error() string {
	if e.Field == "" {
		return e.Reason
	}
	return e.Field + ": " + e.Reason
}

// FieldErrors is what Validate returns for an invalid value: every violated
// rule that is not implied by another one, sorted by Field. It is never
// empty. errors.As with a *FieldError target yields the first.
type FieldErrors []*FieldError

func (es FieldErrors) Error() string {
	parts := make([]string, len(es))
	for i, e := range es {
		parts[i] = e.Error()
	}
	return strings.Join(parts, "; ")
}

// Unwrap exposes each FieldError to errors.Is and errors.As.
func (es FieldErrors) Unwrap() []error {
	errs := make([]error, len(es))
	for i, e := range es {
		errs[i] = e
	}
	return errs
}

// fieldErrors flattens the library's error tree to its leaves: the inner
// nodes ($ref, allOf, "validation failed") only say that a leaf failed.
func (v *Validator) fieldErrors(root *jsonschema.ValidationError, instance any) FieldErrors {
	var out FieldErrors
	var walk func(*jsonschema.ValidationError)
	walk = func(e *jsonschema.ValidationError) {
		if len(e.Causes) > 0 {
			for _, c := range e.Causes {
				walk(c)
			}
			return
		}
		out = append(out, v.leaf(e, instance)...)
	}
	walk(root)
	if len(out) == 0 {
		// Not expected from the library; keep the error rather than lose it.
		out = append(out, &FieldError{Reason: root.Error()})
	}
	slices.SortStableFunc(out, func(a, b *FieldError) int { return cmp.Compare(a.Field, b.Field) })
	return slices.CompactFunc(out, func(a, b *FieldError) bool { return *a == *b })
}

func (v *Validator) leaf(e *jsonschema.ValidationError, instance any) []*FieldError {
	at := fieldPath(instance, e.InstanceLocation)
	switch k := e.ErrorKind.(type) {
	case *kind.Required:
		return each(at, k.Missing, "required")
	case *kind.DependentRequired:
		return each(at, k.Missing, fmt.Sprintf("required when %s is set", k.Prop))
	case *kind.Dependency:
		return each(at, k.Missing, fmt.Sprintf("required when %s is set", k.Prop))
	case *kind.AdditionalProperties:
		return each(at, k.Properties, "unknown field")
	}
	if m, ok := v.messages[e.SchemaURL]; ok {
		return []*FieldError{{Field: at, Reason: m}}
	}
	return []*FieldError{{Field: at, Reason: reason(e.ErrorKind, v.printer)}}
}

func each(at string, props []string, reason string) []*FieldError {
	out := make([]*FieldError, len(props))
	for i, p := range props {
		out[i] = &FieldError{Field: joinKey(at, p), Reason: reason}
	}
	return out
}

// reason words the rule without the offending value (see FieldError.Reason).
func reason(k jsonschema.ErrorKind, p *message.Printer) string {
	switch k := k.(type) {
	case *kind.Type:
		return fmt.Sprintf("must be %s, got %s", strings.Join(k.Want, " or "), k.Got)
	case *kind.Format:
		return "must be a valid " + k.Want
	case *kind.Pattern:
		return "must match " + k.Want
	case *kind.MinLength:
		if k.Want == 1 {
			return "must not be empty"
		}
		return fmt.Sprintf("must be at least %d characters", k.Want)
	case *kind.MaxLength:
		return fmt.Sprintf("must be at most %d characters", k.Want)
	case *kind.Minimum:
		return "must be >= " + k.Want.RatString()
	case *kind.Maximum:
		return "must be <= " + k.Want.RatString()
	case *kind.ExclusiveMinimum:
		return "must be > " + k.Want.RatString()
	case *kind.ExclusiveMaximum:
		return "must be < " + k.Want.RatString()
	case *kind.Enum:
		return "value must be one of " + display(k.Want...)
	case *kind.Const:
		return "value must be " + display(k.Want)
	case *kind.Not:
		return "value is not allowed"
	case *kind.FalseSchema:
		return "not allowed"
	}
	// The rest (array and object sizes, uniqueness) name only the rule.
	return k.LocalizedString(p)
}

// display renders allowed values as JSON, as a producer would write them.
func display(vals ...any) string {
	parts := make([]string, len(vals))
	for i, v := range vals {
		b, err := json.Marshal(v)
		if err != nil {
			b = []byte(fmt.Sprint(v))
		}
		parts[i] = string(b)
	}
	return strings.Join(parts, ", ")
}

// fieldPath renders a JSON pointer as a dotted path. Whether a token is an
// array index or an object key is read from the instance itself, so a
// config key named "0" is not mistaken for an index.
func fieldPath(instance any, tokens []string) string {
	var sb strings.Builder
	cur := instance
	for _, tok := range tokens {
		if arr, ok := cur.([]any); ok {
			sb.WriteString("[" + tok + "]")
			cur = nil
			if i, err := strconv.Atoi(tok); err == nil && i >= 0 && i < len(arr) {
				cur = arr[i]
			}
			continue
		}
		sb.WriteString(keySegment(tok))
		obj, _ := cur.(map[string]any)
		cur = obj[tok]
	}
	return strings.TrimPrefix(sb.String(), ".")
}

// joinKey appends an object key to a dotted path.
func joinKey(at, key string) string {
	if at == "" {
		return strings.TrimPrefix(keySegment(key), ".")
	}
	return at + keySegment(key)
}

// keySegment quotes keys that would make the dotted form ambiguous.
func keySegment(key string) string {
	if isIdentifier(key) {
		return "." + key
	}
	return "[" + strconv.Quote(key) + "]"
}

func isIdentifier(s string) bool {
	for i, r := range s {
		switch {
		case r == '_' || r == '$' || 'a' <= r && r <= 'z' || 'A' <= r && r <= 'Z':
		case i > 0 && (r == '-' || '0' <= r && r <= '9'):
		default:
			return false
		}
	}
	return s != ""
}
