// Package catalog is the catalog service: the system of record of every
// tenant's integrations (PostgreSQL), its HTTP API, the transactional
// outbox that announces every change on the bus, and the consumer that
// records health checks.
package catalog

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
	"golang.org/x/sync/errgroup"

	"inthub.dev/events"
	"inthub.dev/migrations"
	"inthub.dev/pkg/authref"
	"inthub.dev/pkg/bus"
	"inthub.dev/pkg/connectors"
	"inthub.dev/pkg/connectors/connect"
	"inthub.dev/pkg/egress"
	"inthub.dev/services/catalog/api"
	"inthub.dev/services/catalog/auth"
	"inthub.dev/services/catalog/configcheck"
	"inthub.dev/services/catalog/health"
	"inthub.dev/services/catalog/outbox"
	"inthub.dev/services/catalog/secretaudit"
	"inthub.dev/services/catalog/store"
)

// Config configures the catalog. DatabaseURL is required; the role URLs
// default to it with the user swapped.
type Config struct {
	// Listen is the HTTP address, default 127.0.0.1:8080.
	Listen string
	// DatabaseURL connects as the owner of the tables: migrations and the
	// seeding of built-in types run with it, nothing else.
	DatabaseURL string
	// AppDatabaseURL connects as inthub_app (every request; row-level
	// security applies). Default: DatabaseURL with user inthub_app.
	AppDatabaseURL string
	// ForwarderDatabaseURL connects as inthub_forwarder (the outbox).
	// Default: DatabaseURL with user inthub_forwarder.
	ForwarderDatabaseURL string
	// SkipMigrations leaves the schema to `inthubctl migrate`.
	SkipMigrations bool
	Streams        bus.StreamSettings
	Auth           auth.Config
	Egress         egress.Policy
	// Vault enables authref://vault references (address, token, token
	// file or AppRole); nil leaves them unresolvable, with a clear error.
	Vault *authref.VaultConfig
	// SecretFileRoot confines authref://file references to a directory;
	// empty allows any absolute path the process can read.
	SecretFileRoot string
	Logger         *slog.Logger
	// TracerProvider traces the API's requests, the outbox's publishes, the
	// health consumer and test connections (default: no tracing).
	TracerProvider trace.TracerProvider
	// PluginDirs are scanned for out-of-process connector plugins at start
	// and on POST /api/v1/plugins/discover; PluginChecksums are the
	// SHA-256 sums of the binaries allowed to run (docs/plugins.md). No
	// plugin host runs when PluginDirs is empty.
	PluginDirs, PluginChecksums []string
	// DoctorPacksDir holds the doctor's declarative check packs (none
	// when empty); DoctorSigningKey is the AuthRef of the ed25519 key
	// that signs each doctor run's summary (unsigned when empty).
	DoctorPacksDir, DoctorSigningKey string
}

// Service is a running catalog.
type Service struct {
	cfg   Config
	nc    *nats.Conn
	js    jetstream.JetStream
	log   *slog.Logger
	ready chan struct{}
	addr  net.Addr
}

// New checks the configuration; Run does the work.
func New(cfg Config, nc *nats.Conn) (*Service, error) {
	if nc == nil {
		return nil, errors.New("catalog: a NATS connection is required")
	}
	if cfg.DatabaseURL == "" {
		return nil, errors.New("catalog: DatabaseURL is required (the owner's connection string, e.g. postgres://postgres@127.0.0.1:5432/inthub)")
	}
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:8080"
	}
	var err error
	if cfg.AppDatabaseURL == "" {
		if cfg.AppDatabaseURL, err = WithUser(cfg.DatabaseURL, "inthub_app"); err != nil {
			return nil, err
		}
	}
	if cfg.ForwarderDatabaseURL == "" {
		if cfg.ForwarderDatabaseURL, err = WithUser(cfg.DatabaseURL, "inthub_forwarder"); err != nil {
			return nil, err
		}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.TracerProvider == nil {
		cfg.TracerProvider = noop.NewTracerProvider()
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("catalog: jetstream: %w", err)
	}
	return &Service{cfg: cfg, nc: nc, js: js, log: cfg.Logger, ready: make(chan struct{})}, nil
}

// WithUser returns a PostgreSQL URL with its user (and password) replaced.
func WithUser(raw, user string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		return "", fmt.Errorf("catalog: database URL must be postgres://...: %q does not parse", redact(raw))
	}
	u.User = url.User(user)
	return u.String(), nil
}

func redact(raw string) string {
	if u, err := url.Parse(raw); err == nil {
		return u.Redacted()
	}
	return "(unparseable)"
}

// AllowLoopbackEndpoints relaxes the egress policy for local development,
// where the systems an integration points at run on the same machine.
func (s *Service) AllowLoopbackEndpoints() {
	s.cfg.Egress.AllowLoopback = true
	s.cfg.Egress.AllowHTTP = true
}

