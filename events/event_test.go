package events_test

import (
	"encoding/json"
	"errors"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"inthub.dev/events"
	"inthub.dev/schemas"
)

const (
	integrationID = "0190f1c2-7a3b-7c4d-8e5f-0a1b2c3d4e5f"
	tenantID      = "5f0c7c3e-2d1a-4b6e-9f8a-7b6c5d4e3f2a"
	requestID     = "0190f1c2-0000-7000-8000-00000000abcd"
	sha           = "0123456789abcdef0123456789abcdef01234567"
	source        = "inthub/test"
)

var when = time.Date(2025, 3, 4, 5, 6, 7, 891234567, time.UTC)

func integration() events.Integration {
	return events.Integration{
		ID:           integrationID,
		TenantID:     tenantID,
		Type:         "scm.github",
		Name:         "acme <github> & co",
		Config:       json.RawMessage(`{"endpoint":"https://api.github.com","appId":42,"privateKey":"authref://vault/gh#key"}`),
		AuthRef:      "authref://vault/scm/github#privateKey",
		Status:       "active",
		HealthStatus: events.HealthHealthy,
		Version:      3,
		CreatedAt:    when.Add(-time.Hour),
		UpdatedAt:    when,
	}
}

func checkRunRequest() events.AnnotationRequested {
	return events.AnnotationRequested{
		IntegrationID: integrationID,
		Operation:     events.OpCheckRun,
		Repository:    events.Repository{Owner: "acme/platform", Name: "api"},
		PullRequest:   42,
		CommitSHA:     sha,
		CheckRun: &events.CheckRun{
			Name: "stellaops/scan", Status: "completed", Conclusion: "failure", ExternalID: "scan-1",
			Summary: "2 findings", Text: "details",
			Annotations: []events.Annotation{
				{Path: "go.mod", StartLine: 3, EndLine: 3, Level: "failure", Message: "CVE-2024-0001", Title: "critical"},
				{Path: "main.go", StartLine: 10, EndLine: 12, Level: "notice", Message: "m"},
			},
		},
	}
}

// payloadCase is a valid payload of every subject, with every optional
// field set somewhere, so that the round trip covers the whole contract.
type payloadCase struct {
	name    string
	subject string
	tenant  string
	payload events.Payload
	decoded func() events.Payload // a pointer to a zero value of the payload's type
	intID   string
}

