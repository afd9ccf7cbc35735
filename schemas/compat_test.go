package schemas

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io/fs"
	"path"
	"slices"
	"sort"
	"strings"
)

// This file is the machinery of the contract guard (guard_test.go): it
// turns a payload schema into the self-contained form that is published
// (every $ref inlined, annotations dropped) and compares two such forms.
//
// The comparison asks one question: does every document the published
// schema accepts still pass the new one? Producers on older code, and the
// messages already stored in the streams (kept for days, replayed to a
// consumer that was away), are such documents. A change that fails the
// question is breaking. The answer is conservative: where two schemas
// differ in a way this code cannot prove harmless (a new pattern, a changed
// conditional rule), the change counts as breaking, and the message says
// so.

// annotations are keywords that never change what a schema accepts. They
// are dropped from the published form, so rewording a description needs no
// new record.
var annotations = map[string]bool{
	"$schema": true, "$id": true, "$comment": true, "$defs": true, "definitions": true,
	"title": true, "description": true, "examples": true, "default": true,
	"deprecated": true, "readOnly": true, "writeOnly": true, "x-message": true,
}

// Keywords whose value is a schema, a map of names to schemas, or a list of
// schemas: the walk into them is the only place where a key may be a field
// name rather than a keyword (a property may be called "description").
var (
	schemaKeywords = map[string]bool{
		"items": true, "additionalProperties": true, "not": true, "if": true, "then": true, "else": true,
		"contains": true, "propertyNames": true, "unevaluatedProperties": true, "unevaluatedItems": true,
	}
	schemaMapKeywords  = map[string]bool{"properties": true, "patternProperties": true, "dependentSchemas": true}
	schemaListKeywords = map[string]bool{"allOf": true, "anyOf": true, "oneOf": true, "prefixItems": true}
)

// published returns the self-contained form of the named schema.
func published(fsys fs.FS, name string) (any, error) {
	r := resolver{fsys: fsys, docs: map[string]any{}}
	file := fileOf(name)
	doc, err := r.doc(file)
	if err != nil {
		return nil, err
	}
	return r.schema(doc, file, 0)
}

type resolver struct {
	fsys fs.FS
	docs map[string]any
}

