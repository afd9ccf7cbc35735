// Package annotation is the annotation worker: it consumes
// scm.annotation.requested (published by Scanner) and posts each request to
// GitHub or GitLab as a pull-request comment, a commit status or a check
// run, then reports scm.annotation.completed or scm.annotation.failed.
//
// It never calls the catalog: integrations come from the INTEGRATIONS_STATE
// bucket (pkg/integrationset), a KV snapshot the catalog's outbox keeps
// (latest value per integration, deletes as tombstones), so a worker
// starting cold has every integration after one read of the bucket instead
// of a replay of the whole INTEGRATIONS stream.
//
// Reliability comes from the bus frame (pkg/bus: retry, a breaker per
// integration, DLQ, spool) plus what is specific to providers here:
//
//   - a write budget per account (installation) and per API host; when it
//     runs short a check run is posted in a cheaper form (budget.go,
//     degrade.go), and waiting is a delayed redelivery with a reserved
//     slot, never a sleeping handler;
//   - a provider's Retry-After or exhausted rate limit stops every write to
//     that account until it ends;
//   - an integration whose breaker stays open, or that is marked offline,
//     has its requests spooled; integration.health_changed to healthy
//     drains that spool in order, newest state per target (compact.go).
package annotation

import (
	"context"
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
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
	"golang.org/x/sync/errgroup"

	"inthub.dev/events"
	"inthub.dev/pkg/authref"
	"inthub.dev/pkg/bus"
	"inthub.dev/pkg/connectors"
	_ "inthub.dev/pkg/connectors/builtin" // the providers built into the binary
	"inthub.dev/pkg/connectors/connect"
	"inthub.dev/pkg/deadletter"
	"inthub.dev/pkg/egress"
	"inthub.dev/pkg/fault"
	"inthub.dev/pkg/integrationset"
	"inthub.dev/pkg/plugin"
	"inthub.dev/pkg/spool"
)

// Source is the CloudEvents source of the events the worker publishes.
const Source = "inthub/annotation"

// Integration statuses (the catalog's) that stop posting.
const (
	statusDisabled = "disabled"
	statusOffline  = "offline"
)

// Config configures the worker. The zero value of a field takes its default.
type Config struct {
	// Listen is the address of /healthz, /readyz and /metrics
	// (127.0.0.1:8082); "-" serves nothing.
	Listen string
	// DataDir holds the spool of result events while NATS is down
	// (DataDir/spool.db); required.
	DataDir string
	// Durable names the consumer of scm.annotation.requested ("annotation");
	// replicas share it. The consumer of integration.health_changed is
	// Durable + "-health".
	Durable     string
	Concurrency int           // requests handled at once (8)
	MaxDeliver  int           // deliveries before a request is dead-lettered (10)
	AckWait     time.Duration // (60s)
	// HandlerTimeout bounds one request, every call to the provider
	// included (2m: a check run with many annotations makes several).
	HandlerTimeout time.Duration
	// AccountBudget and HostBudget are the write budgets per account and
	// per API host (DefaultAccountBudget, DefaultHostBudget).
	AccountBudget, HostBudget Budget
	// MaxDefer is the longest a request waits for its budget before it is
	// posted in a cheaper form if one can go sooner (30s).
	MaxDefer time.Duration
	// BreakerFailures in a row open an integration's breaker (5); it stays
	// open BreakerOpenFor (30s) before a trial; after OfflineAfter (2m)
	// open, requests are spooled instead of redelivered.
	BreakerFailures uint32
	BreakerOpenFor  time.Duration
	OfflineAfter    time.Duration
	// Egress guards every connection to a provider.
	Egress egress.Policy
	// Resolver resolves AuthRefs; nil: one with the default backends.
	Resolver *authref.Resolver
	// Registry holds the connectors (connectors.Default()).
	Registry *connectors.Registry
	// PluginDirs are scanned for connector plugins (pkg/plugin) at start
	// and every PluginScanInterval (1m); the binaries whose SHA-256 is in
	// PluginChecksums run, and their types join Registry. The worker
	// records nothing: the catalog keeps plugin_metadata and announces
	// changes. No plugin host without directories.
	PluginDirs, PluginChecksums []string
	PluginScanInterval          time.Duration
	// Bucket overrides the integrations bucket (bus.BucketIntegrations).
	Bucket string
	// Streams are provisioned at start (idempotent).
	Streams bus.StreamSettings
	// PublishRetryEvery is how often the result spool is retried while NATS
	// stays down (bus default 1s).
	PublishRetryEvery time.Duration
	Logger            *slog.Logger
	// Now is the clock of the write budgets (time.Now).
	Now func() time.Time
	// TracerProvider traces each request from its delivery to the
	// provider's HTTP calls and the result's publish, in the requester's
	// trace (default: no tracing).
	TracerProvider trace.TracerProvider
}

