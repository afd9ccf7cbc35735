// Package healthpoller is the health-poller service: it keeps every live
// integration checked on its interval and publishes each result as
// integration.health_checked, where the catalog records the history and
// announces transitions.
//
// It learns the integrations from the INTEGRATIONS_STATE bucket
// (pkg/integrationset: a snapshot at start, then every change), schedules
// them with services/healthpoller/schedule, checks them through the
// connectors (pkg/connectors/connect) and publishes through pkg/bus with a
// local spool, so a NATS outage delays results but loses none.
//
// Replicas share the work through leases on partitions of the
// integrations (services/healthpoller/partition): each replica schedules
// only the integrations of the partitions it holds, on wall-clock slots
// that every replica computes alike (schedule.Config.Align), so a
// partition that changes hands is neither checked twice nor skipped.
package healthpoller

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
	"golang.org/x/sync/errgroup"

	"inthub.dev/events"
	"inthub.dev/pkg/authref"
	"inthub.dev/pkg/bus"
	"inthub.dev/pkg/connectors"
	_ "inthub.dev/pkg/connectors/builtin" // the providers built into the binary
	"inthub.dev/pkg/connectors/connect"
	"inthub.dev/pkg/egress"
	"inthub.dev/pkg/integrationset"
	"inthub.dev/pkg/plugin"
	"inthub.dev/pkg/spool"
	"inthub.dev/services/healthpoller/partition"
	"inthub.dev/services/healthpoller/schedule"
)

// Source is the CloudEvents source of the events the poller publishes.
const Source = "inthub/health-poller"

// statusDisabled is the catalog's integration status that stops checks.
const statusDisabled = "disabled"

// Config configures the service. The zero value of a field takes its
// default.
type Config struct {
	// Listen is the address of /healthz, /readyz and /metrics
	// (127.0.0.1:8081); "-" serves nothing.
	Listen string
	// DataDir holds the publish spool (DataDir/spool.db); required.
	DataDir string
	// DefaultInterval is the interval of an integration whose config sets
	// no healthIntervalSeconds (5m).
	DefaultInterval time.Duration
	// IntervalOverride, when set, is every integration's interval whatever
	// its config says. For tests and demos only: the config schemas do not
	// allow less than 30 s.
	IntervalOverride time.Duration
	MaxConcurrent    int // checks running at once (schedule default 64)
	MaxPerProvider   int // checks running at once per provider (schedule default 16)
	Thresholds       schedule.Thresholds
	Breaker          schedule.Breaker
	// Egress guards every connection to a provider.
	Egress egress.Policy
	// Resolver resolves AuthRefs; nil: one with the default backends.
	Resolver *authref.Resolver
	// Registry holds the connectors (connectors.Default()).
	Registry *connectors.Registry
	// PluginDirs are scanned for connector plugins (pkg/plugin) at start
	// and every PluginScanInterval (1m); the binaries whose SHA-256 is in
	// PluginChecksums run, and their types join Registry, so integrations
	// of a plugin's type are checked like built-in ones. The poller
	// records nothing: the catalog keeps plugin_metadata and announces
	// changes. No plugin host without directories.
	PluginDirs, PluginChecksums []string
	PluginScanInterval          time.Duration
	// Bucket overrides the watched bucket (bus.BucketIntegrations).
	Bucket string
	// PublishRetryEvery is how often the spool is retried while NATS stays
	// down (bus default 1s).
	PublishRetryEvery time.Duration
	// Partitions, LeaseTTL, LeaseRenew and ReplicaID configure how
	// replicas share the work; see partition.Config (64, 15s,
	// LeaseTTL/3, host name + random).
	Partitions int
	LeaseTTL   time.Duration
	LeaseRenew time.Duration
	ReplicaID  string
	// Topology lays out the lease buckets like the fleet's streams.
	Topology bus.Topology
	Logger   *slog.Logger
	// TracerProvider traces the checks, the provider calls they make and
	// the publishing of their results (default: no tracing). The first
	// check after a change of an integration continues the change's trace.
	TracerProvider trace.TracerProvider
}

// Stats is a snapshot of the service's counters.
type Stats struct {
	Schedule schedule.Stats
	// Reported counts results handed to the bus: published or spooled.
	Reported uint64
	// PublishErrors counts results neither published nor spooled.
	PublishErrors uint64
	Spooled       int
	// Leases: the partitions this replica holds and the replicas it sees.
	Leases partition.Stats
}

