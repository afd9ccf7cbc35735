package connect

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"inthub.dev/events"
	"inthub.dev/pkg/authref"
	"inthub.dev/pkg/connectors"
	"inthub.dev/pkg/connectors/inmemory"
	"inthub.dev/pkg/egress"
	"inthub.dev/pkg/fault"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func portOf(t *testing.T, s *httptest.Server) int {
	t.Helper()
	_, p, err := net.SplitHostPort(s.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	n, _ := strconv.Atoi(p)
	return n
}

// serverOn starts a server listening on addr (127.0.0.2 is loopback too,
// and outside an allow-list of 127.0.0.1/32 alone).
func serverOn(t *testing.T, addr string, h http.Handler) *httptest.Server {
	t.Helper()
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Skipf("cannot listen on %s: %v", addr, err)
	}
	s := httptest.NewUnstartedServer(h)
	s.Listener.Close()
	s.Listener = l
	s.Start()
	t.Cleanup(s.Close)
	return s
}

func newTestBuilder(t *testing.T, policy egress.Policy, opts ...Option) *Builder {
	t.Helper()
	b, err := New(connectors.NewRegistry(), nil, policy, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	return b
}

func get(t *testing.T, c *http.Client, url string) (*http.Response, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := connectors.Do(c, req)
	if err == nil {
		_, err = io.ReadAll(resp.Body)
		resp.Body.Close()
	}
	return resp, err
}

// TestClientRefusesRedirectsToDeniedAddresses: the endpoint is allowed
// (127.0.0.2, on the tenant's allow-list), and it redirects to addresses
// the policy denies; each is refused at dial time, no connection reaches
// the target, and the message names no address.
func TestClientRefusesRedirectsToDeniedAddresses(t *testing.T) {
	var targetHits atomic.Int64
	target := serverOn(t, "127.0.0.1:0", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		targetHits.Add(1)
	}))
	tp := portOf(t, target)
	var location atomic.Value
	front := serverOn(t, "127.0.0.2:0", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, location.Load().(string), http.StatusFound)
	}))
	fp := portOf(t, front)
	policy := egress.Policy{AllowHTTP: true, AllowPorts: []int{tp, fp, 8080},
		AllowPrefixes: []netip.Prefix{netip.MustParsePrefix("127.0.0.2/32")}}
	b := newTestBuilder(t, policy)
	c := newClient(b.transport, policy, 5*time.Second, DefaultMaxBodyBytes)

	for _, loc := range []string{
		"http://127.0.0.1:" + strconv.Itoa(tp) + "/",
		"http://[::ffff:127.0.0.1]:" + strconv.Itoa(tp) + "/",
		"http://localhost:" + strconv.Itoa(tp) + "/",
		"http://0.0.0.0:" + strconv.Itoa(tp) + "/",
		"http://169.254.169.254:8080/latest/meta-data/",
		"http://10.0.0.1:8080/",
	} {
		t.Run(loc, func(t *testing.T) {
			location.Store(loc)
			_, err := get(t, c, front.URL+"/v2/")
			if err == nil {
				t.Fatal("the redirect was followed")
			}
			if fault.ClassOf(err) != fault.ClassPermanent || !errors.Is(err, egress.ErrDenied) {
				t.Errorf("class %v, denied %v: %v", fault.ClassOf(err), errors.Is(err, egress.ErrDenied), err)
			}
			// The message may repeat the host the redirect named, never
			// what a name resolved to nor the policy's detail.
			var re *connectors.RequestError
			if !errors.As(err, &re) {
				t.Fatalf("not a RequestError: %v", err)
			}
			leaks := []string{"loopback", "private", "link-local", "unspecified"}
			if strings.Contains(loc, "localhost") {
				leaks = append(leaks, "127.0.0.1", "::1")
			}
			for _, leak := range leaks {
				if strings.Contains(re.Error(), leak) {
					t.Errorf("message %q tells %q", re.Error(), leak)
				}
			}
		})
	}
	if n := targetHits.Load(); n != 0 {
		t.Errorf("%d requests reached the denied target", n)
	}

	t.Run("allowed endpoint works", func(t *testing.T) {
		location.Store("/ok")
		front2 := serverOn(t, "127.0.0.2:0", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
		p2 := portOf(t, front2)
		pol := policy
		pol.AllowPorts = append(pol.AllowPorts, p2)
		b2 := newTestBuilder(t, pol)
		if _, err := get(t, newClient(b2.transport, pol, 5*time.Second, 0), front2.URL); err != nil {
			t.Fatal(err)
		}
	})
}

