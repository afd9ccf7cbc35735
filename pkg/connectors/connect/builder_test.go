package connect

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"inthub.dev/events"
	"inthub.dev/pkg/connectors"
	"inthub.dev/pkg/egress"
	"inthub.dev/pkg/fault"
)

const typeFake = "test.fake"

// fakeConnector does what its fields say; closed counts its Close calls.
type fakeConnector struct {
	provisionErr error
	panicOn      string // "test", "health"
	block        bool   // wait for the context to end
	closed       *atomic.Int64
}

func (f *fakeConnector) Type() string     { return typeFake }
func (f *fakeConnector) Provider() string { return "fake" }
func (f *fakeConnector) Validate() error  { return nil }
func (f *fakeConnector) Close() error     { f.closed.Add(1); return nil }

func (f *fakeConnector) Provision(context.Context) error { return f.provisionErr }

func (f *fakeConnector) probe(ctx context.Context, op string) connectors.Result {
	start := time.Now()
	if f.panicOn == op {
		panic("fake connector: " + op)
	}
	if f.block {
		<-ctx.Done()
		return connectors.FailedResult(start, op, fault.Transient(ctx.Err()))
	}
	return connectors.NewResult([]connectors.Check{{Capability: op, OK: true}}, start)
}

func (f *fakeConnector) TestConnection(ctx context.Context) connectors.Result {
	return f.probe(ctx, "test")
}

func (f *fakeConnector) CheckHealth(ctx context.Context) connectors.Result {
	return f.probe(ctx, "health")
}

// TestBuilderLifecycle: a connector that fails to provision is a failed
// "auth" check; a panicking one is a failed result, not a crash; a slow
// one is cut off by the operation's timeout; every connector built is
// closed after use.
func TestBuilderLifecycle(t *testing.T) {
	for _, tc := range []struct {
		name      string
		fake      fakeConnector
		config    string
		health    bool
		wantCheck string
		wantClass fault.Class
		wantMsg   string
	}{
		{name: "provision fails", fake: fakeConnector{provisionErr: fault.Permanentf("credentials refused")},
			wantCheck: "auth", wantClass: fault.ClassPermanent, wantMsg: "credentials refused"},
		{name: "test panics", fake: fakeConnector{panicOn: "test"},
			wantCheck: "connector", wantClass: fault.ClassPermanent, wantMsg: "failed unexpectedly"},
		{name: "health panics", fake: fakeConnector{panicOn: "health"}, health: true,
			wantCheck: "connector", wantClass: fault.ClassPermanent, wantMsg: "failed unexpectedly"},
		// 3×1s + 5s: the operation's bound, not the caller's context.
		{name: "slow connector", fake: fakeConnector{block: true}, config: `{"timeoutSeconds":1}`,
			wantCheck: "test", wantClass: fault.ClassTransient, wantMsg: "deadline"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var built, closed atomic.Int64
			reg := connectors.NewRegistry()
			reg.Register(connectors.Info{Type: typeFake, Provider: "fake"}, func(connectors.Config) (connectors.Connector, error) {
				built.Add(1)
				f := tc.fake
				f.closed = &closed
				return &f, nil
			})
			b, err := New(reg, nil, egress.Policy{})
			if err != nil {
				t.Fatal(err)
			}
			defer b.Close()
			it := events.Integration{ID: "0b5c7d1e-8f7a-4c3b-9a2d-1e2f3a4b5c6d", TenantID: "6f1a2b3c-4d5e-4f60-8a7b-9c0d1e2f3a4b",
				Type: typeFake, Version: 1}
			if tc.config != "" {
				it.Config = []byte(tc.config)
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			start := time.Now()
			var res connectors.Result
			if tc.health {
				out, err := b.CheckHealth(ctx, it)
				if err != nil {
					t.Fatal(err)
				}
				res = out.Result
			} else {
				out, err := b.Test(ctx, it, true)
				if err != nil {
					t.Fatal(err)
				}
				res = out.Result
			}
			if res.OK() || res.Class != tc.wantClass || len(res.Checks) != 1 || res.Checks[0].Capability != tc.wantCheck ||
				!strings.Contains(res.Message, tc.wantMsg) {
				t.Errorf("result %+v, want a failed %q check of class %v saying %q", res, tc.wantCheck, tc.wantClass, tc.wantMsg)
			}
			if el := time.Since(start); el > 30*time.Second {
				t.Errorf("took %v", el)
			}
			if built.Load() != 1 || closed.Load() != 1 {
				t.Errorf("built %d, closed %d: want 1 and 1", built.Load(), closed.Load())
			}
		})
	}
}

// TestResourcesUnbuildable: a connector that cannot be built is a
// *ProviderError of its class (the provider cannot be asked).
func TestResourcesUnbuildable(t *testing.T) {
	reg := connectors.NewRegistry()
	var closed atomic.Int64
	reg.Register(connectors.Info{Type: typeFake, Provider: "fake", Capabilities: []string{KindRepos}},
		func(connectors.Config) (connectors.Connector, error) {
			return &listerConnector{fakeConnector: fakeConnector{provisionErr: fault.RetryAfter(errors.New("rate limited"), time.Minute), closed: &closed},
				calls: new(atomic.Int64)}, nil
		})
	b, err := New(reg, nil, egress.Policy{})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	it := events.Integration{ID: "0b5c7d1e-8f7a-4c3b-9a2d-1e2f3a4b5c6d", TenantID: "6f1a2b3c-4d5e-4f60-8a7b-9c0d1e2f3a4b", Type: typeFake}
	_, err = b.Resources(context.Background(), it, ResourceQuery{Kind: KindRepos})
	var pe *ProviderError
	if !errors.As(err, &pe) || pe.Provider != "fake" || pe.Class() != fault.ClassTransient || fault.RetryAfterOf(err) != time.Minute {
		t.Errorf("Resources: %v", err)
	}
	if closed.Load() != 1 {
		t.Errorf("closed %d times", closed.Load())
	}
}
