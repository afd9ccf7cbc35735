// Package connect builds the connector of one integration and runs the
// operations services call providers for: test connection, a health
// check, resource discovery. The catalog (on demand), the health poller
// and the annotation worker share it, so that every call to a provider is
// made the same way.
//
// A connector built here calls out only through an HTTP client that the
// egress policy guards at dial time (no proxy, bounded redirects, a
// timeout from the integration's timeoutSeconds, a response body limit),
// and resolves its secrets through the caller's authref.Resolver with the
// tenant, the integration and the actor in the context (CallFrom), so that
// the resolver's hook can attribute, and audit, every resolution.
package connect

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace"

	"inthub.dev/events"
	"inthub.dev/pkg/authref"
	"inthub.dev/pkg/connectors"
	"inthub.dev/pkg/connectors/cache"
	"inthub.dev/pkg/egress"
	"inthub.dev/pkg/fault"
)

// DefaultTimeout is the per-request timeout of an integration whose config
// sets no timeoutSeconds.
const DefaultTimeout = 10 * time.Second

// ErrNoConnector is wrapped when an integration's type has no connector in
// this build (an out-of-process plugin that is not loaded, a type that was
// removed).
var ErrNoConnector = errors.New("no connector for the integration's type")

// The kinds of resources that every Discoverer lists (those its type
// declares). Connectors declare further kinds through
// connectors.ResourceLister: discovery lists whatever kind a type's
// connector declares.
const (
	KindRepos    = connectors.KindRepos
	KindBranches = connectors.KindBranches
	KindTags     = connectors.KindTags
)

// Kinds are the Discoverer's kinds, in the order the API documents them.
var Kinds = []string{KindRepos, KindBranches, KindTags}

// UnsupportedError says an integration's connector cannot list a kind.
type UnsupportedError struct {
	Type string
	Kind string
	// Supported are the kinds the type lists, in its order; nil when they
	// could not be learnt (a config the connector refuses).
	Supported []string
}

func (e *UnsupportedError) Error() string {
	s := fmt.Sprintf("integrations of type %s cannot list %s", e.Type, e.Kind)
	switch {
	case e.Supported == nil:
	case len(e.Supported) == 0:
		s += "; they list no resources"
	default:
		s += "; they list " + strings.Join(e.Supported, ", ")
	}
	return s
}

// RepoRequiredError says a kind is listed within a repository that the
// query does not name.
type RepoRequiredError struct {
	Kind string
}

func (e *RepoRequiredError) Error() string {
	return "a repository is required for kind=" + e.Kind + ": a repository as listed by kind=repos"
}

// ProviderError is a discovery call that the provider failed. Err is
// classified (fault) and its text is written for users: it names no secret
// and no address the egress policy refused.
type ProviderError struct {
	Provider string
	Err      error
}

func (e *ProviderError) Error() string { return e.Provider + ": " + e.Err.Error() }
func (e *ProviderError) Unwrap() error { return e.Err }

// Class is the failure's class; an unclassified failure counts as
// transient, as the worker frame treats it.
func (e *ProviderError) Class() fault.Class {
	if c := fault.ClassOf(e.Err); c != fault.ClassUnknown {
		return c
	}
	return fault.ClassTransient
}

// Builder builds connectors for integrations and runs operations on them.
// It is safe for concurrent use.
type Builder struct {
	reg       *connectors.Registry
	resolver  *authref.Resolver
	policy    egress.Policy
	log       *slog.Logger
	now       func() time.Time
	maxBody   int64
	transport *http.Transport
	tracer    trace.TracerProvider // nil: provider calls are not traced

	tests     *cache.Cache[testKey, TestOutcome]
	discovery *cache.Cache[discoveryKey, ResourcePage]

	testDuration *prometheus.HistogramVec
	testTotal    *prometheus.CounterVec
	healthTotal  *prometheus.CounterVec
	discoverySum *prometheus.CounterVec
}

// Option configures a Builder.
type Option func(*Builder)

// WithLogger sets the logger (discarded by default). Nothing a Builder
// logs contains a secret.
func WithLogger(l *slog.Logger) Option {
	return func(b *Builder) {
		if l != nil {
			b.log = l
		}
	}
}

