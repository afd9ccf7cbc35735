package oci_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"code.dny.dev/ssrf"
	"github.com/opencontainers/go-digest"

	"inthub.dev/pkg/connectors"
	"inthub.dev/pkg/connectors/oci"
	"inthub.dev/pkg/connectors/oci/ocitest"
	"inthub.dev/pkg/fault"
)

// newTokenRegistry starts the shared fake registry (ocitest) in its
// token-flow mode: robot / t0ken-pass at the token service.
func newTokenRegistry(t testing.TB) *ocitest.Registry { return ocitest.New(t) }

func writeErr(w http.ResponseWriter, status int, code, msg string) {
	ocitest.WriteError(w, status, code, msg)
}

func regConfig(f *ocitest.Registry, extra map[string]any) map[string]any {
	conf := map[string]any{"endpoint": f.URL, "insecure": true, "username": f.User,
		"password": "authref://vault/registry#password", "probeRepository": "team/app", "timeoutSeconds": 5}
	for k, v := range extra {
		conf[k] = v
	}
	return conf
}

func regSecrets(f *ocitest.Registry) secrets {
	return secrets{"authref://vault/registry#password": f.Password}
}

// TestTokenFlow: the connector follows WWW-Authenticate to the token
// service with basic credentials and the challenged scope, lists tags by
// Link pages, and resolves digests with and without Docker-Content-Digest.
func TestTokenFlow(t *testing.T) {
	for _, omit := range []bool{false, true} {
		t.Run(fmt.Sprintf("omitDigest=%v", omit), func(t *testing.T) {
			ctx := context.Background()
			f := newTokenRegistry(t)
			f.OmitDigest = omit
			single := f.Add("team/app", "v1", oci.MediaTypeOCIManifest, []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{},"layers":[]}`))
			list := f.Add("team/app", "multi", oci.MediaTypeDockerManifestList, []byte(`{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.list.v2+json","manifests":[]}`))
			for i := range 5 {
				f.Add("team/app", fmt.Sprintf("t%d", i), oci.MediaTypeDockerManifest, []byte(fmt.Sprintf(`{"schemaVersion":2,"n":%d}`, i)))
			}
			e := newConnector(t, regConfig(f, nil), regSecrets(f), nil)

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
				t.Errorf("TestConnection = %s %q: %s", res.Status, ocitest.CheckNames(res), res.Message)
			}

			// Content that does not hash to its digest is caught.
			f.Corrupt.Store(true)
			err = e.c.VerifyDigest(ctx, "team/app", single.String())
			if fault.ClassOf(err) != fault.ClassPermanent || !strings.Contains(err.Error(), "hashes to") {
				t.Errorf("VerifyDigest of corrupt content: %v", err)
			}
			if _, err := e.c.FetchManifest(ctx, "team/app", single.String()); fault.ClassOf(err) != fault.ClassPermanent {
				t.Errorf("FetchManifest of corrupt content by digest: %v", err)
			}
			if strings.Contains(e.log.String(), f.Password) {
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
	f.Add("team/app", "v1", oci.MediaTypeOCIManifest, []byte(`{}`))

	t.Run("wrong password", func(t *testing.T) {
		e := newConnector(t, regConfig(f, nil), secrets{"authref://vault/registry#password": "nope"}, nil)
		res := e.c.TestConnection(ctx)
		if res.Class != fault.ClassPermanent || !strings.Contains(res.Message, "401") || !slices.Equal(ocitest.CheckNames(res), []string{"-ping"}) {
			t.Errorf("TestConnection = %s %s %q: %s", res.Status, res.Class, ocitest.CheckNames(res), res.Message)
		}
	})
	t.Run("secret not resolvable", func(t *testing.T) {
		e := newConnector(t, regConfig(f, nil), secrets{}, nil)
		_, err := e.c.ResolveTag(ctx, "team/app", "v1")
		if fault.ClassOf(err) != fault.ClassPermanent || !strings.Contains(err.Error(), "AuthRef") {
			t.Errorf("ResolveTag = %v", err)
		}
	})
	t.Run("realm on another loopback host", func(t *testing.T) {
		// The registry is reached as localhost, the realm names 127.0.0.1:
		// oras-go refuses a loopback realm that is not the registry's host.
		other := newTokenRegistry(t)
		other.Add("team/app", "v1", oci.MediaTypeOCIManifest, []byte(`{}`))
		other.RealmHost = f.Host
		_, port, _ := net.SplitHostPort(other.Host)
		e := newConnector(t, regConfig(other, map[string]any{"endpoint": "http://localhost:" + port}), regSecrets(other), nil)
		res := e.c.TestConnection(ctx)
		if res.Class != fault.ClassPermanent || !strings.Contains(res.Message, "realm") {
			t.Errorf("TestConnection = %s %s: %s", res.Status, res.Class, res.Message)
		}
		if f.TokenCalls.Load() != 0 && other.TokenCalls.Load() != 0 {
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
