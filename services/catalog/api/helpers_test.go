package api

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"inthub.dev/events"
	"inthub.dev/pkg/egress"
	"inthub.dev/pkg/pgtest"
	"inthub.dev/schemas"
	"inthub.dev/services/catalog/auth"
	"inthub.dev/services/catalog/configcheck"
	"inthub.dev/services/catalog/store"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const (
	testIssuer   = "https://authority.test"
	testAudience = "inthub-catalog"
	// Types seeded in every test database: the in-memory double and a
	// type with an endpoint and an x-secret field.
	typeMem    = "test.inmemory"
	typeHarbor = "registry.harbor"
)

var testSecret = []byte("0123456789abcdef0123456789abcdef-test-only")

// env is one catalog API on a fresh database.
type env struct {
	t       testing.TB
	db      *pgtest.DB
	srv     *server
	http    *httptest.Server
	owner   *pgxpool.Pool
	store   *store.Store
	metrics *prometheus.Registry
	ready   *readyFlag
}

// readyFlag is a Readiness whose answer a test sets.
type readyFlag struct {
	err chan error
}

func (f *readyFlag) check(context.Context) error {
	err := <-f.err
	f.err <- err
	return err
}

func (f *readyFlag) set(err error) {
	<-f.err
	f.err <- err
}

// fakeResolver resolves the few names the tests use, as DNS would.
type fakeResolver map[string][]netip.Addr

func (r fakeResolver) LookupNetIP(_ context.Context, _, host string) ([]netip.Addr, error) {
	if a, ok := r[host]; ok {
		return a, nil
	}
	return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
}

var resolver = fakeResolver{
	"harbor.example.com":   {netip.MustParseAddr("93.184.215.14")},
	"internal.example.com": {netip.MustParseAddr("10.1.2.3")},
	"metadata.example.com": {netip.MustParseAddr("169.254.169.254")},
}

func newEnv(tb testing.TB) *env {
	tb.Helper()
	ctx := context.Background()
	db := pgtest.New(tb)
	owner := pgtest.Pool(tb, db.OwnerURL)
	var types []store.IntegrationType
	for _, id := range []string{typeMem, typeHarbor} {
		schema, err := schemas.ConfigSchema(id)
		if err != nil {
			tb.Fatalf("schema of %s: %v", id, err)
		}
		types = append(types, store.IntegrationType{ID: id, DisplayName: id, Provider: strings.Split(id, ".")[1],
			ConfigSchema: schema, Capabilities: []string{"test", "health"}, Builtin: true})
	}
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
	ready := &readyFlag{err: make(chan error, 1)}
	ready.err <- nil
	s, err := newServer(Deps{Store: st, Auth: a, Checker: checker, Metrics: reg,
		Ready: []Readiness{ready.check, app.Ping}})
	if err != nil {
		tb.Fatal(err)
	}
	hs := httptest.NewServer(s.handler)
	tb.Cleanup(hs.Close)
	return &env{t: tb, db: db, srv: s, http: hs, owner: owner, store: st, metrics: reg, ready: ready}
}

// caller is a tenant's user with a token.
type caller struct {
	tenant string
	token  string
}

func (e *env) caller(tenant string, scopes ...string) caller {
	e.t.Helper()
	if len(scopes) == 0 {
		scopes = []string{ScopeRead, ScopeWrite}
	}
	tok, err := auth.DevToken(testSecret, testIssuer, testAudience, "user-"+tenant[:8], tenant, scopes, time.Hour)
	if err != nil {
		e.t.Fatal(err)
	}
	return caller{tenant: tenant, token: tok}
}

func (e *env) newCaller(scopes ...string) caller { return e.caller(uuid.NewString(), scopes...) }