// WithTracerProvider makes every HTTP request to a provider a client
// span, a child of the span in the caller's context (a health check, a
// bus consumer's span). The trace context is not sent to the provider.
func WithTracerProvider(tp trace.TracerProvider) Option {
	return func(b *Builder) { b.tracer = tp }
}

// WithMaxBodyBytes bounds provider response bodies (DefaultMaxBodyBytes).
func WithMaxBodyBytes(n int64) Option {
	return func(b *Builder) {
		if n > 0 {
			b.maxBody = n
		}
	}
}

// WithClock sets the clock of the caches and of the connectors' Config.Now
// (tests); latencies are always measured with the real clock.
func WithClock(now func() time.Time) Option {
	return func(b *Builder) {
		if now != nil {
			b.now = now
		}
	}
}

// New returns a Builder that builds connectors of reg's types. resolver
// resolves their AuthRefs (nil: any secret fails to resolve, permanently);
// a hook given to it with authref.WithHook finds the tenant, the
// integration and the actor of each resolution with CallFrom. policy
// guards every outbound connection.
func New(reg *connectors.Registry, resolver *authref.Resolver, policy egress.Policy, opts ...Option) (*Builder, error) {
	if reg == nil {
		return nil, errors.New("connect: a connector registry is required: pass connectors.Default()")
	}
	b := &Builder{
		reg:      reg,
		resolver: resolver,
		policy:   policy,
		log:      slog.New(slog.DiscardHandler),
		now:      time.Now,
		maxBody:  DefaultMaxBodyBytes,
	}
	for _, o := range opts {
		o(b)
	}
	b.transport = newTransport(policy, b.log)
	testOpts, discOpts := cache.Test(), cache.Discovery()
	testOpts.Now, discOpts.Now = b.now, b.now
	b.tests = cache.New[testKey, TestOutcome](testOpts)
	b.discovery = cache.New[discoveryKey, ResourcePage](discOpts)
	b.testDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "integrations_test_connection_duration_seconds",
		Help:    "Duration of test connections (cache hits excluded), by provider.",
		Buckets: []float64{.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
	}, []string{"provider"})
	b.testTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "integrations_test_connection_total",
		Help: "Test connections (cache hits excluded), by provider and result (success, failure).",
	}, []string{"provider", "result"})
	b.healthTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "integrations_health_check_total",
		Help: "Health checks run through a connector builder (the catalog's on demand, the poller's scheduled), by provider and resulting status.",
	}, []string{"provider", "status"})
	b.discoverySum = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "integrations_discovery_total",
		Help: "Resource discovery calls to providers (cache hits excluded), by provider, kind and result (success, failure).",
	}, []string{"provider", "kind", "result"})
	return b, nil
}

// Register adds the Builder's metrics and its caches' to reg.
func (b *Builder) Register(reg prometheus.Registerer) error {
	for _, c := range []prometheus.Collector{b.testDuration, b.testTotal, b.healthTotal, b.discoverySum} {
		if err := reg.Register(c); err != nil {
			return fmt.Errorf("connect: metrics: %w", err)
		}
	}
	if err := b.tests.Register(reg); err != nil {
		return fmt.Errorf("connect: metrics: %w", err)
	}
	if err := b.discovery.Register(reg); err != nil {
		return fmt.Errorf("connect: metrics: %w", err)
	}
	return nil
}

// Close drops the idle pooled connections. The Builder stays usable.
func (b *Builder) Close() { b.transport.CloseIdleConnections() }

// Provider returns the provider of an integration type ("github"), or ""
// when no connector has the type.
func (b *Builder) Provider(typ string) string {
	info, _ := b.reg.Lookup(typ)
	return info.Provider
}

// timeoutOf reads timeoutSeconds from an integration's config (every
// built-in type's schema has it), DefaultTimeout when it is absent.
func timeoutOf(config json.RawMessage) time.Duration {
	var c struct {
		TimeoutSeconds *int `json:"timeoutSeconds"`
	}
	if err := json.Unmarshal(config, &c); err != nil || c.TimeoutSeconds == nil || *c.TimeoutSeconds < 1 {
		return DefaultTimeout
	}
	return time.Duration(min(*c.TimeoutSeconds, 300)) * time.Second
}

