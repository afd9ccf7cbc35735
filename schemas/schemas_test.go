package schemas_test

import (
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"

	"inthub.dev/schemas"
)

const (
	uuidA = "0190f1c2-7a3b-7c4d-8e5f-0a1b2c3d4e5f"
	uuidB = "5f0c7c3e-2d1a-4b6e-9f8a-7b6c5d4e3f2a"
	sha   = "0123456789abcdef0123456789abcdef01234567"
)

func validator(tb testing.TB) *schemas.Validator {
	tb.Helper()
	v, err := schemas.New()
	if err != nil {
		tb.Fatalf("New: %v", err)
	}
	return v
}

func TestNames(t *testing.T) {
	want := []string{
		"enrichment.requested",
		"envelope",
		"event.canonical.delivery",
		"event.canonical.security",
		"event.canonical.system",
		"event.enriched",
		"ingest.cloudwatch.alarm",
		"ingest.cloudwatch.metric",
		"ingest.github.deployment",
		"ingest.github.deployment_status",
		"ingest.github.pull_request",
		"ingest.github.push",
		"ingest.github.release",
		"ingest.gitlab.deployment",
		"ingest.gitlab.merge_request",
		"ingest.gitlab.push",
		"ingest.gitlab.release",
		"integration.created",
		"integration.deleted",
		"integration.health_changed",
		"integration.health_checked",
		"integration.updated",
		"plugin.registered",
		"plugin.unregistered",
		"scm.annotation.completed",
		"scm.annotation.failed",
		"scm.annotation.requested",
	}
	if got := schemas.Names(); !slices.Equal(got, want) {
		t.Fatalf("Names() = %q, want %q", got, want)
	}
	v := validator(t)
	for _, n := range want {
		if !v.Has(n) {
			t.Errorf("Has(%q) = false", n)
		}
	}
	if v.Has("common") || v.Has("integration.nope") {
		t.Error("Has reports a name that is not a payload schema")
	}
}

// The $id of each file must match its path, or relative $refs resolve to
// schemas that do not exist and a rename would go unnoticed.
func TestSourceIDs(t *testing.T) {
	for _, n := range schemas.Names() {
		b, err := schemas.Source(n)
		if err != nil {
			t.Fatalf("Source(%q): %v", n, err)
		}
		var doc struct {
			Schema string `json:"$schema"`
			ID     string `json:"$id"`
		}
		if err := json.Unmarshal(b, &doc); err != nil {
			t.Fatalf("%s: %v", n, err)
		}
		if want := "https://inthub.dev/schemas/events/" + n + ".json"; doc.ID != want {
			t.Errorf("%s: $id = %q, want %q", n, doc.ID, want)
		}
		if doc.Schema != "https://json-schema.org/draft/2020-12/schema" {
			t.Errorf("%s: $schema = %q", n, doc.Schema)
		}
	}
	if _, err := schemas.Source("nope"); !errors.Is(err, schemas.ErrUnknownSchema) {
		t.Errorf("Source(nope) error = %v, want ErrUnknownSchema", err)
	}
}

var integration = `{"id":"` + uuidA + `","tenantId":"` + uuidB + `","type":"scm.github","name":"acme github",
	"config":{"endpoint":"https://api.github.com","appId":42},"authRef":"authref://vault/scm/github#privateKey",
	"status":"active","healthStatus":"healthy","version":3,
	"createdAt":"2025-01-02T03:04:05Z","updatedAt":"2025-01-02T03:04:05.123456789Z"}`

