package ecr_test

import (
	"net"
	"testing"

	"inthub.dev/pkg/connectors"
	"inthub.dev/pkg/connectors/conntest"
)

// harness maps the conformance scenarios to the ECR API fake: bad
// credentials is a wrong secret key (SigV4 refused), rate limited is
// ECR's ThrottlingException, the others are the API's endpoint slow,
// failing or closed.
type harness struct{}

func (harness) Capabilities() []string {
	return []string{conntest.Discoverer, conntest.ImageRegistry}
}

func (harness) Image() (string, string) { return repo, "v1" }

func (harness) Secrets() []string { return []string{staticSec} }

func (harness) New(t *testing.T, sc conntest.Scenario) connectors.Connector {
	f := newFakeAWS(t)
	conf := f.config(map[string]any{"timeoutSeconds": int(conntest.Timeout.Seconds())})
	sec := goodSecrets
	switch sc {
	case conntest.BadCredentials:
		sec = secrets{"authref://vault/aws#secret": "wrong-" + staticSec[6:]}
	case conntest.Unreachable:
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		conf["apiEndpoint"] = "http://" + l.Addr().String()
		l.Close()
	case conntest.Slow:
		f.ecrSlow.Store(true)
	case conntest.RateLimited:
		f.ecrThrottle.Store(true)
	case conntest.ServerError:
		f.ecrFail.Store(true)
	}
	return newConnector(t, f, conf, sec).c
}

func TestConformance(t *testing.T) { conntest.Run(t, harness{}) }