// stageError says how far building a connector got: "config" (the
// factory or Validate refused the config) or "auth" (Provision failed).
type stageError struct {
	stage string
	err   error
}

func (e *stageError) Error() string { return e.err.Error() }
func (e *stageError) Unwrap() error { return e.err }

// Connector builds, validates and provisions the connector of it. The
// caller closes it after use. An error wraps ErrNoConnector when the type
// has no connector; any other error is classified (fault) and fit for the
// user to read.
func (b *Builder) Connector(ctx context.Context, it events.Integration) (connectors.Connector, error) {
	conn, _, err := b.build(ctx, it)
	if err != nil {
		return nil, err
	}
	if err := b.provision(ctx, it, conn); err != nil {
		_ = conn.Close()
		return nil, err
	}
	return conn, nil
}

// build builds and validates the connector of it, without I/O.
func (b *Builder) build(ctx context.Context, it events.Integration) (connectors.Connector, connectors.Info, error) {
	c := Call{TenantID: it.TenantID, IntegrationID: it.ID, Actor: actorFrom(ctx)}
	info, ok := b.reg.Lookup(it.Type)
	if !ok {
		return nil, info, fmt.Errorf("integration type %s: %w", it.Type, ErrNoConnector)
	}
	cfg := connectors.Config{
		IntegrationID: it.ID,
		TenantID:      it.TenantID,
		Type:          it.Type,
		Config:        it.Config,
		AuthRef:       it.AuthRef,
		Secrets:       secrets{r: b.resolver, c: c},
		HTTPClient:    b.traced(newClient(b.transport, b.policy, timeoutOf(it.Config), b.maxBody), it, info.Provider),
		HubIdentity:   b.policy.AllowHubIdentity,
		Logger: b.log.With(slog.String("tenantId", it.TenantID), slog.String("integrationId", it.ID),
			slog.String("provider", info.Provider)),
		Now: b.now,
	}
	if len(bytes.TrimSpace(cfg.Config)) == 0 {
		cfg.Config = json.RawMessage(`{}`)
	}
	conn, err := b.reg.New(cfg)
	if err != nil {
		var ute *connectors.UnknownTypeError
		if errors.As(err, &ute) {
			return nil, info, fmt.Errorf("integration type %s: %w", it.Type, ErrNoConnector)
		}
		return nil, info, &stageError{stage: "config", err: permanentIfUnknown(err)}
	}
	if err := conn.Validate(); err != nil {
		_ = conn.Close()
		return nil, info, &stageError{stage: "config", err: permanentIfUnknown(err)}
	}
	return conn, info, nil
}

// provision runs a built connector's Provision; the caller closes the
// connector either way.
func (b *Builder) provision(ctx context.Context, it events.Integration, conn connectors.Connector) error {
	p, ok := conn.(connectors.Provisioner)
	if !ok {
		return nil
	}
	ctx = withCall(ctx, Call{TenantID: it.TenantID, IntegrationID: it.ID, Actor: actorFrom(ctx)})
	if err := p.Provision(ctx); err != nil {
		return &stageError{stage: "auth", err: err}
	}
	return nil
}

func permanentIfUnknown(err error) error {
	if fault.ClassOf(err) == fault.ClassUnknown {
		return fault.Permanent(err)
	}
	return err
}

// operationTimeout bounds a whole test or health check, several requests
// each bounded by the per-request timeout.
func operationTimeout(it events.Integration) time.Duration {
	return min(3*timeoutOf(it.Config)+5*time.Second, 5*time.Minute)
}

