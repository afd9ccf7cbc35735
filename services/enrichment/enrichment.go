// Package enrichment is the enrichment service: the data side of the
// platform. One binary with three parts, each switched on by Config.Roles:
//
//   - ingress: the webhook endpoints (package ingress): GitHub, GitLab, and
//     CloudWatch alarms through an SNS HTTPS subscription → ingest.<provider>.<kind>
//   - mapper: a worker on the INGEST stream that maps each document with the
//     rules of package mapping → event.canonical.<category>; what cannot be
//     mapped or validated goes to the DLQ with the reason, the ingest
//     message untouched
//   - poller (opt-in): CloudWatch alarms and metrics of monitoring.cloudwatch
//     integrations that ask for them → ingest.cloudwatch.alarm,
//     ingest.cloudwatch.metric
//   - correlator: a worker on the EVENTS stream that indexes canonical
//     events in PostgreSQL (package correlate), asks for the enrichment of
//     system and security events, and answers enrichment.requested with
//     event.enriched
//
// The ingress is part of this service rather than a binary of its own
// because it shares everything with it (the integration set, the secret
// resolver, the publisher and its spool) and has no state; it listens on
// its own address (WebhookListen), which is the only one to expose to the
// providers, and a deployment that wants the webhook receivers apart
// runs the same binary with --roles ingress there and --roles
// mapper,correlator behind.
package enrichment

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
	"golang.org/x/sync/errgroup"

	"inthub.dev/events"
	"inthub.dev/pkg/authref"
	"inthub.dev/pkg/bus"
	"inthub.dev/pkg/egress"
	"inthub.dev/pkg/fault"
	"inthub.dev/pkg/integrationset"
	"inthub.dev/pkg/spool"
	"inthub.dev/services/enrichment/cloudwatch"
	"inthub.dev/services/enrichment/correlate"
	"inthub.dev/services/enrichment/ingress"
	"inthub.dev/services/enrichment/mapping"
)

// Source is the CloudEvents source of the events the mapper and the
// correlator publish.
const Source = "inthub/enrichment"

// Roles of the service.
const (
	RoleIngress    = "ingress"
	RoleMapper     = "mapper"
	RoleCorrelator = "correlator"
	// RolePoller polls CloudWatch alarms (package cloudwatch). Not in the
	// default roles: every replica running it polls every integration.
	RolePoller = "poller"
)

// Config configures the service. The zero value of a field takes its
// default.
type Config struct {
	// Roles to run (default all three).
	Roles []string
	// Listen is the address of /healthz, /readyz and /metrics
	// (127.0.0.1:8083); "-" serves nothing.
	Listen string
	// WebhookListen is the address of /webhooks/... (127.0.0.1:8090), the
	// one to expose to the providers; "-" serves nothing.
	WebhookListen string
	// DataDir holds the publish spool (DataDir/spool.db); required.
	DataDir string
	// DatabaseURL connects as the owner of the enrichment schema, to
	// migrate at start; AppDatabaseURL as correlate.AppRole for the
	// index (default: DatabaseURL with that user). Needed by the
	// correlator only.
	DatabaseURL    string
	AppDatabaseURL string
	SkipMigrations bool
	// RulesDir holds custom mapping rule sets; one for a source replaces
	// the default rules of that source.
	RulesDir string
	// Correlation parameters (see correlate.Params).
	Correlation correlate.Params
	// AutoEnrich lists the canonical categories whose events the
	// correlator asks to enrich (default system, security; "none" for
	// none).
	AutoEnrich []string
	// Retention is how long indexed events are kept (30 days);
	// RetentionEvery how often expired ones are deleted (1h).
	Retention      time.Duration
	RetentionEvery time.Duration
	// MaxBody bounds a webhook body (ingress.DefaultMaxBody, and never
	// more than NATS accepts in one message).
	MaxBody int64
	// SNS configures the CloudWatch alarm endpoint (its certificate roots
	// and fetcher; the defaults suit production).
	SNS ingress.SNSConfig
	// PollInterval is the poller's interval (1m); Egress guards its
	// connections to CloudWatch endpoints.
	PollInterval time.Duration
	Egress       egress.Policy
	// Resolver reads webhook secrets; nil: one with the default backends.
	Resolver *authref.Resolver
	// Bucket overrides the watched integrations bucket.
	Bucket string
	// Streams are the stream settings the service provisions with.
	Streams bus.StreamSettings
	// Worker tuning (bus defaults when zero).
	MaxDeliver  int
	Concurrency int
	// PublishRetryEvery is how often the spool is retried while NATS stays
	// down (bus default 1s).
	PublishRetryEvery time.Duration
	Logger            *slog.Logger
	// TracerProvider traces webhooks from their request through the
	// mapper and the correlator (default: no tracing).
	TracerProvider trace.TracerProvider
}

