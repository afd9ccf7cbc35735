package ghcr_test

import (
	"testing"

	"inthub.dev/pkg/connectors"
	"inthub.dev/pkg/connectors/conntest"
	"inthub.dev/pkg/connectors/oci/ocitest"
)

// harness maps the conformance scenarios to the GitHub fake (healthy, a
// bad PAT) and to plain failing servers standing for the registry and the
// API.
type harness struct{}

func (harness) Capabilities() []string {
	return []string{conntest.Discoverer, conntest.ImageRegistry}
}

func (harness) Image() (string, string) { return "acme/api", "v1" }

func (harness) Secrets() []string { return []string{pat} }

func (harness) New(t *testing.T, sc conntest.Scenario) connectors.Connector {
	timeout := int(conntest.Timeout.Seconds())
	switch sc {
	case conntest.Healthy, conntest.BadCredentials:
		f := newFakeGitHub(t)
		sec := secrets{patRef: pat}
		if sc == conntest.BadCredentials {
			sec = secrets{patRef: "ghp_wrong"}
		}
		return newConnector(t, f.config(map[string]any{"timeoutSeconds": timeout}), sec, nil)
	case conntest.Unreachable:
		url := ocitest.ClosedURL(t)
		return newConnector(t, map[string]any{"endpoint": url, "apiEndpoint": url, "insecure": true, "username": user,
			"token": patRef, "timeoutSeconds": timeout}, secrets{patRef: pat}, nil)
	}
	url := ocitest.Failing(t, sc, ocitest.TooManyRequests("60", "retry later"))
	return newConnector(t, map[string]any{"endpoint": url, "apiEndpoint": url, "insecure": true, "username": user,
		"token": patRef, "probeRepository": "acme/api", "timeoutSeconds": timeout}, secrets{patRef: pat}, nil)
}

func TestConformance(t *testing.T) { conntest.Run(t, harness{}) }