// run builds the connector and runs op on it. A failure to build is a
// failed Result of the stage's capability; a panic in a connector (a
// bug: connectors must not panic) is a failed Result too, not a crash.
func (b *Builder) run(ctx context.Context, it events.Integration, op func(context.Context, connectors.Connector) connectors.Result) (res connectors.Result, err error) {
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, operationTimeout(it))
	defer cancel()
	conn, err := b.Connector(ctx, it)
	if errors.Is(err, ErrNoConnector) {
		return connectors.Result{}, err
	}
	if err != nil {
		stage := "config"
		var se *stageError
		if errors.As(err, &se) {
			stage = se.stage
		}
		return connectors.FailedResult(start, stage, err), nil
	}
	defer func() {
		if p := recover(); p != nil {
			b.log.ErrorContext(ctx, "connector panicked", slog.String("tenantId", it.TenantID),
				slog.String("integrationId", it.ID), slog.String("type", it.Type), slog.Any("panic", p))
			res = connectors.FailedResult(start, "connector", fault.Permanentf("the connector failed unexpectedly; see the service's log"))
		}
		_ = conn.Close()
	}()
	return op(ctx, conn), nil
}

// TestOutcome is a test connection's result.
type TestOutcome struct {
	Result   connectors.Result
	Provider string
	// Cached says the result is a recent one reused (see Builder.Test).
	Cached   bool
	TestedAt time.Time
}

type testKey struct {
	tenant, id string
	version    int64
}

// Test runs a test connection of it, or returns the result of one run
// within the last two minutes for the same version of the integration
// (cache.Test) unless fresh is set. Failures are results, not errors: the
// error is only for a type without a connector (ErrNoConnector).
func (b *Builder) Test(ctx context.Context, it events.Integration, fresh bool) (TestOutcome, error) {
	provider := b.Provider(it.Type)
	if provider == "" {
		return TestOutcome{}, fmt.Errorf("integration type %s: %w", it.Type, ErrNoConnector)
	}
	key := testKey{tenant: it.TenantID, id: it.ID, version: it.Version}
	if !fresh {
		if out, ok := b.tests.Get(key); ok {
			out.Cached = true
			return out, nil
		}
	}
	testedAt := b.now().UTC()
	res, err := b.run(ctx, it, func(ctx context.Context, c connectors.Connector) connectors.Result {
		return c.TestConnection(ctx)
	})
	if err != nil {
		return TestOutcome{}, err
	}
	result := "success"
	if res.Status != connectors.StatusHealthy {
		result = "failure"
	}
	b.testDuration.WithLabelValues(provider).Observe(res.Latency.Seconds())
	b.testTotal.WithLabelValues(provider, result).Inc()
	b.logResult(ctx, "test connection", it, provider, res)
	out := TestOutcome{Result: res, Provider: provider, TestedAt: testedAt}
	// A run cut short by the caller going away says nothing about the
	// integration: not worth reusing.
	if ctx.Err() == nil {
		b.tests.Set(key, out)
	}
	return out, nil
}

// HealthOutcome is an on-demand health check's result.
type HealthOutcome struct {
	Result    connectors.Result
	Provider  string
	CheckedAt time.Time
}

// CheckHealth runs one health check of it now (never cached: a scheduled
// check must see the provider, and an on-demand one is what the user asks
// for when the recorded health looks stale).
func (b *Builder) CheckHealth(ctx context.Context, it events.Integration) (HealthOutcome, error) {
	provider := b.Provider(it.Type)
	if provider == "" {
		return HealthOutcome{}, fmt.Errorf("integration type %s: %w", it.Type, ErrNoConnector)
	}
	res, err := b.run(ctx, it, func(ctx context.Context, c connectors.Connector) connectors.Result {
		return c.CheckHealth(ctx)
	})
	if err != nil {
		return HealthOutcome{}, err
	}
	if res.Status == "" {
		res.Status = connectors.StatusUnknown
	}
	b.healthTotal.WithLabelValues(provider, string(res.Status)).Inc()
	b.logResult(ctx, "health check", it, provider, res)
	return HealthOutcome{Result: res, Provider: provider, CheckedAt: b.now().UTC()}, nil
}