func TestValidSamples(t *testing.T) {
	v := validator(t)
	tests := []struct{ name, doc string }{
		{"envelope", `{"specversion":"1.0","id":"` + uuidA + `","source":"inthub/catalog","type":"integration.created",
			"time":"2025-01-02T03:04:05.678Z","datacontenttype":"application/json","tenantid":"` + uuidB + `",
			"traceparent":"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01","data":{}}`},
		{"envelope", `{"specversion":"1.0","id":"` + uuidA + `","source":"urn:scanner","type":"event.canonical.push",
			"time":"2025-01-02T03:04:05Z","datacontenttype":"application/json","data":{"anything":[1,2]}}`},
		{"integration.created", `{"integration":` + integration + `}`},
		{"integration.updated", `{"integration":` + strings.Replace(integration, `"authRef":"authref://vault/scm/github#privateKey",`, "", 1) + `}`},
		{"integration.deleted", `{"id":"` + uuidA + `","tenantId":"` + uuidB + `","type":"registry.harbor","name":"h","deletedAt":"2025-01-02T03:04:05Z"}`},
		{"integration.health_checked", `{"integrationId":"` + uuidA + `","tenantId":"` + uuidB + `","type":"test.inmemory",
			"status":"degraded","latencyMs":0,"message":"","checkedAt":"2025-01-02T03:04:05Z"}`},
		{"integration.health_changed", `{"integrationId":"` + uuidA + `","tenantId":"` + uuidB + `","type":"test.inmemory",
			"status":"healthy","previousStatus":"unhealthy","latencyMs":12,"message":"ok","checkedAt":"2025-01-02T03:04:05Z"}`},
		{"scm.annotation.requested", `{"integrationId":"` + uuidA + `","operation":"comment","repository":{"owner":"acme/platform","name":"api"},
			"pullRequest":42,"comment":{"body":"3 findings","key":"stellaops-scan","updateExisting":true}}`},
		{"scm.annotation.requested", `{"integrationId":"` + uuidA + `","operation":"status","repository":{"owner":"acme","name":"api"},
			"commitSha":"` + sha + `","status":{"state":"success","context":"stellaops/scan","description":"ok","targetUrl":"https://scan.example/r/1"}}`},
		{"scm.annotation.requested", `{"integrationId":"` + uuidA + `","operation":"check_run","repository":{"owner":"acme","name":"api"},
			"commitSha":"` + sha + `","pullRequest":7,"checkRun":{"name":"scan","status":"completed","conclusion":"failure","externalId":"r1",
			"summary":"s","text":"t","annotations":[{"path":"go.mod","startLine":3,"endLine":3,"level":"warning","message":"m","title":"CVE"}]}}`},
		{"scm.annotation.requested", `{"integrationId":"` + uuidA + `","operation":"check_run","repository":{"owner":"acme","name":"api"},
			"commitSha":"` + sha + `","checkRun":{"name":"scan","status":"in_progress"}}`},
		{"scm.annotation.completed", `{"requestId":"` + uuidB + `","integrationId":"` + uuidA + `","operation":"status","provider":"github",
			"url":"https://github.com/acme/api/commit/` + sha + `","externalId":"123","attempts":1}`},
		{"scm.annotation.failed", `{"requestId":"` + uuidB + `","integrationId":"` + uuidA + `","operation":"comment","provider":"gitlab",
			"errorClass":"permanent","error":"404 project not found","attempts":1,"deadLettered":true,"spooled":false}`},
	}
	tests = append(tests,
		struct{ name, doc string }{"plugin.registered", `{"pluginId":"quay","type":"registry.quay","version":"1.0.0","capabilities":["health"],
			"checksum":"` + strings.Repeat("0a", 32) + `","registeredAt":"2025-01-02T03:04:05Z"}`},
		struct{ name, doc string }{"plugin.unregistered", `{"pluginId":"quay","type":"registry.quay","version":"1.0.0",
			"checksum":"` + strings.Repeat("0a", 32) + `","unregisteredAt":"2025-01-02T03:04:05Z"}`})
	tests = append(tests, dataSamples()...)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := v.ValidateJSON(tt.name, []byte(tt.doc)); err != nil {
				t.Fatalf("ValidateJSON: %v", err)
			}
		})
	}
	seen := map[string]bool{}
	for _, tt := range tests {
		seen[tt.name] = true
	}
	for _, n := range schemas.Names() {
		if !seen[n] {
			t.Errorf("no valid sample for %s", n)
		}
	}
}

