// Package devfleet runs several inthub services in one process for
// `inthub dev`. In production each service is its own binary; here they
// share one NATS connection and one lifetime, so a newcomer gets the whole
// fleet with one command.
//
// Services join the fleet as Components. A component must behave exactly as
// its standalone binary does (it talks to the others only through JetStream),
// so that what works under `inthub dev` works when deployed.
package devfleet

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sync/errgroup"

	"inthub.dev/pkg/authref"
	"inthub.dev/pkg/bus"
	"inthub.dev/pkg/telemetry"
)

// Deps is what the dev runner has set up before any component starts: the
// bus (streams already provisioned) and the database.
type Deps struct {
	NATSURL string
	NATS    *nats.Conn
	JS      jetstream.JetStream
	// Streams are the settings inthub dev provisioned with; components
	// that provision streams or buckets use the same (on a cluster, a
	// component with fewer replicas would otherwise ask for less).
	Streams bus.StreamSettings
	// DatabaseURL is empty when PostgreSQL was not reachable at start;
	// a component that needs it must fail with a clear error then.
	DatabaseURL string
	// Log already carries service=<component name>.
	Log *slog.Logger
	// DataDir is inthub dev's local state directory (absolute).
	DataDir string
	// CatalogListen is the catalog API's address ("127.0.0.1:0" in tests).
	CatalogListen string
	// HealthPollerListen is the health poller's probe and metrics address.
	HealthPollerListen string
	// AnnotationListen is the annotation worker's probe and metrics address.
	AnnotationListen string
	// EnrichmentListen and WebhookListen are the enrichment service's
	// probe and metrics address and its webhook ingress.
	EnrichmentListen, WebhookListen string
	// HealthInterval is the poller's interval for integrations whose
	// config sets none (0: the poller's own default).
	HealthInterval time.Duration
	// Demo asks the catalog to create the demo tenant's integrations if
	// they are missing.
	Demo bool
	// Out is where components print what a person should read (addresses,
	// the dev token); logs go to Log.
	Out io.Writer
	// Tracing gives each component its TracerProvider
	// (Tracing.Service(name)); nil traces nothing.
	Tracing *telemetry.Telemetry
	// PluginDirs and PluginChecksums are the catalog's plugin host. The
	// components share one connectors registry in this process, so the
	// health poller and the annotation worker use the catalog's plugins;
	// hosts of their own would start the same binaries again and be
	// refused their types ("already provided").
	PluginDirs, PluginChecksums []string
	// DoctorPacksDir is the catalog's directory of doctor check packs.
	DoctorPacksDir string
	// Vault is the Vault that every component's resolver reads
	// authref://vault references from; nil: none.
	Vault *authref.VaultConfig
}

// Component is one long-running service of the fleet.
type Component interface {
	Name() string
	// Run serves until ctx is cancelled, then returns nil after a clean
	// shutdown. Any other return stops the whole fleet.
	Run(ctx context.Context) error
}

// Builder makes a component from the shared dependencies. Later issues
// register catalog, health-poller, annotation, ... as builders.
type Builder struct {
	Name  string
	Build func(Deps) (Component, error)
}

// Func adapts a plain function into a Component.
type Func struct {
	N string
	F func(ctx context.Context) error
}

// Name implements Component.
func (f Func) Name() string { return f.N }

// Run implements Component.
func (f Func) Run(ctx context.Context) error { return f.F(ctx) }

// Build creates every component, giving each a logger tagged with its name.
// It stops at the first failure: a fleet with a service silently missing
// would hide the very bugs `inthub dev` is for.
func Build(d Deps, builders []Builder) ([]Component, error) {
	base := d.Log
	if base == nil {
		base = slog.New(slog.DiscardHandler)
	}
	out := make([]Component, 0, len(builders))
	for _, b := range builders {
		bd := d
		bd.Log = base.With("service", b.Name)
		c, err := b.Build(bd)
		if err != nil {
			return nil, fmt.Errorf("build %s: %w", b.Name, err)
		}
		out = append(out, c)
	}
	return out, nil
}

// Run runs every component until ctx is cancelled or one of them fails; on
// failure the others are cancelled and the first error is returned. A
// component that returns nil while ctx is still live is treated as a failure
// too, since a service that quietly left the fleet is a bug, not a shutdown.
func Run(ctx context.Context, log *slog.Logger, components []Component) error {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	g, gctx := errgroup.WithContext(ctx)
	for _, c := range components {
		g.Go(func() error {
			log.Info("component starting", "component", c.Name())
			err := c.Run(gctx)
			if err != nil && gctx.Err() != nil && errors.Is(err, context.Canceled) {
				err = nil // returning ctx.Err() on shutdown is the common idiom
			}
			switch {
			case err != nil:
				log.Error("component failed", "component", c.Name(), "error", err)
				return fmt.Errorf("%s: %w", c.Name(), err)
			case gctx.Err() == nil:
				log.Error("component stopped before shutdown", "component", c.Name())
				return fmt.Errorf("%s: stopped before shutdown", c.Name())
			}
			log.Info("component stopped", "component", c.Name())
			return nil
		})
	}
	// With no components yet the fleet is just the bus; stay up until asked
	// to stop, so `make run` is useful from the first issue on.
	g.Go(func() error {
		<-gctx.Done()
		log.Info("fleet stopping", "reason", context.Cause(gctx).Error())
		return nil
	})
	return g.Wait()
}
