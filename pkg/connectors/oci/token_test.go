package oci_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"code.dny.dev/ssrf"
	"github.com/opencontainers/go-digest"

	"inthub.dev/pkg/connectors"
	"inthub.dev/pkg/connectors/oci"
	"inthub.dev/pkg/fault"
)

// tokenRegistry is a fake of a registry behind a token service, enforcing
// the distribution token flow: every /v2/ call needs a bearer token, the
// token service needs basic credentials and hands out tokens for the scopes
// asked, a repository call needs a token with pull on that repository (the
// 401 challenge names the scope), and manifests are served only for an
// Accept that lists their media type.
type tokenRegistry struct {
	srv        *httptest.Server
	realmHost  string // host of the realm URL; the server's own by default
	user, pass string
	// omitDigest makes HEAD answer without Docker-Content-Digest.
	omitDigest bool
	// corrupt serves other bytes than those the digest names.
	corrupt atomic.Bool

	tokenCalls atomic.Int32
	mu         sync.Mutex
	tokens     map[string][]string // token → scopes
	tags       map[string][]string
	manifests  map[string]fakeManifest // "repo@ref"
}

type fakeManifest struct {
	mediaType string
	body      []byte
}

func newTokenRegistry(t testing.TB) *tokenRegistry {
	f := &tokenRegistry{user: "robot", pass: "t0ken-pass", tokens: map[string][]string{},
		tags: map[string][]string{}, manifests: map[string]fakeManifest{}}
	f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.srv.Close)
	f.realmHost = f.srv.Listener.Addr().String()
	return f
}

// add stores a manifest under its digest and a tag.
func (f *tokenRegistry) add(repo, tag, mediaType string, body []byte) digest.Digest {
	f.mu.Lock()
	defer f.mu.Unlock()
	d := digest.FromBytes(body)
	m := fakeManifest{mediaType: mediaType, body: body}
	f.manifests[repo+"@"+tag] = m
	f.manifests[repo+"@"+d.String()] = m
	f.tags[repo] = append(f.tags[repo], tag)
	sort.Strings(f.tags[repo])
	return d
}

func (f *tokenRegistry) challenge(w http.ResponseWriter, scope string) {
	v := fmt.Sprintf(`Bearer realm="http://%s/token",service="fake-registry"`, f.realmHost)
	if scope != "" {
		v += fmt.Sprintf(`,scope=%q`, scope)
	}
	w.Header().Set("WWW-Authenticate", v)
	writeErr(w, http.StatusUnauthorized, "UNAUTHORIZED", "authentication required")
}

func writeErr(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	fmt.Fprintf(w, `{"errors":[{"code":%q,"message":%q}]}`, code, msg)
}

