package api

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"

	"inthub.dev/events"
	"inthub.dev/pkg/authref"
	"inthub.dev/pkg/connectors"
	_ "inthub.dev/pkg/connectors/builtin" // the providers the catalog ships
	"inthub.dev/pkg/connectors/connect"
	"inthub.dev/pkg/egress"
	"inthub.dev/pkg/pgtest"
	"inthub.dev/schemas"
	"inthub.dev/services/catalog/auth"
	"inthub.dev/services/catalog/configcheck"
	"inthub.dev/services/catalog/secretaudit"
	"inthub.dev/services/catalog/store"
)

const (
	typeOCI = "registry.oci"
	// typeUnloaded is in the catalog's types but has no connector, as an
	// out-of-process plugin that is not loaded.
	typeUnloaded = "test.unloaded"
)

// connectEnv is a catalog API with connectors: the built-in providers,
// an AuthRef resolver audited into the store, the given egress policy.
type connectEnv struct {
	*env
}

func newConnectEnv(tb testing.TB, policy egress.Policy) *connectEnv {
	tb.Helper()
	ctx := context.Background()
	db := pgtest.New(tb)
	owner := pgtest.Pool(tb, db.OwnerURL)
	var types []store.IntegrationType
	for _, id := range []string{typeMem, typeHarbor, typeOCI} {
		info, ok := connectors.Default().Lookup(id)
		if !ok {
			tb.Fatalf("no connector for %s", id)
		}
		types = append(types, store.IntegrationType{ID: id, DisplayName: info.DisplayName, Provider: info.Provider,
			ConfigSchema: info.ConfigSchema, Capabilities: info.Capabilities, Builtin: true})
	}
	schema, err := schemas.ConfigSchema(typeMem)
	if err != nil {
		tb.Fatal(err)
	}
	types = append(types, store.IntegrationType{ID: typeUnloaded, DisplayName: "Unloaded plugin", Provider: "unloaded",
		ConfigSchema: schema, Capabilities: []string{"repos"}})
	if err := store.SeedTypes(ctx, owner, types); err != nil {
		tb.Fatalf("seed types: %v", err)
	}
	app := pgtest.Pool(tb, db.AppURL)
	st := store.New(app)
	a, err := auth.New(ctx, auth.Config{Issuer: testIssuer, Audience: testAudience, DevMode: true, DevHS256Secret: testSecret,
		Logger: discardLogger()})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(a.Close)
	checker, err := configcheck.New(egress.Policy{}, resolver)
	if err != nil {
		tb.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	audit := secretaudit.New(st, discardLogger())
	if err := audit.Register(reg); err != nil {
		tb.Fatal(err)
	}
	secrets := authref.NewResolver(authref.WithHook(audit.Hook))
	b, err := connect.New(connectors.Default(), secrets, policy)
	if err != nil {
		tb.Fatal(err)
	}
	if err := b.Register(reg); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(b.Close)
	ready := &readyFlag{err: make(chan error, 1)}
	ready.err <- nil
	s, err := newServer(Deps{Store: st, Auth: a, Checker: checker, Connectors: b, Metrics: reg,
		Ready: []Readiness{ready.check}})
	if err != nil {
		tb.Fatal(err)
	}
	hs := httptest.NewServer(s.handler)
	tb.Cleanup(hs.Close)
	return &connectEnv{env: &env{t: tb, db: db, srv: s, http: hs, owner: owner, store: st, metrics: reg, ready: ready}}
}

// memIntegration creates a test.inmemory integration with config.
func (e *connectEnv) memIntegration(c caller, name string, config map[string]any) Integration {
	e.t.Helper()
	return e.create(c, map[string]any{"type": typeMem, "name": name, "config": config})
}

func (e *connectEnv) test(c caller, id, query string) (response, TestResult) {
	e.t.Helper()
	r := e.do(c, http.MethodPost, "/api/v1/integrations/"+id+"/test"+query, nil)
	want(e.t, r, http.StatusOK)
	var out TestResult
	r.decode(e.t, &out)
	return r, out
}

func (e *connectEnv) validator(t *testing.T, c caller) *schemaValidator {
	t.Helper()
	raw := e.do(c, http.MethodGet, OpenAPIPath, nil)
	want(t, raw, http.StatusOK)
	return newSchemaValidator(t, raw.Body)
}

func TestTestConnection(t *testing.T) {
	t.Setenv("MEM_TOKEN", "mem-token-value")
	e := newConnectEnv(t, egress.Policy{})
	c := e.newCaller()
	v := e.validator(t, c)
	const path = "/api/v1/integrations/{id}/test"

	t.Run("success, cached, fresh", func(t *testing.T) {
		it := e.memIntegration(c, "mem-ok", map[string]any{"healthy": true, "token": "authref://env/MEM_TOKEN"})
		r, got := e.test(c, it.ID, "")
		v.check(http.MethodPost, path, r)
		if !got.Success || got.Status != "healthy" || got.Cached || got.ErrorClass != "" || got.Provider != "inmemory" {
			t.Fatalf("first test: %s", r.Body)
		}
		var caps []string
		for _, ch := range got.Checks {
			caps = append(caps, ch.Capability)
			if !ch.OK {
				t.Errorf("check %s failed: %s", ch.Capability, ch.Message)
			}
		}
		if strings.Join(caps, ",") != "repos,branches,tags,digest" {
			t.Errorf("checks = %v, want every capability", caps)
		}

		r, again := e.test(c, it.ID, "")
		if !again.Cached || !again.TestedAt.Equal(got.TestedAt) {
			t.Errorf("second test within two minutes: cached=%v testedAt %v vs %v", again.Cached, again.TestedAt, got.TestedAt)
		}
		v.check(http.MethodPost, path, r)
		_, fresh := e.test(c, it.ID, "?fresh=true")
		if fresh.Cached {
			t.Error("?fresh=true answered from the cache")
		}
		if n := e.metric("integrations_test_connection_total", "provider", "inmemory", "result", "success"); n != 2 {
			t.Errorf("integrations_test_connection_total{success} = %v, want 2 (one cached answer not counted)", n)
		}

		// A new version of the integration is a new test.
		upd := e.do(c, http.MethodPut, "/api/v1/integrations/"+it.ID, map[string]any{"type": typeMem, "name": "mem-ok",
			"config": map[string]any{"healthy": true, "latencyMs": 1}})
		want(t, upd, http.StatusOK)
		if _, after := e.test(c, it.ID, ""); after.Cached {
			t.Error("a test after an update answered from the cache of the previous version")
		}
	})

	t.Run("failures are results", func(t *testing.T) {
		for _, tc := range []struct {
			name       string
			config     map[string]any
			class      string
			retryAfter int64
		}{
			{"permanent", map[string]any{"failWith": "permanent"}, "permanent", 0},
			{"offline", map[string]any{"failWith": "offline"}, "offline", 0},
			{"rate-limited", map[string]any{"failWith": "transient", "retryAfterSeconds": 30}, "transient", 30},
			{"secret missing", map[string]any{"token": "authref://env/INTHUB_TEST_UNSET_TOKEN"}, "permanent", 0},
		} {
			t.Run(tc.name, func(t *testing.T) {
				it := e.memIntegration(c, "mem-"+strings.ReplaceAll(tc.name, " ", "-"), tc.config)
				r, got := e.test(c, it.ID, "")
				v.check(http.MethodPost, path, r)
				if got.Success || got.Status != "unhealthy" || got.ErrorClass != tc.class || got.RetryAfterSeconds != tc.retryAfter {
					t.Fatalf("got success=%v status=%s class=%s retryAfter=%d, want failure of class %s (retry %d): %s",
						got.Success, got.Status, got.ErrorClass, got.RetryAfterSeconds, tc.class, tc.retryAfter, r.Body)
				}
				if got.Message == "" || len(got.Checks) == 0 || got.Checks[0].OK || got.Checks[0].ErrorClass != tc.class {
					t.Errorf("a failed test must say which check failed and why: %s", r.Body)
				}
				if strings.Contains(string(r.Body), "mem-token-value") {
					t.Error("the response carries the secret")
				}
			})
		}
		if n := e.metric("integrations_test_connection_total", "provider", "inmemory", "result", "failure"); n != 4 {
			t.Errorf("integrations_test_connection_total{failure} = %v, want 4", n)
		}
	})

	t.Run("degraded is not a success", func(t *testing.T) {
		it := e.memIntegration(c, "mem-degraded", map[string]any{"script": []string{"degraded"}})
		_, got := e.test(c, it.ID, "")
		if got.Success || got.Status != "degraded" || got.ErrorClass != "transient" {
			t.Fatalf("degraded test: success=%v status=%s class=%s", got.Success, got.Status, got.ErrorClass)
		}
	})

	t.Run("metrics exposed", func(t *testing.T) {
		r := e.do(caller{}, http.MethodGet, "/metrics", nil)
		want(t, r, http.StatusOK)
		for _, name := range []string{
			`integrations_test_connection_duration_seconds_count{provider="inmemory"}`,
			`integrations_test_connection_total{provider="inmemory",result="success"}`,
			`integrations_cache_hits_total{cache="test_connection"}`,
			`integrations_authref_resolutions_total{result="ok",scheme="env"}`,
		} {
			if !bytes.Contains(r.Body, []byte(name)) {
				t.Errorf("/metrics lacks %s", name)
			}
		}
	})
}

// outboxEvents returns the tenant's outbox events of one subject, as the
// owner (the app role cannot read the outbox).
func outboxEvents(tb testing.TB, e *env, tenant, subject string) []events.Event {
	tb.Helper()
	rows, err := e.owner.Query(context.Background(),
		`SELECT payload FROM outbox WHERE tenant_id = $1 AND subject = $2 ORDER BY id`, tenant, subject)
	if err != nil {
		tb.Fatal(err)
	}
	defer rows.Close()
	var out []events.Event
	for rows.Next() {
		var payload []byte
		if err := rows.Scan(&payload); err != nil {
			tb.Fatal(err)
		}
		ev, err := events.Parse(payload)
		if err != nil {
			tb.Fatal(err)
		}
		out = append(out, ev)
	}
	if err := rows.Err(); err != nil {
		tb.Fatal(err)
	}
	return out
}

func TestHealthCheckNow(t *testing.T) {
	e := newConnectEnv(t, egress.Policy{})
	c := e.newCaller()
	v := e.validator(t, c)
	const path = "/api/v1/integrations/{id}/health-check"
	it := e.memIntegration(c, "mem", map[string]any{"healthy": true})

	check := func(wantStatus, wantPrevious string, wantChanged bool) HealthCheckResult {
		t.Helper()
		r := e.do(c, http.MethodPost, "/api/v1/integrations/"+it.ID+"/health-check", nil)
		want(t, r, http.StatusOK)
		v.check(http.MethodPost, path, r)
		var got HealthCheckResult
		r.decode(t, &got)
		if got.Status != wantStatus || got.PreviousStatus != wantPrevious || got.Changed != wantChanged {
			t.Fatalf("health-check: status %s previous %s changed %v, want %s %s %v: %s",
				got.Status, got.PreviousStatus, got.Changed, wantStatus, wantPrevious, wantChanged, r.Body)
		}
		return got
	}
	setConfig := func(config map[string]any) {
		t.Helper()
		r := e.do(c, http.MethodPut, "/api/v1/integrations/"+it.ID, map[string]any{"type": typeMem, "name": "mem", "config": config})
		want(t, r, http.StatusOK)
	}

	first := check("healthy", "unknown", true)
	check("healthy", "healthy", false)
	setConfig(map[string]any{"failWith": "offline"})
	down := check("unhealthy", "healthy", true)
	if down.ErrorClass != "offline" {
		t.Errorf("errorClass = %q, want offline", down.ErrorClass)
	}
	check("unhealthy", "unhealthy", false)
	setConfig(map[string]any{"healthy": true})
	check("healthy", "unhealthy", true)

	// Recorded like a scheduled check: history, the integration's health,
	// and integration.health_changed in the outbox on each transition.
	r := e.do(c, http.MethodGet, "/api/v1/integrations/"+it.ID+"/health?limit=10", nil)
	want(t, r, http.StatusOK)
	var h HealthHistory
	r.decode(t, &h)
	if len(h.History) != 5 || h.Latest == nil || h.Latest.Status != "healthy" {
		t.Fatalf("history after five checks: %s", r.Body)
	}
	if h.History[4].EventID != first.EventID {
		t.Errorf("the oldest history entry is event %s, want the first check's %s", h.History[4].EventID, first.EventID)
	}
	var got Integration
	e.do(c, http.MethodGet, "/api/v1/integrations/"+it.ID, nil).decode(t, &got)
	if got.HealthStatus != "healthy" || got.LastHealthCheck == nil {
		t.Errorf("integration health %s, last check %v", got.HealthStatus, got.LastHealthCheck)
	}
	changed := outboxEvents(t, e.env, c.tenant, events.SubjectIntegrationHealthChanged)
	var transitions []string
	for _, ev := range changed {
		var hc events.HealthChanged
		if err := ev.Decode(&hc); err != nil {
			t.Fatal(err)
		}
		if hc.IntegrationID != it.ID || hc.TenantID != c.tenant || hc.Type != typeMem {
			t.Errorf("health_changed names %s/%s/%s", hc.TenantID, hc.IntegrationID, hc.Type)
		}
		transitions = append(transitions, string(hc.PreviousStatus)+"→"+string(hc.Status))
	}
	if w := "unknown→healthy,healthy→unhealthy,unhealthy→healthy"; strings.Join(transitions, ",") != w {
		t.Errorf("health_changed transitions %v, want %s", transitions, w)
	}
	if n := e.metric("integrations_health_check_total", "provider", "inmemory", "status", "unhealthy"); n != 2 {
		t.Errorf("integrations_health_check_total{unhealthy} = %v, want 2", n)
	}

	t.Run("disabled", func(t *testing.T) {
		d := e.create(c, map[string]any{"type": typeMem, "name": "off", "status": "disabled", "config": map[string]any{}})
		r := e.do(c, http.MethodPost, "/api/v1/integrations/"+d.ID+"/health-check", nil)
		want(t, r, http.StatusConflict)
		v.check(http.MethodPost, path, r)
		if locs := r.problem(t).locations(); len(locs) != 1 || locs[0] != "path.id" {
			t.Errorf("locations %v", locs)
		}
		if n := len(outboxEvents(t, e.env, c.tenant, events.SubjectIntegrationHealthChanged)); n != 3 {
			t.Errorf("%d health_changed events after a refused check, want 3", n)
		}
	})
}

func TestResources(t *testing.T) {
	e := newConnectEnv(t, egress.Policy{})
	c := e.newCaller()
	v := e.validator(t, c)
	const path = "/api/v1/integrations/{id}/resources"
	it := e.memIntegration(c, "mem", map[string]any{})
	get := func(query string) response {
		t.Helper()
		return e.do(c, http.MethodGet, "/api/v1/integrations/"+it.ID+"/resources?"+query, nil)
	}
	list := func(query string) ResourceList {
		t.Helper()
		r := get(query)
		want(t, r, http.StatusOK)
		v.check(http.MethodGet, path, r)
		var l ResourceList
		r.decode(t, &l)
		return l
	}
	names := func(l ResourceList) string {
		var n []string
		for _, r := range l.Items {
			n = append(n, r.Name)
		}
		return strings.Join(n, ",")
	}

	t.Run("kinds", func(t *testing.T) {
		for _, tc := range []struct {
			query, want string
			check       func(Resource) bool
		}{
			{"kind=repos", "acme/api,acme/web,library/nginx", func(r Resource) bool { return r.ID != "" && r.DefaultBranch == "main" }},
			{"kind=branches&repo=acme/api", "develop,main", func(r Resource) bool { return len(r.CommitSHA) == 40 }},
			{"kind=tags&repo=library/nginx", "1.0.0,1.1.0,latest", func(r Resource) bool { return strings.HasPrefix(r.Digest, "sha256:") }},
		} {
			l := list(tc.query)
			if got := names(l); got != tc.want || l.NextCursor != "" || l.Provider != "inmemory" {
				t.Errorf("%s: items %s next %q, want %s on one page", tc.query, got, l.NextCursor, tc.want)
			}
			for _, r := range l.Items {
				if !tc.check(r) {
					t.Errorf("%s: item %+v lacks its kind's fields", tc.query, r)
				}
			}
		}
	})

	t.Run("paging", func(t *testing.T) {
		p1 := list("kind=repos&limit=2")
		if names(p1) != "acme/api,acme/web" || p1.NextCursor == "" {
			t.Fatalf("page 1: %s next %q", names(p1), p1.NextCursor)
		}
		p2 := list("kind=repos&limit=2&cursor=" + url.QueryEscape(p1.NextCursor))
		if names(p2) != "library/nginx" || p2.NextCursor != "" {
			t.Fatalf("page 2: %s next %q", names(p2), p2.NextCursor)
		}
	})

	t.Run("cached", func(t *testing.T) {
		q := "kind=tags&repo=acme/web&limit=1"
		before := e.metric("integrations_discovery_total", "provider", "inmemory", "kind", "tags", "result", "success")
		if l := list(q); l.Cached {
			t.Fatal("first listing answered from the cache")
		}
		if l := list(q); !l.Cached || names(l) != "1.0.0" {
			t.Fatalf("second listing: cached=%v %s", l.Cached, names(l))
		}
		if l := list(q + "&fresh=true"); l.Cached {
			t.Fatal("?fresh=true answered from the cache")
		}
		if n := e.metric("integrations_discovery_total", "provider", "inmemory", "kind", "tags", "result", "success") - before; n != 2 {
			t.Errorf("%v provider calls for three listings (one cached), want 2", n)
		}
	})

	t.Run("bad queries", func(t *testing.T) {
		oci := e.create(c, map[string]any{"type": typeOCI, "name": "oci",
			"config": map[string]any{"endpoint": "https://harbor.example.com"}})
		for _, tc := range []struct {
			id, query, loc string
		}{
			{it.ID, "", locKind},
			{it.ID, "kind=pipelines", locKind},
			{it.ID, "kind=Repos", locKind},
			{it.ID, "kind=branches", locRepo},
			{it.ID, "kind=tags&repo=", locRepo},
			{oci.ID, "kind=branches&repo=library/nginx", locKind}, // a registry has no branches
		} {
			r := e.do(c, http.MethodGet, "/api/v1/integrations/"+tc.id+"/resources?"+tc.query, nil)
			want(t, r, http.StatusBadRequest)
			v.check(http.MethodGet, path, r)
			if locs := r.problem(t).locations(); len(locs) != 1 || locs[0] != tc.loc {
				t.Errorf("%s: problem names %v, want %s", tc.query, locs, tc.loc)
			}
		}
	})

	t.Run("provider failures are 502", func(t *testing.T) {
		for _, tc := range []struct {
			name, query string
			config      map[string]any
			class       string
			retryAfter  string
		}{
			{"rate limited", "kind=repos", map[string]any{"failWith": "transient", "retryAfterSeconds": 7}, "transient", "7"},
			{"transient without hint", "kind=repos", map[string]any{"failWith": "transient"}, "transient", ""},
			{"refused", "kind=repos", map[string]any{"failWith": "permanent"}, "permanent", ""},
			{"offline", "kind=tags&repo=acme/api", map[string]any{"failWith": "offline"}, "offline", ""},
			{"unknown repository", "kind=tags&repo=acme/nope", map[string]any{}, "permanent", ""},
		} {
			t.Run(tc.name, func(t *testing.T) {
				f := e.memIntegration(c, "fail-"+strings.ReplaceAll(tc.name, " ", "-"), tc.config)
				r := e.do(c, http.MethodGet, "/api/v1/integrations/"+f.ID+"/resources?"+tc.query, nil)
				want(t, r, http.StatusBadGateway)
				v.check(http.MethodGet, path, r)
				if ct := r.Header.Get("Content-Type"); ct != "application/problem+json" {
					t.Errorf("Content-Type %q", ct)
				}
				var p ProviderProblem
				r.decode(t, &p)
				if p.ErrorClass != tc.class || p.Provider != "inmemory" || !strings.Contains(p.Detail, tc.class) {
					t.Errorf("problem %s, want class %s", r.Body, tc.class)
				}
				if got := r.Header.Get("Retry-After"); got != tc.retryAfter {
					t.Errorf("Retry-After %q, want %q", got, tc.retryAfter)
				}
				// A failure is never cached: the next call asks again.
				if again := e.do(c, http.MethodGet, "/api/v1/integrations/"+f.ID+"/resources?"+tc.query, nil); again.Status != http.StatusBadGateway {
					t.Errorf("second call: %s", again)
				}
			})
		}
	})
}

func TestConnectorOperationsIsolationAndErrors(t *testing.T) {
	e := newConnectEnv(t, egress.Policy{})
	a, b := e.newCaller(), e.newCaller()
	v := e.validator(t, a)
	it := e.memIntegration(a, "mine", map[string]any{})
	ops := []struct{ method, path, doc string }{
		{http.MethodPost, "/test", "/api/v1/integrations/{id}/test"},
		{http.MethodPost, "/health-check", "/api/v1/integrations/{id}/health-check"},
		{http.MethodGet, "/resources?kind=repos", "/api/v1/integrations/{id}/resources"},
	}
	for _, op := range ops {
		for _, tc := range []struct {
			name   string
			c      caller
			id     string
			status int
		}{
			{"another tenant's id", b, it.ID, http.StatusNotFound},
			{"missing id", a, uuid.NewString(), http.StatusNotFound},
			{"malformed id", a, "not-a-uuid", http.StatusNotFound},
			{"no token", caller{}, it.ID, http.StatusUnauthorized},
		} {
			r := e.do(tc.c, op.method, "/api/v1/integrations/"+tc.id+op.path, nil)
			if r.Status != tc.status {
				t.Errorf("%s %s, %s: %s, want %d", op.method, op.path, tc.name, r, tc.status)
				continue
			}
			v.check(op.method, op.doc, r)
		}
	}
	// Scopes: test and health-check run a provider call for the caller
	// and write: integrations:write; discovery reads.
	reader := e.caller(a.tenant, ScopeRead)
	want(t, e.do(reader, http.MethodPost, "/api/v1/integrations/"+it.ID+"/test", nil), http.StatusForbidden)
	want(t, e.do(reader, http.MethodPost, "/api/v1/integrations/"+it.ID+"/health-check", nil), http.StatusForbidden)
	want(t, e.do(reader, http.MethodGet, "/api/v1/integrations/"+it.ID+"/resources?kind=repos", nil), http.StatusOK)
	if r := e.do(b, http.MethodGet, "/api/v1/integrations/"+it.ID+"/health", nil); r.Status != http.StatusNotFound {
		t.Errorf("another tenant reads health: %s", r)
	}

	// A type that the catalog knows but no connector serves.
	un := e.create(a, map[string]any{"type": typeUnloaded, "name": "plugin", "config": map[string]any{}})
	for _, op := range ops {
		r := e.do(a, op.method, "/api/v1/integrations/"+un.ID+op.path, nil)
		want(t, r, http.StatusConflict)
		v.check(op.method, op.doc, r)
	}
}

// ociFake answers the distribution API's ping, counting the requests
// that reach it.
func ociFake(t *testing.T) (*httptest.Server, *atomic.Int64) {
	t.Helper()
	var hits atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		w.Header().Set("Docker-Distribution-API-Version", "registry/2.0")
		if r.URL.Path != "/v2/" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{}`))
	}))
	t.Cleanup(srv.Close)
	return srv, &hits
}

// TestEgressAtDialTime: an integration whose endpoint resolves to a
// loopback address (here "localhost"; a DNS rebinding looks the same at
// dial time) is refused by the dialer with the default policy, whatever
// the check at save time said; the user reads a generic message without
// the address. With loopback allowed the same integration works.
func TestEgressAtDialTime(t *testing.T) {
	srv, hits := ociFake(t)
	_, port, err := net.SplitHostPort(srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	p, _ := strconv.Atoi(port)
	endpoint := "http://localhost:" + port
	// http and the port are allowed, so only the address can be refused.
	base := egress.Policy{AllowHTTP: true, AllowPorts: []int{p}}
	loopback := base
	loopback.AllowLoopback = true

	for _, tc := range []struct {
		name    string
		policy  egress.Policy
		success bool
	}{
		{"default policy refuses loopback", base, false},
		{"loopback allowed", loopback, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newConnectEnv(t, tc.policy)
			c := e.newCaller()
			// Written past the save-time check, as if the name had
			// resolved to a public address then.
			it, err := e.store.CreateIntegration(context.Background(), c.tenant, "test", store.IntegrationInput{
				Type: typeOCI, Name: "oci-local",
				Config: json.RawMessage(fmt.Sprintf(`{"endpoint":%q,"insecure":true,"timeoutSeconds":5}`, endpoint)),
			})
			if err != nil {
				t.Fatal(err)
			}
			before := hits.Load()
			r, got := e.test(c, it.ID, "?fresh=true")
			if got.Success != tc.success {
				t.Fatalf("success = %v, want %v: %s", got.Success, tc.success, r.Body)
			}
			if tc.success {
				if hits.Load() == before {
					t.Error("the registry saw no request")
				}
				return
			}
			if got.ErrorClass != "permanent" {
				t.Errorf("errorClass %q, want permanent: %s", got.ErrorClass, r.Body)
			}
			if hits.Load() != before {
				t.Errorf("%d requests reached the loopback server", hits.Load()-before)
			}
			for _, leak := range []string{"127.0.0.1", "::1", "[::"} {
				if strings.Contains(string(r.Body), leak) {
					t.Errorf("the answer names the refused address (%s): %s", leak, r.Body)
				}
			}
			if !strings.Contains(got.Message, "egress policy") {
				t.Errorf("message %q does not say the egress policy refused the endpoint", got.Message)
			}
			// Resources go through the same client.
			rr := e.do(c, http.MethodGet, "/api/v1/integrations/"+it.ID+"/resources?kind=tags&repo=library/app", nil)
			want(t, rr, http.StatusBadGateway)
			if strings.Contains(string(rr.Body), "127.0.0.1") || !strings.Contains(string(rr.Body), `"errorClass":"permanent"`) {
				t.Errorf("resources through a refused endpoint: %s", rr.Body)
			}
		})
	}
}

// auditRow is an authref.resolve audit row as the owner reads it.
type auditRow struct {
	Actor, EntityID string
	After           map[string]any
	Raw             string
}

func secretAudits(tb testing.TB, e *env, tenant, integrationID string) []auditRow {
	tb.Helper()
	rows, err := e.owner.Query(context.Background(),
		`SELECT actor, entity_id::text, after, row_to_json(a)::text FROM audit_logs a
		 WHERE tenant_id = $1 AND action = 'authref.resolve' AND entity_id = $2 ORDER BY id`, tenant, integrationID)
	if err != nil {
		tb.Fatal(err)
	}
	defer rows.Close()
	var out []auditRow
	for rows.Next() {
		var r auditRow
		var after []byte
		if err := rows.Scan(&r.Actor, &r.EntityID, &after, &r.Raw); err != nil {
			tb.Fatal(err)
		}
		if err := json.Unmarshal(after, &r.After); err != nil {
			tb.Fatal(err)
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		tb.Fatal(err)
	}
	return out
}

func TestSecretResolutionsAudited(t *testing.T) {
	const secret = "s3cr3t-audit-value-7f3a"
	t.Setenv("INTHUB_TEST_MEM_TOKEN", secret)
	e := newConnectEnv(t, egress.Policy{})
	c := e.newCaller()
	it := e.memIntegration(c, "mem", map[string]any{"token": "authref://env/INTHUB_TEST_MEM_TOKEN"})
	bad := e.memIntegration(c, "mem-bad", map[string]any{"token": "authref://env/INTHUB_TEST_NOT_SET"})

	e.test(c, it.ID, "")
	e.test(c, it.ID, "?fresh=true") // the resolver's cache answers this one
	want(t, e.do(c, http.MethodGet, "/api/v1/integrations/"+it.ID+"/resources?kind=repos", nil), http.StatusOK)
	e.test(c, bad.ID, "")

	rows := secretAudits(t, e.env, c.tenant, it.ID)
	if len(rows) != 3 {
		t.Fatalf("%d audit rows for three resolutions: %+v", len(rows), rows)
	}
	wantActor := "user-" + c.tenant[:8]
	for i, r := range rows {
		if r.Actor != wantActor || r.EntityID != it.ID || r.After["ref"] != "authref://env/INTHUB_TEST_MEM_TOKEN" ||
			r.After["ok"] != true || r.After["scheme"] != "env" {
			t.Errorf("row %d: %+v", i, r)
		}
	}
	if rows[0].After["cached"] != false || rows[1].After["cached"] != true {
		t.Errorf("cached flags %v, %v: want a store read, then the cache", rows[0].After["cached"], rows[1].After["cached"])
	}
	failed := secretAudits(t, e.env, c.tenant, bad.ID)
	if len(failed) != 1 || failed[0].After["ok"] != false || failed[0].After["errorClass"] != "permanent" {
		t.Errorf("failed resolution audit: %+v", failed)
	}

	// The value is nowhere in the audit log, nor anywhere else the
	// catalog wrote.
	var n int
	if err := e.owner.QueryRow(context.Background(),
		`SELECT (SELECT count(*) FROM audit_logs a WHERE row_to_json(a)::text LIKE '%' || $1 || '%')
		      + (SELECT count(*) FROM health_checks h WHERE row_to_json(h)::text LIKE '%' || $1 || '%')
		      + (SELECT count(*) FROM outbox o WHERE position(convert_to($1, 'UTF8') IN o.payload) > 0)`, secret).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Errorf("%d rows contain the secret", n)
	}
	if got := e.metric("integrations_authref_resolutions_total", "scheme", "env", "result", "cached"); got < 1 {
		t.Errorf("integrations_authref_resolutions_total{env,cached} = %v", got)
	}
}

// metric is the value of a counter of the env's registry with the given
// label pairs, 0 when it has no such series.
func (e *connectEnv) metric(name string, labelPairs ...string) float64 {
	e.t.Helper()
	mfs, err := e.metrics.Gather()
	if err != nil {
		e.t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	series:
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			for i := 0; i+1 < len(labelPairs); i += 2 {
				if labels[labelPairs[i]] != labelPairs[i+1] {
					continue series
				}
			}
			return m.GetCounter().GetValue()
		}
	}
	return 0
}

// TestConnectTimeout: a connector slower than its integration's timeout
// comes back as a transient failure within about that timeout.
func TestConnectTimeout(t *testing.T) {
	e := newConnectEnv(t, egress.Policy{})
	c := e.newCaller()
	it := e.memIntegration(c, "slow", map[string]any{"latencyMs": 60000, "timeoutSeconds": 1})
	start := time.Now()
	r, got := e.test(c, it.ID, "")
	if got.Success || got.ErrorClass != "transient" || !strings.Contains(got.Message, "timed out") {
		t.Errorf("slow test: %s", r.Body)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("the test took %v with timeoutSeconds 1", d)
	}
}
