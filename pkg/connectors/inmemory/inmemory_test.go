package inmemory_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"inthub.dev/pkg/connectors"
	"inthub.dev/pkg/connectors/conntest"
	"inthub.dev/pkg/connectors/inmemory"
	"inthub.dev/pkg/fault"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const tokenRef = "authref://env/INMEMORY_TOKEN"

// secrets resolves one AuthRef to a value the suite must never see again.
type secrets struct{ value string }

func (s secrets) Resolve(_ context.Context, ref string) ([]byte, error) {
	if ref != tokenRef {
		return nil, fault.Permanentf("unknown ref %q", ref)
	}
	return []byte(s.value), nil
}

type harness struct{}

func (harness) Capabilities() []string {
	return []string{conntest.Discoverer, conntest.ImageRegistry}
}

func (harness) Image() (string, string) { return "library/nginx", "latest" }

func (harness) Secrets() []string { return []string{"hunter2-inmemory"} }

// New maps a scenario to the double's knobs.
func (harness) New(t *testing.T, sc conntest.Scenario) connectors.Connector {
	conf := map[string]any{"token": tokenRef, "timeoutSeconds": int(conntest.Timeout / time.Second)}
	switch sc {
	case conntest.Healthy:
	case conntest.BadCredentials:
		conf["failWith"] = "permanent"
	case conntest.Unreachable:
		conf["failWith"] = "offline"
	case conntest.Slow:
		conf["latencyMs"] = 10_000
	case conntest.RateLimited:
		conf["failWith"], conf["retryAfterSeconds"] = "transient", 30
	case conntest.ServerError:
		conf["failWith"] = "transient"
	default:
		t.Fatalf("no mapping for scenario %q", sc)
	}
	return newConn(t, conf, secrets{"hunter2-inmemory"}, nil)
}