// Service is one enrichment service. Make it with New, run it with Run.
type Service struct {
	cfg    Config
	nc     *nats.Conn
	js     jetstream.JetStream
	log    *slog.Logger
	set    *integrationset.Set
	mapper *mapping.Mapper
	reg    *prometheus.Registry
	roles  map[string]bool
	auto   map[string]bool

	mapped, mapFailed, indexed, enriched *prometheus.CounterVec
	enrichMatches                        prometheus.Histogram

	ready        chan struct{}
	listening    chan struct{}
	addr, webhok atomic.Pointer[net.TCPAddr]
	running      atomic.Bool
	pub          atomic.Pointer[bus.Publisher]
	store        atomic.Pointer[correlate.Store]
	ingress      *ingress.Handler
	poller       *cloudwatch.Poller
}

// New checks cfg and prepares the service; nothing runs until Run.
func New(cfg Config, nc *nats.Conn) (*Service, error) {
	if nc == nil {
		return nil, errors.New("enrichment: a NATS connection is required")
	}
	if cfg.DataDir == "" {
		return nil, errors.New("enrichment: DataDir is required: the publish spool lives there")
	}
	if len(cfg.Roles) == 0 {
		cfg.Roles = []string{RoleIngress, RoleMapper, RoleCorrelator}
	}
	roles := map[string]bool{}
	for _, r := range cfg.Roles {
		switch r {
		case RoleIngress, RoleMapper, RoleCorrelator, RolePoller:
			roles[r] = true
		default:
			return nil, fmt.Errorf("enrichment: unknown role %q (want ingress, mapper, correlator or poller)", r)
		}
	}
	if roles[RoleCorrelator] && cfg.DatabaseURL == "" && cfg.AppDatabaseURL == "" {
		return nil, errors.New("enrichment: the correlator needs PostgreSQL: set DatabaseURL (or run without the correlator role)")
	}
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:8083"
	}
	if cfg.WebhookListen == "" {
		cfg.WebhookListen = "127.0.0.1:8090"
	}
	if cfg.AutoEnrich == nil {
		cfg.AutoEnrich = []string{events.CategorySystem, events.CategorySecurity}
	}
	auto := map[string]bool{}
	for _, c := range cfg.AutoEnrich {
		switch c {
		case events.CategoryDelivery, events.CategorySystem, events.CategorySecurity:
			auto[c] = true
		case "none", "":
		default:
			return nil, fmt.Errorf("enrichment: AutoEnrich: unknown category %q", c)
		}
	}
	if cfg.Retention <= 0 {
		cfg.Retention = 30 * 24 * time.Hour
	}
	if cfg.RetentionEvery <= 0 {
		cfg.RetentionEvery = time.Hour
	}
	if cfg.Streams == (bus.StreamSettings{}) {
		cfg.Streams = bus.DefaultStreamSettings()
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.TracerProvider == nil {
		cfg.TracerProvider = noop.NewTracerProvider()
	}
	if cfg.Resolver == nil {
		cfg.Resolver = authref.NewResolver(authref.WithLogger(cfg.Logger))
	}
	if err := cfg.Resolver.Validate(); err != nil {
		return nil, fmt.Errorf("enrichment: secrets: %w", err)
	}
	sets, err := mapping.DefaultRuleSets()
	if err != nil {
		return nil, err
	}
	if cfg.RulesDir != "" {
		custom, err := mapping.LoadDir(cfg.RulesDir)
		if err != nil {
			return nil, err
		}
		sets = append(sets, custom...)
	}
	mapper, err := mapping.New(sets...)
	if err != nil {
		return nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("enrichment: jetstream: %w", err)
	}
	set, err := integrationset.New(js, integrationset.WithLogger(cfg.Logger), integrationset.WithBucket(cfg.Bucket))
	if err != nil {
		return nil, fmt.Errorf("enrichment: %w", err)
	}
	s := &Service{cfg: cfg, nc: nc, js: js, log: cfg.Logger, set: set, mapper: mapper, roles: roles, auto: auto,
		reg: prometheus.NewRegistry(), ready: make(chan struct{}), listening: make(chan struct{})}
	s.mapped = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "enrichment_mapped_total", Help: "Ingest documents mapped to a canonical event, by provider and category.",
	}, []string{"provider", "category"})
	s.mapFailed = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "enrichment_mapping_failures_total", Help: "Ingest documents that could not be mapped or validated (dead-lettered), by provider.",
	}, []string{"provider"})
	s.indexed = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "enrichment_indexed_total", Help: "Canonical events indexed for correlation, by category.",
	}, []string{"category"})
	s.enriched = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "enrichment_enriched_total", Help: "enrichment.requested answered with event.enriched, by whether anything matched.",
	}, []string{"matched"})
	s.enrichMatches = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "enrichment_matches", Help: "Matches per event.enriched.", Buckets: []float64{0, 1, 2, 3, 5, 10, 20, 50, 100},
	})
	collectors := []prometheus.Collector{s.mapped, s.mapFailed, s.indexed, s.enriched, s.enrichMatches, s.collector()}
	if roles[RoleIngress] {
		s.ingress, err = ingress.New(ingress.Config{Integrations: set, Secrets: cfg.Resolver, Publisher: publisherRef{s},
			MaxBody: s.maxBody(), SNS: cfg.SNS, Logger: cfg.Logger})
		if err != nil {
			return nil, fmt.Errorf("enrichment: %w", err)
		}
		collectors = append(collectors, s.ingress.Collectors()...)
	}
	if roles[RolePoller] {
		s.poller, err = cloudwatch.New(cloudwatch.Config{Integrations: set, Secrets: cfg.Resolver, Publisher: publisherRef{s},
			Interval: cfg.PollInterval, Egress: cfg.Egress, Logger: cfg.Logger})
		if err != nil {
			return nil, fmt.Errorf("enrichment: %w", err)
		}
		collectors = append(collectors, s.poller.Collectors()...)
	}
	for _, c := range collectors {
		if err := s.reg.Register(c); err != nil {
			return nil, fmt.Errorf("enrichment: metrics: %w", err)
		}
	}
	return s, nil
}

