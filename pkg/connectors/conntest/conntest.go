// Package conntest is the conformance suite every connector runs against
// its fake (the Go CDK's drivertest): a provider writes a Harness that maps
// each Scenario to its fake's behaviour and adds one test,
//
//	func TestConformance(t *testing.T) { conntest.Run(t, harness{}) }
//
// Run checks, per scenario, what the rest of the system relies on: the
// config validates, TestConnection and CheckHealth come back (never hang)
// with a status, a latency, a message, per-capability checks and the error
// class the worker frame acts on; the declared capability interfaces are
// there and no undeclared one; Close may be called twice; no goroutine
// outlives the scenario.
//
// Harnesses configure the connector's timeout as Timeout (timeoutSeconds:
// 1). Run's scenarios are sequential and it checks for leaked goroutines
// around each, so don't call it from a parallel test.
package conntest

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"inthub.dev/pkg/connectors"
	"inthub.dev/pkg/fault"
)

// Scenario is a behaviour of the provider's fake.
type Scenario string

const (
	// Healthy: every endpoint answers as the real API does when all is well.
	Healthy Scenario = "healthy"
	// BadCredentials: the API refuses the credentials (401, a refused
	// token exchange). Expect unhealthy and permanent.
	BadCredentials Scenario = "bad_credentials"
	// Unreachable: nothing listens at the endpoint (a closed port).
	// Expect unhealthy, offline or transient.
	Unreachable Scenario = "unreachable"
	// Slow: the API answers later than Timeout (the fake should wait for
	// the request's context, so it holds no goroutine after). Expect
	// transient, and the call back within its timeouts.
	Slow Scenario = "slow"
	// RateLimited: 429 (or GitHub's 403) with Retry-After or an exhausted
	// x-ratelimit budget. Expect transient with a retry hint.
	RateLimited Scenario = "rate_limited"
	// ServerError: 500s. Expect transient.
	ServerError Scenario = "server_error"
)

// Scenarios are all of them, in the order Run runs them.
var Scenarios = []Scenario{Healthy, BadCredentials, Unreachable, Slow, RateLimited, ServerError}

// Timeout is the operation timeout harnesses configure (timeoutSeconds).
const Timeout = time.Second

// Capability interface names for Harness.Capabilities.
const (
	Discoverer    = "discoverer"     // connectors.Discoverer
	ImageRegistry = "image_registry" // connectors.ImageRegistry
	Provisioner   = "provisioner"    // connectors.Provisioner
)

// Harness builds a provider's connector against its fake.
type Harness interface {
	// New returns a connector whose fake behaves as sc says; the fake's
	// shutdown (and closing the HTTP client's idle connections) goes in
	// t.Cleanup.
	New(t *testing.T, sc Scenario) connectors.Connector
	// Capabilities names the capability interfaces the connector
	// implements (Discoverer, ImageRegistry, Provisioner).
	Capabilities() []string
}

// ImageFixture is implemented by the harness of an ImageRegistry: a
// repository and tag its Healthy fake holds.
type ImageFixture interface {
	Image() (repo, tag string)
}

// SecretHolder is implemented by a harness whose connectors resolve
// secrets: their values, which must appear in no message or error.
type SecretHolder interface {
	Secrets() []string
}

// margin is what a call may take past its timeouts: scheduling, -race.
const margin = 2 * time.Second

// Run runs every scenario against h.
func Run(t *testing.T, h Harness) {
	t.Helper()
	for _, sc := range Scenarios {
		t.Run(string(sc), func(t *testing.T) {
			// Registered first, so it runs after the harness's cleanups
			// have stopped the fake.
			ignore := goleak.IgnoreCurrent()
			t.Cleanup(func() { goleak.VerifyNone(t, ignore) })
			runScenario(t, h, sc)
		})
	}
}