func TestClientRedirectAndBodyLimits(t *testing.T) {
	var hops atomic.Int64
	loop := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/big":
			_, _ = w.Write(bytes.Repeat([]byte("x"), 2048))
		case "/exact":
			_, _ = w.Write(bytes.Repeat([]byte("x"), 1024))
		default:
			hops.Add(1)
			http.Redirect(w, r, "/loop"+strconv.FormatInt(hops.Load(), 10), http.StatusFound)
		}
	}))
	defer loop.Close()
	policy := egress.Policy{AllowHTTP: true, AllowLoopback: true, AllowPorts: []int{portOf(t, loop)}}
	b := newTestBuilder(t, policy)
	c := newClient(b.transport, policy, 5*time.Second, 1024)

	if _, err := get(t, c, loop.URL+"/loop"); err == nil || !strings.Contains(err.Error(), "redirects") {
		t.Errorf("redirect loop: %v", err)
	}
	if n := hops.Load(); n != maxRedirects+1 {
		t.Errorf("%d requests in a redirect loop, want %d", n, maxRedirects+1)
	}
	if _, err := get(t, c, loop.URL+"/big"); !errors.Is(err, ErrBodyTooLarge) || fault.ClassOf(err) != fault.ClassPermanent {
		t.Errorf("body over the limit: %v", err)
	}
	if _, err := get(t, c, loop.URL+"/exact"); err != nil {
		t.Errorf("body at the limit: %v", err)
	}

	// Plain http is refused unless the policy allows it.
	strict := policy
	strict.AllowHTTP = false
	if _, err := get(t, newClient(b.transport, strict, 5*time.Second, 0), loop.URL+"/big"); !errors.Is(err, egress.ErrDenied) {
		t.Errorf("http with AllowHTTP false: %v", err)
	}
}

func TestClientRefusesHTTPSDowngrade(t *testing.T) {
	var plainHits atomic.Int64
	plain := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { plainHits.Add(1) }))
	defer plain.Close()
	tlsSrv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, plain.URL+"/", http.StatusFound)
	}))
	defer tlsSrv.Close()
	policy := egress.Policy{AllowHTTP: true, AllowLoopback: true, AllowPorts: []int{portOf(t, plain), portOf(t, tlsSrv)}}
	b := newTestBuilder(t, policy)
	pool := x509.NewCertPool()
	pool.AddCert(tlsSrv.Certificate())
	b.transport.TLSClientConfig.RootCAs = pool
	_, err := get(t, newClient(b.transport, policy, 5*time.Second, 0), tlsSrv.URL+"/")
	if !errors.Is(err, egress.ErrDenied) || fault.ClassOf(err) != fault.ClassPermanent {
		t.Errorf("https → http redirect: %v", err)
	}
	if plainHits.Load() != 0 {
		t.Error("the plain-http target was called")
	}
}

func TestTimeoutOf(t *testing.T) {
	for raw, want := range map[string]time.Duration{
		``:                         DefaultTimeout,
		`{}`:                       DefaultTimeout,
		`{"timeoutSeconds":3}`:     3 * time.Second,
		`{"timeoutSeconds":0}`:     DefaultTimeout,
		`{"timeoutSeconds":9999}`:  300 * time.Second,
		`{"timeoutSeconds":"ten"}`: DefaultTimeout,
		`[1]`:                      DefaultTimeout,
	} {
		if got := timeoutOf(json.RawMessage(raw)); got != want {
			t.Errorf("timeoutOf(%s) = %v, want %v", raw, got, want)
		}
	}
}

type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// resolution is what the resolver's hook saw.
type resolution struct {
	call       Call
	attributed bool
	ref        string
	failed     bool
}

// hookRecorder is a resolver hook that records the call of each
// resolution, as an auditing hook (the catalog's) reads it.
type hookRecorder struct {
	mu   sync.Mutex
	seen []resolution
}

func (h *hookRecorder) hook(ctx context.Context, r authref.Resolution) {
	c, ok := CallFrom(ctx)
	h.mu.Lock()
	defer h.mu.Unlock()
	h.seen = append(h.seen, resolution{call: c, attributed: ok, ref: r.Ref, failed: r.Err != nil})
}

func (h *hookRecorder) take() []resolution {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := h.seen
	h.seen = nil
	return out
}