func newConn(t *testing.T, conf map[string]any, s connectors.SecretResolver, now func() time.Time) connectors.Connector {
	t.Helper()
	raw, err := json.Marshal(conf)
	if err != nil {
		t.Fatal(err)
	}
	c, err := connectors.Default().New(connectors.Config{
		IntegrationID: "00000000-0000-0000-0000-000000000001", TenantID: "00000000-0000-0000-0000-0000000000aa",
		Type: inmemory.Type, Config: raw, AuthRef: tokenRef, Secrets: s, Now: now,
	})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestConformance(t *testing.T) { conntest.Run(t, harness{}) }

func TestScriptCyclesPerCheck(t *testing.T) {
	c := newConn(t, map[string]any{"script": []string{"healthy", "degraded", "unhealthy", "permanent", "offline"}}, nil, nil)
	want := []struct {
		status connectors.Status
		class  fault.Class
	}{
		{connectors.StatusHealthy, fault.ClassUnknown},
		{connectors.StatusDegraded, fault.ClassTransient},
		{connectors.StatusUnhealthy, fault.ClassTransient},
		{connectors.StatusUnhealthy, fault.ClassPermanent},
		{connectors.StatusUnhealthy, fault.ClassOffline},
		{connectors.StatusHealthy, fault.ClassUnknown}, // cycled
	}
	for i, w := range want {
		var r connectors.Result
		if i == 1 {
			// TestConnection takes a step too.
			r = c.TestConnection(t.Context())
		} else {
			r = c.CheckHealth(t.Context())
		}
		if r.Status != w.status || r.Class != w.class {
			t.Errorf("check %d: %s/%v, want %s/%v (%s)", i, r.Status, r.Class, w.status, w.class, r.Message)
		}
	}
}

func TestScriptFollowsTheClock(t *testing.T) {
	var mu sync.Mutex
	now := time.Unix(600, 0) // step 10 of a 60 s script: index 0
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	conf := map[string]any{"script": []string{"healthy", "unhealthy"}, "scriptStepSeconds": 60}
	a := newConn(t, conf, nil, clock)
	b := newConn(t, conf, nil, clock)
	for range 3 {
		if a.CheckHealth(t.Context()).Status != connectors.StatusHealthy || b.CheckHealth(t.Context()).Status != connectors.StatusHealthy {
			t.Fatal("within one step every check and every instance should agree")
		}
	}
	mu.Lock()
	now = now.Add(time.Minute)
	mu.Unlock()
	if a.CheckHealth(t.Context()).Status != connectors.StatusUnhealthy || b.CheckHealth(t.Context()).Status != connectors.StatusUnhealthy {
		t.Error("the next step should be unhealthy for both")
	}
}

func TestHealthyFalseAndDefaults(t *testing.T) {
	if r := newConn(t, map[string]any{"healthy": false}, nil, nil).TestConnection(t.Context()); r.Status != connectors.StatusUnhealthy {
		t.Errorf("healthy:false = %s", r.Status)
	}
	c, err := inmemory.New(connectors.Config{Type: inmemory.Type})
	if err != nil {
		t.Fatal(err)
	}
	r := c.TestConnection(t.Context())
	if r.Status != connectors.StatusHealthy || len(r.Checks) != 4 {
		t.Errorf("empty config: %s with %d checks, want healthy with 4", r.Status, len(r.Checks))
	}
}

func TestLatencyHonoursContext(t *testing.T) {
	c := newConn(t, map[string]any{"latencyMs": 60_000}, nil, nil)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan connectors.Result, 1)
	go func() { done <- c.CheckHealth(ctx) }()
	cancel()
	select {
	case r := <-done:
		if r.Class != fault.ClassTransient || !strings.Contains(r.Message, "cancelled") {
			t.Errorf("cancelled: %s %v %q", r.Status, r.Class, r.Message)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("CheckHealth ignored its context's cancellation")
	}

	// A short latency passes and is measured.
	r := newConn(t, map[string]any{"latencyMs": 20}, nil, nil).CheckHealth(t.Context())
	if !r.OK() || r.Latency < 20*time.Millisecond {
		t.Errorf("latency 20 ms: %s in %v", r.Status, r.Latency)
	}
}

func TestTokenResolution(t *testing.T) {
	failing := resolverFunc(func(context.Context, string) ([]byte, error) { return nil, errors.New("vault sealed") })
	r := newConn(t, map[string]any{"token": tokenRef}, failing, nil).CheckHealth(t.Context())
	if r.Status != connectors.StatusUnhealthy || r.Class != fault.ClassPermanent || !strings.Contains(r.Message, "resolving the token") {
		t.Errorf("unresolvable token: %s %v %q", r.Status, r.Class, r.Message)
	}
	r = newConn(t, map[string]any{"token": tokenRef}, nil, nil).CheckHealth(t.Context())
	if r.Class != fault.ClassPermanent {
		t.Errorf("no resolver: %s %v", r.Status, r.Class)
	}
}

type resolverFunc func(context.Context, string) ([]byte, error)

func (f resolverFunc) Resolve(ctx context.Context, ref string) ([]byte, error) { return f(ctx, ref) }

func TestValidate(t *testing.T) {
	for _, conf := range []map[string]any{
		{"failWith": "sometimes"},
		{"latencyMs": -1},
		{"script": []string{"healthy", "flaky"}},
		{"token": "env://X"},
		{"timeoutSeconds": 301},
	} {
		if err := newConn(t, conf, nil, nil).Validate(); fault.ClassOf(err) != fault.ClassPermanent {
			t.Errorf("Validate(%v) = %v, want a permanent error", conf, err)
		}
	}
	if _, err := inmemory.New(connectors.Config{Config: json.RawMessage(`{"heathy": true}`)}); err == nil {
		t.Error("an unknown field was accepted")
	}
	if _, err := inmemory.New(connectors.Config{Config: json.RawMessage(`{} {}`)}); err == nil {
		t.Error("trailing data was accepted")
	}
	for _, raw := range []string{``, ` `, `null`} {
		if _, err := inmemory.New(connectors.Config{Config: json.RawMessage(raw)}); err != nil {
			t.Errorf("New(%q) = %v, want the zero config", raw, err)
		}
	}
}

func TestDiscoveryIsDeterministic(t *testing.T) {
	c := newConn(t, map[string]any{}, nil, nil)
	d := c.(connectors.Discoverer)
	var names []string
	cursor := ""
	for {
		p, err := d.ListRepositories(t.Context(), connectors.ListOptions{Limit: 2, Cursor: cursor})
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range p.Items {
			names = append(names, r.FullName)
		}
		if cursor = p.Next; cursor == "" {
			break
		}
	}
	if strings.Join(names, ",") != "acme/api,acme/web,library/nginx" {
		t.Errorf("repositories = %v", names)
	}
	b1, _ := d.ListBranches(t.Context(), "acme/api", connectors.ListOptions{})
	b2, _ := newConn(t, map[string]any{}, nil, nil).(connectors.Discoverer).ListBranches(t.Context(), "acme/api", connectors.ListOptions{})
	if len(b1.Items) != 2 || b1.Items[0] != b2.Items[0] || len(b1.Items[0].CommitSHA) != 40 {
		t.Errorf("branches differ between instances or are malformed: %+v %+v", b1, b2)
	}
	if _, err := d.ListTags(t.Context(), "acme/nope", connectors.ListOptions{}); fault.ClassOf(err) != fault.ClassPermanent {
		t.Errorf("unknown repo: %v", err)
	}
	if _, err := d.ListTags(t.Context(), "acme/api", connectors.ListOptions{Cursor: "x"}); fault.ClassOf(err) != fault.ClassPermanent {
		t.Errorf("bad cursor: %v", err)
	}

	reg := c.(connectors.ImageRegistry)
	tags, _ := d.ListTags(t.Context(), "acme/api", connectors.ListOptions{})
	for _, tag := range tags.Items {
		dg, err := reg.ResolveTag(t.Context(), "acme/api", tag.Name)
		if err != nil || dg != tag.Digest {
			t.Errorf("ResolveTag(%s) = %s, %v; ListTags says %s", tag.Name, dg, err, tag.Digest)
		}
		m, err := reg.FetchManifest(t.Context(), "acme/api", tag.Name)
		sum := sha256.Sum256(m.Body)
		if err != nil || "sha256:"+hex.EncodeToString(sum[:]) != dg {
			t.Errorf("manifest of %s does not hash to its digest", tag.Name)
		}
	}
	other, _ := reg.ResolveTag(t.Context(), "acme/web", "latest")
	if other == tags.Items[0].Digest {
		t.Error("two repositories share a digest")
	}
}