func runScenario(t *testing.T, h Harness, sc Scenario) {
	c := h.New(t, sc)
	if c == nil {
		t.Fatal("Harness.New returned nil")
	}
	closed := false
	t.Cleanup(func() {
		if !closed {
			_ = c.Close()
		}
	})
	var secrets []string
	if s, ok := h.(SecretHolder); ok {
		secrets = s.Secrets()
	}

	checkIdentity(t, c)
	checkInterfaces(t, h, c)
	if err := c.Validate(); err != nil {
		t.Fatalf("Validate: %v (the scenario's config is valid; failures belong to the calls)", err)
	}

	if p, ok := c.(connectors.Provisioner); ok {
		_, err := within(t, "Provision", func(ctx context.Context) error { return p.Provision(ctx) })
		if sc == Healthy && err != nil {
			t.Fatalf("Provision: %v", err)
		}
		if err != nil {
			// A provision that fails must fail as the scenario does; the
			// calls below must still come back with a Result.
			expectClass(t, "Provision", sc, fault.ClassOf(err), fault.RetryAfterOf(err))
			noSecret(t, "Provision error", err.Error(), secrets)
		}
	}

	for _, call := range []struct {
		name string
		fn   func(context.Context) connectors.Result
	}{
		{"TestConnection", c.TestConnection},
		{"CheckHealth", c.CheckHealth},
	} {
		var res connectors.Result
		took, _ := within(t, call.name, func(ctx context.Context) error { res = call.fn(ctx); return nil })
		checkResult(t, call.name, sc, res, took, secrets)
	}

	if slices.Contains(h.Capabilities(), Discoverer) {
		checkDiscovery(t, sc, c.(connectors.Discoverer), secrets)
	}
	if slices.Contains(h.Capabilities(), ImageRegistry) {
		checkRegistry(t, h, sc, c.(connectors.ImageRegistry), secrets)
	}

	closed = true
	if err := c.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if err := c.Close(); err != nil {
		t.Errorf("second Close: %v (Close must be safe to call twice)", err)
	}
}

func checkIdentity(t *testing.T, c connectors.Connector) {
	t.Helper()
	if c.Type() == "" || c.Provider() == "" {
		t.Fatalf("Type() = %q, Provider() = %q; both must be set", c.Type(), c.Provider())
	}
	info, ok := connectors.Default().Lookup(c.Type())
	if !ok {
		t.Errorf("type %q is not registered with connectors.Default() (register it in init())", c.Type())
		return
	}
	if info.Provider != c.Provider() {
		t.Errorf("registered provider %q, connector says %q", info.Provider, c.Provider())
	}
	if len(info.ConfigSchema) == 0 {
		t.Errorf("type %q registered without a ConfigSchema", c.Type())
	}
}

// checkInterfaces holds the connector to its harness's declaration both
// ways: a declared interface is implemented, an implemented one declared
// (so the suite exercises it).
func checkInterfaces(t *testing.T, h Harness, c connectors.Connector) {
	t.Helper()
	declared := h.Capabilities()
	for _, name := range declared {
		if !slices.Contains([]string{Discoverer, ImageRegistry, Provisioner}, name) {
			t.Errorf("Harness.Capabilities: unknown %q", name)
		}
	}
	for _, iface := range []struct {
		name string
		has  bool
	}{
		{Discoverer, is[connectors.Discoverer](c)},
		{ImageRegistry, is[connectors.ImageRegistry](c)},
		{Provisioner, is[connectors.Provisioner](c)},
	} {
		switch d := slices.Contains(declared, iface.name); {
		case d && !iface.has:
			t.Errorf("the harness declares %s, the connector does not implement it", iface.name)
		case !d && iface.has:
			t.Errorf("the connector implements %s, the harness does not declare it", iface.name)
		}
	}
	if t.Failed() {
		t.FailNow()
	}
}

func is[T any](c connectors.Connector) bool { _, ok := c.(T); return ok }

// within runs fn with a context that no deadline ends: the connector's
// own timeout must bring it back. The watchdog only keeps a hung call from
// hanging the suite; the finer bound is checked on the result.
func within(t *testing.T, name string, fn func(context.Context) error) (time.Duration, error) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	done := make(chan error, 1)
	start := time.Now()
	go func() { done <- fn(ctx) }()
	watchdog := time.NewTimer(10*Timeout + margin)
	defer watchdog.Stop()
	select {
	case err := <-done:
		return time.Since(start), err
	case <-watchdog.C:
		cancel()
		t.Fatalf("%s did not return within %v: a connector must bound every call by its timeout", name, 10*Timeout+margin)
		return 0, nil
	}
}

