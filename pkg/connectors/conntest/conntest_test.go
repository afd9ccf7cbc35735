package conntest_test

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"inthub.dev/pkg/connectors"
	"inthub.dev/pkg/connectors/conntest"
	_ "inthub.dev/pkg/connectors/inmemory"
	"inthub.dev/pkg/fault"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const brokenType = "test.conntest-broken"

func init() {
	connectors.Default().Register(connectors.Info{Type: brokenType, Provider: "broken", ConfigSchema: []byte(`{"type":"object"}`)},
		func(connectors.Config) (connectors.Connector, error) { return &fake{}, nil })
}

// fake is a connector that gets one thing wrong, as its flaw says.
type fake struct {
	flaw   string
	sc     conntest.Scenario
	closed int
	stop   chan struct{}
}

func (f *fake) Type() string     { return brokenType }
func (f *fake) Provider() string { return "broken" }
func (f *fake) Validate() error  { return nil }
func (f *fake) Close() error {
	f.closed++
	if f.flaw == "close-twice" && f.closed > 1 {
		return errors.New("already closed")
	}
	return nil
}

func (f *fake) TestConnection(ctx context.Context) connectors.Result { return f.result(ctx) }
func (f *fake) CheckHealth(ctx context.Context) connectors.Result    { return f.result(ctx) }

func (f *fake) result(ctx context.Context) connectors.Result {
	start := time.Now()
	if f.flaw == "leak" {
		go func() { <-f.stop }() // never closed
	}
	if f.flaw == "hang" && f.sc == conntest.Slow {
		<-ctx.Done() // ignores its own timeout
	}
	var err error
	switch f.sc {
	case conntest.BadCredentials:
		err = fault.Permanentf("401 Unauthorized: the credentials were refused")
		if f.flaw == "wrong-class" {
			err = fault.Transient(errors.New("401"))
		}
	case conntest.Unreachable:
		err = fault.Offline(errors.New("connection refused"))
	case conntest.Slow:
		err = fault.Transient(errors.New("timed out after 1s"))
	case conntest.RateLimited:
		err = fault.RetryAfter(errors.New("429"), time.Minute)
		if f.flaw == "no-retry-hint" {
			err = fault.Transient(errors.New("429"))
		}
	case conntest.ServerError:
		err = fault.Transient(errors.New("500"))
	}
	if f.flaw == "secret-in-message" && err != nil {
		err = fault.Permanentf("refused token hunter2")
	}
	c := connectors.Check{Capability: "ping", OK: err == nil, Message: "ok", Latency: time.Millisecond, Class: fault.ClassOf(err), Err: err}
	if err != nil {
		c.Message = err.Error()
	}
	checks := []connectors.Check{c}
	if f.flaw == "no-checks" {
		checks = nil
	}
	r := connectors.NewResult(checks, start)
	if f.flaw == "no-checks" {
		r.Status, r.Message = connectors.StatusHealthy, "fine"
		if err != nil {
			r.Status, r.Class, r.Err, r.Message = connectors.StatusUnhealthy, fault.ClassOf(err), err, err.Error()
		}
	}
	return r
}

// discovering is the fake with a Discoverer nobody declared.
type discovering struct{ *fake }

func (discovering) ListRepositories(context.Context, connectors.ListOptions) (connectors.Page[connectors.Repository], error) {
	return connectors.Page[connectors.Repository]{}, nil
}
func (discovering) ListBranches(context.Context, string, connectors.ListOptions) (connectors.Page[connectors.Branch], error) {
	return connectors.Page[connectors.Branch]{}, nil
}
func (discovering) ListTags(context.Context, string, connectors.ListOptions) (connectors.Page[connectors.Tag], error) {
	return connectors.Page[connectors.Tag]{}, nil
}

type harness struct{ flaw string }

func (h harness) Capabilities() []string { return nil }
func (h harness) Secrets() []string      { return []string{"hunter2"} }
func (h harness) New(t *testing.T, sc conntest.Scenario) connectors.Connector {
	f := &fake{flaw: h.flaw, sc: sc, stop: make(chan struct{})}
	if h.flaw == "undeclared-interface" {
		return discovering{f}
	}
	return f
}

// TestBrokenConnector is run by TestSuiteCatchesFlaws in a child process,
// one flaw at a time; on its own it does nothing.
func TestBrokenConnector(t *testing.T) {
	flaw := os.Getenv("CONNTEST_FLAW")
	if flaw == "" {
		t.Skip("run by TestSuiteCatchesFlaws")
	}
	conntest.Run(t, harness{flaw: flaw})
}

// The suite passes a correct connector and fails each flawed one, saying why.
func TestSuiteCatchesFlaws(t *testing.T) {
	if testing.Short() {
		t.Skip("runs child processes")
	}
	tests := []struct{ flaw, says string }{
		{"", ""},
		{"wrong-class", "want permanent for refused credentials"},
		{"no-retry-hint", "want transient with a retry hint"},
		{"no-checks", "no per-capability Checks"},
		{"close-twice", "Close must be safe to call twice"},
		{"undeclared-interface", "the harness does not declare it"},
		{"secret-in-message", "holds a secret value"},
		{"leak", "found unexpected goroutines"},
		{"hang", "did not return within"},
	}
	for _, tc := range tests {
		t.Run("flaw="+tc.flaw, func(t *testing.T) {
			t.Parallel()
			cmd := exec.CommandContext(t.Context(), os.Args[0], "-test.run=^TestBrokenConnector$", "-test.count=1")
			cmd.Env = append(os.Environ(), "CONNTEST_FLAW="+tc.flaw)
			if tc.flaw == "" {
				cmd.Env = append(os.Environ(), "CONNTEST_FLAW=none")
			}
			out, err := cmd.CombinedOutput()
			if tc.says == "" {
				if err != nil {
					t.Fatalf("a correct connector failed the suite: %v\n%s", err, out)
				}
				return
			}
			if err == nil {
				t.Fatalf("the suite passed a connector with flaw %q\n%s", tc.flaw, out)
			}
			if !strings.Contains(string(out), tc.says) {
				t.Errorf("the suite failed flaw %q without saying %q:\n%s", tc.flaw, tc.says, out)
			}
		})
	}
}
