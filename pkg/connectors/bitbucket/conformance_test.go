package bitbucket

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"inthub.dev/pkg/connectors"
	"inthub.dev/pkg/connectors/bitbucket/bitbuckettest"
	"inthub.dev/pkg/connectors/conntest"
)

// harness runs the conformance suite against the fake of one flavour and
// auth kind.
type harness struct{ f flavour }

func (harness) Capabilities() []string { return []string{conntest.Discoverer} }

func (harness) Secrets() []string { return []string{appPassword, cloudToken, dcPassword, dcToken} }

func (h harness) New(t *testing.T, sc conntest.Scenario) connectors.Connector {
	s := seeded(t, h.f)
	conf := map[string]any{"timeoutSeconds": int(conntest.Timeout.Seconds())}
	sec := defaultSecrets()
	switch sc {
	case conntest.Healthy:
	case conntest.BadCredentials:
		sec.m[passwordRef], sec.m[tokenRef] = "wrong-"+appPassword, "wrong-"+cloudToken
	case conntest.Unreachable:
		closed := httptest.NewServer(http.NotFoundHandler())
		closed.Close()
		conf["endpoint"] = closed.URL
	case conntest.Slow:
		s.Fail(bitbuckettest.RouteAll, bitbuckettest.Fault{Slow: true})
	case conntest.RateLimited:
		s.SetRemaining(0)
	case conntest.ServerError:
		s.Fail(bitbuckettest.RouteAll, bitbuckettest.Fault{Status: http.StatusInternalServerError})
	default:
		t.Fatalf("scenario %s not scripted", sc)
	}
	return newConn(t, s, h.f, opts{conf: conf, secrets: sec})
}

func TestConformance(t *testing.T) {
	for _, f := range flavours {
		t.Run(f.name, func(t *testing.T) { conntest.Run(t, harness{f}) })
	}
}
