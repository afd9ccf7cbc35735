package gitlab

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"inthub.dev/pkg/connectors"
	"inthub.dev/pkg/connectors/conntest"
	"inthub.dev/pkg/connectors/gitlab/gitlabtest"
)

// harness runs the conformance suite against the fake GitLab, with an
// access token (the job-token flow has its own tests: its discovery of
// projects is, as on GitLab, refused).
type harness struct{}

func (harness) Capabilities() []string { return []string{conntest.Discoverer} }

func (harness) Secrets() []string { return []string{patValue, jobValue} }

func (harness) New(t *testing.T, sc conntest.Scenario) connectors.Connector {
	f := seeded(t)
	conf := map[string]any{"timeoutSeconds": int(conntest.Timeout.Seconds())}
	secrets := testSecrets()
	switch sc {
	case conntest.Healthy:
	case conntest.BadCredentials:
		secrets.m[patRef] = "glpat-revoked0000000000"
	case conntest.Unreachable:
		closed := httptest.NewServer(http.NotFoundHandler())
		closed.Close()
		conf["endpoint"] = closed.URL
	case conntest.Slow:
		f.Fail(gitlabtest.RouteAll, gitlabtest.Fault{Slow: true})
	case conntest.RateLimited:
		f.Fail(gitlabtest.RouteAll, gitlabtest.Fault{Status: http.StatusTooManyRequests, Header: http.Header{"Retry-After": {"17"}}, Body: `{"message":"Retry later"}`})
	case conntest.ServerError:
		f.Fail(gitlabtest.RouteAll, gitlabtest.Fault{Status: http.StatusInternalServerError, Body: `{"message":"500 Internal Server Error"}`})
	default:
		t.Fatalf("scenario %s not scripted", sc)
	}
	return newConn(t, f, opts{conf: conf, secrets: secrets})
}

func TestConformance(t *testing.T) { conntest.Run(t, harness{}) }
