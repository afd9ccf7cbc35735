package acr_test

import (
	"errors"
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
		url := ocitest.ClosedURL(t)
		return e.connector(t, e.spConfig(map[string]any{"endpoint": url, "authorityHost": url, "timeoutSeconds": 1}), secrets{secRef: secret})
	}
	url := ocitest.Failing(t, sc, ocitest.TooManyRequests("3", "slow down"))
	return e.connector(t, e.spConfig(map[string]any{"endpoint": url, "authorityHost": url, "timeoutSeconds": 1}), secrets{secRef: secret})
}

func TestConformance(t *testing.T) { conntest.Run(t, harness{}) }