func (b *Builder) logResult(ctx context.Context, op string, it events.Integration, provider string, res connectors.Result) {
	attrs := []any{slog.String("tenantId", it.TenantID), slog.String("integrationId", it.ID),
		slog.String("provider", provider), slog.String("operation", op), slog.String("status", string(res.Status)),
		slog.Int64("latencyMs", res.Latency.Milliseconds())}
	if res.Status == connectors.StatusHealthy {
		b.log.DebugContext(ctx, op+" passed", attrs...)
		return
	}
	attrs = append(attrs, slog.String("errorClass", res.Class.String()), slog.String("message", res.Message))
	b.log.InfoContext(ctx, op+" failed", attrs...)
}

// ResourceQuery is one page of a discovery listing.
type ResourceQuery struct {
	// Kind is what to list: one of Kinds, or a kind the type's connector
	// declares (connectors.ResourceLister).
	Kind string
	// Repo is the repository of a kind listed within one (branches,
	// tags, workflows, pipelines); ignored for the others.
	Repo   string
	Limit  int
	Cursor string
	// Fresh skips the cache.
	Fresh bool
}

// Resource is one discovered resource, of any kind.
type Resource struct {
	// Name is a repository's full name ("acme/api"), a branch's or a
	// tag's name, or what a connector's kind names its resources by.
	Name          string
	ID            string
	DefaultBranch string
	Private       bool
	CommitSHA     string
	Digest        string
	// URL is where people see the resource, where the provider tells.
	URL string
	// Attributes are what a connector's kind reports beyond the name
	// (connectors.Resource.Attributes).
	Attributes map[string]string
}

// ResourcePage is a page of a discovery listing.
type ResourcePage struct {
	Kind string
	// Repo is the repository the page was listed within, "" for a kind
	// listed without one.
	Repo     string
	Items    []Resource
	Next     string
	Provider string
	Cached   bool
}

type discoveryKey struct {
	tenant, id string
	version    int64
	kind, repo string
	limit      int
	cursor     string
}

// Supports reports whether integrations of typ can list kind, by the
// type's declared capabilities: a type names every kind it lists among
// them, the Discoverer's and its connector's own.
func (b *Builder) Supports(typ, kind string) bool {
	info, ok := b.reg.Lookup(typ)
	return ok && slices.Contains(info.Capabilities, kind)
}

// ResourceKinds lists the kinds integrations like it can list: the
// Discoverer's that its type declares, then its connector's own. The
// connector is built, without I/O, to ask it.
func (b *Builder) ResourceKinds(ctx context.Context, it events.Integration) ([]connectors.ResourceKind, error) {
	conn, info, err := b.build(ctx, it)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	return connectors.ResourceKindsOf(conn, info.Capabilities), nil
}

func kindNames(kinds []connectors.ResourceKind) []string {
	out := make([]string, 0, len(kinds))
	for _, k := range kinds {
		out = append(out, k.Name)
	}
	return out
}

