package api

import (
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/google/uuid"
)

// secretValue is a credential pasted where it does not belong; no answer
// may contain it.
const secretValue = "hunter2-Sup3rS3cret-value"

func withConfig(base map[string]any, set map[string]any) map[string]any {
	out := maps.Clone(base)
	cfg := maps.Clone(base["config"].(map[string]any))
	for k, v := range set {
		if v == nil {
			delete(cfg, k)
			continue
		}
		cfg[k] = v
	}
	out["config"] = cfg
	return out
}

func with(base map[string]any, k string, v any) map[string]any {
	out := maps.Clone(base)
	out[k] = v
	return out
}

func TestBadInput(t *testing.T) {
	e := newEnv(t)
	c := e.newCaller()
	existing := e.create(c, harborInput("taken"))
	ghToken := "ghp_" + strings.Repeat("aB3", 12)

	cases := []struct {
		name     string
		method   string
		path     string
		body     any
		headers  []string
		status   int
		location string
		secret   string // must not appear in the answer
	}{
		{name: "unknown type", body: with(memInput("a"), "type", "nope.nothing"),
			status: 422, location: "body.type"},
		{name: "schema-invalid config", body: withConfig(memInput("a"), map[string]any{"latencyMs": -5}),
			status: 422, location: "body.config.latencyMs"},
		{name: "unknown config field", body: withConfig(memInput("a"), map[string]any{"bogus": 1}),
			status: 422, location: "body.config.bogus"},
		{name: "missing required config field", body: withConfig(harborInput("a"), map[string]any{"username": nil}),
			status: 422, location: "body.config.username"},
		{name: "secret in clear in an x-secret field", body: withConfig(harborInput("a"), map[string]any{"password": secretValue}),
			status: 422, location: "body.config.password", secret: secretValue},
		{name: "secret-shaped value in another field", body: withConfig(harborInput("a"), map[string]any{"project": ghToken}),
			status: 422, location: "body.config.project", secret: ghToken},
		{name: "bad AuthRef", body: with(harborInput("a"), "authRef", "authref://vault/../etc/"+secretValue),
			status: 422, location: "body.authRef", secret: secretValue},
		{name: "bad AuthRef in an x-secret field", body: withConfig(harborInput("a"), map[string]any{"password": "authref://nowhere/" + secretValue}),
			status: 422, location: "body.config.password", secret: secretValue},
		{name: "egress-denied endpoint: private", body: withConfig(harborInput("a"), map[string]any{"endpoint": "https://internal.example.com"}),
			status: 422, location: "body.config.endpoint"},
		{name: "egress-denied endpoint: metadata", body: withConfig(harborInput("a"), map[string]any{"endpoint": "https://169.254.169.254/latest"}),
			status: 422, location: "body.config.endpoint"},
		{name: "egress-denied endpoint: loopback", body: withConfig(harborInput("a"), map[string]any{"endpoint": "https://[::ffff:127.0.0.1]/"}),
			status: 422, location: "body.config.endpoint"},
		{name: "egress-denied endpoint: credentials in URL", body: withConfig(harborInput("a"), map[string]any{"endpoint": "https://robot:" + secretValue + "@harbor.example.com"}),
			status: 422, location: "body.config.endpoint", secret: secretValue},
		{name: "duplicate name", body: harborInput("taken"),
			status: 409, location: "body.name"},
		{name: "stale If-Match", method: http.MethodPut, path: "/api/v1/integrations/" + existing.ID,
			body: harborInput("taken"), headers: []string{"If-Match", `"7"`}, status: 412, location: "header.If-Match"},
		{name: "stale If-Match on delete", method: http.MethodDelete, path: "/api/v1/integrations/" + existing.ID,
			headers: []string{"If-Match", `"7"`}, status: 412, location: "header.If-Match"},
		{name: "malformed If-Match", method: http.MethodPut, path: "/api/v1/integrations/" + existing.ID,
			body: harborInput("taken"), headers: []string{"If-Match", "7"}, status: 400, location: "header.If-Match"},
		{name: "type change", method: http.MethodPut, path: "/api/v1/integrations/" + existing.ID,
			body: memInput("taken"), status: 409, location: "body.type"},
		{name: "bad cursor", method: http.MethodGet, path: "/api/v1/integrations?cursor=not-a-cursor",
			status: 400, location: "query.cursor"},
		{name: "bad cursor on health", method: http.MethodGet, path: "/api/v1/integrations/" + existing.ID + "/health?cursor=%21%21",
			status: 400, location: "query.cursor"},
		{name: "limit out of range", method: http.MethodGet, path: "/api/v1/integrations?limit=100000",
			status: 422, location: "query.limit"},
		{name: "unknown type filter", method: http.MethodGet, path: "/api/v1/integrations?type=nope.nothing",
			status: 422, location: "query.type"},
		{name: "unknown type for by-type", method: http.MethodGet, path: "/api/v1/integrations/by-type/nope.nothing",
			status: 404, location: "path.type"},
		{name: "upper-case duplicate key", body: `{"type":"test.inmemory","name":"abc","NAME":"z"}`,
			status: 422, location: "body.NAME"},
		{name: "upper-case key alone", body: `{"type":"test.inmemory","NAME":"z"}`,
			status: 422, location: "body.NAME"},
		{name: "unknown body field", body: `{"type":"test.inmemory","name":"abc","tenantId":"` + uuid.NewString() + `"}`,
			status: 422, location: "body.tenantId"},
		{name: "malformed JSON with a secret", body: `{"type":"registry.harbor","name":"x","config":{"password":"` + secretValue + `"`,
			status: 400, location: "body", secret: secretValue},
		{name: "wrong JSON type with a secret", body: `{"type":"registry.harbor","name":["` + secretValue + `"]}`,
			status: 422, location: "body.name", secret: secretValue},
		{name: "name too long", body: with(memInput("a"), "name", strings.Repeat("n", 201)),
			status: 422, location: "body.name"},
		{name: "profile with a secret in clear", path: "/api/v1/connection-profiles",
			body:   map[string]any{"name": "p", "integrationType": typeHarbor, "defaultConfig": map[string]any{"password": secretValue}},
			status: 422, location: "body.defaultConfig.password", secret: secretValue},
		{name: "profile of an unknown type", path: "/api/v1/connection-profiles",
			body:   map[string]any{"name": "p", "integrationType": "nope.nothing"},
			status: 422, location: "body.integrationType"},
		{name: "defaults of an unknown type", method: http.MethodGet, path: "/api/v1/connection-profiles/defaults?type=nope.nothing",
			status: 422, location: "query.type"},
		{name: "body too large", body: with(memInput("a"), "name", strings.Repeat(secretValue, 12000)),
			status: 413, location: "", secret: secretValue},
		{name: "not JSON", body: "name=" + secretValue, headers: []string{"Content-Type", "text/plain"},
			status: 415, location: "body", secret: secretValue},
		{name: "idempotency key too long", body: memInput("a"), headers: []string{"Idempotency-Key", strings.Repeat("k", 256)},
			status: 422, location: "header.Idempotency-Key"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			method, path := tc.method, tc.path
			if method == "" {
				method = http.MethodPost
			}
			if path == "" {
				path = "/api/v1/integrations"
			}
			r := e.do(c, method, path, tc.body, tc.headers...)
			want(t, r, tc.status)
			p := r.problem(t)
			if tc.location != "" && !slices.Contains(p.locations(), tc.location) {
				t.Errorf("locations %q, want %q: %s", p.locations(), tc.location, r.Body)
			}
			for _, d := range p.Errors {
				if d.Value != nil {
					t.Errorf("error detail echoes a value: %s", r.Body)
				}
			}
			if tc.secret != "" && strings.Contains(string(r.Body), tc.secret) {
				t.Errorf("answer contains the secret: %s", r.Body)
			}
		})
	}

	// No refused request wrote anything: only the first integration exists,
	// unchanged.
	r := e.do(c, http.MethodGet, "/api/v1/integrations", nil)
	want(t, r, http.StatusOK)
	var list IntegrationList
	r.decode(t, &list)
	if len(list.Items) != 1 || list.Items[0].ID != existing.ID || list.Items[0].Version != 1 {
		t.Errorf("after refused requests: %+v", list.Items)
	}
	if n := countRows(t, e, `SELECT count(*) FROM connection_profiles`); n != 0 {
		t.Errorf("%d profiles written by refused requests", n)
	}
}

