package schemas

import (
	"encoding/json"
	"io/fs"
	"os"
	"slices"
	"strings"
	"testing"
	"testing/fstest"
)

// TestGuardFlagsBreakingChanges shows that the contract guard can fail: each
// case edits the schema sources as a developer would and runs the guard
// against the committed record. Breaking edits must be flagged on exactly
// the event types they reach (an edit of common.json reaches several);
// compatible ones must only ask to be recorded; a breaking edit published
// as a new version of the type is not a break of the old one.
func TestGuardFlagsBreakingChanges(t *testing.T) {
	type edit struct {
		file string
		fn   func(doc map[string]any) // nil: delete the file
	}
	cases := []struct {
		name  string
		edits []edit
		// broken lists the types the guard must report as broken, the
		// first with a change that contains want.
		broken []string
		want   string
		// otherwise: these types must be reported as not recorded or not
		// published, and no type as broken.
		recordable []string
		// withdrawn: types whose schema is gone.
		withdrawn []string
	}{
		{
			name:   "field removed",
			edits:  []edit{{"events/scm.annotation.completed.json", func(d map[string]any) { delete(props(d), "url") }}},
			broken: []string{"scm.annotation.completed"}, want: "url: field removed",
		},
		{
			name: "field renamed",
			edits: []edit{{"events/scm.annotation.completed.json", func(d map[string]any) {
				p := props(d)
				p["externalRef"] = p["externalId"]
				delete(p, "externalId")
			}}},
			broken: []string{"scm.annotation.completed"}, want: "externalId: field removed (renamed to externalRef?)",
		},
		{
			name: "field removed from a shared definition",
			edits: []edit{{"common.json", func(d map[string]any) {
				delete(props(def(d, "integration")), "authRef")
			}}},
			broken: []string{"integration.created", "integration.updated"}, want: "integration.authRef: field removed",
		},
		{
			name: "type narrowed: number to integer",
			edits: []edit{{"events/event.canonical.delivery.json", func(d map[string]any) {
				props(def(d, "correlationHint"))["confidence"].(map[string]any)["type"] = "integer"
			}}},
			// Every canonical category, event.enriched and enrichment.requested share the definition.
			broken: []string{"event.canonical.delivery", "enrichment.requested", "event.canonical.security", "event.canonical.system", "event.enriched"},
			want:   "context.correlationHints[].confidence: type narrowed: number no longer accepted",
		},
		{
			name: "type changed",
			edits: []edit{{"events/scm.annotation.requested.json", func(d map[string]any) {
				props(d)["pullRequest"] = map[string]any{"type": "string"}
			}}},
			broken: []string{"scm.annotation.requested"}, want: "pullRequest: type narrowed: integer no longer accepted",
		},
		{
			name: "type narrowed in a list of types",
			edits: []edit{{"events/event.canonical.delivery.json", func(d map[string]any) {
				props(def(d, "canonical"))["attributes"].(map[string]any)["additionalProperties"].(map[string]any)["type"] = []any{"string", "number"}
			}}},
			broken: []string{"event.canonical.delivery", "event.canonical.security", "event.canonical.system"},
			want:   "attributes{other}: type narrowed: boolean no longer accepted",
		},
		{
			name: "new required field",
			edits: []edit{{"events/scm.annotation.requested.json", func(d map[string]any) {
				items := props(props(d)["checkRun"].(map[string]any))["annotations"].(map[string]any)["items"].(map[string]any)
				items["required"] = append(items["required"].([]any), "title")
			}}},
			broken: []string{"scm.annotation.requested"}, want: "checkRun.annotations[].title: new required field",
		},
		{
			name: "new field that is required",
			edits: []edit{{"events/integration.deleted.json", func(d map[string]any) {
				props(d)["reason"] = map[string]any{"type": "string"}
				d["required"] = append(d["required"].([]any), "reason")
			}}},
			broken: []string{"integration.deleted"}, want: "reason: new required field",
		},
		{
			name: "enum value removed from a shared definition",
			edits: []edit{{"common.json", func(d map[string]any) {
				def(d, "healthStatus")["enum"] = []any{"healthy", "degraded", "unhealthy"}
			}}},
			broken: []string{"integration.created", "integration.health_changed", "integration.health_checked", "integration.updated"},
			want:   `integration.healthStatus: enum value "unknown" removed`,
		},
		{
			name: "enum value removed",
			edits: []edit{{"events/scm.annotation.requested.json", func(d map[string]any) {
				c := props(props(d)["checkRun"].(map[string]any))["conclusion"].(map[string]any)
				c["enum"] = slices.DeleteFunc(c["enum"].([]any), func(v any) bool { return v == "skipped" })
			}}},
			broken: []string{"scm.annotation.requested"}, want: `checkRun.conclusion: enum value "skipped" removed`,
		},
		{
			name: "const changed",
			edits: []edit{{"events/ingest.github.push.json", func(d map[string]any) {
				props(d)["provider"] = map[string]any{"const": "gh"}
			}}},
			broken: []string{"ingest.github.push"}, want: `provider: enum value "github" removed`,
		},
		{
			name: "pattern changed",
			edits: []edit{{"common.json", func(d map[string]any) {
				def(d, "commitSha")["pattern"] = "^[0-9a-f]{64}$"
			}}},
			broken: []string{"scm.annotation.requested"}, want: "commitSha: pattern changed",
		},
		{
			name: "upper bound added",
			edits: []edit{{"events/scm.annotation.requested.json", func(d map[string]any) {
				props(props(d)["comment"].(map[string]any))["body"].(map[string]any)["maxLength"] = 1000
			}}},
			broken: []string{"scm.annotation.requested"}, want: "comment.body: maxLength none → 1000",
		},
		{
			name: "minimum raised",
			edits: []edit{{"events/scm.annotation.requested.json", func(d map[string]any) {
				items := props(props(d)["checkRun"].(map[string]any))["annotations"].(map[string]any)["items"].(map[string]any)
				props(items)["startLine"].(map[string]any)["minimum"] = 2
			}}},
			broken: []string{"scm.annotation.requested"}, want: "checkRun.annotations[].startLine: minimum 1 → 2",
		},
		{
			name: "open object closed",
			edits: []edit{{"common.json", func(d map[string]any) {
				props(def(d, "integration"))["config"].(map[string]any)["additionalProperties"] = false
			}}},
			broken: []string{"integration.created", "integration.updated"}, want: "integration.config: object closed",
		},
		{
			name: "conditional rule changed",
			edits: []edit{{"events/scm.annotation.requested.json", func(d map[string]any) {
				c := props(d)["comment"].(map[string]any)
				c["then"] = map[string]any{"required": []any{"key", "body"}}
			}}},
			broken: []string{"scm.annotation.requested"}, want: "comment: if changed",
		},
		{
			name: "rule added",
			edits: []edit{{"events/integration.health_checked.json", func(d map[string]any) {
				d["allOf"] = []any{map[string]any{"not": map[string]any{"properties": map[string]any{"status": map[string]any{"const": "unknown"}}}}}
			}}},
			broken: []string{"integration.health_checked"}, want: "allOf[0]: rule added or changed",
		},
		{
			name: "envelope attribute removed",
			edits: []edit{{"events/envelope.json", func(d map[string]any) {
				delete(props(d), "traceparent")
			}}},
			broken: []string{"envelope"}, want: "traceparent: field removed",
		},
		{
			name:      "published type withdrawn",
			edits:     []edit{{"events/integration.updated.json", nil}},
			withdrawn: []string{"integration.updated"},
		},

		// Compatible: the guard asks for a record, and breaks nothing.
		{
			name: "optional field added",
			edits: []edit{{"events/scm.annotation.completed.json", func(d map[string]any) {
				props(d)["durationMs"] = map[string]any{"type": "integer", "minimum": 0}
			}}},
			recordable: []string{"scm.annotation.completed"},
		},
		{
			name: "enum value added",
			edits: []edit{{"events/scm.annotation.requested.json", func(d map[string]any) {
				s := props(props(d)["checkRun"].(map[string]any))["status"].(map[string]any)
				s["enum"] = append(s["enum"].([]any), "waiting")
			}}},
			recordable: []string{"scm.annotation.requested"},
		},
		{
			name: "requirement dropped",
			edits: []edit{{"events/integration.deleted.json", func(d map[string]any) {
				d["required"] = slices.DeleteFunc(d["required"].([]any), func(v any) bool { return v == "name" })
			}}},
			recordable: []string{"integration.deleted"},
		},
		{
			name: "bound loosened",
			edits: []edit{{"events/event.canonical.delivery.json", func(d map[string]any) {
				props(def(d, "canonical"))["summary"].(map[string]any)["maxLength"] = 2000
			}}},
			recordable: []string{"event.canonical.delivery", "event.canonical.security", "event.canonical.system"},
		},
		{
			name: "description reworded",
			edits: []edit{{"events/scm.annotation.failed.json", func(d map[string]any) {
				d["description"] = "Reworded."
				props(d)["error"].(map[string]any)["description"] = "Reworded too."
			}}},
		},
		{
			name: "new event type",
			edits: []edit{{"events/scm.annotation.retracted.json", func(d map[string]any) {
				d["type"] = "object"
				d["properties"] = map[string]any{"requestId": map[string]any{"type": "string"}}
			}}},
			recordable: []string{"scm.annotation.retracted"},
		},
		{
			// The same edit as "field removed" and "new field that is
			// required", shipped as version 2: the old type is untouched.
			name: "breaking change as a new version of the type",
			edits: []edit{{"events/scm.annotation.completed.v2.json", func(d map[string]any) {
				src, _ := fs.ReadFile(files, "events/scm.annotation.completed.json")
				_ = json.Unmarshal(src, &d)
				delete(props(d), "url")
				props(d)["link"] = map[string]any{"type": "string"}
				d["required"] = append(d["required"].([]any), "link")
			}}},
			recordable: []string{"scm.annotation.completed.v2"},
		},
	}

	records := os.DirFS(publishedDir)
	if clean := guard(files, Names(), records); len(clean) > 0 {
		t.Fatalf("the committed schemas do not match the record: %s", clean[0].message)
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			src := fstest.MapFS{}
			err := fs.WalkDir(files, ".", func(p string, d fs.DirEntry, err error) error {
				if err != nil || d.IsDir() {
					return err
				}
				b, err := fs.ReadFile(files, p)
				src[p] = &fstest.MapFile{Data: b}
				return err
			})
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range tc.edits {
				if e.fn == nil {
					delete(src, e.file)
					continue
				}
				doc := map[string]any{}
				if f, ok := src[e.file]; ok {
					if err := json.Unmarshal(f.Data, &doc); err != nil {
						t.Fatal(err)
					}
				}
				e.fn(doc)
				b, err := json.Marshal(doc)
				if err != nil {
					t.Fatal(err)
				}
				src[e.file] = &fstest.MapFile{Data: b}
			}

			found := guard(src, namesIn(t, src), records)
			byKind := map[findingKind][]string{}
			for _, f := range found {
				byKind[f.kind] = append(byKind[f.kind], f.name)
			}
			sortAll := func(s []string) []string { return slices.Sorted(slices.Values(s)) }
			if got, want := sortAll(byKind[broken]), sortAll(tc.broken); !slices.Equal(got, want) {
				t.Errorf("broken types %q, want %q", got, want)
			}
			recordable := append(byKind[unpublished], byKind[unrecorded]...)
			if got, want := sortAll(recordable), sortAll(tc.recordable); !slices.Equal(got, want) {
				t.Errorf("types to record %q, want %q", got, want)
			}
			if got, want := sortAll(byKind[withdrawn]), sortAll(tc.withdrawn); !slices.Equal(got, want) {
				t.Errorf("withdrawn types %q, want %q", got, want)
			}
			if len(byKind[unreadable]) > 0 {
				t.Errorf("unreadable: %q", byKind[unreadable])
			}
			if tc.want == "" {
				return
			}
			for _, f := range found {
				if f.name == tc.broken[0] {
					if !strings.Contains(lines(f.changes), tc.want) {
						t.Errorf("%s: changes\n  %s\nwant one containing %q", f.name, lines(f.changes), tc.want)
					}
					if !strings.Contains(f.message, f.name+".v2") {
						t.Errorf("message does not point at a new version: %s", f.message)
					}
				}
			}
		})
	}
}