// maxBody keeps a webhook small enough to travel as one NATS message,
// envelope and delivery metadata included.
func (s *Service) maxBody() int64 {
	limit := s.cfg.MaxBody
	if limit <= 0 {
		limit = ingress.DefaultMaxBody
	}
	if mp := s.nc.MaxPayload(); mp > 0 {
		limit = min(limit, mp-16<<10)
	}
	return limit
}

// publisherRef lets the ingress be built before Run opens the publisher.
type publisherRef struct{ s *Service }

func (p publisherRef) Publish(ctx context.Context, ev events.Event) error {
	pub := p.s.pub.Load()
	if pub == nil {
		return fault.Transient(errors.New("enrichment: not running yet"))
	}
	return pub.Publish(ctx, ev)
}

// Ready is closed once every role runs: the integrations are loaded, the
// workers consume and the index is migrated.
func (s *Service) Ready() <-chan struct{} { return s.ready }

// Listening is closed once the HTTP servers listen.
func (s *Service) Listening() <-chan struct{} { return s.listening }

// Addr is the ops server's address once Listening is closed, else nil.
func (s *Service) Addr() net.Addr {
	if a := s.addr.Load(); a != nil {
		return a
	}
	return nil
}

// WebhookAddr is the webhook server's address once Listening is closed.
func (s *Service) WebhookAddr() net.Addr {
	if a := s.webhok.Load(); a != nil {
		return a
	}
	return nil
}

// Metrics is the service's private registry.
func (s *Service) Metrics() *prometheus.Registry { return s.reg }

// Spooled is the number of events waiting in the publish spool.
func (s *Service) Spooled() int {
	if p := s.pub.Load(); p != nil {
		return p.Spooled()
	}
	return 0
}