// TestMalformedIDIsNotFound: an id that is not a UUID names no row, and
// is answered like a missing one on every route that takes an id.
func TestMalformedIDIsNotFound(t *testing.T) {
	e := newEnv(t)
	c := e.newCaller()
	for _, id := range []string{"not-a-uuid", "1", "00000000-0000-0000-0000-00000000000g", strings.ToUpper(uuid.NewString())} {
		for _, req := range []struct {
			method, path string
			body         any
		}{
			{http.MethodGet, "/api/v1/integrations/" + id, nil},
			{http.MethodPut, "/api/v1/integrations/" + id, memInput("x")},
			{http.MethodDelete, "/api/v1/integrations/" + id, nil},
			{http.MethodGet, "/api/v1/integrations/" + id + "/health", nil},
			{http.MethodGet, "/api/v1/connection-profiles/" + id, nil},
			{http.MethodPut, "/api/v1/connection-profiles/" + id, map[string]any{"name": "p", "integrationType": typeMem}},
			{http.MethodDelete, "/api/v1/connection-profiles/" + id, nil},
			{http.MethodGet, "/api/v1/integration-types/" + id, nil},
		} {
			t.Run(fmt.Sprintf("%s %s", req.method, req.path), func(t *testing.T) {
				r := e.do(c, req.method, req.path, req.body)
				want(t, r, http.StatusNotFound)
				r.problem(t)
			})
		}
	}
}

func countRows(tb testing.TB, e *env, q string, args ...any) int {
	tb.Helper()
	var n int
	if err := e.owner.QueryRow(tb.Context(), q, args...).Scan(&n); err != nil {
		tb.Fatal(err)
	}
	return n
}