// Service is one health-poller. Make it with New and run it with Run.
type Service struct {
	cfg     Config
	nc      *nats.Conn
	log     *slog.Logger
	builder *connect.Builder
	set     *integrationset.Set
	part    *partition.Manager
	reg     *prometheus.Registry
	plugins *plugin.Host // nil without PluginDirs

	checks  *prometheus.CounterVec
	latency *prometheus.HistogramVec

	ready     chan struct{} // the set's first snapshot is scheduled
	listening chan struct{}
	addr      atomic.Pointer[net.TCPAddr]
	running   atomic.Bool

	mu    sync.Mutex
	sched *schedule.Scheduler
	pub   *bus.Publisher

	// own guards what is scheduled against the partitions held: both the
	// feed of integration changes and the lease manager change it.
	own       sync.Mutex
	owned     []bool          // by partition
	scheduled map[string]bool // ids given to the scheduler
	setReady  bool            // the first snapshot has been reconciled

	reported, publishErrs atomic.Uint64

	tracer trace.Tracer
	traces *traceBook
}

// New validates cfg and prepares the service; nothing runs until Run.
func New(cfg Config, nc *nats.Conn) (*Service, error) {
	if nc == nil {
		return nil, errors.New("healthpoller: a NATS connection is required")
	}
	if cfg.DataDir == "" {
		return nil, errors.New("healthpoller: DataDir is required: the publish spool lives there")
	}
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:8081"
	}
	if cfg.DefaultInterval <= 0 {
		cfg.DefaultInterval = 5 * time.Minute
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Registry == nil {
		cfg.Registry = connectors.Default()
	}
	if cfg.Resolver == nil {
		cfg.Resolver = authref.NewResolver(authref.WithLogger(cfg.Logger))
	}
	if cfg.TracerProvider == nil {
		cfg.TracerProvider = noop.NewTracerProvider()
	}
	if err := cfg.Resolver.Validate(); err != nil {
		return nil, fmt.Errorf("healthpoller: secrets: %w", err)
	}
	builder, err := connect.New(cfg.Registry, cfg.Resolver, cfg.Egress, connect.WithLogger(cfg.Logger),
		connect.WithTracerProvider(cfg.TracerProvider))
	if err != nil {
		return nil, fmt.Errorf("healthpoller: %w", err)
	}
	var plugins *plugin.Host
	if len(cfg.PluginDirs) > 0 {
		plugins, err = plugin.New(plugin.Config{Dirs: cfg.PluginDirs, Allowed: cfg.PluginChecksums,
			Registry: cfg.Registry, Egress: cfg.Egress, Logger: cfg.Logger.With("component", "plugins")})
		if err != nil {
			return nil, fmt.Errorf("healthpoller: %w", err)
		}
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("healthpoller: jetstream: %w", err)
	}
	set, err := integrationset.New(js, integrationset.WithLogger(cfg.Logger), integrationset.WithBucket(cfg.Bucket))
	if err != nil {
		return nil, fmt.Errorf("healthpoller: %w", err)
	}
	s := &Service{
		cfg: cfg, nc: nc, log: cfg.Logger, builder: builder, set: set, plugins: plugins,
		reg:       prometheus.NewRegistry(),
		ready:     make(chan struct{}),
		listening: make(chan struct{}),
		scheduled: map[string]bool{},
		tracer:    cfg.TracerProvider.Tracer("inthub.dev/services/healthpoller"),
		traces:    newTraceBook(),
	}
	s.part, err = partition.New(js, partition.Config{
		Partitions: cfg.Partitions, TTL: cfg.LeaseTTL, Renew: cfg.LeaseRenew,
		Topology: cfg.Topology, ID: cfg.ReplicaID,
		OnChange: s.onOwnership, Logger: cfg.Logger,
	})
	if err != nil {
		return nil, fmt.Errorf("healthpoller: %w", err)
	}
	s.checks = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "integrations_health_check_total",
		Help: "Scheduled health checks by provider and the status each measured (breaker short-circuits count as unhealthy).",
	}, []string{"provider", "status"})
	s.latency = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "integration_health_latency_ms",
		Help:    "Latency of scheduled health checks, in milliseconds, by provider.",
		Buckets: []float64{5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000},
	}, []string{"provider"})
	// The connect Builder's own metrics are not registered: its
	// integrations_health_check_total would collide with the poller's,
	// which also counts breaker short-circuits.
	for _, c := range []prometheus.Collector{s.checks, s.latency, s.collector()} {
		if err := s.reg.Register(c); err != nil {
			return nil, fmt.Errorf("healthpoller: metrics: %w", err)
		}
	}
	return s, nil
}