// Run runs the roles until ctx ends, then returns nil; what could not be
// published waits in the spool for the next start.
func (s *Service) Run(ctx context.Context) error {
	if !s.running.CompareAndSwap(false, true) {
		return errors.New("enrichment: Run called twice; make a new Service")
	}
	if err := bus.Provision(ctx, s.js, s.cfg.Streams); err != nil {
		return fmt.Errorf("enrichment: %w", err)
	}
	if err := os.MkdirAll(s.cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("enrichment: data dir: %w", err)
	}
	sp, err := spool.Open(filepath.Join(s.cfg.DataDir, "spool.db"))
	if err != nil {
		return fmt.Errorf("enrichment: open the publish spool in %s: %w", s.cfg.DataDir, err)
	}
	defer sp.Close()
	pub, err := bus.NewPublisher(s.nc, bus.PublisherConfig{Spool: sp, RetryEvery: s.cfg.PublishRetryEvery, Logger: s.log,
		TracerProvider: s.cfg.TracerProvider})
	if err != nil {
		return fmt.Errorf("enrichment: %w", err)
	}
	defer pub.Close()
	s.pub.Store(pub)

	var pool *pgxpool.Pool
	if s.roles[RoleCorrelator] {
		pool, err = s.openIndex(ctx)
		if err != nil {
			return err
		}
		defer pool.Close()
	}

	g, gctx := errgroup.WithContext(ctx)
	var started []<-chan struct{}
	g.Go(func() error { return s.set.Run(gctx) })
	started = append(started, s.set.Ready())
	busStats := bus.CollectorConfig{Streams: []string{bus.StreamDLQ}}
	if s.roles[RoleMapper] {
		w, err := s.mapperWorker(pub)
		if err != nil {
			return err
		}
		busStats.Consumers = append(busStats.Consumers, bus.ConsumerRef{Stream: bus.StreamIngest, Durable: "enrichment-mapper"})
		busStats.Breakers = append(busStats.Breakers, w.Breakers())
		g.Go(func() error { return w.Run(gctx) })
		started = append(started, w.Running())
	}
	if s.roles[RoleCorrelator] {
		w, err := s.correlatorWorker(pub)
		if err != nil {
			return err
		}
		g.Go(func() error { return w.Run(gctx) })
		g.Go(func() error { s.retain(gctx); return nil })
		started = append(started, w.Running())
		busStats.Consumers = append(busStats.Consumers, bus.ConsumerRef{Stream: bus.StreamEvents, Durable: "enrichment-correlator"})
		busStats.Breakers = append(busStats.Breakers, w.Breakers())
	}
	if len(busStats.Consumers) > 0 {
		if err := s.reg.Register(bus.NewCollector(s.js, busStats)); err != nil {
			return fmt.Errorf("enrichment: metrics: %w", err)
		}
	}
	if s.poller != nil {
		g.Go(func() error {
			select {
			case <-gctx.Done():
				return nil
			case <-s.set.Ready():
			}
			return s.poller.Run(gctx)
		})
	}
	servers := []struct {
		addr string
		h    http.Handler
		to   *atomic.Pointer[net.TCPAddr]
	}{{s.cfg.Listen, s.opsHandler(), &s.addr}}
	if s.roles[RoleIngress] {
		servers = append(servers, struct {
			addr string
			h    http.Handler
			to   *atomic.Pointer[net.TCPAddr]
		}{s.cfg.WebhookListen, otelhttp.NewHandler(s.ingress, "enrichment-ingress",
			otelhttp.WithTracerProvider(s.cfg.TracerProvider), otelhttp.WithPropagators(propagation.TraceContext{})), &s.webhok})
	}
	for _, sv := range servers {
		if sv.addr == "-" {
			continue
		}
		ln, err := net.Listen("tcp", sv.addr)
		if err != nil {
			return fmt.Errorf("enrichment: listen on %s: %w", sv.addr, err)
		}
		if a, ok := ln.Addr().(*net.TCPAddr); ok {
			sv.to.Store(a)
		}
		srv := &http.Server{Handler: sv.h, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 30 * time.Second,
			WriteTimeout: 30 * time.Second, MaxHeaderBytes: 64 << 10}
		g.Go(func() error {
			if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
				return fmt.Errorf("enrichment: http %s: %w", sv.addr, err)
			}
			return nil
		})
		g.Go(func() error {
			<-gctx.Done()
			sctx, cancel := context.WithTimeout(context.WithoutCancel(gctx), 10*time.Second)
			defer cancel()
			return srv.Shutdown(sctx)
		})
	}
	close(s.listening)
	g.Go(func() error {
		for _, c := range started {
			select {
			case <-gctx.Done():
				return nil
			case <-c:
			}
		}
		close(s.ready)
		s.log.Info("enrichment running", "roles", strings.Join(s.cfg.Roles, ","), "listen", s.Addr(), "webhooks", s.WebhookAddr())
		return nil
	})
	err = g.Wait()
	if ctx.Err() != nil {
		s.log.Info("enrichment stopped", "spooled", pub.Spooled())
		return nil
	}
	return err
}

