// Package mapping turns the providers' documents (ingest.<provider>.<kind>)
// into canonical events with declarative rules: one rule set per source,
// written in YAML or JSON, whose values are CEL expressions
// (cel.dev/cel-go) over the document. Rules are checked when they are
// loaded: unknown fields, enums, and every expression compiled and
// type-checked, so a mistake fails the start, not the first webhook.
//
// Default rules for GitHub, GitLab and CloudWatch are embedded (rules/); a
// rule set loaded for the same source replaces the default one.
//
// A rule set:
//
//	source: github                 # the provider of ingest.<provider>.<kind>
//	rules:                         # per kind, the first rule whose when holds applies
//	  - name: deployment
//	    kind: deployment           # the ingest kind
//	    when: 'payload.deployment.environment != ""'     # optional bool expression
//	    category: delivery         # delivery | system | security
//	    event: '"deployment.created"'                    # the canonical kind (expression)
//	    severity: '"info"'                               # optional expression
//	    summary: 'payload.repository.full_name + " deployed"'
//	    externalId: 'payload.deployment.id'              # numbers become decimal strings
//	    occurredAt: 'payload.deployment.created_at'      # RFC 3339, "2006-01-02 15:04:05 UTC", Unix seconds or a timestamp
//	    attributes: { environment: 'payload.deployment.environment' }
//	    hints:
//	      - { type: resource_id, key: commit, value: 'payload.deployment.sha', confidence: 1 }
//	      - { type: resource_id, key: commit, values: 'payload.commits.map(c, c.id)', confidence: 0.9 }
//	    links:
//	      - { type: deployment, url: 'payload.repository.html_url + "/deployments"', description: '"deployments"' }
//
// Expressions see payload (the document), headers (the delivery headers
// kept with it), integration (id, tenantId) and receivedAt (a timestamp).
// A hint, link or attribute whose value is null or "" is left out; any
// other failure fails the mapping, which sends the ingest message to the
// DLQ with the reason.
package mapping

import (
	"bytes"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	"sigs.k8s.io/yaml"
)

// RuleSet is one source's rules as written.
type RuleSet struct {
	Source string `json:"source"`
	Rules  []Rule `json:"rules"`
}

// Rule maps one kind of document to a canonical event.
type Rule struct {
	Name       string            `json:"name,omitempty"`
	Kind       string            `json:"kind"`
	When       string            `json:"when,omitempty"`
	Category   string            `json:"category"`
	Event      string            `json:"event"`
	Severity   string            `json:"severity,omitempty"`
	Summary    string            `json:"summary"`
	ExternalID string            `json:"externalId"`
	OccurredAt string            `json:"occurredAt"`
	Attributes map[string]string `json:"attributes,omitempty"`
	Hints      []HintRule        `json:"hints,omitempty"`
	Links      []LinkRule        `json:"links,omitempty"`
}

// HintRule makes correlation hints: one from Value, or one per element of
// the list Values.
type HintRule struct {
	Type       string  `json:"type"`
	Key        string  `json:"key"`
	Value      string  `json:"value,omitempty"`
	Values     string  `json:"values,omitempty"`
	Confidence float64 `json:"confidence"`
	When       string  `json:"when,omitempty"`
}

// LinkRule makes an evidence link.
type LinkRule struct {
	Type        string            `json:"type"`
	URL         string            `json:"url"`
	Description string            `json:"description"`
	Metadata    map[string]string `json:"metadata,omitempty"`
	When        string            `json:"when,omitempty"`
}

//go:embed rules/*.yaml
var defaultRules embed.FS

// DefaultRuleSets returns the embedded rule sets, sorted by source.
func DefaultRuleSets() ([]RuleSet, error) {
	return readFS(defaultRules, "rules")
}

// LoadDir reads every *.yaml, *.yml and *.json file of dir as a rule set.
func LoadDir(dir string) ([]RuleSet, error) {
	return readFS(os.DirFS(dir), ".")
}