func payloadCases() []payloadCase {
	updated := integration()
	updated.AuthRef = ""
	updated.Config = json.RawMessage(`{}`)
	updated.HealthStatus = events.HealthUnknown
	return []payloadCase{
		{"created", events.SubjectIntegrationCreated, tenantID,
			events.IntegrationCreated{Integration: integration()},
			func() events.Payload { return &events.IntegrationCreated{} }, integrationID},
		{"updated", events.SubjectIntegrationUpdated, tenantID,
			events.IntegrationUpdated{Integration: updated},
			func() events.Payload { return &events.IntegrationUpdated{} }, integrationID},
		{"deleted", events.SubjectIntegrationDeleted, tenantID,
			events.IntegrationDeleted{ID: integrationID, TenantID: tenantID, Type: "registry.harbor", Name: "h", DeletedAt: when},
			func() events.Payload { return &events.IntegrationDeleted{} }, integrationID},
		{"health_checked", events.SubjectIntegrationHealthChecked, tenantID,
			events.HealthChecked{IntegrationID: integrationID, TenantID: tenantID, Type: "test.inmemory",
				Status: events.HealthDegraded, LatencyMs: 1234, Message: "rate limit headroom 8%", CheckedAt: when},
			func() events.Payload { return &events.HealthChecked{} }, integrationID},
		{"health_changed", events.SubjectIntegrationHealthChanged, tenantID,
			events.HealthChanged{IntegrationID: integrationID, TenantID: tenantID, Type: "test.inmemory",
				Status: events.HealthUnhealthy, PreviousStatus: events.HealthHealthy, LatencyMs: 0, Message: "", CheckedAt: when},
			func() events.Payload { return &events.HealthChanged{} }, integrationID},
		{"requested_comment", events.SubjectAnnotationRequested, "",
			events.AnnotationRequested{IntegrationID: integrationID, Operation: events.OpComment,
				Repository: events.Repository{Owner: "acme", Name: "api"}, PullRequest: 42,
				Comment: &events.Comment{Body: "**3** findings <b>", Key: "stellaops-scan", UpdateExisting: true}},
			func() events.Payload { return &events.AnnotationRequested{} }, integrationID},
		{"requested_status", events.SubjectAnnotationRequested, tenantID,
			events.AnnotationRequested{IntegrationID: integrationID, Operation: events.OpStatus,
				Repository: events.Repository{Owner: "acme", Name: "api"}, CommitSHA: sha,
				Status: &events.CommitStatus{State: "pending", Context: "stellaops/scan", Description: "scanning", TargetURL: "https://scan.example/r/1?a=b&c=d"}},
			func() events.Payload { return &events.AnnotationRequested{} }, integrationID},
		{"requested_check_run", events.SubjectAnnotationRequested, tenantID, checkRunRequest(),
			func() events.Payload { return &events.AnnotationRequested{} }, integrationID},
		{"completed", events.SubjectAnnotationCompleted, tenantID,
			events.AnnotationCompleted{RequestID: requestID, IntegrationID: integrationID, Operation: events.OpComment,
				Provider: "github", URL: "https://github.com/acme/api/pull/42#issuecomment-1", ExternalID: "1", Attempts: 2},
			func() events.Payload { return &events.AnnotationCompleted{} }, integrationID},
		{"failed", events.SubjectAnnotationFailed, "",
			events.AnnotationFailed{RequestID: requestID, IntegrationID: integrationID, Operation: events.OpStatus,
				Provider: "gitlab", ErrorClass: "offline", Error: "dial tcp: connection refused", Attempts: 5, Spooled: true},
			func() events.Payload { return &events.AnnotationFailed{} }, integrationID},
		{"plugin_registered", events.SubjectPluginRegistered, "",
			events.PluginRegistered{PluginID: "quay", Type: "registry.quay", Version: "1.0.0", Capabilities: []string{"health", "repos"},
				Checksum: strings.Repeat("ab", 32), RegisteredAt: when},
			func() events.Payload { return &events.PluginRegistered{} }, ""},
		{"plugin_unregistered", events.SubjectPluginUnregistered, "",
			events.PluginUnregistered{PluginID: "quay", Type: "registry.quay", Version: "1.0.0",
				Checksum: strings.Repeat("ab", 32), UnregisteredAt: when},
			func() events.Payload { return &events.PluginUnregistered{} }, ""},
	}
}

func TestRoundTrip(t *testing.T) {
	for _, tt := range payloadCases() {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e, err := events.New(tt.subject, source, tt.tenant, tt.payload)
			if err != nil {
				t.Fatalf("New: %v", err)
			}
			if e.SpecVersion != "1.0" || e.DataContentType != "application/json" || e.Type != tt.subject ||
				e.Source != source || e.TenantID != tt.tenant || e.Time.Location() != time.UTC {
				t.Fatalf("New set the envelope wrong: %+v", e)
			}
			if err := e.Validate(); err != nil {
				t.Fatalf("Validate: %v", err)
			}
			b, err := e.Marshal()
			if err != nil {
				t.Fatalf("Marshal: %v", err)
			}
			got, err := events.Parse(b)
			if err != nil {
				t.Fatalf("Parse: %v\n%s", err, b)
			}
			if !reflect.DeepEqual(got, e) {
				t.Fatalf("Parse(Marshal(e)) = %+v, want %+v", got, e)
			}
			dst := tt.decoded()
			if err := got.Decode(dst); err != nil {
				t.Fatalf("Decode: %v", err)
			}
			if d := reflect.ValueOf(dst).Elem().Interface(); !reflect.DeepEqual(d, tt.payload) {
				t.Fatalf("Decode = %+v, want %+v", d, tt.payload)
			}
			if id := got.IntegrationID(); id != tt.intID {
				t.Errorf("IntegrationID = %q, want %q", id, tt.intID)
			}
		})
	}
}

