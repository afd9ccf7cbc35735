package mapping

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"cel.dev/cel-go/cel"
	"cel.dev/cel-go/common/types"
	"cel.dev/cel-go/common/types/ref"
	"cel.dev/cel-go/common/types/traits"

	"inthub.dev/events"
)

// Mapper maps ingest payloads with compiled rule sets. It is immutable and
// safe for concurrent use.
type Mapper struct {
	bySource map[string][]compiledRule
}

// New compiles the rule sets; a later set for a source replaces an earlier
// one, so New(append(defaults, custom...)...) lets custom rules win.
func New(sets ...RuleSet) (*Mapper, error) {
	env, err := newEnv()
	if err != nil {
		return nil, fmt.Errorf("mapping: CEL environment: %w", err)
	}
	m := &Mapper{bySource: map[string][]compiledRule{}}
	var errs []error
	for _, rs := range sets {
		rules, err := compileSet(env, rs)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		m.bySource[rs.Source] = rules
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("mapping: invalid rules: %w", errors.Join(errs...))
	}
	return m, nil
}

// Default compiles the embedded rule sets.
func Default() (*Mapper, error) {
	sets, err := DefaultRuleSets()
	if err != nil {
		return nil, err
	}
	return New(sets...)
}

// Sources lists the sources the mapper has rules for.
func (m *Mapper) Sources() []string { return sortedKeysOf(m.bySource) }

// Kinds lists the kinds a source has rules for.
func (m *Mapper) Kinds(source string) []string {
	seen := map[string]bool{}
	var out []string
	for _, r := range m.bySource[source] {
		if !seen[r.Kind] {
			seen[r.Kind] = true
			out = append(out, r.Kind)
		}
	}
	return out
}

// Error says why a document could not be mapped. Retrying cannot help:
// the document goes to the DLQ with this as the reason.
type Error struct {
	At     string // the rule and field, e.g. "github: rules[1] (push).summary"
	Reason string
}

func (e *Error) Error() string {
	if e.At == "" {
		return "mapping: " + e.Reason
	}
	return "mapping: " + e.At + ": " + e.Reason
}

// maxSummary is the schema's limit, in code points.
const maxSummary = 1000

// Map maps one ingest payload; ingestID is the CloudEvents id of its event.
// The result is not yet validated against the schema (events.New does it).
func (m *Mapper) Map(ctx context.Context, in events.Ingested, ingestID string) (events.Canonical, error) {
	rules := m.bySource[in.Provider]
	if len(rules) == 0 {
		return events.Canonical{}, &Error{Reason: fmt.Sprintf("no rules for source %q", in.Provider)}
	}
	payload, err := decodePayload(in.Payload)
	if err != nil {
		return events.Canonical{}, &Error{Reason: "payload: " + err.Error()}
	}
	headers := in.Headers
	if headers == nil {
		headers = map[string]string{}
	}
	vars := map[string]any{
		"payload":     payload,
		"headers":     headers,
		"integration": map[string]string{"id": in.IntegrationID, "tenantId": in.TenantID},
		"receivedAt":  in.ReceivedAt.UTC(),
	}
	act, err := cel.NewActivation(vars)
	if err != nil {
		return events.Canonical{}, fmt.Errorf("mapping: activation: %w", err)
	}
	e := &evaluator{ctx: ctx, vars: act}
	tried := false
	for i := range rules {
		r := &rules[i]
		if r.Kind != in.Kind {
			continue
		}
		tried = true
		if r.when != nil {
			ok, err := e.bool(r.when)
			if err != nil {
				return events.Canonical{}, err
			}
			if !ok {
				continue
			}
		}
		return e.apply(r, in, ingestID)
	}
	if !tried {
		return events.Canonical{}, &Error{Reason: fmt.Sprintf("no rule for %s", events.IngestSubject(in.Provider, in.Kind))}
	}
	return events.Canonical{}, &Error{Reason: fmt.Sprintf("no rule for %s matched this document", events.IngestSubject(in.Provider, in.Kind))}
}

type evaluator struct {
	ctx  context.Context
	vars cel.Activation // built once per document, shared by its expressions
}

func (e *evaluator) eval(p *program) (any, error) {
	out, _, err := p.prg.ContextEval(e.ctx, e.vars)
	if err != nil {
		if e.ctx.Err() != nil {
			return nil, e.ctx.Err()
		}
		return nil, &Error{At: p.at, Reason: err.Error()}
	}
	v, err := native(out)
	if err != nil {
		return nil, &Error{At: p.at, Reason: err.Error()}
	}
	return v, nil
}

func (e *evaluator) bool(p *program) (bool, error) {
	v, err := e.eval(p)
	if err != nil {
		return false, err
	}
	b, ok := v.(bool)
	if !ok {
		return false, &Error{At: p.at, Reason: fmt.Sprintf("is %T, want a bool", v)}
	}
	return b, nil
}