// TestSecretsAttributedPerIntegration: a connector's resolutions reach the
// resolver's hook with its tenant, integration and actor (none when no
// actor is named); a resolution outside a Builder's call is not
// attributed; the secret is in no log line.
func TestSecretsAttributedPerIntegration(t *testing.T) {
	const secret = "connect-secret-9d1e"
	t.Setenv("INTHUB_CONNECT_TEST_TOKEN", secret)
	var logs logBuffer
	log := slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	rec := &hookRecorder{}
	resolver := authref.NewResolver(authref.WithHook(rec.hook), authref.WithLogger(log))
	reg := connectors.NewRegistry()
	reg.Register(inmemory.Info(nil), inmemory.New)
	b, err := New(reg, resolver, egress.Policy{}, WithLogger(log))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	it := events.Integration{ID: "0b5c7d1e-8f7a-4c3b-9a2d-1e2f3a4b5c6d", TenantID: "6f1a2b3c-4d5e-4f60-8a7b-9c0d1e2f3a4b",
		Type: inmemory.Type, Version: 1, Config: json.RawMessage(`{"token":"authref://env/INTHUB_CONNECT_TEST_TOKEN"}`)}
	const ref = "authref://env/INTHUB_CONNECT_TEST_TOKEN"

	out, err := b.Test(WithActor(context.Background(), "alice"), it, false)
	if err != nil || out.Result.Status != connectors.StatusHealthy {
		t.Fatalf("test: %v %+v", err, out.Result)
	}
	want := Call{TenantID: it.TenantID, IntegrationID: it.ID, Actor: "alice"}
	if seen := rec.take(); len(seen) != 1 || !seen[0].attributed || seen[0].call != want || seen[0].ref != ref || seen[0].failed {
		t.Fatalf("resolutions %+v, want one for %+v", seen, want)
	}

	// A scheduled check names no actor.
	h, err := b.CheckHealth(context.Background(), it)
	if err != nil || h.Result.Status != connectors.StatusHealthy {
		t.Fatalf("health: %v %+v", err, h.Result)
	}
	want.Actor = ""
	if seen := rec.take(); len(seen) != 1 || !seen[0].attributed || seen[0].call != want {
		t.Fatalf("resolutions %+v, want one for %+v", seen, want)
	}

	// A resolution outside a Builder's call has no Call.
	if _, err := resolver.Resolve(context.Background(), ref); err != nil {
		t.Fatal(err)
	}
	if seen := rec.take(); len(seen) != 1 || seen[0].attributed {
		t.Fatalf("resolution outside a call: %+v", seen)
	}
	if strings.Contains(logs.String(), secret) {
		t.Error("the logs contain the secret")
	}
}

func TestNoConnectorAndUnsupported(t *testing.T) {
	reg := connectors.NewRegistry()
	reg.Register(inmemory.Info(nil), inmemory.New)
	b, err := New(reg, nil, egress.Policy{})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	ctx := context.Background()
	it := events.Integration{ID: "0b5c7d1e-8f7a-4c3b-9a2d-1e2f3a4b5c6d", TenantID: "6f1a2b3c-4d5e-4f60-8a7b-9c0d1e2f3a4b", Type: "scm.nope"}
	if _, err := b.Test(ctx, it, false); !errors.Is(err, ErrNoConnector) {
		t.Errorf("Test: %v", err)
	}
	if _, err := b.CheckHealth(ctx, it); !errors.Is(err, ErrNoConnector) {
		t.Errorf("CheckHealth: %v", err)
	}
	if _, err := b.Resources(ctx, it, ResourceQuery{Kind: KindRepos}); !errors.Is(err, ErrNoConnector) {
		t.Errorf("Resources: %v", err)
	}
	it.Type = inmemory.Type
	var ue *UnsupportedError
	if _, err := b.Resources(ctx, it, ResourceQuery{Kind: "pipelines"}); !errors.As(err, &ue) {
		t.Errorf("unknown kind: %v", err)
	}
	// A secret with no resolver configured is a failed result, not a crash.
	it.Config = json.RawMessage(`{"token":"authref://env/X"}`)
	out, err := b.Test(ctx, it, false)
	if err != nil || out.Result.Status != connectors.StatusUnhealthy || out.Result.Class != fault.ClassPermanent {
		t.Errorf("no resolver: %v %+v", err, out.Result)
	}
	// A config the connector refuses is a failed "config" check.
	it.Config = json.RawMessage(`{"nope":1}`)
	out, err = b.Test(ctx, it, true)
	if err != nil || out.Result.OK() || len(out.Result.Checks) != 1 || out.Result.Checks[0].Capability != "config" {
		t.Errorf("bad config: %v %+v", err, out.Result)
	}
}