// TestContractFields pins each payload's JSON field names to DESIGN §5,
// which other teams code against; the round trip above proves that the
// schemas accept them.
func TestContractFields(t *testing.T) {
	want := map[string][]string{
		"created":                      {"integration"},
		"created.integration":          {"id", "tenantId", "type", "name", "config", "authRef", "status", "healthStatus", "version", "createdAt", "updatedAt"},
		"deleted":                      {"id", "tenantId", "type", "name", "deletedAt"},
		"health_checked":               {"integrationId", "tenantId", "type", "status", "latencyMs", "message", "checkedAt"},
		"health_changed":               {"integrationId", "tenantId", "type", "status", "previousStatus", "latencyMs", "message", "checkedAt"},
		"requested_check_run":          {"integrationId", "operation", "repository", "pullRequest", "commitSha", "checkRun"},
		"requested_check_run.checkRun": {"name", "status", "conclusion", "externalId", "summary", "text", "annotations"},
		"requested_check_run.checkRun.annotations": {"path", "startLine", "endLine", "level", "message", "title"},
		"requested_check_run.repository":           {"owner", "name"},
		"requested_comment.comment":                {"body", "key", "updateExisting"},
		"requested_status.status":                  {"state", "context", "description", "targetUrl"},
		"completed":                                {"requestId", "integrationId", "operation", "provider", "url", "externalId", "attempts"},
		"failed":                                   {"requestId", "integrationId", "operation", "provider", "errorClass", "error", "attempts", "deadLettered", "spooled"},
	}
	byName := map[string]events.Payload{}
	for _, c := range payloadCases() {
		byName[c.name] = c.payload
	}
	for path, fields := range want {
		name, sub, _ := strings.Cut(path, ".")
		b, err := json.Marshal(byName[name])
		if err != nil {
			t.Fatal(err)
		}
		var obj any
		if err := json.Unmarshal(b, &obj); err != nil {
			t.Fatal(err)
		}
		for _, k := range strings.Split(sub, ".") {
			if k == "" {
				continue
			}
			obj = obj.(map[string]any)[k]
			if arr, ok := obj.([]any); ok {
				obj = arr[0]
			}
		}
		var got []string
		for k := range obj.(map[string]any) {
			got = append(got, k)
		}
		slices.Sort(got)
		fields = slices.Sorted(slices.Values(fields))
		if !slices.Equal(got, fields) {
			t.Errorf("%s: fields %q, want %q", path, got, fields)
		}
	}
}

func TestSubjects(t *testing.T) {
	v, err := events.Validator()
	if err != nil {
		t.Fatal(err)
	}
	subjects := events.Subjects()
	for _, s := range subjects {
		if !v.Has(s) {
			t.Errorf("subject %s has no schema", s)
		}
	}
	data := events.DataSubjects()
	for _, s := range data {
		if !v.Has(s) {
			t.Errorf("data subject %s has no schema", s)
		}
	}
	for _, n := range schemas.Names() {
		if n != "envelope" && !slices.Contains(subjects, n) && !slices.Contains(data, n) {
			t.Errorf("schema %s has no subject constant", n)
		}
	}
	seen := map[string]bool{}
	for _, c := range payloadCases() {
		seen[c.subject] = true
	}
	if len(seen) != len(subjects) {
		t.Errorf("round trip covers %d subjects, want %d", len(seen), len(subjects))
	}
}

// event returns a valid event of the given case as a generic JSON object,
// for a test to break.
func event(t *testing.T, name string) map[string]any {
	t.Helper()
	for _, c := range payloadCases() {
		if c.name != name {
			continue
		}
		e, err := events.New(c.subject, source, c.tenant, c.payload)
		if err != nil {
			t.Fatalf("New: %v", err)
		}
		b, err := e.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		var m map[string]any
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatal(err)
		}
		return m
	}
	t.Fatalf("no case %q", name)
	return nil
}