// Resources lists one page of resources of it, cached ten minutes per
// version of the integration and query (cache.Discovery). Errors: a type
// without a connector (ErrNoConnector), a kind the type cannot list
// (*UnsupportedError, with the kinds it can), a kind listed within a
// repository asked without one (*RepoRequiredError), a provider failure
// (*ProviderError). A connector that cannot be built (a bad config,
// credentials refused at provisioning) is a *ProviderError too: the
// provider cannot be asked.
func (b *Builder) Resources(ctx context.Context, it events.Integration, q ResourceQuery) (ResourcePage, error) {
	provider := b.Provider(it.Type)
	if provider == "" {
		return ResourcePage{}, fmt.Errorf("integration type %s: %w", it.Type, ErrNoConnector)
	}
	key := discoveryKey{tenant: it.TenantID, id: it.ID, version: it.Version, kind: q.Kind, repo: q.Repo, limit: q.Limit, cursor: q.Cursor}
	if !q.Fresh && q.Kind != "" {
		// Only a kind the type lists was ever stored.
		if p, ok := b.discovery.Get(key); ok {
			p.Cached = true
			return p, nil
		}
	}
	ctx, cancel := context.WithTimeout(ctx, operationTimeout(it))
	defer cancel()
	conn, info, err := b.build(ctx, it)
	if errors.Is(err, ErrNoConnector) {
		return ResourcePage{}, err
	}
	if err != nil {
		if !b.Supports(it.Type, q.Kind) {
			// The connector cannot say what it lists, but the type
			// already says it is not this.
			return ResourcePage{}, &UnsupportedError{Type: it.Type, Kind: q.Kind}
		}
		b.discoverySum.WithLabelValues(provider, q.Kind, "failure").Inc()
		return ResourcePage{}, &ProviderError{Provider: provider, Err: err}
	}
	defer conn.Close()
	kinds := connectors.ResourceKindsOf(conn, info.Capabilities)
	kind, ok := connectors.FindResourceKind(kinds, q.Kind)
	if !ok {
		return ResourcePage{}, &UnsupportedError{Type: it.Type, Kind: q.Kind, Supported: kindNames(kinds)}
	}
	if !kind.InRepo {
		q.Repo = ""
	} else if strings.TrimSpace(q.Repo) == "" {
		return ResourcePage{}, &RepoRequiredError{Kind: q.Kind}
	}
	if err := b.provision(ctx, it, conn); err != nil {
		b.discoverySum.WithLabelValues(provider, q.Kind, "failure").Inc()
		return ResourcePage{}, &ProviderError{Provider: provider, Err: err}
	}
	page, err := list(ctx, conn, q)
	if err != nil {
		b.discoverySum.WithLabelValues(provider, q.Kind, "failure").Inc()
		b.log.InfoContext(ctx, "resource discovery failed", slog.String("tenantId", it.TenantID),
			slog.String("integrationId", it.ID), slog.String("provider", provider), slog.String("kind", q.Kind),
			slog.String("errorClass", fault.ClassOf(err).String()), slog.String("error", err.Error()))
		return ResourcePage{}, &ProviderError{Provider: provider, Err: err}
	}
	b.discoverySum.WithLabelValues(provider, q.Kind, "success").Inc()
	page.Kind, page.Repo, page.Provider = q.Kind, q.Repo, provider
	b.discovery.Set(key, page)
	return page, nil
}

// list asks the connector for one page of q.Kind, which ResourceKindsOf
// has found among its kinds: the Discoverer's kinds go to Discoverer,
// any other to ResourceLister.
func list(ctx context.Context, conn connectors.Connector, q ResourceQuery) (ResourcePage, error) {
	o := connectors.ListOptions{Limit: q.Limit, Cursor: q.Cursor}
	var out ResourcePage
	d, _ := conn.(connectors.Discoverer)
	switch {
	case q.Kind == KindRepos && d != nil:
		p, err := d.ListRepositories(ctx, o)
		if err != nil {
			return out, err
		}
		out.Next = p.Next
		out.Items = make([]Resource, 0, len(p.Items))
		for _, r := range p.Items {
			out.Items = append(out.Items, Resource{Name: r.FullName, ID: r.ID, DefaultBranch: r.DefaultBranch, Private: r.Private})
		}
	case q.Kind == KindBranches && d != nil:
		p, err := d.ListBranches(ctx, q.Repo, o)
		if err != nil {
			return out, err
		}
		out.Next = p.Next
		out.Items = make([]Resource, 0, len(p.Items))
		for _, br := range p.Items {
			out.Items = append(out.Items, Resource{Name: br.Name, CommitSHA: br.CommitSHA})
		}
	case q.Kind == KindTags && d != nil:
		p, err := d.ListTags(ctx, q.Repo, o)
		if err != nil {
			return out, err
		}
		out.Next = p.Next
		out.Items = make([]Resource, 0, len(p.Items))
		for _, t := range p.Items {
			out.Items = append(out.Items, Resource{Name: t.Name, Digest: t.Digest})
		}
	default:
		l, ok := conn.(connectors.ResourceLister)
		if !ok {
			return out, fault.Permanentf("the connector declares no resource kind %q", q.Kind)
		}
		p, err := l.ListResources(ctx, q.Kind, q.Repo, o)
		if err != nil {
			return out, err
		}
		out.Next = p.Next
		out.Items = make([]Resource, 0, len(p.Items))
		for _, r := range p.Items {
			out.Items = append(out.Items, Resource{Name: r.Name, ID: r.ID, URL: r.URL, Attributes: r.Attributes})
		}
	}
	return out, nil
}