// str evaluates p as a string: numbers in decimal, null and "" as "".
func (e *evaluator) str(p *program) (string, error) {
	if p == nil {
		return "", nil
	}
	v, err := e.eval(p)
	if err != nil {
		return "", err
	}
	s, err := scalarString(v)
	if err != nil {
		return "", &Error{At: p.at, Reason: err.Error()}
	}
	return strings.TrimSpace(s), nil
}

func (e *evaluator) apply(r *compiledRule, in events.Ingested, ingestID string) (events.Canonical, error) {
	c := events.Canonical{TenantID: in.TenantID, Category: r.Category, Provider: in.Provider, IngestID: ingestID,
		Context: events.IntegrationContext{SourceIntegration: in.IntegrationID,
			CorrelationHints: []events.CorrelationHint{}, EvidenceLinks: []events.EvidenceLink{}}}
	var err error
	required := func(p *program, into *string) {
		if err != nil {
			return
		}
		*into, err = e.str(p)
		if err == nil && *into == "" {
			err = &Error{At: p.at, Reason: "is empty or null"}
		}
	}
	required(r.event, &c.Kind)
	required(r.summary, &c.Summary)
	required(r.externalID, &c.Context.ExternalID)
	if err != nil {
		return events.Canonical{}, err
	}
	if c.Severity, err = e.str(r.severity); err != nil {
		return events.Canonical{}, err
	}
	if utf8.RuneCountInString(c.Summary) > maxSummary {
		c.Summary = string([]rune(c.Summary)[:maxSummary-1]) + "…"
	}
	occurred, err := e.eval(r.occurred)
	if err != nil {
		return events.Canonical{}, err
	}
	if c.Context.OriginalTimestamp, err = toTime(occurred); err != nil {
		return events.Canonical{}, &Error{At: r.occurred.at, Reason: err.Error()}
	}
	for _, a := range r.attributes {
		v, err := e.eval(a.p)
		if err != nil {
			return events.Canonical{}, err
		}
		switch x := v.(type) {
		case nil:
			continue
		case string:
			if x == "" {
				continue
			}
		case time.Time:
			v = x.UTC().Format(time.RFC3339Nano)
		case int64, uint64, float64, bool:
		default:
			return events.Canonical{}, &Error{At: a.p.at, Reason: fmt.Sprintf("is %T; attributes are strings, numbers or booleans", v)}
		}
		if c.Attributes == nil {
			c.Attributes = map[string]any{}
		}
		c.Attributes[a.name] = v
	}
	if err := e.hints(r, &c); err != nil {
		return events.Canonical{}, err
	}
	if err := e.links(r, &c); err != nil {
		return events.Canonical{}, err
	}
	return c, nil
}

func (e *evaluator) hints(r *compiledRule, c *events.Canonical) error {
	index := map[[2]string]int{}
	add := func(h hintProgram, value string) {
		if value == "" {
			return
		}
		k := [2]string{h.Key, value}
		if i, ok := index[k]; ok {
			// The same key from two rules: keep the surer one.
			if h.Confidence > c.Context.CorrelationHints[i].Confidence {
				c.Context.CorrelationHints[i].Confidence = h.Confidence
				c.Context.CorrelationHints[i].Type = h.Type
			}
			return
		}
		index[k] = len(c.Context.CorrelationHints)
		c.Context.CorrelationHints = append(c.Context.CorrelationHints,
			events.CorrelationHint{Type: h.Type, Key: h.Key, Value: value, Confidence: h.Confidence})
	}
	for _, h := range r.hints {
		if h.when != nil {
			ok, err := e.bool(h.when)
			if err != nil {
				return err
			}
			if !ok {
				continue
			}
		}
		if h.value != nil {
			v, err := e.str(h.value)
			if err != nil {
				return err
			}
			add(h, v)
			continue
		}
		v, err := e.eval(h.values)
		if err != nil {
			return err
		}
		list, ok := v.([]any)
		if !ok && v != nil {
			return &Error{At: h.values.at, Reason: fmt.Sprintf("is %T, want a list", v)}
		}
		for _, x := range list {
			s, err := scalarString(x)
			if err != nil {
				return &Error{At: h.values.at, Reason: err.Error()}
			}
			add(h, strings.TrimSpace(s))
		}
	}
	return nil
}

func (e *evaluator) links(r *compiledRule, c *events.Canonical) error {
	for _, l := range r.links {
		if l.when != nil {
			ok, err := e.bool(l.when)
			if err != nil {
				return err
			}
			if !ok {
				continue
			}
		}
		u, err := e.str(l.url)
		if err != nil {
			return err
		}
		if u == "" {
			continue
		}
		if p, err := url.Parse(u); err != nil || (p.Scheme != "https" && p.Scheme != "http") || p.Host == "" {
			return &Error{At: l.url.at, Reason: "is not an absolute http(s) URL"}
		}
		d, err := e.str(l.description)
		if err != nil {
			return err
		}
		link := events.EvidenceLink{Type: l.Type, URL: u, Description: d}
		for _, m := range l.metadata {
			v, err := e.str(m.p)
			if err != nil {
				return err
			}
			if v == "" {
				continue
			}
			if link.Metadata == nil {
				link.Metadata = map[string]string{}
			}
			link.Metadata[m.name] = v
		}
		c.Context.EvidenceLinks = append(c.Context.EvidenceLinks, link)
	}
	return nil
}