// at walks a dotted path ("data.checkRun.annotations.0") to its parent
// object or array and the last key.
func at(m map[string]any, path string) (parent any, key string) {
	keys := strings.Split(path, ".")
	var cur any = m
	for _, k := range keys[:len(keys)-1] {
		switch c := cur.(type) {
		case map[string]any:
			cur = c[k]
		case []any:
			i := int(k[0] - '0')
			cur = c[i]
		}
	}
	return cur, keys[len(keys)-1]
}

func set(path string, v any) func(map[string]any) {
	return func(m map[string]any) {
		p, k := at(m, path)
		p.(map[string]any)[k] = v
	}
}

func del(path string) func(map[string]any) {
	return func(m map[string]any) {
		p, k := at(m, path)
		delete(p.(map[string]any), k)
	}
}

func TestParseRejects(t *testing.T) {
	tests := []struct {
		name   string
		base   string               // a payloadCases name, or "" for raw
		change func(map[string]any) // applied to base
		raw    string               // the bytes, when base is ""
		field  string               // the exact Field expected
	}{
		{"missing required", "created", del("data.integration.tenantId"), "", "data.integration.tenantId"},
		{"missing deletedAt", "deleted", del("data.deletedAt"), "", "data.deletedAt"},
		{"bad health enum", "health_checked", set("data.status", "fine"), "", "data.status"},
		{"bad previous status", "health_changed", set("data.previousStatus", "sick"), "", "data.previousStatus"},
		{"no transition", "health_changed", set("data.previousStatus", "unhealthy"), "", "data.previousStatus"},
		{"bad uuid", "health_checked", set("data.integrationId", "not-a-uuid"), "", "data.integrationId"},
		{"uppercase uuid", "completed", set("data.requestId", strings.ToUpper(requestID)), "", "data.requestId"},
		{"nil uuid", "created", set("data.integration.id", "00000000-0000-0000-0000-000000000000"), "", "data.integration.id"},
		{"short sha", "requested_status", set("data.commitSha", "abc123"), "", "data.commitSha"},
		{"uppercase sha", "requested_check_run", set("data.commitSha", strings.ToUpper(sha)), "", "data.commitSha"},
		{"status op with comment", "requested_status", set("data.comment", map[string]any{"body": "x"}), "", "data.comment"},
		{"comment op with check run", "requested_comment", set("data.checkRun", map[string]any{"name": "x"}), "", "data.checkRun"},
		{"comment op without pullRequest", "requested_comment", del("data.pullRequest"), "", "data.pullRequest"},
		{"status op without commitSha", "requested_status", del("data.commitSha"), "", "data.commitSha"},
		{"check_run op without checkRun", "requested_check_run", del("data.checkRun"), "", "data.checkRun"},
		{"status without context", "requested_status", del("data.status.context"), "", "data.status.context"},
		{"bad status state", "requested_status", set("data.status.state", "ok"), "", "data.status.state"},
		{"bad annotation level", "requested_check_run", set("data.checkRun.annotations.0.level", "error"), "", "data.checkRun.annotations[0].level"},
		{"annotation line 0", "requested_check_run", set("data.checkRun.annotations.1.startLine", 0), "", "data.checkRun.annotations[1].startLine"},
		{"completed without conclusion", "requested_check_run", del("data.checkRun.conclusion"), "", "data.checkRun.conclusion"},
		{"conclusion while queued", "requested_check_run", set("data.checkRun.status", "queued"), "", "data.checkRun.status"},
		{"update without key", "requested_comment", del("data.comment.key"), "", "data.comment.key"},
		{"pullRequest 0", "requested_comment", set("data.pullRequest", 0), "", "data.pullRequest"},
		{"pullRequest not integer", "requested_comment", set("data.pullRequest", 4.5), "", "data.pullRequest"},
		{"target url not http", "requested_status", set("data.status.targetUrl", "javascript:alert(1)"), "", "data.status.targetUrl"},
		{"extra payload field", "created", set("data.integration.password", "hunter2"), "", "data.integration.password"},
		{"extra top-level field", "deleted", set("data.reason", "x"), "", "data.reason"},
		{"extra repository field", "requested_comment", set("data.repository.url", "x"), "", "data.repository.url"},
		{"wrong type latency", "health_checked", set("data.latencyMs", "12"), "", "data.latencyMs"},
		{"negative latency", "health_checked", set("data.latencyMs", -1), "", "data.latencyMs"},
		{"wrong type config", "created", set("data.integration.config", "endpoint=x"), "", "data.integration.config"},
		{"version 0", "updated", set("data.integration.version", 0), "", "data.integration.version"},
		{"bad integration type", "created", set("data.integration.type", "GitHub"), "", "data.integration.type"},
		{"clear secret in authRef", "created", set("data.integration.authRef", "ghp_0123456789abcdef"), "", "data.integration.authRef"},
		{"non-UTC payload time", "health_checked", set("data.checkedAt", "2025-03-04T07:06:07+02:00"), "", "data.checkedAt"},
		{"attempts 0 on completed", "completed", set("data.attempts", 0), "", "data.attempts"},
		{"bad error class", "failed", set("data.errorClass", "fatal"), "", "data.errorClass"},
		{"dead-lettered and spooled", "failed", set("data.deadLettered", true), "", "data.spooled"},
		{"wrong specversion", "deleted", set("specversion", "0.3"), "", "specversion"},
		{"non-UTC time", "deleted", set("time", "2025-03-04T07:06:07+02:00"), "", "time"},
		{"bad time", "deleted", set("time", "yesterday"), "", "time"},
		{"leap second", "deleted", set("time", "2016-12-31T23:59:60Z"), "", "time"},
		{"empty id", "deleted", set("id", ""), "", "id"},
		{"missing id", "deleted", del("id"), "", "id"},
		{"empty source", "deleted", set("source", ""), "", "source"},
		{"wildcard type", "deleted", set("type", "integration.*"), "", "type"},
		{"bad content type", "deleted", set("datacontenttype", "text/plain"), "", "datacontenttype"},
		{"bad traceparent", "deleted", set("traceparent", "xyz"), "", "traceparent"},
		{"bad tenant id", "requested_comment", set("tenantid", "acme"), "", "tenantid"},
		{"unknown envelope attribute", "deleted", set("subject", "x"), "", "subject"},
		{"case-folded attribute", "deleted", set("ID", integrationID), "", "ID"},
		{"missing data", "deleted", del("data"), "", "data"},
		{"data not an object", "deleted", set("data", []any{}), "", "data"},
		{"type not matching data", "created", set("type", events.SubjectIntegrationDeleted), "", "data.deletedAt"},
		{"tenant differs from payload", "health_checked", set("tenantid", requestID), "", "tenantid"},
		{"tenant missing", "created", del("tenantid"), "", "tenantid"},
		{"not JSON", "", nil, `{"specversion":"1.0",`, ""},
		{"trailing data", "", nil, `{} {}`, ""},
		{"not an object", "", nil, `"event"`, ""},
		{"empty", "", nil, ``, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := []byte(tt.raw)
			if tt.base != "" {
				m := event(t, tt.base)
				tt.change(m)
				var err error
				if b, err = json.Marshal(m); err != nil {
					t.Fatal(err)
				}
			}
			_, err := events.Parse(b)
			var ve *events.ValidationError
			if !errors.As(err, &ve) {
				t.Fatalf("Parse error = %v (%T), want *ValidationError", err, err)
			}
			if ve.Field != tt.field {
				t.Fatalf("Field = %q, want %q (error: %v; all: %v)", ve.Field, tt.field, err, errors.Unwrap(err))
			}
			if ve.Reason == "" {
				t.Fatal("empty Reason")
			}
			if strings.Contains(err.Error(), "ghp_") || strings.Contains(err.Error(), "hunter2") {
				t.Fatalf("error echoes a secret: %v", err)
			}
		})
	}
}

