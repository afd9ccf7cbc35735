package harbor_test

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"inthub.dev/pkg/connectors"
	"inthub.dev/pkg/connectors/conntest"
	"inthub.dev/pkg/connectors/oci/ocitest"
)

// harness maps the conformance scenarios to the Harbor fake (healthy, bad
// robot secret) and to plain failing servers.
type harness struct{}

func (harness) Capabilities() []string {
	return []string{conntest.Discoverer, conntest.ImageRegistry}
}

func (harness) Image() (string, string) { return "team/web", "latest" }

func (harness) Secrets() []string { return []string{secret} }

func (harness) New(t *testing.T, sc conntest.Scenario) connectors.Connector {
	timeout := map[string]any{"timeoutSeconds": int(conntest.Timeout.Seconds())}
	switch sc {
	case conntest.Healthy:
		return newConnector(t, newFakeHarbor(t), timeout, secrets{ref: secret})
	case conntest.BadCredentials:
		return newConnector(t, newFakeHarbor(t), timeout, secrets{ref: "wrong"})
	case conntest.Unreachable:
		// A fake whose URL points at a closed port.
		return newConnector(t, &fakeHarbor{srv: &httptest.Server{URL: ocitest.ClosedURL(t)}}, timeout, secrets{ref: secret})
	}
	handler := map[conntest.Scenario]http.HandlerFunc{
		conntest.Slow: func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() },
		conntest.RateLimited: func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Retry-After", "3")
			harborErr(w, http.StatusTooManyRequests, "TOO_MANY_REQUESTS", "slow down")
		},
		conntest.ServerError: func(w http.ResponseWriter, r *http.Request) {
			harborErr(w, http.StatusInternalServerError, "UNKNOWN", "internal error")
		},
	}[sc]
	srv := httptest.NewServer(handler)
	t.Cleanup(srv.Close)
	return newConnector(t, &fakeHarbor{srv: srv}, timeout, secrets{ref: secret})
}

func TestConformance(t *testing.T) { conntest.Run(t, harness{}) }