// TestCompareDirections pins the question the guard asks on single
// keywords: can a document the published schema accepts be refused now?
func TestCompareDirections(t *testing.T) {
	cases := []struct {
		name     string
		pub, cur string
		breaking bool
	}{
		{"integer widened to number", `{"type":"integer"}`, `{"type":"number"}`, false},
		{"number narrowed to integer", `{"type":"number"}`, `{"type":"integer"}`, true},
		{"type added", `{}`, `{"type":"string"}`, true},
		{"type dropped", `{"type":"string"}`, `{}`, false},
		{"const to enum with it", `{"const":"a"}`, `{"enum":["a","b"]}`, false},
		{"enum to const", `{"enum":["a","b"]}`, `{"const":"a"}`, true},
		{"maxLength raised", `{"maxLength":5}`, `{"maxLength":6}`, false},
		{"maxLength lowered", `{"maxLength":5}`, `{"maxLength":4}`, true},
		{"minLength dropped", `{"minLength":1}`, `{}`, false},
		{"pattern dropped", `{"pattern":"^a"}`, `{}`, false},
		{"format added", `{}`, `{"format":"uuid"}`, true},
		{"field added to an open object", `{"type":"object"}`, `{"type":"object","properties":{"a":{"type":"string"}}}`, true},
		{"field added to a closed object", `{"type":"object","additionalProperties":false}`, `{"type":"object","additionalProperties":false,"properties":{"a":{}}}`, false},
		{"field removed from an open object", `{"type":"object","properties":{"a":{"type":"string"}}}`, `{"type":"object"}`, false},
		{"object opened", `{"additionalProperties":false}`, `{}`, false},
		{"items narrowed", `{"items":{"type":["string","null"]}}`, `{"items":{"type":"string"}}`, true},
		{"rule dropped", `{"allOf":[{"required":["a"]}]}`, `{}`, false},
		{"false schema", `true`, `false`, true},
		{"true schema", `false`, `true`, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			pub, err := decode([]byte(tc.pub))
			if err != nil {
				t.Fatal(err)
			}
			cur, err := decode([]byte(tc.cur))
			if err != nil {
				t.Fatal(err)
			}
			cs := compare(pub, cur)
			if len(cs) == 0 {
				t.Fatal("no change found")
			}
			if got := len(breaking(cs)) > 0; got != tc.breaking {
				t.Errorf("breaking = %v, want %v; changes:\n  %s", got, tc.breaking, lines(cs))
			}
		})
	}
}

func props(d map[string]any) map[string]any {
	p, ok := d["properties"].(map[string]any)
	if !ok {
		p = map[string]any{}
		d["properties"] = p
	}
	return p
}

func def(d map[string]any, name string) map[string]any {
	return d["$defs"].(map[string]any)[name].(map[string]any)
}

// namesIn lists the schemas of fsys as Names does for the embedded ones.
func namesIn(t *testing.T, fsys fs.FS) []string {
	t.Helper()
	entries, err := fs.ReadDir(fsys, "events")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		if n, ok := strings.CutSuffix(e.Name(), ".json"); ok {
			names = append(names, n)
		}
	}
	return names
}