func TestNewRejects(t *testing.T) {
	deleted := payloadCases()[2].payload
	badTime := events.IntegrationDeleted{ID: integrationID, TenantID: tenantID, Type: "scm.github", Name: "n",
		DeletedAt: when.In(time.FixedZone("CET", 3600))}
	tests := []struct {
		name        string
		typ, tenant string
		data        any
		field       string
	}{
		{"payload of another subject", events.SubjectIntegrationCreated, tenantID, deleted, "type"},
		{"local payload time", events.SubjectIntegrationDeleted, tenantID, badTime, "data.deletedAt"},
		{"zero payload", events.SubjectIntegrationHealthChecked, tenantID, events.HealthChecked{}, "data.checkedAt"},
		{"bytes", events.SubjectIntegrationDeleted, tenantID, []byte(`{}`), "data"},
		{"raw JSON of wrong shape", events.SubjectAnnotationCompleted, "", json.RawMessage(`{"requestId":1}`), "data.attempts"},
		{"raw non-JSON", "x.y", "", json.RawMessage(`{`), "data"},
		{"not encodable", "x.y", "", map[string]any{"c": make(chan int)}, "data"},
		{"bad type", "Integration Created", tenantID, json.RawMessage(`{}`), "type"},
		{"bad tenant", events.SubjectAnnotationCompleted, "tenant-1", json.RawMessage(`{}`), "tenantid"},
		{"empty source", "x.y", "", json.RawMessage(`{}`), "source"},
		{"nil payload pointer", events.SubjectIntegrationDeleted, tenantID, (*events.IntegrationDeleted)(nil), "data"},
		{"nil", events.SubjectIntegrationDeleted, tenantID, nil, "data"},
		{"payload pointer of another subject", events.SubjectIntegrationUpdated, tenantID, &events.IntegrationCreated{}, "type"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := source
			if tt.field == "source" {
				src = ""
			}
			_, err := events.New(tt.typ, src, tt.tenant, tt.data)
			var ve *events.ValidationError
			if !errors.As(err, &ve) || ve.Field != tt.field {
				t.Fatalf("New error = %v, want a *ValidationError on %q", err, tt.field)
			}
		})
	}
}

