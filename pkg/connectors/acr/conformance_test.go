package acr_test

import (
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"

	"inthub.dev/pkg/connectors"
	"inthub.dev/pkg/connectors/conntest"
	"inthub.dev/pkg/connectors/oci/ocitest"
)

func errorsAs(err error, target any) bool { return errors.As(err, target) }

// harness maps the conformance scenarios to the AAD and ACR fakes
// (healthy, a wrong client secret) and to plain failing servers, which
// stand for both the registry and the authority.
type harness struct{}

func (harness) Capabilities() []string {
	return []string{conntest.Discoverer, conntest.ImageRegistry}
}

func (harness) Image() (string, string) { return "apps/web", "v1" }

func (harness) Secrets() []string { return []string{secret} }

func (harness) New(t *testing.T, sc conntest.Scenario) connectors.Connector {
	e := newEnv(t)
	timeout := map[string]any{"timeoutSeconds": int(conntest.Timeout.Seconds())}
	switch sc {
	case conntest.Healthy:
		// One repository: the fake's catalog does not page.
		e.acr = newFakeACROne(t, e.aad, e.clk)
		return e.connector(t, e.spConfig(timeout), secrets{secRef: secret})
	case conntest.BadCredentials:
		return e.connector(t, e.spConfig(timeout), secrets{secRef: "wrong"})
	case conntest.Unreachable:
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		url := "http://" + l.Addr().String()
		l.Close()
		return e.connector(t, e.spConfig(map[string]any{"endpoint": url, "authorityHost": url, "timeoutSeconds": 1}), secrets{secRef: secret})
	}
	handler := map[conntest.Scenario]http.HandlerFunc{
		conntest.Slow: func(w http.ResponseWriter, r *http.Request) {
			// net/http notices the client hanging up only once the body
			// is read, and the token calls POST one.
			_, _ = io.Copy(io.Discard, r.Body)
			<-r.Context().Done()
		},
		conntest.RateLimited: func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Retry-After", "3")
			ocitest.WriteError(w, http.StatusTooManyRequests, "TOOMANYREQUESTS", "slow down")
		},
		conntest.ServerError: func(w http.ResponseWriter, r *http.Request) {
			ocitest.WriteError(w, http.StatusInternalServerError, "UNKNOWN", "boom")
		},
	}[sc]
	srv := httptest.NewServer(handler)
	t.Cleanup(srv.Close)
	return e.connector(t, e.spConfig(map[string]any{"endpoint": srv.URL, "authorityHost": srv.URL, "timeoutSeconds": 1}), secrets{secRef: secret})
}

func TestConformance(t *testing.T) { conntest.Run(t, harness{}) }