// Ready is closed once the first snapshot of the integrations is scheduled
// for the partitions this replica took in its first round.
func (s *Service) Ready() <-chan struct{} { return s.ready }

// Listening is closed once the HTTP server listens (never with Listen "-").
func (s *Service) Listening() <-chan struct{} { return s.listening }

// Addr is the HTTP server's address once Listening is closed, else nil.
func (s *Service) Addr() net.Addr {
	if a := s.addr.Load(); a != nil {
		return a
	}
	return nil
}

// Metrics is the service's private registry.
func (s *Service) Metrics() *prometheus.Registry { return s.reg }

// Stats returns the counters; zero before Run.
func (s *Service) Stats() Stats {
	s.mu.Lock()
	sched, pub := s.sched, s.pub
	s.mu.Unlock()
	st := Stats{Reported: s.reported.Load(), PublishErrors: s.publishErrs.Load(), Leases: s.part.Stats()}
	if sched != nil {
		st.Schedule = sched.Stats()
	}
	if pub != nil {
		st.Spooled = pub.Spooled()
	}
	return st
}

// Run polls until ctx ends, then stops the checks, leaves what could not be
// published in the spool (the next start replays it) and returns nil.
func (s *Service) Run(ctx context.Context) error {
	if !s.running.CompareAndSwap(false, true) {
		return errors.New("healthpoller: Run called twice; make a new Service")
	}
	if err := os.MkdirAll(s.cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("healthpoller: data dir: %w", err)
	}
	sp, err := spool.Open(filepath.Join(s.cfg.DataDir, "spool.db"))
	if err != nil {
		return fmt.Errorf("healthpoller: open the publish spool in %s: %w", s.cfg.DataDir, err)
	}
	defer sp.Close()
	// SkipValidation: every event is made by events.New, which validates
	// it against its schema a moment before; a second check would cost
	// the poller a quarter of its CPU per check.
	pub, err := bus.NewPublisher(s.nc, bus.PublisherConfig{Spool: sp, RetryEvery: s.cfg.PublishRetryEvery, Logger: s.log,
		SkipValidation: true, TracerProvider: s.cfg.TracerProvider})
	if err != nil {
		return fmt.Errorf("healthpoller: %w", err)
	}
	defer pub.Close()
	sched, err := schedule.New(schedule.Config{
		Align:           true,
		DefaultInterval: s.cfg.DefaultInterval,
		MaxConcurrent:   s.cfg.MaxConcurrent,
		MaxPerProvider:  s.cfg.MaxPerProvider,
		Thresholds:      s.cfg.Thresholds,
		Breaker:         s.cfg.Breaker,
		Logger:          s.log,
	}, checker{s}, sink{s, pub})
	if err != nil {
		return fmt.Errorf("healthpoller: %w", err)
	}
	s.mu.Lock()
	s.sched, s.pub = sched, pub
	s.mu.Unlock()

	var ln net.Listener
	if s.cfg.Listen != "-" {
		ln, err = net.Listen("tcp", s.cfg.Listen)
		if err != nil {
			return fmt.Errorf("healthpoller: listen on %s: %w", s.cfg.Listen, err)
		}
		if a, ok := ln.Addr().(*net.TCPAddr); ok {
			s.addr.Store(a)
		}
		close(s.listening)
	}

	if s.plugins != nil {
		// Closed last (deferred first among what follows), after the
		// checks in flight have returned: it stops the plugin processes.
		defer s.plugins.Close()
		// The first scan comes before the first checks, so that a
		// plugin's integrations are not reported "no connector" at every
		// start.
		if _, err := s.plugins.Discover(ctx); err != nil {
			s.log.Warn("plugin scan failed; retrying every interval", "error", err.Error())
		}
	}

	// Subscribe before the set runs, so no change falls between the
	// snapshot read with All and the feed.
	sub := s.set.Subscribe(4096)
	defer sub.Close()
	g, gctx := errgroup.WithContext(ctx)
	if s.plugins != nil {
		g.Go(func() error { return watchPlugins(gctx, s.plugins, s.cfg.PluginScanInterval) })
	}
	g.Go(func() error { return s.set.Run(gctx) })
	g.Go(func() error { return sched.Run(gctx) })
	g.Go(func() error { return s.part.Run(gctx) })
	g.Go(func() error { return s.feed(gctx, sched, sub) })
	if ln != nil {
		srv := &http.Server{Handler: s.handler(), ReadHeaderTimeout: 5 * time.Second}
		g.Go(func() error {
			if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
				return fmt.Errorf("healthpoller: http: %w", err)
			}
			return nil
		})
		g.Go(func() error {
			<-gctx.Done()
			sctx, cancel := context.WithTimeout(context.WithoutCancel(gctx), 5*time.Second)
			defer cancel()
			return srv.Shutdown(sctx)
		})
	}
	s.log.Info("health poller running", "listen", s.Addr(), "defaultInterval", s.cfg.DefaultInterval.String(),
		"replica", s.part.ID(), "partitions", s.part.Partitions())
	err = g.Wait()
	s.builder.Close()
	if ctx.Err() != nil {
		s.log.Info("health poller stopped", "spooled", pub.Spooled())
		return nil
	}
	return err
}

