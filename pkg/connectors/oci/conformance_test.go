package oci_test

import (
	"net"
	"net/http"
	"net/http/httptest"
	"testing"

	"inthub.dev/pkg/connectors"
	"inthub.dev/pkg/connectors/conntest"
	"inthub.dev/pkg/connectors/oci"
)

// harness maps the conformance scenarios to the token-flow fake (healthy,
// bad credentials) and to plain failing servers.
type harness struct{}

func (harness) Capabilities() []string {
	return []string{conntest.Discoverer, conntest.ImageRegistry}
}

func (harness) Image() (string, string) { return "team/app", "v1" }

func (harness) Secrets() []string { return []string{"t0ken-pass"} }

func (harness) New(t *testing.T, sc conntest.Scenario) connectors.Connector {
	timeout := int(conntest.Timeout.Seconds())
	var conf map[string]any
	sec := secrets{}
	switch sc {
	case conntest.Healthy, conntest.BadCredentials:
		f := newTokenRegistry(t)
		f.Add("team/app", "v1", oci.MediaTypeOCIManifest, []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{},"layers":[]}`))
		conf = regConfig(f, map[string]any{"timeoutSeconds": timeout})
		sec = regSecrets(f)
		if sc == conntest.BadCredentials {
			sec = secrets{"authref://vault/registry#password": "wrong"}
		}
	case conntest.Unreachable:
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := l.Addr().String()
		l.Close()
		conf = map[string]any{"endpoint": "http://" + addr, "insecure": true, "timeoutSeconds": timeout, "probeRepository": "team/app"}
	default:
		handler := map[conntest.Scenario]http.HandlerFunc{
			conntest.Slow: func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() },
			conntest.RateLimited: func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Retry-After", "3")
				writeErr(w, http.StatusTooManyRequests, "TOOMANYREQUESTS", "slow down")
			},
			conntest.ServerError: func(w http.ResponseWriter, r *http.Request) {
				writeErr(w, http.StatusInternalServerError, "UNKNOWN", "boom")
			},
		}[sc]
		srv := httptest.NewServer(handler)
		t.Cleanup(srv.Close)
		conf = map[string]any{"endpoint": srv.URL, "insecure": true, "timeoutSeconds": timeout, "probeRepository": "team/app"}
	}
	return newConnector(t, conf, sec, nil).c
}

func TestConformance(t *testing.T) { conntest.Run(t, harness{}) }