// openIndex migrates the schema (as the owner) and opens the pool of the
// service's role.
func (s *Service) openIndex(ctx context.Context) (*pgxpool.Pool, error) {
	if !s.cfg.SkipMigrations {
		conn, err := pgx.Connect(ctx, s.cfg.DatabaseURL)
		if err != nil {
			return nil, fmt.Errorf("enrichment: connect to PostgreSQL to migrate: %w", err)
		}
		applied, err := correlate.Migrate(ctx, conn)
		conn.Close(context.WithoutCancel(ctx))
		if err != nil {
			return nil, fmt.Errorf("enrichment: %w", err)
		}
		if len(applied) > 0 {
			s.log.Info("enrichment schema migrated", "applied", applied)
		}
	}
	appURL := s.cfg.AppDatabaseURL
	if appURL == "" {
		cfg, err := pgxpool.ParseConfig(s.cfg.DatabaseURL)
		if err != nil {
			return nil, fmt.Errorf("enrichment: database URL: %w", err)
		}
		cfg.ConnConfig.User = correlate.AppRole
		cfg.ConnConfig.Password = ""
		pool, err := pgxpool.NewWithConfig(ctx, cfg)
		if err != nil {
			return nil, fmt.Errorf("enrichment: PostgreSQL as %s: %w", correlate.AppRole, err)
		}
		return s.keepStore(pool)
	}
	pool, err := pgxpool.New(ctx, appURL)
	if err != nil {
		return nil, fmt.Errorf("enrichment: PostgreSQL as %s: %w", correlate.AppRole, err)
	}
	return s.keepStore(pool)
}

func (s *Service) keepStore(pool *pgxpool.Pool) (*pgxpool.Pool, error) {
	st, err := correlate.NewStore(pool)
	if err != nil {
		pool.Close()
		return nil, err
	}
	s.store.Store(st)
	return pool, nil
}

// retain deletes expired index entries every RetentionEvery.
func (s *Service) retain(ctx context.Context) {
	t := time.NewTicker(s.cfg.RetentionEvery)
	defer t.Stop()
	for {
		if n, err := s.store.Load().Purge(ctx, time.Now().Add(-s.cfg.Retention)); err != nil {
			if ctx.Err() == nil {
				s.log.Warn("enrichment retention failed", "error", err)
			}
		} else if n > 0 {
			s.log.Info("enrichment retention", "deleted", n)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// derivedID makes the id of an event derived from another: the same on
// every redelivery of the original, so the duplicate window drops a
// re-publish.
var derivedNamespace = uuid.MustParse("a3d9b7e2-4c1f-4e8a-9b6d-2f7c1e0a5d43")

func derivedID(kind, from string) string {
	return uuid.NewSHA1(derivedNamespace, []byte(kind+"\n"+from)).String()
}

func (s *Service) workerConfig(durable, stream string) bus.WorkerConfig {
	return bus.WorkerConfig{Service: "enrichment", Stream: stream, Durable: durable,
		MaxDeliver: s.cfg.MaxDeliver, Concurrency: s.cfg.Concurrency, HandlerTimeout: 30 * time.Second, Logger: s.log,
		TracerProvider: s.cfg.TracerProvider}
}

// ingestSubjects are the subjects the mapper has rules for.
func (s *Service) ingestSubjects() []string {
	var out []string
	for _, src := range s.mapper.Sources() {
		for _, k := range s.mapper.Kinds(src) {
			out = append(out, events.IngestSubject(src, k))
		}
	}
	slices.Sort(out)
	return out
}