func (f *tokenRegistry) serve(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/token" {
		f.tokenCalls.Add(1)
		u, p, ok := r.BasicAuth()
		if !ok || u != f.user || p != f.pass {
			writeErr(w, http.StatusUnauthorized, "UNAUTHORIZED", "bad credentials")
			return
		}
		if r.URL.Query().Get("service") != "fake-registry" {
			writeErr(w, http.StatusBadRequest, "UNSUPPORTED", "unknown service")
			return
		}
		b := make([]byte, 8)
		_, _ = rand.Read(b)
		tok := hex.EncodeToString(b)
		f.mu.Lock()
		f.tokens[tok] = r.URL.Query()["scope"]
		f.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"token":%q,"expires_in":300}`, tok)
		return
	}
	rest, ok := strings.CutPrefix(r.URL.Path, "/v2/")
	if !ok {
		http.NotFound(w, r)
		return
	}
	var scopes []string
	tok, hasTok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if hasTok {
		f.mu.Lock()
		scopes, hasTok = f.tokens[tok]
		f.mu.Unlock()
	}
	if rest == "" {
		if !hasTok {
			f.challenge(w, "")
			return
		}
		w.WriteHeader(http.StatusOK)
		return
	}
	if rest == "_catalog" {
		if !hasTok || !slices.Contains(scopes, "registry:catalog:*") {
			f.challenge(w, "registry:catalog:*")
			return
		}
		f.mu.Lock()
		var repos []string
		for r := range f.tags {
			repos = append(repos, r)
		}
		f.mu.Unlock()
		sort.Strings(repos)
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"repositories": repos})
		return
	}
	var repo, kind, ref string
	if i := strings.LastIndex(rest, "/tags/list"); i > 0 && i+len("/tags/list") == len(rest) {
		repo, kind = rest[:i], "tags"
	} else if i := strings.LastIndex(rest, "/manifests/"); i > 0 {
		repo, kind, ref = rest[:i], "manifests", rest[i+len("/manifests/"):]
	} else {
		writeErr(w, http.StatusNotFound, "NAME_UNKNOWN", "unknown path")
		return
	}
	scope := "repository:" + repo + ":pull"
	if !hasTok || !slices.Contains(scopes, scope) {
		f.challenge(w, scope)
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	tags, known := f.tags[repo]
	if !known {
		writeErr(w, http.StatusNotFound, "NAME_UNKNOWN", "repository name not known to registry")
		return
	}
	switch kind {
	case "tags":
		q := r.URL.Query()
		n, _ := strconv.Atoi(q.Get("n"))
		last := q.Get("last")
		var page []string
		for _, t := range tags {
			if t > last {
				page = append(page, t)
			}
		}
		if n > 0 && len(page) > n {
			page = page[:n]
			next := url.Values{"n": {strconv.Itoa(n)}, "last": {page[n-1]}}
			w.Header().Set("Link", fmt.Sprintf(`</v2/%s/tags/list?%s>; rel="next"`, repo, next.Encode()))
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"name": repo, "tags": page})
	case "manifests":
		m, ok := f.manifests[repo+"@"+ref]
		if !ok || !strings.Contains(r.Header.Get("Accept"), m.mediaType) {
			writeErr(w, http.StatusNotFound, "MANIFEST_UNKNOWN", "manifest unknown")
			return
		}
		body := m.body
		if f.corrupt.Load() {
			body = append(slices.Clone(body), ' ')
		}
		w.Header().Set("Content-Type", m.mediaType)
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		if !f.omitDigest {
			w.Header().Set("Docker-Content-Digest", digest.FromBytes(m.body).String())
		}
		if r.Method != http.MethodHead {
			_, _ = w.Write(body)
		}
	}
}

func (f *tokenRegistry) config(extra map[string]any) map[string]any {
	conf := map[string]any{"endpoint": f.srv.URL, "insecure": true, "username": f.user,
		"password": "authref://vault/registry#password", "probeRepository": "team/app", "timeoutSeconds": 5}
	for k, v := range extra {
		conf[k] = v
	}
	return conf
}

func (f *tokenRegistry) secrets() secrets {
	return secrets{"authref://vault/registry#password": f.pass}
}

// TestTokenFlow: the connector follows WWW-Authenticate to the token
// service with basic credentials and the challenged scope, lists tags by
// Link pages, and resolves digests with and without Docker-Content-Digest.
func TestTokenFlow(t *testing.T) {
	for _, omit := range []bool{false, true} {
		t.Run(fmt.Sprintf("omitDigest=%v", omit), func(t *testing.T) {
			ctx := context.Background()
			f := newTokenRegistry(t)
			f.omitDigest = omit
			single := f.add("team/app", "v1", oci.MediaTypeOCIManifest, []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{},"layers":[]}`))
			list := f.add("team/app", "multi", oci.MediaTypeDockerManifestList, []byte(`{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.list.v2+json","manifests":[]}`))
			for i := range 5 {
				f.add("team/app", fmt.Sprintf("t%d", i), oci.MediaTypeDockerManifest, []byte(fmt.Sprintf(`{"schemaVersion":2,"n":%d}`, i)))
			}
			e := newConnector(t, f.config(nil), f.secrets(), nil)

			var pages int
			tags := collect(t, func(o connectors.ListOptions) ([]string, string, error) {
				pages++
				page, err := e.c.ListTags(ctx, "team/app", o)
				var names []string
				for _, tg := range page.Items {
					names = append(names, tg.Name)
				}
				return names, page.Next, err
			})
			if want := []string{"multi", "t0", "t1", "t2", "t3", "t4", "v1"}; !slices.Equal(tags, want) || pages != 4 {
				t.Errorf("tags = %q in %d pages, want %q in 4", tags, pages, want)
			}
			for tag, want := range map[string]digest.Digest{"v1": single, "multi": list} {
				got, err := e.c.ResolveTag(ctx, "team/app", tag)
				if err != nil || got != want.String() {
					t.Errorf("ResolveTag(%s) = %s, %v; want %s", tag, got, err, want)
				}
			}
			m, err := e.c.FetchManifest(ctx, "team/app", "multi")
			if err != nil || m.MediaType != oci.MediaTypeDockerManifestList || m.Digest != list.String() {
				t.Errorf("FetchManifest(multi) = %s %s, %v", m.MediaType, m.Digest, err)
			}
			if err := e.c.VerifyDigest(ctx, "team/app", single.String()); err != nil {
				t.Errorf("VerifyDigest: %v", err)
			}
			res := e.c.TestConnection(ctx)
			if res.Status != connectors.StatusHealthy || len(res.Checks) != 3 {
				t.Errorf("TestConnection = %s %q: %s", res.Status, checkNames(res), res.Message)
			}

			// Content that does not hash to its digest is caught.
			f.corrupt.Store(true)
			err = e.c.VerifyDigest(ctx, "team/app", single.String())
			if fault.ClassOf(err) != fault.ClassPermanent || !strings.Contains(err.Error(), "hashes to") {
				t.Errorf("VerifyDigest of corrupt content: %v", err)
			}
			if _, err := e.c.FetchManifest(ctx, "team/app", single.String()); fault.ClassOf(err) != fault.ClassPermanent {
				t.Errorf("FetchManifest of corrupt content by digest: %v", err)
			}
			if strings.Contains(e.log.String(), f.pass) {
				t.Error("the password appears in the log")
			}
		})
	}
}