func readFS(fsys fs.FS, dir string) ([]RuleSet, error) {
	entries, err := fs.ReadDir(fsys, dir)
	if err != nil {
		return nil, fmt.Errorf("mapping: read rules: %w", err)
	}
	var sets []RuleSet
	for _, e := range entries {
		ext := filepath.Ext(e.Name())
		if e.IsDir() || (ext != ".yaml" && ext != ".yml" && ext != ".json") {
			continue
		}
		b, err := fs.ReadFile(fsys, filepath.ToSlash(filepath.Join(dir, e.Name())))
		if err != nil {
			return nil, fmt.Errorf("mapping: %s: %w", e.Name(), err)
		}
		rs, err := ParseRuleSet(b)
		if err != nil {
			return nil, fmt.Errorf("mapping: %s: %w", e.Name(), err)
		}
		sets = append(sets, rs)
	}
	sort.Slice(sets, func(i, j int) bool { return sets[i].Source < sets[j].Source })
	return sets, nil
}

// ParseRuleSet decodes a rule set from YAML or JSON (JSON is YAML).
// Unknown fields are refused: a misspelt field would otherwise be a rule
// that silently does less.
func ParseRuleSet(b []byte) (RuleSet, error) {
	j, err := yaml.YAMLToJSON(b)
	if err != nil {
		return RuleSet{}, fmt.Errorf("not YAML or JSON: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(j))
	dec.DisallowUnknownFields()
	var rs RuleSet
	if err := dec.Decode(&rs); err != nil {
		return RuleSet{}, fmt.Errorf("decode: %w", err)
	}
	return rs, nil
}

var (
	wordRE = regexp.MustCompile(`^[a-z][a-z0-9_]*$`)
	attrRE = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_]*$`)
)

var (
	categories = map[string]bool{"delivery": true, "system": true, "security": true}
	hintTypes  = map[string]bool{"resource_id": true, "temporal": true, "metadata": true}
	linkTypes  = map[string]bool{"commit": true, "pr": true, "deployment": true, "metric": true, "log": true}
)

// check validates what does not need CEL; expressions are compiled after.
func (rs RuleSet) check() error {
	var errs []error
	bad := func(at, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", at, fmt.Sprintf(format, args...)))
	}
	if !wordRE.MatchString(rs.Source) {
		bad("source", "must be a provider name such as github")
	}
	if len(rs.Rules) == 0 {
		bad("rules", "must not be empty")
	}
	for i, r := range rs.Rules {
		at := fmt.Sprintf("rules[%d]", i)
		if !wordRE.MatchString(r.Kind) {
			bad(at+".kind", "must be the provider's event name, such as push")
		}
		if !categories[r.Category] {
			bad(at+".category", "must be delivery, system or security")
		}
		for _, f := range [][2]string{{"event", r.Event}, {"summary", r.Summary}, {"externalId", r.ExternalID}, {"occurredAt", r.OccurredAt}} {
			if strings.TrimSpace(f[1]) == "" {
				bad(at+"."+f[0], "required")
			}
		}
		for name := range r.Attributes {
			if !attrRE.MatchString(name) {
				bad(at+".attributes."+name, "name must be letters, digits and _")
			}
		}
		for j, h := range r.Hints {
			hat := fmt.Sprintf("%s.hints[%d]", at, j)
			if !hintTypes[h.Type] {
				bad(hat+".type", "must be resource_id, temporal or metadata")
			}
			if !wordRE.MatchString(h.Key) {
				bad(hat+".key", "must be a lowercase word such as commit")
			}
			if (h.Value == "") == (h.Values == "") {
				bad(hat, "set exactly one of value and values")
			}
			if h.Confidence < 0 || h.Confidence > 1 {
				bad(hat+".confidence", "must be between 0 and 1")
			}
		}
		for j, l := range r.Links {
			lat := fmt.Sprintf("%s.links[%d]", at, j)
			if !linkTypes[l.Type] {
				bad(lat+".type", "must be commit, pr, deployment, metric or log")
			}
			if l.URL == "" || l.Description == "" {
				bad(lat, "url and description are required")
			}
		}
	}
	return errors.Join(errs...)
}
