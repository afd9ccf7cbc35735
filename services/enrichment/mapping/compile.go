package mapping

import (
	"errors"
	"fmt"
	"net/url"

	"cel.dev/cel-go/cel"
	"cel.dev/cel-go/common/types"
	"cel.dev/cel-go/common/types/ref"
	"cel.dev/cel-go/ext"
)

// costLimit bounds one expression's evaluation: rules may come from
// operators, and a runaway comprehension must not stall the worker.
const costLimit = 1_000_000

// newEnv is the CEL environment of every expression.
func newEnv() (*cel.Env, error) {
	return cel.NewEnv(
		cel.Variable("payload", cel.DynType),
		cel.Variable("headers", cel.MapType(cel.StringType, cel.StringType)),
		cel.Variable("integration", cel.MapType(cel.StringType, cel.StringType)),
		cel.Variable("receivedAt", cel.TimestampType),
		ext.Strings(),
		ext.Lists(),
		cel.OptionalTypes(),
		// URLs built from names (alarm names have spaces) need escaping.
		cel.Function("urlPathEscape", cel.Overload("url_path_escape_string",
			[]*cel.Type{cel.StringType}, cel.StringType,
			cel.UnaryBinding(func(v ref.Val) ref.Val {
				s, ok := v.(types.String)
				if !ok {
					return types.NewErr("urlPathEscape: not a string")
				}
				return types.String(url.PathEscape(string(s)))
			}))),
	)
}

// program is one compiled expression with where it came from.
type program struct {
	at  string // e.g. "github: rules[2].hints[0].value"
	prg cel.Program
}

type hintProgram struct {
	HintRule
	when, value, values *program
}

type linkProgram struct {
	LinkRule
	when, url, description *program
	metadata               []namedProgram
}

type namedProgram struct {
	name string
	p    *program
}

type compiledRule struct {
	Rule
	at                                                   string
	when, event, severity, summary, externalID, occurred *program
	attributes                                           []namedProgram
	hints                                                []hintProgram
	links                                                []linkProgram
}

// output kinds an expression may have, checked at compile time.
type want int

const (
	wantBool   want = iota
	wantString      // string, or dyn
	wantScalar      // string, int, uint, double, bool, timestamp, or dyn
	wantList        // list, or dyn
)

type compiler struct {
	env  *cel.Env
	errs []error
}

func (c *compiler) compile(at, expr string, w want) *program {
	if expr == "" {
		return nil
	}
	ast, iss := c.env.Compile(expr)
	if iss.Err() != nil {
		c.errs = append(c.errs, fmt.Errorf("%s: %w", at, iss.Err()))
		return nil
	}
	if err := checkType(ast.OutputType(), w); err != nil {
		c.errs = append(c.errs, fmt.Errorf("%s: %w", at, err))
		return nil
	}
	prg, err := c.env.Program(ast, cel.CostLimit(costLimit), cel.InterruptCheckFrequency(100))
	if err != nil {
		c.errs = append(c.errs, fmt.Errorf("%s: %w", at, err))
		return nil
	}
	return &program{at: at, prg: prg}
}

func checkType(t *cel.Type, w want) error {
	if t.IsDyn() {
		return nil
	}
	k := t.Kind()
	ok := false
	switch w {
	case wantBool:
		ok = k == types.BoolKind
	case wantString:
		ok = k == types.StringKind
	case wantScalar:
		ok = k == types.StringKind || k == types.IntKind || k == types.UintKind || k == types.DoubleKind ||
			k == types.BoolKind || k == types.TimestampKind || k == types.NullTypeKind
	case wantList:
		ok = k == types.ListKind
	}
	if !ok {
		return fmt.Errorf("has type %s, which does not fit here", t)
	}
	return nil
}

// compileSet checks and compiles one rule set.
func compileSet(env *cel.Env, rs RuleSet) ([]compiledRule, error) {
	if err := rs.check(); err != nil {
		return nil, fmt.Errorf("%s: %w", rs.Source, err)
	}
	c := &compiler{env: env}
	out := make([]compiledRule, len(rs.Rules))
	for i, r := range rs.Rules {
		at := fmt.Sprintf("%s: rules[%d]", rs.Source, i)
		if r.Name != "" {
			at = fmt.Sprintf("%s: rules[%d] (%s)", rs.Source, i, r.Name)
		}
		cr := compiledRule{Rule: r, at: at,
			when:       c.compile(at+".when", r.When, wantBool),
			event:      c.compile(at+".event", r.Event, wantString),
			severity:   c.compile(at+".severity", r.Severity, wantString),
			summary:    c.compile(at+".summary", r.Summary, wantScalar),
			externalID: c.compile(at+".externalId", r.ExternalID, wantScalar),
			occurred:   c.compile(at+".occurredAt", r.OccurredAt, wantScalar),
		}
		for _, name := range sortedKeys(r.Attributes) {
			cr.attributes = append(cr.attributes, namedProgram{name, c.compile(at+".attributes."+name, r.Attributes[name], wantScalar)})
		}
		for j, h := range r.Hints {
			hat := fmt.Sprintf("%s.hints[%d]", at, j)
			cr.hints = append(cr.hints, hintProgram{HintRule: h,
				when:   c.compile(hat+".when", h.When, wantBool),
				value:  c.compile(hat+".value", h.Value, wantScalar),
				values: c.compile(hat+".values", h.Values, wantList)})
		}
		for j, l := range r.Links {
			lat := fmt.Sprintf("%s.links[%d]", at, j)
			lp := linkProgram{LinkRule: l,
				when:        c.compile(lat+".when", l.When, wantBool),
				url:         c.compile(lat+".url", l.URL, wantString),
				description: c.compile(lat+".description", l.Description, wantScalar)}
			for _, name := range sortedKeys(l.Metadata) {
				lp.metadata = append(lp.metadata, namedProgram{name, c.compile(lat+".metadata."+name, l.Metadata[name], wantScalar)})
			}
			cr.links = append(cr.links, lp)
		}
		out[i] = cr
	}
	if len(c.errs) > 0 {
		return nil, errors.Join(c.errs...)
	}
	return out, nil
}

func sortedKeys(m map[string]string) []string { return sortedKeysOf(m) }