// signed makes a token with arbitrary claims and key, for the tests of
// refused tokens.
func signed(tb testing.TB, key []byte, claims jwt.MapClaims) string {
	tb.Helper()
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString(key)
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

type response struct {
	Status int
	Header http.Header
	Body   []byte
}

func (r response) String() string {
	return fmt.Sprintf("%d %s", r.Status, r.Body)
}

func (r response) decode(tb testing.TB, v any) {
	tb.Helper()
	if err := json.Unmarshal(r.Body, v); err != nil {
		tb.Fatalf("decode %s: %v", r, err)
	}
}

// problemDoc is an RFC 9457 problem document as huma writes it.
type problemDoc struct {
	Type   string `json:"type"`
	Title  string `json:"title"`
	Status int    `json:"status"`
	Detail string `json:"detail"`
	Errors []struct {
		Location string `json:"location"`
		Message  string `json:"message"`
		Value    any    `json:"value"`
	} `json:"errors"`
}

func (r response) problem(tb testing.TB) problemDoc {
	tb.Helper()
	if ct := r.Header.Get("Content-Type"); ct != "application/problem+json" {
		tb.Fatalf("Content-Type = %q, want application/problem+json (%s)", ct, r)
	}
	var p problemDoc
	r.decode(tb, &p)
	if p.Status != r.Status {
		tb.Fatalf("problem status %d, response status %d", p.Status, r.Status)
	}
	return p
}

func (p problemDoc) locations() []string {
	var out []string
	for _, e := range p.Errors {
		out = append(out, e.Location)
	}
	return out
}

// do sends a request; body is sent as is if it is a string, else as JSON.
// headers are name, value pairs. It fails the test on a transport error,
// so it is for the test's goroutine; other goroutines use send.
func (e *env) do(c caller, method, path string, body any, headers ...string) response {
	e.t.Helper()
	r, err := e.send(c, method, path, body, headers...)
	if err != nil {
		e.t.Fatal(err)
	}
	return r
}

func (e *env) send(c caller, method, path string, body any, headers ...string) (response, error) {
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	default:
		raw, err := json.Marshal(b)
		if err != nil {
			return response{}, err
		}
		rd = bytes.NewReader(raw)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, e.http.URL+path, rd)
	if err != nil {
		return response{}, err
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	res, err := e.http.Client().Do(req)
	if err != nil {
		return response{}, fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		return response{}, fmt.Errorf("%s %s: %w", method, path, err)
	}
	return response{Status: res.StatusCode, Header: res.Header, Body: b}, nil
}

// want fails the test unless r has the status.
func want(tb testing.TB, r response, status int) {
	tb.Helper()
	if r.Status != status {
		tb.Fatalf("status %d, want %d: %s", r.Status, status, r.Body)
	}
}

// memInput is a valid integration of the in-memory type.
func memInput(name string) map[string]any {
	return map[string]any{"type": typeMem, "name": name, "config": map[string]any{"healthy": true, "token": "authref://env/MEM_TOKEN"}}
}

// harborInput is a valid Harbor integration.
func harborInput(name string) map[string]any {
	return map[string]any{"type": typeHarbor, "name": name, "authRef": "authref://vault/secret/data/harbor#robot",
		"config": map[string]any{"endpoint": "https://harbor.example.com", "username": "robot$ci", "password": "authref://vault/secret/data/harbor#password"}}
}

func (e *env) create(c caller, body map[string]any) Integration {
	e.t.Helper()
	r := e.do(c, http.MethodPost, "/api/v1/integrations", body)
	want(e.t, r, http.StatusCreated)
	var it Integration
	r.decode(e.t, &it)
	return it
}

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

// recordHealth stores a health check of an integration as the catalog's
// consumer of integration.health_checked would.
func recordHealth(tb testing.TB, e *env, tenant, integrationID, typ, status string) {
	tb.Helper()
	ev, err := events.New(events.SubjectIntegrationHealthChecked, "inthub/health-poller", tenant, events.HealthChecked{
		IntegrationID: integrationID, TenantID: tenant, Type: typ, Status: events.HealthStatus(status),
		LatencyMs: 12, Message: "ok", CheckedAt: time.Now().UTC(),
	})
	if err != nil {
		tb.Fatal(err)
	}
	if _, err := e.store.RecordHealth(context.Background(), ev); err != nil {
		tb.Fatalf("record health: %v", err)
	}
}