// expectClass holds a failure's class to the scenario.
func expectClass(t *testing.T, what string, sc Scenario, class fault.Class, retry time.Duration) {
	t.Helper()
	switch sc {
	case BadCredentials:
		if class != fault.ClassPermanent {
			t.Errorf("%s: class %v, want permanent for refused credentials", what, class)
		}
	case Unreachable:
		if class != fault.ClassOffline && class != fault.ClassTransient {
			t.Errorf("%s: class %v, want offline or transient for an unreachable endpoint", what, class)
		}
	case Slow, ServerError:
		if class != fault.ClassTransient {
			t.Errorf("%s: class %v, want transient", what, class)
		}
	case RateLimited:
		if class != fault.ClassTransient || retry <= 0 {
			t.Errorf("%s: class %v, retry after %v; want transient with a retry hint", what, class, retry)
		}
	}
}

func checkResult(t *testing.T, name string, sc Scenario, r connectors.Result, took time.Duration, secrets []string) {
	t.Helper()
	if r.Latency <= 0 {
		t.Errorf("%s: Latency = %v, want > 0", name, r.Latency)
	}
	if strings.TrimSpace(r.Message) == "" {
		t.Errorf("%s: empty Message", name)
	}
	if len(r.Checks) == 0 {
		t.Errorf("%s: no per-capability Checks", name)
	}
	for i, c := range r.Checks {
		if c.Capability == "" || strings.TrimSpace(c.Message) == "" {
			t.Errorf("%s: Checks[%d] = %+v, want a capability and a message", name, i, c)
		}
		if c.OK && c.Class != fault.ClassUnknown {
			t.Errorf("%s: check %s passed with class %v", name, c.Capability, c.Class)
		}
		noSecret(t, name+" check "+c.Capability, c.Message, secrets)
	}
	noSecret(t, name+" message", r.Message, secrets)
	if r.Err != nil {
		noSecret(t, name+" error", r.Err.Error(), secrets)
	}

	if sc == Healthy {
		if r.Status != connectors.StatusHealthy || r.Class != fault.ClassUnknown || r.Err != nil {
			t.Errorf("%s: %s (%v, %v), want healthy: %s", name, r.Status, r.Class, r.Err, r.Message)
		}
		for _, c := range r.Checks {
			if !c.OK {
				t.Errorf("%s: check %s failed: %s", name, c.Capability, c.Message)
			}
		}
		return
	}

	switch {
	case sc == BadCredentials && r.Status != connectors.StatusUnhealthy:
		t.Errorf("%s: %s, want unhealthy for refused credentials: %s", name, r.Status, r.Message)
	case r.Status != connectors.StatusUnhealthy && r.Status != connectors.StatusDegraded:
		t.Errorf("%s: %s, want unhealthy (or degraded): %s", name, r.Status, r.Message)
	}
	if r.Err == nil {
		t.Errorf("%s: failed without an Err", name)
	} else if fault.ClassOf(r.Err) != r.Class {
		t.Errorf("%s: Class %v but Err is %v", name, r.Class, fault.ClassOf(r.Err))
	}
	expectClass(t, name, sc, r.Class, fault.RetryAfterOf(r.Err))
	if !slices.ContainsFunc(r.Checks, func(c connectors.Check) bool { return !c.OK }) {
		t.Errorf("%s: %s with no failed check", name, r.Status)
	}
	if sc == Slow {
		if limit := time.Duration(max(1, len(r.Checks)))*Timeout + margin; took > limit {
			t.Errorf("%s took %v against a slow server; want at most %v (the timeout per operation)", name, took, limit)
		}
	}
}

func noSecret(t *testing.T, where, text string, secrets []string) {
	t.Helper()
	for _, s := range secrets {
		if s != "" && strings.Contains(text, s) {
			t.Errorf("%s holds a secret value: %q", where, text)
		}
	}
}

