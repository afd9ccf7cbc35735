package schemas

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
)

// TestContractFields pins the properties of each payload schema to the
// field names of DESIGN §5, which other teams code against. inthub.dev/events
// pins its Go types to the same list.
func TestContractFields(t *testing.T) {
	integration := []string{"id", "tenantId", "type", "name", "config", "authRef", "status", "healthStatus", "version", "createdAt", "updatedAt"}
	health := []string{"integrationId", "tenantId", "type", "status", "latencyMs", "message", "checkedAt"}
	want := map[string][]string{
		"envelope":                                        {"specversion", "id", "source", "type", "time", "datacontenttype", "tenantid", "traceparent", "data"},
		"integration.created":                             {"integration"},
		"integration.created integration":                 integration,
		"integration.updated":                             {"integration"},
		"integration.updated integration":                 integration,
		"integration.deleted":                             {"id", "tenantId", "type", "name", "deletedAt"},
		"integration.health_checked":                      health,
		"integration.health_changed":                      append(slices.Clone(health), "previousStatus"),
		"scm.annotation.requested":                        {"integrationId", "operation", "repository", "pullRequest", "commitSha", "comment", "status", "checkRun"},
		"scm.annotation.requested repository":             {"owner", "name"},
		"scm.annotation.requested comment":                {"body", "key", "updateExisting"},
		"scm.annotation.requested status":                 {"state", "context", "description", "targetUrl"},
		"scm.annotation.requested checkRun":               {"name", "status", "conclusion", "externalId", "summary", "text", "annotations"},
		"scm.annotation.requested checkRun annotations[]": {"path", "startLine", "endLine", "level", "message", "title"},
		"scm.annotation.completed":                        {"requestId", "integrationId", "operation", "provider", "url", "externalId", "attempts"},
		"scm.annotation.failed":                           {"requestId", "integrationId", "operation", "provider", "errorClass", "error", "attempts", "deadLettered", "spooled"},
	}
	for key, fields := range want {
		path := strings.Fields(key)
		url := baseURL + fileOf(path[0])
		sch := load(t, url, "")
		for _, p := range path[1:] {
			p, items := strings.CutSuffix(p, "[]")
			url, sch = resolve(t, url, sch)
			sch = sch["properties"].(map[string]any)[p].(map[string]any)
			if items {
				sch = sch["items"].(map[string]any)
			}
		}
		_, sch = resolve(t, url, sch)
		var got []string
		for k := range sch["properties"].(map[string]any) {
			got = append(got, k)
		}
		slices.Sort(got)
		fields = slices.Sorted(slices.Values(fields))
		if !slices.Equal(got, fields) {
			t.Errorf("%s: properties %q, want %q", key, got, fields)
		}
		if sch["additionalProperties"] != false {
			t.Errorf("%s: not closed (additionalProperties is not false)", key)
		}
	}
}

// resolve follows a $ref, relative to the document at url.
func resolve(t *testing.T, url string, sch map[string]any) (string, map[string]any) {
	t.Helper()
	ref, ok := sch["$ref"].(string)
	if !ok {
		return url, sch
	}
	file, ptr, _ := strings.Cut(ref, "#")
	if file != "" {
		url = url[:strings.LastIndex(url, "/")+1] + file
		for strings.Contains(url, "/../") {
			i := strings.Index(url, "/../")
			j := strings.LastIndex(url[:i], "/")
			url = url[:j] + url[i+3:]
		}
	}
	return url, load(t, url, ptr)
}

func load(t *testing.T, url, ptr string) map[string]any {
	t.Helper()
	b, err := files.ReadFile(strings.TrimPrefix(url, baseURL))
	if err != nil {
		t.Fatalf("%s: %v", url, err)
	}
	var doc map[string]any
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	for _, tok := range strings.Split(strings.TrimPrefix(ptr, "/"), "/") {
		if tok != "" {
			doc = doc[tok].(map[string]any)
		}
	}
	return doc
}
