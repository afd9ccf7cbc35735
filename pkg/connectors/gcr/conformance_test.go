package gcr_test

import (
	"net"
	"net/http"
	"testing"

	"inthub.dev/pkg/connectors"
	"inthub.dev/pkg/connectors/conntest"
)

// harness maps the conformance scenarios to the Google token endpoint
// fake: bad credentials is a key Google does not know (invalid_grant),
// rate limited its 429; slow, server error and unreachable are the token
// endpoint's.
type harness struct{}

func (harness) Capabilities() []string {
	return []string{conntest.Discoverer, conntest.ImageRegistry}
}

func (harness) Image() (string, string) { return repo, "v1" }

func (harness) Secrets() []string {
	return privateKeyLines(secrets{"authref://vault/gcp#key": keyJSON(keys()[0], "")})
}

func (harness) New(t *testing.T, sc conntest.Scenario) connectors.Connector {
	f := newFakeGoogle(t)
	conf := f.config(map[string]any{"timeoutSeconds": int(conntest.Timeout.Seconds())})
	sec := f.secrets()
	switch sc {
	case conntest.BadCredentials:
		sec = secrets{"authref://vault/gcp#key": keyJSON(keys()[1], f.tokenURL())}
	case conntest.Unreachable:
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		sec = secrets{"authref://vault/gcp#key": keyJSON(keys()[0], "http://"+l.Addr().String()+"/token")}
		l.Close()
	case conntest.Slow:
		slow := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_ = r.ParseForm()
			<-r.Context().Done()
		})}
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		go func() { _ = slow.Serve(l) }()
		t.Cleanup(func() { _ = slow.Close() })
		sec = secrets{"authref://vault/gcp#key": keyJSON(keys()[0], "http://"+l.Addr().String()+"/token")}
	case conntest.RateLimited:
		f.throttle.Store(true)
	case conntest.ServerError:
		f.fail.Store(true)
	}
	return newConnector(t, f, conf, sec).c
}

func TestConformance(t *testing.T) { conntest.Run(t, harness{}) }