func (c *Config) defaults() error {
	if c.DataDir == "" {
		return errors.New("annotation: DataDir is required: the spool of result events lives there")
	}
	if c.Listen == "" {
		c.Listen = "127.0.0.1:8082"
	}
	if c.Durable == "" {
		c.Durable = "annotation"
	}
	if c.Concurrency <= 0 {
		c.Concurrency = 8
	}
	if c.MaxDeliver <= 0 {
		c.MaxDeliver = 10
	}
	if c.AckWait <= 0 {
		c.AckWait = time.Minute
	}
	if c.HandlerTimeout <= 0 {
		c.HandlerTimeout = 2 * time.Minute
	}
	if c.AccountBudget.PerSecond <= 0 {
		c.AccountBudget = DefaultAccountBudget
	}
	if c.HostBudget.PerSecond <= 0 {
		c.HostBudget = DefaultHostBudget
	}
	if c.MaxDefer <= 0 {
		c.MaxDefer = 30 * time.Second
	}
	if c.BreakerFailures == 0 {
		c.BreakerFailures = 5
	}
	if c.BreakerOpenFor <= 0 {
		c.BreakerOpenFor = 30 * time.Second
	}
	if c.OfflineAfter <= 0 {
		c.OfflineAfter = 2 * time.Minute
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Registry == nil {
		c.Registry = connectors.Default()
	}
	if c.Resolver == nil {
		c.Resolver = authref.NewResolver(authref.WithLogger(c.Logger))
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.TracerProvider == nil {
		c.TracerProvider = noop.NewTracerProvider()
	}
	return c.Resolver.Validate()
}

// Service is one annotation worker. Make it with New and run it with Run.
type Service struct {
	cfg     Config
	nc      *nats.Conn
	js      jetstream.JetStream
	log     *slog.Logger
	builder *connect.Builder
	set     *integrationset.Set
	budgets *budgets
	dl      *deadletter.Store
	reg     *prometheus.Registry
	plugins *plugin.Host // nil without PluginDirs
	m       metrics

	conns   sync.Map // integration id → *conn
	writers sync.Map // account → *sync.Mutex: writes serialised per account

	ready     chan struct{}
	listening chan struct{}
	addr      atomic.Pointer[net.TCPAddr]
	running   atomic.Bool

	mu      sync.Mutex
	pub     *bus.Publisher
	work    *bus.Worker
	drained atomic.Uint64
}

// conn is the connector of one integration version, kept between requests
// so that its caches (installation token, sticky-comment ids) are reused.
type conn struct {
	version int64
	c       connectors.Connector
	a       connectors.Annotator
}

// New validates cfg and prepares the worker; nothing runs until Run.
func New(cfg Config, nc *nats.Conn) (*Service, error) {
	if nc == nil {
		return nil, errors.New("annotation: a NATS connection is required")
	}
	if err := cfg.defaults(); err != nil {
		return nil, fmt.Errorf("annotation: secrets: %w", err)
	}
	builder, err := connect.New(cfg.Registry, cfg.Resolver, cfg.Egress, connect.WithLogger(cfg.Logger),
		connect.WithTracerProvider(cfg.TracerProvider))
	if err != nil {
		return nil, fmt.Errorf("annotation: %w", err)
	}
	var plugins *plugin.Host
	if len(cfg.PluginDirs) > 0 {
		plugins, err = plugin.New(plugin.Config{Dirs: cfg.PluginDirs, Allowed: cfg.PluginChecksums,
			Registry: cfg.Registry, Egress: cfg.Egress, Logger: cfg.Logger.With("component", "plugins")})
		if err != nil {
			return nil, fmt.Errorf("annotation: %w", err)
		}
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("annotation: jetstream: %w", err)
	}
	set, err := integrationset.New(js, integrationset.WithLogger(cfg.Logger), integrationset.WithBucket(cfg.Bucket))
	if err != nil {
		return nil, fmt.Errorf("annotation: %w", err)
	}
	dl, err := deadletter.New(js, deadletter.WithLogger(cfg.Logger))
	if err != nil {
		return nil, fmt.Errorf("annotation: %w", err)
	}
	s := &Service{
		cfg: cfg, nc: nc, js: js, log: cfg.Logger, builder: builder, set: set, dl: dl, plugins: plugins,
		budgets:   newBudgets(cfg.AccountBudget, cfg.HostBudget, cfg.Now),
		reg:       prometheus.NewRegistry(),
		ready:     make(chan struct{}),
		listening: make(chan struct{}),
	}
	if err := s.m.register(s.reg); err != nil {
		return nil, fmt.Errorf("annotation: metrics: %w", err)
	}
	return s, nil
}

// Ready is closed once the worker consumes with the integrations loaded.
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

// Metrics is the worker's private registry.
func (s *Service) Metrics() *prometheus.Registry { return s.reg }

// Run works until ctx ends; requests in flight are finished or left for
// redelivery, result events not yet published stay in the spool.
func (s *Service) Run(ctx context.Context) error {
	if !s.running.CompareAndSwap(false, true) {
		return errors.New("annotation: Run called twice; make a new Service")
	}
	if err := bus.Provision(ctx, s.js, s.cfg.Streams); err != nil {
		return fmt.Errorf("annotation: %w", err)
	}
	if err := os.MkdirAll(s.cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("annotation: data dir: %w", err)
	}
	sp, err := spool.Open(filepath.Join(s.cfg.DataDir, "spool.db"))
	if err != nil {
		return fmt.Errorf("annotation: open the result spool in %s: %w", s.cfg.DataDir, err)
	}
	defer sp.Close()
	pub, err := bus.NewPublisher(s.nc, bus.PublisherConfig{Spool: sp, RetryEvery: s.cfg.PublishRetryEvery, Logger: s.log,
		TracerProvider: s.cfg.TracerProvider})
	if err != nil {
		return fmt.Errorf("annotation: %w", err)
	}
	defer pub.Close()

	work, err := bus.NewWorker(s.js, bus.WorkerConfig{
		Service: "annotation", Stream: bus.StreamSCM, Durable: s.cfg.Durable,
		AckWait: s.cfg.AckWait, MaxDeliver: s.cfg.MaxDeliver, Concurrency: s.cfg.Concurrency,
		HandlerTimeout: s.cfg.HandlerTimeout,
		Breaker: bus.BreakerPolicy{Failures: s.cfg.BreakerFailures, OpenFor: s.cfg.BreakerOpenFor,
			OfflineAfter: s.cfg.OfflineAfter},
		Redelivery:     bus.ExponentialRedelivery(time.Second, time.Minute),
		OnFailure:      s.onFailure,
		Logger:         s.log,
		TracerProvider: s.cfg.TracerProvider,
	})
	if err != nil {
		return fmt.Errorf("annotation: %w", err)
	}
	work.Handle(events.SubjectAnnotationRequested, s.handle)
	health, err := bus.NewWorker(s.js, bus.WorkerConfig{
		Service: "annotation", Stream: bus.StreamIntegrations, Durable: s.cfg.Durable + "-health",
		Concurrency: 2, HandlerTimeout: 5 * time.Minute, AckWait: time.Minute, Logger: s.log,
		TracerProvider: s.cfg.TracerProvider,
	})
	if err != nil {
		return fmt.Errorf("annotation: %w", err)
	}
	health.Handle(events.SubjectIntegrationHealthChanged, s.healthChanged)
	s.mu.Lock()
	s.pub, s.work = pub, work
	s.mu.Unlock()
	if err := s.reg.Register(bus.NewCollector(s.js, bus.CollectorConfig{
		Consumers: []bus.ConsumerRef{{Stream: bus.StreamSCM, Durable: s.cfg.Durable}, {Stream: bus.StreamIntegrations, Durable: s.cfg.Durable + "-health"}},
		Streams:   []string{bus.StreamDLQ, bus.StreamSpool},
		Breakers:  []*bus.Breakers{work.Breakers()},
	})); err != nil {
		return fmt.Errorf("annotation: metrics: %w", err)
	}

	var ln net.Listener
	if s.cfg.Listen != "-" {
		ln, err = net.Listen("tcp", s.cfg.Listen)
		if err != nil {
			return fmt.Errorf("annotation: listen on %s: %w", s.cfg.Listen, err)
		}
		if a, ok := ln.Addr().(*net.TCPAddr); ok {
			s.addr.Store(a)
		}
		close(s.listening)
	}

	if s.plugins != nil {
		// Closed last, after the requests in flight and the cached
		// connectors: it stops the plugin processes. The first scan comes
		// before the first request.
		defer s.plugins.Close()
		if _, err := s.plugins.Discover(ctx); err != nil {
			s.log.Warn("plugin scan failed; retrying every interval", "error", err.Error())
		}
	}
	g, gctx := errgroup.WithContext(ctx)
	if s.plugins != nil {
		g.Go(func() error {
			interval := s.cfg.PluginScanInterval
			if interval <= 0 {
				interval = time.Minute
			}
			if err := s.plugins.Watch(gctx, interval); gctx.Err() == nil {
				return fmt.Errorf("annotation: plugins: %w", err)
			}
			return nil
		})
	}
	g.Go(func() error { return s.set.Run(gctx) })
	g.Go(func() error {
		// Requests wait for the integrations: before the snapshot every
		// integration would look unknown and be dead-lettered.
		select {
		case <-gctx.Done():
			return nil
		case <-s.set.Ready():
		}
		w := errgroup.Group{}
		w.Go(func() error { return work.Run(gctx) })
		w.Go(func() error { return health.Run(gctx) })
		go func() {
			select {
			case <-gctx.Done():
				return
			case <-work.Running():
			}
			select {
			case <-gctx.Done():
			case <-health.Running():
				close(s.ready)
				s.log.Info("annotation worker ready", "integrations", s.set.Len())
			}
		}()
		return w.Wait()
	})
	g.Go(func() error { return s.forget(gctx) })
	if ln != nil {
		srv := &http.Server{Handler: s.handler(), ReadHeaderTimeout: 5 * time.Second}
		g.Go(func() error {
			if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
				return fmt.Errorf("annotation: http: %w", err)
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
	s.log.Info("annotation worker running", "listen", s.Addr(), "durable", s.cfg.Durable)
	err = g.Wait()
	s.closeConns()
	s.builder.Close()
	if ctx.Err() != nil {
		s.log.Info("annotation worker stopped", "spooled", pub.Spooled())
		return nil
	}
	return err
}

// forget drops the connectors of integrations that are gone, so that a
// deleted integration's caches do not live on.
func (s *Service) forget(ctx context.Context) error {
	t := time.NewTicker(time.Minute)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		s.conns.Range(func(k, v any) bool {
			if _, ok := s.set.Lookup(k.(string)); !ok {
				s.conns.Delete(k)
				_ = v.(*conn).c.Close()
			}
			return true
		})
	}
}

func (s *Service) closeConns() {
	s.conns.Range(func(k, v any) bool {
		s.conns.Delete(k)
		_ = v.(*conn).c.Close()
		return true
	})
}

// refused marks an error found before any call to the provider: the
// request's scm.annotation.failed then reports zero attempts.
type refused struct{ err error }

func (r *refused) Error() string { return r.err.Error() }
func (r *refused) Unwrap() error { return r.err }

func refuse(err error) error { return &refused{err} }

// annotator returns the connector of in, building it on first use and
// again after the integration changed.
func (s *Service) annotator(ctx context.Context, in events.Integration) (connectors.Annotator, string, error) {
	if v, ok := s.conns.Load(in.ID); ok && v.(*conn).version == in.Version {
		c := v.(*conn)
		return c.a, c.c.Provider(), nil
	}
	c, err := s.builder.Connector(ctx, in)
	if errors.Is(err, connect.ErrNoConnector) {
		return nil, in.Type, refuse(fault.Permanentf("integration %s is of type %s, which has no connector in this worker", in.ID, in.Type))
	}
	if err != nil {
		return nil, s.builder.Provider(in.Type), err
	}
	a, ok := c.(connectors.Annotator)
	if !ok {
		_ = c.Close()
		return nil, c.Provider(), refuse(fault.Permanentf("integration %s is of type %s, which cannot post annotations (GitHub and GitLab can)", in.ID, in.Type))
	}
	if old, loaded := s.conns.Swap(in.ID, &conn{version: in.Version, c: c, a: a}); loaded {
		_ = old.(*conn).c.Close()
	}
	return a, c.Provider(), nil
}

func (s *Service) writer(account string) *sync.Mutex {
	m, _ := s.writers.LoadOrStore(account, &sync.Mutex{})
	return m.(*sync.Mutex)
}