// Ready is closed when the HTTP server listens.
func (s *Service) Ready() <-chan struct{} { return s.ready }

// Addr is the HTTP listener's address, once Ready.
func (s *Service) Addr() net.Addr { return s.addr }

// Migrate applies the migrations as the owner.
func Migrate(ctx context.Context, ownerURL string) ([]string, error) {
	conn, err := pgx.Connect(ctx, ownerURL)
	if err != nil {
		return nil, fmt.Errorf("catalog: connect as owner: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	return migrations.Apply(ctx, conn)
}

// Run migrates, seeds the built-in types and serves until ctx ends.
func (s *Service) Run(ctx context.Context) error {
	if err := bus.Provision(ctx, s.js, s.cfg.Streams); err != nil {
		return fmt.Errorf("catalog: %w", err)
	}
	if !s.cfg.SkipMigrations {
		applied, err := Migrate(ctx, s.cfg.DatabaseURL)
		if err != nil {
			return err
		}
		if len(applied) > 0 {
			s.log.Info("migrations applied", "versions", applied)
		}
	}
	owner, err := pgxpool.New(ctx, s.cfg.DatabaseURL)
	if err != nil {
		return fmt.Errorf("catalog: owner pool: %w", err)
	}
	types, err := BuiltinTypes()
	if err != nil {
		owner.Close()
		return err
	}
	err = store.SeedTypes(ctx, owner, types)
	owner.Close()
	if err != nil {
		return fmt.Errorf("catalog: seed types: %w", err)
	}

	app, err := pgxpool.New(ctx, s.cfg.AppDatabaseURL)
	if err != nil {
		return fmt.Errorf("catalog: app pool: %w", err)
	}
	defer app.Close()
	fwdPool, err := pgxpool.New(ctx, s.cfg.ForwarderDatabaseURL)
	if err != nil {
		return fmt.Errorf("catalog: forwarder pool: %w", err)
	}
	defer fwdPool.Close()

	// The forwarder publishes without a spool: the outbox table already is
	// the durable place for an event the bus cannot take yet.
	pub, err := bus.NewPublisher(s.nc, bus.PublisherConfig{Logger: s.log, SkipValidation: true,
		TracerProvider: s.cfg.TracerProvider})
	if err != nil {
		return err
	}
	defer pub.Close()
	// bus.Provision above created the bucket the forwarder keeps.
	state, err := s.js.KeyValue(ctx, bus.BucketIntegrations)
	if err != nil {
		return fmt.Errorf("catalog: integrations bucket: %w", err)
	}
	fwd, err := outbox.New(outbox.Config{Pool: fwdPool, Publisher: pub, State: state, Logger: s.log})
	if err != nil {
		return fmt.Errorf("catalog: outbox: %w", err)
	}
	// On the forwarder's pool, not the requests': a notify never waits
	// behind requests for a connection, and after PostgreSQL restarts it
	// does not leave the app pool with more dead connections to trip over.
	notifier, err := outbox.NewNotifier(fwdPool, 0, s.log)
	if err != nil {
		return fmt.Errorf("catalog: outbox: %w", err)
	}
	// After a write that produced events: this replica's forwarder starts at
	// once, and one debounced NOTIFY wakes the other replicas'. Nothing
	// notifies inside the write's transaction (see package outbox).
	st := store.New(app, store.WithLogger(s.log),
		store.WithAfterCommit(func() { fwd.Poke(); notifier.Notify() }))
	plugins, stopPlugins, err := s.startPlugins(ctx, st, func() { fwd.Poke(); notifier.Notify() })
	if err != nil {
		return err
	}
	defer stopPlugins()
	authn, err := auth.New(ctx, s.cfg.Auth)
	if err != nil {
		return fmt.Errorf("catalog: auth: %w", err)
	}
	defer authn.Close()
	checker, err := configcheck.New(s.cfg.Egress, net.DefaultResolver)
	if err != nil {
		return fmt.Errorf("catalog: config checks: %w", err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		fwd.Collector(),
		bus.NewCollector(s.js, bus.CollectorConfig{
			Consumers: []bus.ConsumerRef{{Stream: bus.StreamIntegrations, Durable: health.Durable}},
			Streams:   []string{bus.StreamDLQ, bus.StreamSpool},
		}))
	builder, err := s.newConnectors(st, reg)
	if err != nil {
		return err
	}
	defer builder.Close()
	doc, err := api.NewDoctor(ctx, api.DoctorConfig{Connectors: builder, Store: st, Egress: s.cfg.Egress,
		PacksDir: s.cfg.DoctorPacksDir, SigningKey: s.cfg.DoctorSigningKey, Logger: s.log})
	if err != nil {
		return err
	}
	handler, _, err := api.New(api.Deps{
		Store: st, Auth: authn, Checker: checker, Connectors: builder, Doctor: doc, Metrics: reg, Logger: s.log,
		Plugins: plugins,
		Ready: []api.Readiness{
			func(ctx context.Context) error { return app.Ping(ctx) },
			func(context.Context) error {
				if st := s.nc.Status(); st != nats.CONNECTED {
					return fmt.Errorf("nats: %s", st)
				}
				return nil
			},
		},
	})
	if err != nil {
		return fmt.Errorf("catalog: api: %w", err)
	}
	consumer, err := health.NewConsumer(s.js, st, s.log, func(c *bus.WorkerConfig) {
		c.TracerProvider = s.cfg.TracerProvider
	})
	if err != nil {
		return fmt.Errorf("catalog: health consumer: %w", err)
	}

	ln, err := net.Listen("tcp", s.cfg.Listen)
	if err != nil {
		return fmt.Errorf("catalog: listen on %s: %w", s.cfg.Listen, err)
	}
	s.addr = ln.Addr()
	srv := &http.Server{Handler: s.traced(handler), ReadHeaderTimeout: 10 * time.Second,
		ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelWarn)}

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("catalog: http: %w", err)
		}
		return nil
	})
	g.Go(func() error {
		<-gctx.Done()
		sctx, cancel := context.WithTimeout(context.WithoutCancel(gctx), 10*time.Second)
		defer cancel()
		return srv.Shutdown(sctx)
	})
	g.Go(func() error { return ignoreCanceled(fwd.Run(gctx)) })
	g.Go(func() error { return ignoreCanceled(notifier.Run(gctx)) })
	g.Go(func() error { return ignoreCanceled(consumer.Run(gctx)) })
	g.Go(func() error { s.rebuildState(gctx, fwd, st); return nil })
	close(s.ready)
	s.log.Info("catalog listening", "addr", s.addr.String())
	return g.Wait()
}