// feed schedules the snapshot once it is in and the first leases are
// taken, then follows the changes.
func (s *Service) feed(ctx context.Context, sched *schedule.Scheduler, sub *integrationset.Subscription) error {
	for _, c := range []<-chan struct{}{s.set.Ready(), s.part.Ready()} {
		select {
		case <-ctx.Done():
			return nil
		case <-c:
		}
	}
	s.own.Lock()
	s.setReady = true
	s.reconcile(sched)
	n := len(s.scheduled)
	s.own.Unlock()
	close(s.ready)
	s.log.Info("integrations scheduled", "integrations", n, "partitionsOwned", s.part.Stats().Owned)
	for {
		select {
		case <-ctx.Done():
			return nil
		case c, ok := <-sub.C():
			if !ok {
				return nil
			}
			s.own.Lock()
			switch c.Kind {
			case integrationset.Upsert:
				s.traces.changed(c.Integration.ID, c.TraceParent)
				s.apply(sched, c.Integration)
			case integrationset.Delete:
				s.traces.forget(c.Integration.ID)
				if s.scheduled[c.Integration.ID] {
					sched.Remove(c.Integration.ID)
					delete(s.scheduled, c.Integration.ID)
				}
			case integrationset.Resync:
				s.reconcile(sched)
			}
			s.own.Unlock()
		}
	}
}

// onOwnership follows the partitions held. The lease manager calls it
// before it hands a partition back, so the checks stop before another
// replica may start them.
func (s *Service) onOwnership(owned []bool) {
	s.mu.Lock()
	sched := s.sched
	s.mu.Unlock()
	s.own.Lock()
	defer s.own.Unlock()
	s.owned = owned
	if s.setReady && sched != nil {
		s.reconcile(sched)
	}
}

// reconcile makes the schedule match the set's current content and the
// partitions held. Callers hold s.own.
func (s *Service) reconcile(sched *schedule.Scheduler) {
	seen := make(map[string]bool, len(s.scheduled))
	for _, in := range s.set.All() {
		seen[in.ID] = true
		s.apply(sched, in)
	}
	for id := range s.scheduled {
		if !seen[id] {
			sched.Remove(id)
			delete(s.scheduled, id)
		}
	}
}

// apply schedules one integration if it is active and in a partition this
// replica holds. Callers hold s.own.
func (s *Service) apply(sched *schedule.Scheduler, in events.Integration) {
	p := partition.Of(in.ID, s.part.Partitions())
	mine := p < len(s.owned) && s.owned[p]
	switch {
	case in.Status != statusDisabled && mine:
		sched.Upsert(s.target(in))
		s.scheduled[in.ID] = true
	case !s.scheduled[in.ID]:
	case in.Status == statusDisabled:
		sched.Remove(in.ID)
		delete(s.scheduled, in.ID)
	default:
		// Another replica checks it from its next slot on.
		sched.Handoff(in.ID)
		delete(s.scheduled, in.ID)
	}
}