// TestTokenFlowFailures: bad credentials at the token service, a realm on
// another loopback host (oras-go's realm guard), and a missing password.
func TestTokenFlowFailures(t *testing.T) {
	ctx := context.Background()
	f := newTokenRegistry(t)
	f.add("team/app", "v1", oci.MediaTypeOCIManifest, []byte(`{}`))

	t.Run("wrong password", func(t *testing.T) {
		e := newConnector(t, f.config(nil), secrets{"authref://vault/registry#password": "nope"}, nil)
		res := e.c.TestConnection(ctx)
		if res.Class != fault.ClassPermanent || !strings.Contains(res.Message, "401") || !slices.Equal(checkNames(res), []string{"-ping"}) {
			t.Errorf("TestConnection = %s %s %q: %s", res.Status, res.Class, checkNames(res), res.Message)
		}
	})
	t.Run("secret not resolvable", func(t *testing.T) {
		e := newConnector(t, f.config(nil), secrets{}, nil)
		_, err := e.c.ResolveTag(ctx, "team/app", "v1")
		if fault.ClassOf(err) != fault.ClassPermanent || !strings.Contains(err.Error(), "AuthRef") {
			t.Errorf("ResolveTag = %v", err)
		}
	})
	t.Run("realm on another loopback host", func(t *testing.T) {
		// The registry is reached as localhost, the realm names 127.0.0.1:
		// oras-go refuses a loopback realm that is not the registry's host.
		other := newTokenRegistry(t)
		other.add("team/app", "v1", oci.MediaTypeOCIManifest, []byte(`{}`))
		other.realmHost = f.srv.Listener.Addr().String()
		_, port, _ := net.SplitHostPort(other.srv.Listener.Addr().String())
		e := newConnector(t, other.config(map[string]any{"endpoint": "http://localhost:" + port}), other.secrets(), nil)
		res := e.c.TestConnection(ctx)
		if res.Class != fault.ClassPermanent || !strings.Contains(res.Message, "realm") {
			t.Errorf("TestConnection = %s %s: %s", res.Status, res.Class, res.Message)
		}
		if f.tokenCalls.Load() != 0 && other.tokenCalls.Load() != 0 {
			t.Error("a token was requested from a refused realm")
		}
	})
}