func (r *resolver) doc(file string) (any, error) {
	if d, ok := r.docs[file]; ok {
		return d, nil
	}
	b, err := fs.ReadFile(r.fsys, file)
	if err != nil {
		return nil, err
	}
	d, err := decode(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	r.docs[file] = d
	return d, nil
}

// schema inlines the $refs of s, found in file, and drops annotations.
func (r *resolver) schema(s any, file string, depth int) (any, error) {
	if depth > 64 {
		return nil, fmt.Errorf("%s: $ref nested too deep (a cycle?)", file)
	}
	m, ok := s.(map[string]any)
	if !ok {
		return s, nil // true or false
	}
	out := map[string]any{}
	for k, v := range m {
		if annotations[k] || k == "$ref" {
			continue
		}
		var err error
		switch {
		case schemaKeywords[k]:
			v, err = r.schema(v, file, depth+1)
		case schemaMapKeywords[k]:
			sub := map[string]any{}
			for name, child := range v.(map[string]any) {
				if sub[name], err = r.schema(child, file, depth+1); err != nil {
					return nil, err
				}
			}
			v = sub
		case schemaListKeywords[k]:
			var sub []any
			for _, child := range v.([]any) {
				c, err := r.schema(child, file, depth+1)
				if err != nil {
					return nil, err
				}
				sub = append(sub, c)
			}
			v = sub
		case k == "required" || k == "type":
			v = sortedStrings(v)
		}
		if err != nil {
			return nil, err
		}
		out[k] = v
	}
	ref, ok := m["$ref"].(string)
	if !ok {
		return out, nil
	}
	target, tfile, err := r.follow(ref, file)
	if err != nil {
		return nil, err
	}
	resolved, err := r.schema(target, tfile, depth+1)
	if err != nil {
		return nil, err
	}
	return merge(resolved, out), nil
}

// follow finds the schema a $ref names, relative to the file it is in.
func (r *resolver) follow(ref, file string) (any, string, error) {
	target, ptr, _ := strings.Cut(ref, "#")
	if target != "" {
		file = path.Clean(path.Join(path.Dir(file), target))
	}
	doc, err := r.doc(file)
	if err != nil {
		return nil, "", fmt.Errorf("$ref %q: %w", ref, err)
	}
	for _, tok := range strings.Split(strings.TrimPrefix(ptr, "/"), "/") {
		if tok == "" {
			continue
		}
		tok = strings.NewReplacer("~1", "/", "~0", "~").Replace(tok)
		m, ok := doc.(map[string]any)
		if !ok {
			return nil, "", fmt.Errorf("$ref %q: no %q in %s", ref, tok, file)
		}
		if doc, ok = m[tok]; !ok {
			return nil, "", fmt.Errorf("$ref %q: no %q in %s", ref, tok, file)
		}
	}
	return doc, file, nil
}

// merge is the schema that accepts what both a and b accept (a $ref and the
// keywords beside it), written as one schema where that keeps the meaning,
// else as an allOf of the two.
func merge(a, b any) any {
	am, aok := a.(map[string]any)
	bm, bok := b.(map[string]any)
	switch {
	case !aok && a == true, aok && len(am) == 0:
		return b
	case !bok && b == true, bok && len(bm) == 0:
		return a
	case !aok || !bok:
		return false // one of them is false
	}
	// additionalProperties only sees the properties beside it: merging
	// properties into an object that has it is safe only when no new
	// name comes in.
	if !sameNames(am, bm) || !sameNames(bm, am) {
		return map[string]any{"allOf": []any{a, b}}
	}
	out := map[string]any{}
	for k, v := range am {
		out[k] = v
	}
	for k, v := range bm {
		old, ok := out[k]
		switch {
		case !ok:
			out[k] = v
		case equal(old, v):
		case k == "properties":
			props := map[string]any{}
			for n, s := range old.(map[string]any) {
				props[n] = s
			}
			for n, s := range v.(map[string]any) {
				if o, ok := props[n]; ok {
					props[n] = merge(o, s)
				} else {
					props[n] = s
				}
			}
			out[k] = props
		case k == "required":
			out[k] = sortedStrings(append(slices.Clone(old.([]any)), v.([]any)...))
		case k == "allOf":
			out[k] = append(slices.Clone(old.([]any)), v.([]any)...)
		default:
			return map[string]any{"allOf": []any{a, b}}
		}
	}
	return out
}

// sameNames reports whether every property b names is one a already
// names, or a has no additionalProperties to be changed by it.
func sameNames(a, b map[string]any) bool {
	if ap, ok := a["additionalProperties"]; !ok || ap == true {
		return true
	}
	ap, _ := a["properties"].(map[string]any)
	bp, _ := b["properties"].(map[string]any)
	for n := range bp {
		if _, ok := ap[n]; !ok {
			return false
		}
	}
	return true
}

// change is one difference between a published schema and the current one.
type change struct {
	path     string // the field, as in validation errors: checkRun.annotations[].level
	what     string
	breaking bool
}

func (c change) String() string {
	p := c.path
	if p == "" {
		p = "(the payload)"
	}
	return p + ": " + c.what
}

// compare lists how cur differs from pub. A breaking change is one after
// which a document pub accepts may be refused.
func compare(pub, cur any) []change {
	var cs []change
	diff(&cs, "", pub, cur)
	sort.SliceStable(cs, func(i, j int) bool { return cs[i].path < cs[j].path })
	return cs
}

func breaking(cs []change) []change {
	var out []change
	for _, c := range cs {
		if c.breaking {
			out = append(out, c)
		}
	}
	return out
}

// asMap gives a boolean schema its keyword form: true is {}, false refuses
// everything.
func asMap(s any) map[string]any {
	switch s := s.(type) {
	case map[string]any:
		return s
	case bool:
		if !s {
			return map[string]any{"not": map[string]any{}}
		}
	}
	return map[string]any{}
}

// Bounds: raising a lower one or lowering an upper one narrows.
var (
	lowerBounds = map[string]bool{"minimum": true, "exclusiveMinimum": true, "minLength": true, "minItems": true, "minProperties": true, "minContains": true}
	upperBounds = map[string]bool{"maximum": true, "exclusiveMaximum": true, "maxLength": true, "maxItems": true, "maxProperties": true, "maxContains": true}
)

func diff(cs *[]change, at string, pubS, curS any) {
	add := func(p, what string, brk bool) { *cs = append(*cs, change{path: p, what: what, breaking: brk}) }
	if equal(pubS, curS) {
		return
	}
	pub, cur := asMap(pubS), asMap(curS)

	keys := map[string]bool{}
	for k := range pub {
		keys[k] = true
	}
	for k := range cur {
		keys[k] = true
	}
	// if/then/else are one rule, compared at "if"; properties and
	// additionalProperties describe the fields together.
	delete(keys, "then")
	delete(keys, "else")
	delete(keys, "properties")
	delete(keys, "additionalProperties")
	if !equal(pub["properties"], cur["properties"]) || !equal(pub["additionalProperties"], cur["additionalProperties"]) {
		diffObject(cs, at, pub, cur)
	}
	for _, k := range slices.Sorted(func(yield func(string) bool) {
		for k := range keys {
			if !yield(k) {
				return
			}
		}
	}) {
		pv, inPub := pub[k]
		cv, inCur := cur[k]
		if k == "if" {
			pv, inPub = rule(pub)
			cv, inCur = rule(cur)
		}
		if inPub && inCur && equal(pv, cv) {
			continue
		}
		switch {
		case k == "type":
			diffType(cs, at, pv, cv, inPub, inCur)
		case k == "enum" || k == "const":
			if k == "const" && (pub["enum"] != nil || cur["enum"] != nil) {
				continue // compared as part of enum
			}
			diffEnum(cs, at, pub, cur)
		case k == "required":
			pr, cr := stringSet(pv), stringSet(cv)
			for _, n := range slices.Sorted(keysOf(cr)) {
				if !pr[n] {
					add(join(at, n), "new required field", true)
				}
			}
			for _, n := range slices.Sorted(keysOf(pr)) {
				if !cr[n] {
					add(join(at, n), "no longer required", false)
				}
			}
		case k == "items":
			diff(cs, at+"[]", orTrue(pv, inPub), orTrue(cv, inCur))
		case k == "propertyNames":
			diff(cs, at+"{name}", orTrue(pv, inPub), orTrue(cv, inCur))
		case lowerBounds[k] || upperBounds[k]:
			diffBound(cs, at, k, pv, cv, inPub, inCur)
		case k == "allOf":
			diffAllOf(cs, at, pv, cv)
		default:
			// pattern, format, not, if/then/else, anyOf, oneOf, ...: no
			// cheap proof that a changed one accepts what the old did.
			switch {
			case !inPub:
				add(at, k+" added", true)
			case !inCur:
				add(at, k+" removed", false)
			default:
				add(at, k+" changed (cannot prove it still accepts what it accepted)", true)
			}
		}
	}
}

// rule is a schema's if/then/else as one value.
func rule(s map[string]any) (any, bool) {
	r := map[string]any{}
	for _, k := range []string{"if", "then", "else"} {
		if v, ok := s[k]; ok {
			r[k] = v
		}
	}
	if _, ok := r["if"]; !ok {
		return nil, false
	}
	return r, true
}

func diffObject(cs *[]change, at string, pub, cur map[string]any) {
	add := func(p, what string, brk bool) { *cs = append(*cs, change{path: p, what: what, breaking: brk}) }
	pp, _ := pub["properties"].(map[string]any)
	cp, _ := cur["properties"].(map[string]any)
	pAP, pHas := pub["additionalProperties"]
	cAP, cHas := cur["additionalProperties"]
	pAP, cAP = orTrue(pAP, pHas), orTrue(cAP, cHas)

	var removed, added []string
	for _, n := range slices.Sorted(keysOf(pp)) {
		if c, ok := cp[n]; ok {
			diff(cs, join(at, n), pp[n], c)
		} else {
			removed = append(removed, n)
		}
	}
	for _, n := range slices.Sorted(keysOf(cp)) {
		if _, ok := pp[n]; !ok {
			added = append(added, n)
		}
	}
	for _, n := range removed {
		// The field's values now meet the new additionalProperties.
		if cAP == false {
			what := "field removed"
			if len(added) > 0 {
				what += " (renamed to " + strings.Join(added, " or ") + "?)"
			}
			add(join(at, n), what, true)
			continue
		}
		diff(cs, join(at, n), pp[n], cAP)
	}
	for _, n := range added {
		// Old documents could carry this name only where additionalProperties let them.
		if pAP == false {
			add(join(at, n), "optional field added (a consumer whose schema is closed refuses it until it upgrades: readers first)", false)
			continue
		}
		diff(cs, join(at, n), pAP, cp[n])
	}
	if !equal(pAP, cAP) {
		if pAP != false && cAP == false {
			add(at, "object closed: fields not listed are now refused", true)
		} else {
			diff(cs, at+"{other}", pAP, cAP)
		}
	}
}

func diffType(cs *[]change, at string, pv, cv any, inPub, inCur bool) {
	switch {
	case !inCur:
		*cs = append(*cs, change{at, "type no longer restricted", false})
		return
	case !inPub:
		*cs = append(*cs, change{at, "type restricted to " + fmt.Sprint(cv), true})
		return
	}
	pt, ct := stringSet(pv), stringSet(cv)
	for _, t := range slices.Sorted(keysOf(pt)) {
		if !ct[t] && !(t == "integer" && ct["number"]) {
			*cs = append(*cs, change{at, fmt.Sprintf("type narrowed: %s no longer accepted (now %s)", t, strings.Join(slices.Sorted(keysOf(ct)), ", ")), true})
		}
	}
	for _, t := range slices.Sorted(keysOf(ct)) {
		if !pt[t] {
			*cs = append(*cs, change{at, "type widened: " + t + " accepted", false})
		}
	}
}

// diffEnum compares the sets of values allowed by enum or const (absent:
// any value).
func diffEnum(cs *[]change, at string, pub, cur map[string]any) {
	values := func(s map[string]any) ([]any, bool) {
		if e, ok := s["enum"].([]any); ok {
			if c, ok := s["const"]; ok {
				// Both: only the const, if the enum has it.
				var out []any
				for _, v := range e {
					if equal(v, c) {
						out = append(out, v)
					}
				}
				return out, true
			}
			return e, true
		}
		if c, ok := s["const"]; ok {
			return []any{c}, true
		}
		return nil, false
	}
	pv, pok := values(pub)
	cv, cok := values(cur)
	switch {
	case !pok && !cok:
		return
	case !cok:
		*cs = append(*cs, change{at, "no longer limited to a list of values", false})
		return
	case !pok:
		*cs = append(*cs, change{at, "now limited to the values " + canonical(cv), true})
		return
	}
	has := func(list []any, v any) bool {
		return slices.ContainsFunc(list, func(x any) bool { return equal(x, v) })
	}
	for _, v := range pv {
		if !has(cv, v) {
			*cs = append(*cs, change{at, "enum value " + canonical(v) + " removed", true})
		}
	}
	for _, v := range cv {
		if !has(pv, v) {
			*cs = append(*cs, change{at, "enum value " + canonical(v) + " added (consumers that switch on it must know it first: readers first)", false})
		}
	}
}

func diffBound(cs *[]change, at, k string, pv, cv any, inPub, inCur bool) {
	num := func(v any) float64 {
		f, _ := v.(json.Number).Float64()
		return f
	}
	lower := lowerBounds[k]
	var narrower bool
	switch {
	case !inCur:
		narrower = false
	case !inPub:
		narrower = true
	case lower:
		narrower = num(cv) > num(pv)
	default:
		narrower = num(cv) < num(pv)
	}
	what := fmt.Sprintf("%s %v → %v", k, orDash(pv, inPub), orDash(cv, inCur))
	*cs = append(*cs, change{at, what, narrower})
}

// diffAllOf matches rules that stayed the same; a rule that is new or
// changed may refuse what passed before.
func diffAllOf(cs *[]change, at string, pv, cv any) {
	pl, _ := pv.([]any)
	cl, _ := cv.([]any)
	used := make([]bool, len(pl))
	var fresh []int
	for i, c := range cl {
		found := false
		for j, p := range pl {
			if !used[j] && equal(p, c) {
				used[j], found = true, true
				break
			}
		}
		if !found {
			fresh = append(fresh, i)
		}
	}
	for _, i := range fresh {
		*cs = append(*cs, change{at, fmt.Sprintf("allOf[%d]: rule added or changed (cannot prove it still accepts what it accepted)", i), true})
	}
	for j, u := range used {
		if !u {
			*cs = append(*cs, change{at, fmt.Sprintf("allOf: published rule %d removed", j), false})
		}
	}
}

func join(at, name string) string {
	if at == "" {
		return name
	}
	return at + "." + name
}

func orTrue(v any, ok bool) any {
	if !ok {
		return true
	}
	return v
}

func orDash(v any, ok bool) any {
	if !ok {
		return "none"
	}
	return v
}

func keysOf[V any](m map[string]V) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

func stringSet(v any) map[string]bool {
	out := map[string]bool{}
	switch v := v.(type) {
	case string:
		out[v] = true
	case []any:
		for _, s := range v {
			if s, ok := s.(string); ok {
				out[s] = true
			}
		}
	}
	return out
}

func sortedStrings(v any) any {
	l, ok := v.([]any)
	if !ok {
		return v
	}
	set := stringSet(l)
	out := make([]any, 0, len(set))
	for _, s := range slices.Sorted(keysOf(set)) {
		out = append(out, s)
	}
	return out
}

func decode(b []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	return v, nil
}

// canonical is v as JSON with sorted keys, for equality and messages.
func canonical(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprintf("%v", v)
	}
	return string(b)
}

func equal(a, b any) bool { return canonical(a) == canonical(b) }