func TestValidateAfterChange(t *testing.T) {
	e, err := events.New(events.SubjectIntegrationDeleted, source, tenantID, payloadCases()[2].payload)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		change func(*events.Event)
		field  string
	}{
		{"local time", func(e *events.Event) { e.Time = e.Time.In(time.FixedZone("X", -3600)) }, "time"},
		{"year 10000", func(e *events.Event) { e.Time = time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC) }, "time"},
		{"nil data", func(e *events.Event) { e.Data = nil }, "data"},
		{"broken data", func(e *events.Event) { e.Data = json.RawMessage(`{"id":`) }, "data"},
		{"trace parent", func(e *events.Event) { e.TraceParent = "00-abc" }, "traceparent"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := e
			tt.change(&c)
			var ve *events.ValidationError
			if err := c.Validate(); !errors.As(err, &ve) || ve.Field != tt.field {
				t.Fatalf("Validate = %v, want a *ValidationError on %q", err, tt.field)
			}
		})
	}
	e.TraceParent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	if err := e.Validate(); err != nil {
		t.Fatalf("Validate with a trace parent: %v", err)
	}
}

func TestUnknownTypeIsEnvelopeOnly(t *testing.T) {
	data := json.RawMessage(`{"anything":{"goes":[1,2.5,"x"]},"big":12345678901234567890}`)
	e, err := events.New("event.canonical.push", "inthub/enrichment", "", data)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	b, _ := e.Marshal()
	got, err := events.Parse(b)
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if string(got.Data) != string(data) {
		t.Fatalf("data = %s, want it unchanged: %s", got.Data, data)
	}
	if id := got.IntegrationID(); id != "" {
		t.Fatalf("IntegrationID = %q, want empty", id)
	}
}