// newConnectors builds what the test, health-check and resources endpoints
// call providers with: one AuthRef resolver whose every resolution is
// audited in the store, and the connector builder under the egress policy.
func (s *Service) newConnectors(st *store.Store, reg prometheus.Registerer) (*connect.Builder, error) {
	audit := secretaudit.New(st, s.log)
	if err := audit.Register(reg); err != nil {
		return nil, fmt.Errorf("catalog: %w", err)
	}
	opts := []authref.Option{authref.WithHook(audit.Hook), authref.WithLogger(s.log)}
	if s.cfg.Vault != nil {
		opts = append(opts, authref.WithVault(*s.cfg.Vault))
	}
	if s.cfg.SecretFileRoot != "" {
		opts = append(opts, authref.WithFileRoot(s.cfg.SecretFileRoot))
	}
	resolver := authref.NewResolver(opts...)
	if err := resolver.Validate(); err != nil {
		return nil, fmt.Errorf("catalog: secrets: %w", err)
	}
	builder, err := connect.New(connectors.Default(), resolver, s.cfg.Egress, connect.WithLogger(s.log),
		connect.WithTracerProvider(s.cfg.TracerProvider))
	if err != nil {
		return nil, fmt.Errorf("catalog: %w", err)
	}
	if err := builder.Register(reg); err != nil {
		return nil, fmt.Errorf("catalog: %w", err)
	}
	return builder, nil
}

// traced makes each API request a server span, continuing the caller's
// trace when it sends a traceparent (Scanner, Scheduler). The probes and
// /metrics are left out: polled every few seconds, they would bury the
// traces worth reading. The api package names the span by its route.
func (s *Service) traced(h http.Handler) http.Handler {
	return otelhttp.NewHandler(h, "catalog",
		otelhttp.WithTracerProvider(s.cfg.TracerProvider),
		otelhttp.WithPropagators(propagation.TraceContext{}),
		otelhttp.WithFilter(func(r *http.Request) bool {
			switch r.URL.Path {
			case "/healthz", "/readyz", "/metrics":
				return false
			}
			return true
		}),
	)
}

func ignoreCanceled(err error) error {
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

// rebuildState makes the integrations bucket agree with the database once
// at start (outbox.Rebuild), retrying while the bus or the database is
// away; it never stops the catalog.
func (s *Service) rebuildState(ctx context.Context, fwd *outbox.Forwarder, st *store.Store) {
	walk := func(ctx context.Context, fn func(events.Integration, bool) error) error {
		return st.StateSnapshot(ctx, func(r store.StateRecord) error { return fn(r.Integration, r.Deleted) })
	}
	wait := time.Second
	for {
		stats, err := fwd.Rebuild(ctx, walk)
		if err == nil {
			s.log.Info("integrations bucket checked against the database", "integrations", stats.Seen,
				"restored", stats.Restored, "deleted", stats.Deleted, "removed", stats.Removed)
			return
		}
		if ctx.Err() != nil {
			return
		}
		s.log.Warn("cannot check the integrations bucket against the database yet; retrying", "error", err.Error(), "in", wait)
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		wait = min(2*wait, time.Minute)
	}
}