// decodePayload decodes the document for CEL: numbers that are integers
// become int64 (so string(payload.number) is "42", not "42.0").
func decodePayload(b []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("data after the JSON value")
	}
	return numbers(v), nil
}

func numbers(v any) any {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			x[k] = numbers(e)
		}
		return x
	case []any:
		for i, e := range x {
			x[i] = numbers(e)
		}
		return x
	case json.Number:
		if i, err := x.Int64(); err == nil {
			return i
		}
		f, _ := x.Float64()
		return f
	}
	return v
}

// native converts a CEL value to plain Go: nil, string, int64, uint64,
// float64, bool, time.Time, []any, map[string]any.
func native(v ref.Val) (any, error) {
	switch x := v.(type) {
	case types.Null:
		return nil, nil
	case types.String:
		return string(x), nil
	case types.Int:
		return int64(x), nil
	case types.Uint:
		return uint64(x), nil
	case types.Double:
		return float64(x), nil
	case types.Bool:
		return bool(x), nil
	case types.Timestamp:
		return x.Time.UTC(), nil
	case *types.Err:
		return nil, x
	}
	if v.Type() == types.OptionalType {
		if o, ok := v.(*types.Optional); ok {
			if !o.HasValue() {
				return nil, nil
			}
			return native(o.GetValue())
		}
	}
	if l, ok := v.(traits.Lister); ok {
		var out []any
		for it := l.Iterator(); it.HasNext() == types.True; {
			e, err := native(it.Next())
			if err != nil {
				return nil, err
			}
			out = append(out, e)
		}
		return out, nil
	}
	if m, ok := v.(traits.Mapper); ok {
		out := map[string]any{}
		for it := m.Iterator(); it.HasNext() == types.True; {
			k := it.Next()
			ks, ok := k.(types.String)
			if !ok {
				return nil, fmt.Errorf("map key of type %s", k.Type().TypeName())
			}
			e, err := native(m.Get(k))
			if err != nil {
				return nil, err
			}
			out[string(ks)] = e
		}
		return out, nil
	}
	return nil, fmt.Errorf("unsupported result type %s", v.Type().TypeName())
}

func scalarString(v any) (string, error) {
	switch x := v.(type) {
	case nil:
		return "", nil
	case string:
		return x, nil
	case int64:
		return strconv.FormatInt(x, 10), nil
	case uint64:
		return strconv.FormatUint(x, 10), nil
	case float64:
		if x == math.Trunc(x) && math.Abs(x) < 1e15 {
			return strconv.FormatInt(int64(x), 10), nil
		}
		return strconv.FormatFloat(x, 'g', -1, 64), nil
	case bool:
		return strconv.FormatBool(x), nil
	case time.Time:
		return x.UTC().Format(time.RFC3339Nano), nil
	}
	return "", fmt.Errorf("is %T, want a string or a number", v)
}

// timeLayouts are the forms providers write times in: RFC 3339 (GitHub),
// "2013-12-03 17:23:34 UTC" and "2021-04-28 21:50:00 +0200" (GitLab),
// "2021-05-17T16:25:46.232+0000" (CloudWatch alarms via SNS).
var timeLayouts = []string{
	time.RFC3339Nano,
	"2006-01-02 15:04:05 MST",
	"2006-01-02 15:04:05 -0700",
	"2006-01-02T15:04:05.999999999-0700",
	"2006-01-02T15:04:05-0700",
	"2006-01-02 15:04:05Z07:00",
}

// toTime reads a time from a timestamp, a string in one of timeLayouts or
// Unix seconds (GitHub's repository.pushed_at), and returns it in UTC.
func toTime(v any) (time.Time, error) {
	var t time.Time
	switch x := v.(type) {
	case time.Time:
		t = x
	case int64:
		t = time.Unix(x, 0)
	case float64:
		sec, frac := math.Modf(x)
		t = time.Unix(int64(sec), int64(frac*1e9))
	case string:
		s := strings.TrimSpace(x)
		ok := false
		for _, l := range timeLayouts {
			if p, err := time.Parse(l, s); err == nil {
				t, ok = p, true
				break
			}
		}
		if !ok {
			return time.Time{}, errors.New("is not a time in a known form (RFC 3339, \"2006-01-02 15:04:05 UTC\", Unix seconds)")
		}
	case nil:
		return time.Time{}, errors.New("is null")
	default:
		return time.Time{}, fmt.Errorf("is %T, want a time", v)
	}
	t = t.UTC()
	if t.Year() < 1970 || t.Year() > 9999 {
		return time.Time{}, errors.New("is before 1970 or after 9999")
	}
	return t, nil
}

func sortedKeysOf[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
