package mapping_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"inthub.dev/services/enrichment/mapping"
)

const okRule = `
source: acme
rules:
  - kind: thing
    category: system
    event: '"thing.happened"'
    summary: 'payload.name'
    externalId: 'payload.id'
    occurredAt: 'payload.at'
`

func TestParseAndCompileErrors(t *testing.T) {
	tests := []struct {
		name, doc, want string
	}{
		{"unknown field", strings.Replace(okRule, "summary:", "sumary:", 1), `unknown field "sumary"`},
		{"bad category", strings.Replace(okRule, "category: system", "category: ops", 1), "rules[0].category: must be delivery, system or security"},
		{"missing event", strings.Replace(okRule, `event: '"thing.happened"'`, "", 1), "rules[0].event: required"},
		{"undeclared variable", strings.Replace(okRule, "payload.name", "paylod.name", 1), "rules[0].summary: ERROR"},
		{"syntax", strings.Replace(okRule, "payload.name", "payload.name +", 1), "rules[0].summary"},
		{"when is not bool", okRule + `    when: '"yes"'` + "\n", "rules[0].when: has type string"},
		{"values is not a list", okRule + "    hints:\n      - { type: resource_id, key: commit, values: '\"x\"', confidence: 1 }\n", "hints[0].values: has type string"},
		{"hint value and values", okRule + "    hints:\n      - { type: resource_id, key: commit, value: 'payload.a', values: '[payload.a]', confidence: 1 }\n", "set exactly one of value and values"},
		{"confidence", okRule + "    hints:\n      - { type: resource_id, key: commit, value: 'payload.a', confidence: 2 }\n", "confidence: must be between 0 and 1"},
		{"hint type", okRule + "    hints:\n      - { type: guess, key: commit, value: 'payload.a', confidence: 1 }\n", "hints[0].type"},
		{"link type", okRule + "    links:\n      - { type: ticket, url: 'payload.u', description: '\"d\"' }\n", "links[0].type"},
		{"source", strings.Replace(okRule, "source: acme", "source: Acme Corp", 1), "source: must be a provider name"},
		{"not YAML", "source: [", "not YAML or JSON"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rs, err := mapping.ParseRuleSet([]byte(tt.doc))
			if err == nil {
				_, err = mapping.New(rs)
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want one containing %q", err, tt.want)
			}
		})
	}
	rs, err := mapping.ParseRuleSet([]byte(okRule))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := mapping.New(rs); err != nil {
		t.Fatalf("the valid rule set is refused: %v", err)
	}
	// JSON is accepted as well.
	if _, err := mapping.ParseRuleSet([]byte(`{"source":"acme","rules":[]}`)); err != nil {
		t.Fatal(err)
	}
}

func TestMapFailures(t *testing.T) {
	rs, err := mapping.ParseRuleSet([]byte(okRule + `    when: 'payload.kind == "a"'
    hints:
      - { type: resource_id, key: commit, value: 'payload.?sha.orValue(null)', confidence: 1 }
    links:
      - { type: log, url: 'payload.?url.orValue("")', description: '"log"' }
`))
	if err != nil {
		t.Fatal(err)
	}
	m, err := mapping.New(rs)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, kind, payload, want string
	}{
		{"ok without optional parts", "thing", `{"kind":"a","name":"n","id":7,"at":"2025-01-02T03:04:05Z"}`, ""},
		{"no rule for the kind", "other", `{}`, "no rule for ingest.acme.other"},
		{"no rule matched", "thing", `{"kind":"b"}`, "matched this document"},
		{"missing field", "thing", `{"kind":"a","id":7,"at":"2025-01-02T03:04:05Z"}`, "rules[0].summary: no such key: name"},
		{"null summary", "thing", `{"kind":"a","name":null,"id":7,"at":"2025-01-02T03:04:05Z"}`, "summary: is empty or null"},
		{"bad time", "thing", `{"kind":"a","name":"n","id":7,"at":"yesterday"}`, "occurredAt: is not a time"},
		{"time before 1970", "thing", `{"kind":"a","name":"n","id":7,"at":-5}`, "before 1970"},
		{"not a URL", "thing", `{"kind":"a","name":"n","id":7,"at":1,"url":"javascript:alert(1)"}`, "links[0].url: is not an absolute http(s) URL"},
		{"not an object", "thing", `[1]`, "rules[0].when"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := m.Map(context.Background(), ingested("acme", tt.kind, []byte(tt.payload)), ingestID)
			if tt.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			var me *mapping.Error
			if !errors.As(err, &me) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want a *mapping.Error containing %q", err, tt.want)
			}
		})
	}
	if _, err := m.Map(context.Background(), ingested("nobody", "thing", []byte(`{}`)), ingestID); err == nil {
		t.Fatal("a source without rules mapped")
	}
}

// A runaway expression stops at the cost limit instead of stalling.
func TestCostLimit(t *testing.T) {
	rs, err := mapping.ParseRuleSet([]byte(strings.Replace(okRule, "summary: 'payload.name'",
		`summary: 'string(payload.xs.map(a, payload.xs.map(b, payload.xs.map(c, a + b + c))).size())'`, 1)))
	if err != nil {
		t.Fatal(err)
	}
	m, err := mapping.New(rs)
	if err != nil {
		t.Fatal(err)
	}
	xs := "[" + strings.TrimSuffix(strings.Repeat("1,", 500), ",") + "]"
	_, err = m.Map(context.Background(), ingested("acme", "thing", []byte(`{"xs":`+xs+`,"id":1,"at":1}`)), ingestID)
	if err == nil || !strings.Contains(err.Error(), "cost") {
		t.Fatalf("error %v, want the cost limit", err)
	}
}

// Custom rules for a source replace the default ones.
func TestCustomRulesReplaceDefaults(t *testing.T) {
	defaults, err := mapping.DefaultRuleSets()
	if err != nil {
		t.Fatal(err)
	}
	custom, err := mapping.ParseRuleSet([]byte(strings.Replace(okRule, "source: acme", "source: github", 1)))
	if err != nil {
		t.Fatal(err)
	}
	m, err := mapping.New(append(defaults, custom)...)
	if err != nil {
		t.Fatal(err)
	}
	if k := m.Kinds("github"); len(k) != 1 || k[0] != "thing" {
		t.Fatalf("github kinds %v", k)
	}
}