// TestFaults: each failure comes back classified, with a clear message,
// and nothing hangs past the configured timeout.
func TestFaults(t *testing.T) {
	ctx := context.Background()
	status := func(code int, header ...string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			for i := 0; i+1 < len(header); i += 2 {
				w.Header().Set(header[i], header[i+1])
			}
			writeErr(w, code, "TOOMANY", http.StatusText(code))
		}
	}
	tests := []struct {
		name    string
		handler http.HandlerFunc
		class   fault.Class
		after   time.Duration
		message string
	}{
		{"401 without challenge", status(http.StatusUnauthorized), fault.ClassPermanent, 0, "401"},
		{"403", status(http.StatusForbidden), fault.ClassPermanent, 0, "403"},
		{"404", status(http.StatusNotFound), fault.ClassPermanent, 0, "404"},
		{"429 Retry-After seconds", status(http.StatusTooManyRequests, "Retry-After", "7"), fault.ClassTransient, 7 * time.Second, "429"},
		{"503 Retry-After date", status(http.StatusServiceUnavailable, "Retry-After", time.Now().Add(time.Hour).UTC().Format(http.TimeFormat)), fault.ClassTransient, time.Hour, "503"},
		{"500", status(http.StatusInternalServerError), fault.ClassTransient, 0, "500"},
		{"slow", func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() }, fault.ClassTransient, 0, "no answer within 1s"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := httptest.NewServer(tt.handler)
			t.Cleanup(srv.Close)
			e := newConnector(t, map[string]any{"endpoint": srv.URL, "insecure": true, "timeoutSeconds": 1, "probeRepository": "team/app"}, nil, nil)
			start := time.Now()
			_, err := e.c.ListTags(ctx, "team/app", connectors.ListOptions{})
			if time.Since(start) > 5*time.Second {
				t.Errorf("took %s with a 1s timeout", time.Since(start))
			}
			if fault.ClassOf(err) != tt.class || !strings.Contains(err.Error(), tt.message) {
				t.Fatalf("ListTags = %v (class %s), want %s …%s…", err, fault.ClassOf(err), tt.class, tt.message)
			}
			if got := fault.RetryAfterOf(err); tt.after > 0 && (got > tt.after || got < tt.after-time.Minute) {
				t.Errorf("RetryAfter = %s, want %s", got, tt.after)
			}
			res := e.c.CheckHealth(ctx)
			if res.Status != connectors.StatusUnhealthy || res.Class != tt.class || res.Err == nil || !strings.Contains(res.Message, tt.message) {
				t.Errorf("CheckHealth = %s %s %q", res.Status, res.Class, res.Message)
			}
		})
	}

	t.Run("connection refused", func(t *testing.T) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := l.Addr().String()
		l.Close()
		e := newConnector(t, map[string]any{"endpoint": "http://" + addr, "insecure": true}, nil, nil)
		err = e.c.Ping(ctx)
		// Nothing listens: offline (the shared rule of connectors.ClassifyNet).
		if fault.ClassOf(err) != fault.ClassOffline || !strings.Contains(err.Error(), "connection refused") {
			t.Errorf("Ping = %v", err)
		}
	})
	t.Run("self-signed TLS", func(t *testing.T) {
		srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
		srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused handshake is the point
		srv.StartTLS()
		t.Cleanup(srv.Close)
		e := newConnector(t, map[string]any{"endpoint": srv.URL}, nil, nil)
		err := e.c.Ping(ctx)
		if fault.ClassOf(err) != fault.ClassPermanent || !strings.Contains(err.Error(), "certificate does not verify") {
			t.Errorf("Ping = %v", err)
		}
	})
	t.Run("https to a plain http port", func(t *testing.T) {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
		t.Cleanup(srv.Close)
		e := newConnector(t, map[string]any{"endpoint": strings.Replace(srv.URL, "http://", "https://", 1)}, nil, nil)
		if err := e.c.Ping(ctx); fault.ClassOf(err) != fault.ClassPermanent {
			t.Errorf("Ping = %v", err)
		}
	})
	t.Run("DNS failure", func(t *testing.T) {
		e := newConnector(t, map[string]any{"endpoint": "https://registry.does-not-exist.invalid", "timeoutSeconds": 5}, nil, nil)
		err := e.c.Ping(ctx)
		if fault.ClassOf(err) == fault.ClassUnknown || !strings.Contains(err.Error(), "does-not-exist.invalid") {
			t.Errorf("Ping = %v (class %s)", err, fault.ClassOf(err))
		}
	})
	t.Run("egress policy", func(t *testing.T) {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
		t.Cleanup(srv.Close)
		guard := ssrf.New()
		tr := &http.Transport{Proxy: nil, DialContext: (&net.Dialer{Control: func(network, address string, _ syscall.RawConn) error {
			return guard.Safe(network, address, nil)
		}}).DialContext}
		t.Cleanup(tr.CloseIdleConnections)
		// Named by host name: the message must not tell what it resolved to.
		_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
		e := newConnector(t, map[string]any{"endpoint": "http://localhost:" + port, "insecure": true}, nil, &http.Client{Transport: tr})
		res := e.c.TestConnection(ctx)
		if res.Class != fault.ClassPermanent || !strings.Contains(res.Message, "egress policy") || strings.Contains(res.Message, "127.0.0.1") || strings.Contains(res.Message, "::1") {
			t.Errorf("TestConnection = %s %s %q", res.Status, res.Class, res.Message)
		}
	})
}