func TestDecodeRejects(t *testing.T) {
	created, err := events.New(events.SubjectIntegrationCreated, source, tenantID, payloadCases()[0].payload)
	if err != nil {
		t.Fatal(err)
	}
	other := events.Event{Type: "x.y", Data: json.RawMessage(`{"a":"s","b":2}`)}
	var into struct {
		A int `json:"a"`
	}
	tests := []struct {
		name  string
		e     events.Event
		v     any
		field string
	}{
		{"payload of another subject", created, &events.IntegrationUpdated{}, "type"},
		{"wrong Go type", other, &into, "data.a"},
		{"unknown field", events.Event{Type: "x.y", Data: json.RawMessage(`{"a":1,"b":2}`)}, &into, "data.b"},
		{"nested type", events.Event{Type: "x.y", Data: json.RawMessage(`{"integration":{"version":3}}`)}, &struct {
			Integration struct {
				Version string `json:"version"`
			} `json:"integration"`
		}{}, "data.integration.version"},
		{"trailing data", events.Event{Type: "x.y", Data: json.RawMessage(`{"a":1} {}`)}, &into, "data"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var ve *events.ValidationError
			if err := tt.e.Decode(tt.v); !errors.As(err, &ve) || ve.Field != tt.field {
				t.Fatalf("Decode = %v, want a *ValidationError on %q", err, tt.field)
			}
		})
	}
	var notPtr events.IntegrationCreated
	if err := created.Decode(notPtr); err == nil {
		t.Fatal("Decode into a non-pointer succeeded")
	}
	if err := created.Decode((*events.IntegrationCreated)(nil)); err == nil {
		t.Fatal("Decode into a nil pointer succeeded")
	}
}

func TestValidationError(t *testing.T) {
	m := event(t, "requested_check_run")
	set("data.checkRun.annotations.0.level", "bad")(m)
	set("data.checkRun.annotations.1.startLine", 0)(m)
	b, _ := json.Marshal(m)
	_, err := events.Parse(b)
	const want = `data.checkRun.annotations[0].level: value must be one of "notice", "warning", "failure"`
	if err == nil || err.Error() != want {
		t.Fatalf("Error() = %v, want %s", err, want)
	}
	// Every violation stays reachable, rooted like the first.
	var all schemas.FieldErrors
	if !errors.As(err, &all) || len(all) != 2 || all[1].Field != "data.checkRun.annotations[1].startLine" {
		t.Fatalf("violations = %v", all)
	}
	if got := (&events.ValidationError{Reason: "not JSON"}).Error(); got != "not JSON" {
		t.Fatalf("Error() without field = %q", got)
	}
}

func TestIntegrationID(t *testing.T) {
	tests := []struct {
		typ, data, want string
	}{
		{events.SubjectIntegrationDeleted, `{"id":"a"}`, "a"},
		{events.SubjectIntegrationCreated, `{"id":"a"}`, ""},
		{events.SubjectIntegrationUpdated, `{"integration":{"id":"b"}}`, "b"},
		{"x.y", `{"integrationId":"c","integration":{"id":"b"}}`, "c"},
		{"x.y", `{"integrationId":7,"integration":{"id":"b"}}`, "b"},
		{"x.y", `{"integrationId":"c"`, ""},
		{"x.y", ``, ""},
	}
	for _, tt := range tests {
		e := events.Event{Type: tt.typ, Data: json.RawMessage(tt.data)}
		if got := e.IntegrationID(); got != tt.want {
			t.Errorf("IntegrationID(%s %s) = %q, want %q", tt.typ, tt.data, got, tt.want)
		}
	}
}

func TestNewIDsAreTimeOrdered(t *testing.T) {
	p := payloadCases()[3].payload
	var prev string
	for range 100 {
		e, err := events.New(events.SubjectIntegrationHealthChecked, source, tenantID, p)
		if err != nil {
			t.Fatal(err)
		}
		if e.ID <= prev {
			t.Fatalf("id %s not after %s", e.ID, prev)
		}
		if e.ID[14] != '7' {
			t.Fatalf("id %s is not a UUIDv7", e.ID)
		}
		if e.Time != e.Time.Truncate(time.Millisecond) {
			t.Fatalf("time %v has sub-millisecond digits", e.Time)
		}
		prev = e.ID
	}
}

// The validator is shared by the whole process; -race checks that it is
// safe to use from many goroutines at once.
func TestConcurrentUse(t *testing.T) {
	var wg sync.WaitGroup
	for _, c := range payloadCases() {
		wg.Go(func() {
			for range 20 {
				e, err := events.New(c.subject, source, c.tenant, c.payload)
				if err != nil {
					t.Error(err)
					return
				}
				b, _ := e.Marshal()
				if _, err := events.Parse(b); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
}
