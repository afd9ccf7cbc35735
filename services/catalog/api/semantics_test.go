package api

import (
	"bytes"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/google/uuid"
)

func TestETagIfMatch(t *testing.T) {
	e := newEnv(t)
	c := e.newCaller()
	r := e.do(c, http.MethodPost, "/api/v1/integrations", memInput("etag"))
	want(t, r, http.StatusCreated)
	if got := r.Header.Get("ETag"); got != `"1"` {
		t.Fatalf("create ETag = %q, want \"1\"", got)
	}
	var it Integration
	r.decode(t, &it)
	path := "/api/v1/integrations/" + it.ID
	if loc := r.Header.Get("Location"); loc != path {
		t.Errorf("Location = %q, want %q", loc, path)
	}

	r = e.do(c, http.MethodGet, path, nil)
	want(t, r, http.StatusOK)
	if got := r.Header.Get("ETag"); got != `"1"` {
		t.Fatalf("GET ETag = %q", got)
	}

	r = e.do(c, http.MethodPut, path, memInput("etag-2"), "If-Match", `"1"`)
	want(t, r, http.StatusOK)
	if got := r.Header.Get("ETag"); got != `"2"` {
		t.Fatalf("PUT ETag = %q, want \"2\"", got)
	}
	r.decode(t, &it)
	if it.Version != 2 || it.Name != "etag-2" {
		t.Fatalf("after PUT: %+v", it)
	}

	// The ETag the first writer held is stale now.
	for _, tc := range []struct {
		method  string
		ifMatch string
	}{
		{http.MethodPut, `"1"`},
		{http.MethodDelete, `"1"`},
		{http.MethodPut, `W/"2"`}, // weak tags never match in If-Match
		{http.MethodPut, `"abc"`},
	} {
		var body any
		if tc.method == http.MethodPut {
			body = memInput("lost-update")
		}
		r = e.do(c, tc.method, path, body, "If-Match", tc.ifMatch)
		want(t, r, http.StatusPreconditionFailed)
		if p := r.problem(t); !slices.Contains(p.locations(), "header.If-Match") {
			t.Errorf("%s If-Match %s: locations %q", tc.method, tc.ifMatch, p.locations())
		}
	}

	// No If-Match: unconditional; "*": any current version.
	r = e.do(c, http.MethodPut, path, memInput("etag-3"))
	want(t, r, http.StatusOK)
	r = e.do(c, http.MethodPut, path, memInput("etag-4"), "If-Match", "*")
	want(t, r, http.StatusOK)
	if got := r.Header.Get("ETag"); got != `"4"` {
		t.Fatalf("ETag = %q, want \"4\"", got)
	}
	r = e.do(c, http.MethodDelete, path, nil, "If-Match", `"4"`)
	want(t, r, http.StatusNoContent)
	r = e.do(c, http.MethodGet, path, nil)
	want(t, r, http.StatusNotFound)
	r = e.do(c, http.MethodDelete, path, nil)
	want(t, r, http.StatusNotFound)

	// Profiles carry ETags too.
	r = e.do(c, http.MethodPost, "/api/v1/connection-profiles", map[string]any{"name": "p", "integrationType": typeMem})
	want(t, r, http.StatusCreated)
	if got := r.Header.Get("ETag"); got != `"1"` {
		t.Fatalf("profile ETag = %q", got)
	}
	ppath := r.Header.Get("Location")
	r = e.do(c, http.MethodPut, ppath, map[string]any{"name": "p2", "integrationType": typeMem}, "If-Match", `"1"`)
	want(t, r, http.StatusOK)
	if got := r.Header.Get("ETag"); got != `"2"` {
		t.Fatalf("profile PUT ETag = %q", got)
	}
	r = e.do(c, http.MethodGet, ppath, nil)
	want(t, r, http.StatusOK)
	if got := r.Header.Get("ETag"); got != `"2"` {
		t.Fatalf("profile GET ETag = %q", got)
	}
	r = e.do(c, http.MethodDelete, ppath, nil, "If-Match", `"1"`)
	want(t, r, http.StatusPreconditionFailed)
	r = e.do(c, http.MethodDelete, ppath, nil, "If-Match", `"2"`)
	want(t, r, http.StatusNoContent)
}