// opError holds a capability call's error to the scenario.
func opError(t *testing.T, what string, sc Scenario, err error, took time.Duration, secrets []string) {
	t.Helper()
	if sc == Healthy {
		if err != nil {
			t.Errorf("%s: %v", what, err)
		}
		return
	}
	if err == nil {
		t.Errorf("%s succeeded in scenario %s", what, sc)
		return
	}
	expectClass(t, what, sc, fault.ClassOf(err), fault.RetryAfterOf(err))
	noSecret(t, what, err.Error(), secrets)
	if sc == Slow && took > Timeout+margin {
		t.Errorf("%s took %v against a slow server; want at most %v", what, took, Timeout+margin)
	}
}

func checkDiscovery(t *testing.T, sc Scenario, d connectors.Discoverer, secrets []string) {
	t.Helper()
	var p connectors.Page[connectors.Repository]
	took, err := within(t, "ListRepositories", func(ctx context.Context) error {
		var err error
		p, err = d.ListRepositories(ctx, connectors.ListOptions{Limit: 1})
		return err
	})
	opError(t, "ListRepositories", sc, err, took, secrets)
	if sc != Healthy || err != nil {
		return
	}
	if len(p.Items) == 0 {
		t.Error("ListRepositories: the Healthy fake should hold at least one repository")
		return
	}
	if len(p.Items) > 1 {
		t.Errorf("ListRepositories(Limit 1) returned %d items", len(p.Items))
	}
	for _, r := range p.Items {
		if r.FullName == "" {
			t.Errorf("ListRepositories: a repository without FullName: %+v", r)
		}
	}
	if p.Next != "" {
		next, err := d.ListRepositories(t.Context(), connectors.ListOptions{Limit: 1, Cursor: p.Next})
		if err != nil {
			t.Errorf("ListRepositories(next page): %v", err)
		} else if len(next.Items) > 0 && next.Items[0].FullName == p.Items[0].FullName {
			t.Errorf("the next page repeats %q", p.Items[0].FullName)
		}
	}
}

func checkRegistry(t *testing.T, h Harness, sc Scenario, r connectors.ImageRegistry, secrets []string) {
	t.Helper()
	fx, ok := h.(ImageFixture)
	if !ok {
		t.Fatal("the harness declares ImageRegistry but does not implement conntest.ImageFixture")
	}
	repo, tag := fx.Image()
	var digest string
	took, err := within(t, "ResolveTag", func(ctx context.Context) error {
		var err error
		digest, err = r.ResolveTag(ctx, repo, tag)
		return err
	})
	opError(t, "ResolveTag", sc, err, took, secrets)
	if sc != Healthy || err != nil {
		return
	}
	if !strings.HasPrefix(digest, "sha256:") {
		t.Fatalf("ResolveTag(%s:%s) = %q, want a sha256 digest", repo, tag, digest)
	}
	m, err := r.FetchManifest(t.Context(), repo, digest)
	if err != nil {
		t.Fatalf("FetchManifest(%s@%s): %v", repo, digest, err)
	}
	if m.Digest != digest || len(m.Body) == 0 || m.MediaType == "" || m.Size != int64(len(m.Body)) {
		t.Errorf("FetchManifest = {%s %s %d, %d bytes}, want digest %s with a body, media type and size", m.MediaType, m.Digest, m.Size, len(m.Body), digest)
	}
	if err := r.VerifyDigest(t.Context(), repo, digest); err != nil {
		t.Errorf("VerifyDigest(%s): %v", digest, err)
	}
	// A digest the registry does not hold fails permanently.
	missing := "sha256:" + strings.Repeat("0", 64)
	if err := r.VerifyDigest(t.Context(), repo, missing); err == nil {
		t.Errorf("VerifyDigest(%s) succeeded for a digest the registry does not hold", missing)
	} else if c := fault.ClassOf(err); c != fault.ClassPermanent {
		t.Errorf("VerifyDigest(missing): class %v, want permanent: %v", c, err)
	}
	_, err = r.ResolveTag(t.Context(), repo, "no-such-tag-"+strings.Repeat("x", 8))
	if c := fault.ClassOf(err); err == nil || c != fault.ClassPermanent {
		t.Errorf("ResolveTag(missing tag) = %v (class %v), want a permanent error", err, c)
	}
	if errors.Is(err, context.DeadlineExceeded) {
		t.Error("ResolveTag(missing tag) timed out")
	}
}