// target is the schedule entry of an integration.
func (s *Service) target(in events.Integration) schedule.Target {
	var c struct {
		HealthIntervalSeconds int `json:"healthIntervalSeconds"`
		TimeoutSeconds        int `json:"timeoutSeconds"`
	}
	// A config that does not decode is the connector's to report (the
	// check fails with a config error); the schedule takes the defaults.
	_ = json.Unmarshal(in.Config, &c)
	t := schedule.Target{ID: in.ID, TenantID: in.TenantID, Type: in.Type, Version: in.Version,
		Provider: s.builder.Provider(in.Type)}
	if t.Provider == "" {
		// No connector: its checks fail at once, so grouping it with
		// nobody else costs nothing.
		t.Provider = in.Type
	}
	switch {
	case s.cfg.IntervalOverride > 0:
		t.Interval = s.cfg.IntervalOverride
	case c.HealthIntervalSeconds > 0:
		t.Interval = time.Duration(c.HealthIntervalSeconds) * time.Second
	}
	if c.TimeoutSeconds > 0 {
		t.Timeout = time.Duration(c.TimeoutSeconds) * time.Second
	}
	return t
}

// checker checks a target through its connector.
type checker struct{ s *Service }

func (c checker) Check(ctx context.Context, t schedule.Target) (res schedule.Result) {
	start := time.Now()
	ctx, span := c.s.startCheck(ctx, t)
	defer func() {
		c.s.traces.checked(t.ID, res.CheckedAt, span.SpanContext())
		if span.IsRecording() {
			span.SetAttributes(attribute.String("inthub.health.status", res.Status))
			if res.Status != schedule.StatusHealthy && res.Status != schedule.StatusDegraded {
				span.SetStatus(codes.Error, res.Message)
			}
		}
		span.End()
	}()
	in, ok := c.s.set.Get(t.TenantID, t.ID)
	if !ok {
		// Deleted meanwhile: the scheduler drops this result.
		return schedule.Result{Status: schedule.StatusUnknown, CheckedAt: start, Message: "integration no longer exists"}
	}
	out, err := c.s.builder.CheckHealth(ctx, in)
	if err != nil {
		return schedule.Result{Status: schedule.StatusUnknown, CheckedAt: start,
			Message: fmt.Sprintf("cannot check: %v", err)}
	}
	r := out.Result
	return schedule.Result{Status: string(r.Status), Latency: r.Latency, Message: r.Message, Class: r.Class, CheckedAt: start}
}

// sink publishes each result as integration.health_checked.
type sink struct {
	s   *Service
	pub *bus.Publisher
}

func (k sink) Report(ctx context.Context, t schedule.Target, r schedule.Result) error {
	k.s.checks.WithLabelValues(t.Provider, r.Observed).Inc()
	k.s.latency.WithLabelValues(t.Provider).Observe(float64(r.Latency) / float64(time.Millisecond))
	ev, err := events.New(events.SubjectIntegrationHealthChecked, Source, t.TenantID, events.HealthChecked{
		IntegrationID: t.ID, TenantID: t.TenantID, Type: t.Type,
		Status:    events.HealthStatus(r.Status),
		LatencyMs: max(r.Latency.Milliseconds(), 0),
		Message:   r.Message,
		CheckedAt: r.CheckedAt.UTC(),
	})
	if err != nil {
		k.s.publishErrs.Add(1)
		return fmt.Errorf("health_checked event: %w", err)
	}
	// A check that has started reporting finishes reporting even at
	// shutdown: on the bus or in the spool, never half-way.
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	if sc, ok := k.s.traces.report(t.ID, r.CheckedAt); ok {
		pctx = trace.ContextWithSpanContext(pctx, sc)
	}
	if err := k.pub.Publish(pctx, ev); err != nil {
		k.s.publishErrs.Add(1)
		return err
	}
	k.s.reported.Add(1)
	return nil
}

// watchPlugins follows the plugin directories until ctx ends.
func watchPlugins(ctx context.Context, h *plugin.Host, interval time.Duration) error {
	if interval <= 0 {
		interval = time.Minute
	}
	if err := h.Watch(ctx, interval); ctx.Err() == nil {
		return fmt.Errorf("healthpoller: plugins: %w", err)
	}
	return nil
}