// TestConcurrentUpdatesOneWins: of two writers holding the same ETag,
// exactly one succeeds (the lost update is refused, not silently applied).
func TestConcurrentUpdatesOneWins(t *testing.T) {
	e := newEnv(t)
	c := e.newCaller()
	it := e.create(c, memInput("race"))
	const writers = 8
	statuses := make([]int, writers)
	errs := make([]error, writers)
	var wg sync.WaitGroup
	for i := range writers {
		wg.Go(func() {
			var r response
			r, errs[i] = e.send(c, http.MethodPut, "/api/v1/integrations/"+it.ID, memInput(fmt.Sprintf("race-%d", i)), "If-Match", `"1"`)
			statuses[i] = r.Status
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	slices.Sort(statuses)
	if statuses[0] != http.StatusOK || statuses[1] != http.StatusPreconditionFailed || statuses[writers-1] != http.StatusPreconditionFailed {
		t.Errorf("statuses %v, want one 200 and the rest 412", statuses)
	}
}

func TestIdempotencyKey(t *testing.T) {
	e := newEnv(t)
	c := e.newCaller()
	key := uuid.NewString()
	first := e.do(c, http.MethodPost, "/api/v1/integrations", memInput("idem"), "Idempotency-Key", key)
	want(t, first, http.StatusCreated)
	if first.Header.Get("Idempotency-Replayed") != "" {
		t.Errorf("first response marked as a replay")
	}

	// Same key, same body (spelled differently): the first response again.
	again := e.do(c, http.MethodPost, "/api/v1/integrations",
		`{ "name": "idem",  "type": "test.inmemory", "config": {"token": "authref://env/MEM_TOKEN", "healthy": true} }`,
		"Idempotency-Key", key)
	want(t, again, http.StatusCreated)
	if !bytes.Equal(first.Body, again.Body) {
		t.Errorf("replayed body differs:\n first %s\n again %s", first.Body, again.Body)
	}
	if again.Header.Get("Idempotency-Replayed") != "true" {
		t.Errorf("Idempotency-Replayed = %q", again.Header.Get("Idempotency-Replayed"))
	}
	for _, h := range []string{"Location", "ETag"} {
		if first.Header.Get(h) != again.Header.Get(h) || first.Header.Get(h) == "" {
			t.Errorf("%s: first %q, replay %q", h, first.Header.Get(h), again.Header.Get(h))
		}
	}
	if n := countRows(t, e, `SELECT count(*) FROM integrations WHERE tenant_id = $1`, c.tenant); n != 1 {
		t.Errorf("%d integrations after a replay, want 1", n)
	}

	// Same key, another body: refused, naming the header.
	r := e.do(c, http.MethodPost, "/api/v1/integrations", memInput("idem-other"), "Idempotency-Key", key)
	want(t, r, http.StatusUnprocessableEntity)
	if p := r.problem(t); !slices.Contains(p.locations(), "header.Idempotency-Key") {
		t.Errorf("locations %q", p.locations())
	}
	// Same key on another operation: another request.
	r = e.do(c, http.MethodPost, "/api/v1/connection-profiles", map[string]any{"name": "idem", "integrationType": typeMem}, "Idempotency-Key", key)
	want(t, r, http.StatusUnprocessableEntity)

	// Keys are per tenant: another tenant's use of the key is its own.
	other := e.newCaller()
	r = e.do(other, http.MethodPost, "/api/v1/integrations", memInput("idem"), "Idempotency-Key", key)
	want(t, r, http.StatusCreated)
	if r.Header.Get("Idempotency-Replayed") != "" || bytes.Equal(r.Body, first.Body) {
		t.Errorf("another tenant got this tenant's response: %s", r.Body)
	}

	// A refused request does not use its key up.
	key2 := uuid.NewString()
	r = e.do(c, http.MethodPost, "/api/v1/integrations", memInput("idem"), "Idempotency-Key", key2)
	want(t, r, http.StatusConflict)
	var it Integration
	first.decode(t, &it)
	want(t, e.do(c, http.MethodDelete, "/api/v1/integrations/"+it.ID, nil), http.StatusNoContent)
	r = e.do(c, http.MethodPost, "/api/v1/integrations", memInput("idem"), "Idempotency-Key", key2)
	want(t, r, http.StatusCreated)
	if r.Header.Get("Idempotency-Replayed") != "" {
		t.Errorf("a key whose request was refused replayed something")
	}

	// Profiles: replayed the same way.
	pkey := uuid.NewString()
	p1 := e.do(c, http.MethodPost, "/api/v1/connection-profiles", map[string]any{"name": "prof", "integrationType": typeMem}, "Idempotency-Key", pkey)
	want(t, p1, http.StatusCreated)
	p2 := e.do(c, http.MethodPost, "/api/v1/connection-profiles", map[string]any{"name": "prof", "integrationType": typeMem}, "Idempotency-Key", pkey)
	want(t, p2, http.StatusCreated)
	if !bytes.Equal(p1.Body, p2.Body) || p2.Header.Get("Idempotency-Replayed") != "true" {
		t.Errorf("profile replay: %s / %s", p1.Body, p2.Body)
	}
}

// TestIdempotencyKeyConcurrent: of concurrent identical requests with one
// key, one creates and the others replay its response.
func TestIdempotencyKeyConcurrent(t *testing.T) {
	e := newEnv(t)
	c := e.newCaller()
	key := uuid.NewString()
	const n = 6
	res := make([]response, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			res[i], errs[i] = e.send(c, http.MethodPost, "/api/v1/integrations", memInput("conc"), "Idempotency-Key", key)
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	replays := 0
	for _, r := range res {
		want(t, r, http.StatusCreated)
		if !bytes.Equal(r.Body, res[0].Body) {
			t.Errorf("bodies differ: %s / %s", r.Body, res[0].Body)
		}
		if r.Header.Get("Idempotency-Replayed") == "true" {
			replays++
		}
	}
	if replays != n-1 {
		t.Errorf("%d replays, want %d", replays, n-1)
	}
	if got := countRows(t, e, `SELECT count(*) FROM integrations WHERE tenant_id = $1`, c.tenant); got != 1 {
		t.Errorf("%d integrations, want 1", got)
	}
}

func TestPagination(t *testing.T) {
	e := newEnv(t)
	c := e.newCaller()
	var ids, harborIDs []string
	for i := range 7 {
		ids = append(ids, e.create(c, memInput(fmt.Sprintf("mem-%d", i))).ID)
		if i < 5 {
			id := e.create(c, harborInput(fmt.Sprintf("harbor-%d", i))).ID
			ids = append(ids, id)
			harborIDs = append(harborIDs, id)
		}
	}
	// Another tenant's rows never show.
	o := e.newCaller()
	for i := range 3 {
		e.create(o, memInput(fmt.Sprintf("mem-%d", i)))
	}

	pages := func(base string, limit int) (got []string, sizes []int) {
		t.Helper()
		cursor := ""
		for range 20 {
			path := fmt.Sprintf("%s%slimit=%d", base, sep(base), limit)
			if cursor != "" {
				path += "&cursor=" + cursor
			}
			r := e.do(c, http.MethodGet, path, nil)
			want(t, r, http.StatusOK)
			var l IntegrationList
			r.decode(t, &l)
			sizes = append(sizes, len(l.Items))
			for _, it := range l.Items {
				got = append(got, it.ID)
			}
			if l.NextCursor == "" {
				return got, sizes
			}
			cursor = l.NextCursor
		}
		t.Fatalf("%s: more than 20 pages", base)
		return nil, nil
	}

	got, sizes := pages("/api/v1/integrations", 5)
	if !slices.Equal(got, ids) || !slices.Equal(sizes, []int{5, 5, 2}) {
		t.Errorf("3 pages: sizes %v, ids %v, want %v in creation order", sizes, got, ids)
	}
	got, sizes = pages("/api/v1/integrations/by-type/"+typeHarbor, 2)
	if !slices.Equal(got, harborIDs) || !slices.Equal(sizes, []int{2, 2, 1}) {
		t.Errorf("by-type: sizes %v, ids %v, want %v", sizes, got, harborIDs)
	}
	got, _ = pages("/api/v1/integrations?type="+typeHarbor, 4)
	if !slices.Equal(got, harborIDs) {
		t.Errorf("?type=: %v, want %v", got, harborIDs)
	}
	// A page that ends exactly at the last row says so.
	got, sizes = pages("/api/v1/integrations", 12)
	if !slices.Equal(got, ids) || !slices.Equal(sizes, []int{12}) {
		t.Errorf("exact page: sizes %v", sizes)
	}

	// Health history pages too, newest first.
	for _, s := range []string{"healthy", "degraded", "unhealthy", "healthy", "healthy"} {
		recordHealth(t, e, c.tenant, harborIDs[0], typeHarbor, s)
	}
	var statuses []string
	cursor := ""
	for range 5 {
		path := "/api/v1/integrations/" + harborIDs[0] + "/health?limit=2"
		if cursor != "" {
			path += "&cursor=" + cursor
		}
		r := e.do(c, http.MethodGet, path, nil)
		want(t, r, http.StatusOK)
		var h HealthHistory
		r.decode(t, &h)
		if h.Latest == nil || h.Latest.Status != "healthy" {
			t.Fatalf("latest = %+v", h.Latest)
		}
		for _, c := range h.History {
			statuses = append(statuses, c.Status)
		}
		if cursor = h.NextCursor; cursor == "" {
			break
		}
	}
	if want := []string{"healthy", "healthy", "unhealthy", "degraded", "healthy"}; !slices.Equal(statuses, want) {
		t.Errorf("health history %v, want %v", statuses, want)
	}
	r := e.do(c, http.MethodGet, "/api/v1/integrations/"+harborIDs[0], nil)
	var it Integration
	r.decode(t, &it)
	if it.HealthStatus != "healthy" || it.LastHealthCheck == nil {
		t.Errorf("integration health %q at %v", it.HealthStatus, it.LastHealthCheck)
	}
}

func sep(path string) string {
	if strings.Contains(path, "?") {
		return "&"
	}
	return "?"
}

func TestProfileDefaultsNeverHoldSecrets(t *testing.T) {
	e := newEnv(t)
	c := e.newCaller()
	get := func() map[string]any {
		t.Helper()
		r := e.do(c, http.MethodGet, "/api/v1/connection-profiles/defaults?type="+typeHarbor, nil)
		want(t, r, http.StatusOK)
		var d struct {
			Type   string         `json:"type"`
			Config map[string]any `json:"config"`
		}
		r.decode(t, &d)
		if strings.Contains(string(r.Body), "authref://") {
			t.Errorf("defaults hand out an AuthRef: %s", r.Body)
		}
		return d.Config
	}
	if d := get(); len(d) != 0 {
		t.Errorf("defaults without history: %v", d)
	}
	// From the newest integration of the type, minus its secrets.
	e.create(c, harborInput("h1"))
	if d := get(); d["endpoint"] != "https://harbor.example.com" || d["username"] != "robot$ci" || d["password"] != nil {
		t.Errorf("defaults from an integration: %v", d)
	}
	// The default profile wins.
	r := e.do(c, http.MethodPost, "/api/v1/connection-profiles", map[string]any{
		"name": "eu", "integrationType": typeHarbor, "isDefault": true,
		"defaultConfig": map[string]any{"endpoint": "https://harbor.example.com/eu", "username": "robot$eu", "password": "authref://vault/secret/data/eu#password"}})
	want(t, r, http.StatusCreated)
	if d := get(); d["username"] != "robot$eu" || d["password"] != nil {
		t.Errorf("defaults from the default profile: %v", d)
	}
	// Another tenant's history is not this tenant's default.
	o := e.newCaller()
	r = e.do(o, http.MethodGet, "/api/v1/connection-profiles/defaults?type="+typeHarbor, nil)
	want(t, r, http.StatusOK)
	if strings.Contains(string(r.Body), "robot$") {
		t.Errorf("another tenant sees this tenant's defaults: %s", r.Body)
	}
}

func TestProbes(t *testing.T) {
	e := newEnv(t)
	r := e.do(caller{}, http.MethodGet, "/readyz", nil)
	want(t, r, http.StatusOK)
	e.ready.set(errors.New("postgres: connection refused to 10.0.0.7:5432"))
	r = e.do(caller{}, http.MethodGet, "/readyz", nil)
	want(t, r, http.StatusServiceUnavailable)
	if strings.Contains(string(r.Body), "10.0.0.7") {
		t.Errorf("readyz tells an anonymous caller why: %s", r.Body)
	}
	// Liveness does not depend on the dependencies.
	want(t, e.do(caller{}, http.MethodGet, "/healthz", nil), http.StatusOK)
	e.ready.set(nil)
	want(t, e.do(caller{}, http.MethodGet, "/readyz", nil), http.StatusOK)
}

// TestReadyzFollowsPostgres: with the pool's Ping as a readiness check
// (as the catalog wires it), a database that refuses the app role's
// connections makes /readyz answer 503, and 200 again once it accepts
// them. The outage is made for this test's database only: new connections
// are refused and the pool's open ones are terminated.
func TestReadyzFollowsPostgres(t *testing.T) {
	e := newEnv(t)
	want(t, e.do(caller{}, http.MethodGet, "/readyz", nil), http.StatusOK)
	ctx := t.Context()
	if _, err := e.owner.Exec(ctx, `ALTER DATABASE `+e.db.Name+` CONNECTION LIMIT 0`); err != nil {
		t.Fatal(err)
	}
	if _, err := e.owner.Exec(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND usename = 'inthub_app'`, e.db.Name); err != nil {
		t.Fatal(err)
	}
	r := e.do(caller{}, http.MethodGet, "/readyz", nil)
	want(t, r, http.StatusServiceUnavailable)
	want(t, e.do(caller{}, http.MethodGet, "/healthz", nil), http.StatusOK)
	if _, err := e.owner.Exec(ctx, `ALTER DATABASE `+e.db.Name+` CONNECTION LIMIT -1`); err != nil {
		t.Fatal(err)
	}
	want(t, e.do(caller{}, http.MethodGet, "/readyz", nil), http.StatusOK)
}

func TestMetrics(t *testing.T) {
	e := newEnv(t)
	c := e.newCaller()
	it := e.create(c, memInput("m"))
	want(t, e.do(c, http.MethodPut, "/api/v1/integrations/"+it.ID, memInput("m2")), http.StatusOK)
	want(t, e.do(c, http.MethodDelete, "/api/v1/integrations/"+it.ID, nil), http.StatusNoContent)
	want(t, e.do(c, http.MethodGet, "/api/v1/integrations/"+it.ID, nil), http.StatusNotFound)
	r := e.do(caller{}, http.MethodGet, "/metrics", nil)
	want(t, r, http.StatusOK)
	body := string(r.Body)
	for _, line := range []string{
		`integration_crud_total{action="create"} 1`,
		`integration_crud_total{action="update"} 1`,
		`integration_crud_total{action="delete"} 1`,
		`catalog_http_request_duration_seconds_count{code="201",method="POST",route="POST /api/v1/integrations"} 1`,
		`catalog_http_request_duration_seconds_count{code="404",method="GET",route="GET /api/v1/integrations/{id}"} 1`,
	} {
		if !strings.Contains(body, line) {
			t.Errorf("/metrics lacks %s", line)
		}
	}
	if strings.Contains(body, it.ID) {
		t.Errorf("an integration id is a label value")
	}
}
