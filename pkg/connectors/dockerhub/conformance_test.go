package dockerhub_test

import (
	"net/http"
	"strconv"
	"testing"
	"time"

	"inthub.dev/pkg/connectors"
	"inthub.dev/pkg/connectors/conntest"
	"inthub.dev/pkg/connectors/oci/ocitest"
)

// harness maps the conformance scenarios to the Docker Hub fake (healthy,
// a wrong PAT) and to plain failing servers standing for the registry and
// the Hub API; the rate-limited one answers as Docker Hub does, 429
// without Retry-After.
type harness struct{}

func (harness) Capabilities() []string {
	return []string{conntest.Discoverer, conntest.ImageRegistry}
}

func (harness) Image() (string, string) { return "acme/api", "latest" }

func (harness) Secrets() []string { return []string{pat} }

func (harness) New(t *testing.T, sc conntest.Scenario) connectors.Connector {
	timeout := int(conntest.Timeout.Seconds())
	switch sc {
	case conntest.Healthy, conntest.BadCredentials:
		f := newFakeHub(t)
		sec := secrets{patRef: pat}
		if sc == conntest.BadCredentials {
			sec = secrets{patRef: "dckr_pat_wrong"}
		}
		return newConnector(t, f.config(map[string]any{"timeoutSeconds": timeout}), sec, nil)
	case conntest.Unreachable:
		url := ocitest.ClosedURL(t)
		return newConnector(t, map[string]any{"endpoint": url, "hubEndpoint": url, "insecure": true, "username": user,
			"token": patRef, "timeoutSeconds": timeout}, secrets{patRef: pat}, nil)
	}
	url := ocitest.Failing(t, sc, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Ratelimit-Limit", "100;w=21600")
		w.Header().Set("Ratelimit-Remaining", "0;w=21600")
		w.Header().Set("X-Ratelimit-Limit", "180")
		w.Header().Set("X-Ratelimit-Remaining", "0")
		w.Header().Set("X-Ratelimit-Reset", strconv.FormatInt(time.Now().Add(time.Minute).Unix(), 10))
		ocitest.WriteError(w, http.StatusTooManyRequests, "TOOMANYREQUESTS", "You have reached your pull rate limit.")
	})
	return newConnector(t, map[string]any{"endpoint": url, "hubEndpoint": url, "insecure": true, "username": user,
		"token": patRef, "probeRepository": "acme/api", "timeoutSeconds": timeout}, secrets{patRef: pat}, nil)
}

func TestConformance(t *testing.T) { conntest.Run(t, harness{}) }