func TestInvalid(t *testing.T) {
	v := validator(t)
	tests := []struct {
		schema, doc string
		field       string // of the first FieldError
		reason      string // a substring of it
	}{
		{"integration.deleted", `{"id":"` + uuidA + `","tenantId":"` + uuidB + `","type":"scm.github","name":"n"}`,
			"deletedAt", "required"},
		{"integration.created", `{"integration":` + strings.Replace(integration, `"status":"active",`, "", 1) + `}`,
			"integration.status", "required"},
		{"integration.created", `{"integration":` + strings.Replace(integration, `authref://vault/`, "ghp_s3cr3t/", 1) + `}`,
			"integration.authRef", "AuthRef URI"},
		{"integration.created", `{"integration":` + strings.Replace(integration, `"version":3`, `"version":0`, 1) + `}`,
			"integration.version", ">= 1"},
		{"integration.health_checked", `{"integrationId":"` + strings.ToUpper(uuidA) + `","tenantId":"` + uuidB + `","type":"test.inmemory",
			"status":"healthy","latencyMs":1,"message":"","checkedAt":"2025-01-02T03:04:05Z"}`, "integrationId", "lowercase"},
		{"integration.health_checked", `{"integrationId":"` + uuidA + `","tenantId":"` + uuidB + `","type":"test.inmemory",
			"status":"fine","latencyMs":1,"message":"","checkedAt":"2025-01-02T03:04:05Z"}`, "status", `one of "healthy", "degraded", "unhealthy", "unknown"`},
		{"integration.health_checked", `{"integrationId":"` + uuidA + `","tenantId":"` + uuidB + `","type":"test.inmemory",
			"status":"healthy","latencyMs":1.5,"message":"","checkedAt":"2025-01-02T03:04:05Z"}`, "latencyMs", "must be integer"},
		{"integration.health_changed", `{"integrationId":"` + uuidA + `","tenantId":"` + uuidB + `","type":"test.inmemory",
			"status":"unknown","previousStatus":"unknown","latencyMs":1,"message":"","checkedAt":"2025-01-02T03:04:05Z"}`, "previousStatus", "differ"},
		{"scm.annotation.requested", `{"integrationId":"` + uuidA + `","operation":"status","repository":{"owner":"a","name":"b"},
			"commitSha":"` + sha + `","status":{"state":"success"}}`, "status.context", "required"},
		{"scm.annotation.requested", `{"integrationId":"` + uuidA + `","operation":"check_run","repository":{"owner":"a","name":"b"},
			"commitSha":"` + sha + `","checkRun":{"name":"n","annotations":[{"path":"p","startLine":1,"endLine":1,"level":"error","message":"m"}]}}`,
			"checkRun.annotations[0].level", `value must be one of "notice", "warning", "failure"`},
		{"scm.annotation.requested", `{"integrationId":"` + uuidA + `","operation":"comment","repository":{"owner":"a","name":"b"},
			"comment":{"body":"x"}}`, "pullRequest", "required"},
		{"scm.annotation.requested", `{"integrationId":"` + uuidA + `","operation":"comment","repository":{"owner":"a","name":"b"},
			"pullRequest":1,"comment":{"body":"x"},"status":{"state":"success","context":"c"}}`, "status", `not allowed when operation is "comment"`},
		{"scm.annotation.failed", `{"requestId":"` + uuidB + `","integrationId":"` + uuidA + `","operation":"comment","provider":"gitlab",
			"errorClass":"offline","error":"x","attempts":1,"deadLettered":true,"spooled":true}`, "spooled", "one place"},
		{"envelope", `{"specversion":"0.3","id":"` + uuidA + `","source":"s","type":"a.b","time":"2025-01-02T03:04:05Z",
			"datacontenttype":"application/json","data":{}}`, "specversion", `value must be "1.0"`},
		{"envelope", `[]`, "", "must be object, got array"},
		{"envelope", `{"specversion":"1.0"`, "", "invalid JSON"},
	}
	for _, tt := range tests {
		t.Run(tt.schema+"/"+tt.field, func(t *testing.T) {
			err := v.ValidateJSON(tt.schema, []byte(tt.doc))
			var fe *schemas.FieldError
			if !errors.As(err, &fe) {
				t.Fatalf("error %v (%T) is not a *FieldError", err, err)
			}
			if fe.Field != tt.field || !strings.Contains(fe.Reason, tt.reason) {
				t.Fatalf("first error = %q, want field %q with reason containing %q (all: %v)", fe.Error(), tt.field, tt.reason, err)
			}
			if strings.Contains(err.Error(), "s3cr3t") {
				t.Fatalf("error echoes the offending value: %v", err)
			}
		})
	}
}

func TestValidateGoValue(t *testing.T) {
	v := validator(t)
	type repo struct {
		Owner string `json:"owner"`
		Name  string `json:"name"`
	}
	req := struct {
		IntegrationID string `json:"integrationId"`
		Operation     string `json:"operation"`
		Repository    repo   `json:"repository"`
	}{uuidA, "status", repo{"a", "b"}}
	err := v.Validate("scm.annotation.requested", req)
	var fes schemas.FieldErrors
	if !errors.As(err, &fes) || len(fes) != 2 || fes[0].Field != "commitSha" || fes[1].Field != "status" {
		t.Fatalf("Validate = %v, want commitSha and status required", err)
	}
}

func TestUnknownSchema(t *testing.T) {
	v := validator(t)
	if err := v.Validate("integration.nope", map[string]any{}); !errors.Is(err, schemas.ErrUnknownSchema) {
		t.Errorf("Validate: %v, want ErrUnknownSchema", err)
	}
	if err := v.ValidateJSON("integration.nope", []byte(`{}`)); !errors.Is(err, schemas.ErrUnknownSchema) {
		t.Errorf("ValidateJSON: %v, want ErrUnknownSchema", err)
	}
}
