package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"inthub.dev/pkg/bus"
	"inthub.dev/pkg/natsembed"
	"inthub.dev/pkg/telemetry"
	"inthub.dev/services/internal/cli"
	"inthub.dev/services/internal/devfleet"
)

// How long start-up steps may take before `inthub dev` gives up with an
// error instead of hanging silently.
const (
	provisionTimeout = 30 * time.Second
	postgresTimeout  = 10 * time.Second
)

func runDev(ctx context.Context, args []string, stdout, stderr io.Writer, builders []devfleet.Builder) error {
	cfg, err := parseDevFlags(args, stdout, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	if err != nil {
		return err
	}
	base := newLogger(stderr)
	log := base.With("service", "inthub-dev")

	err = serveDev(ctx, cfg, stdout, base, builders)
	if err != nil && ctx.Err() != nil && errors.Is(err, context.Canceled) {
		// Ctrl-C during start-up is a request, not a failure.
		err = nil
	}
	if err != nil {
		log.Error("inthub dev failed", "error", err)
		return err
	}
	log.Info("inthub dev stopped")
	return nil
}

// serveDev gets the base logger: components tag it with their own service
// name, the runner with "inthub-dev".
func serveDev(ctx context.Context, cfg devConfig, stdout io.Writer, base *slog.Logger, builders []devfleet.Builder) error {
	log := base.With("service", "inthub-dev")
	dataDir, err := filepath.Abs(cfg.dataDir)
	if err != nil {
		return fmt.Errorf("data dir: %w", err)
	}

	natsURL := cfg.natsURL
	embedded := natsURL == ""
	storeDir := filepath.Join(dataDir, "nats")
	if embedded {
		srv, err := startEmbedded(cfg, storeDir)
		if err != nil {
			return err
		}
		// Deferred first so it runs last: the server outlives every client.
		defer func() {
			srv.Stop()
			log.Info("embedded NATS stopped")
		}()
		natsURL = srv.URL()
		log.Info("embedded NATS started", "natsUrl", natsURL, "storeDir", storeDir, "syncAlways", cfg.syncAlways)
	}

	// Services ride out a NATS restart rather than exit; the dev fleet
	// connects as they do (but fails at once if NATS is not there, below).
	nc, err := nats.Connect(natsURL, append(cli.NATSOptions("inthub-dev"), cli.NATSEventLog(log)...)...)
	if err != nil {
		return fmt.Errorf("connect to NATS at %s: %w (is it running, with JetStream enabled? unset NATS_URL to use the embedded server)", natsURL, err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}

	settings := bus.DefaultStreamSettings()
	settings.Replicas = cfg.replicas
	pctx, cancel := context.WithTimeout(ctx, provisionTimeout)
	err = bus.Provision(pctx, js, settings)
	cancel()
	if err != nil {
		hint := ""
		if !embedded {
			hint = " (the server needs JetStream enabled, e.g. nats-server -js; --replicas must not exceed the cluster size)"
		}
		return fmt.Errorf("provision streams on %s: %w%s", natsURL, err, hint)
	}
	names := streamNames(settings)
	log.Info("streams provisioned", "streams", names, "replicas", settings.Replicas)

	pgctx, cancel := context.WithTimeout(ctx, postgresTimeout)
	db, pgErr := ensureDatabase(pgctx, cfg.databaseURL)
	cancel()
	if ctx.Err() != nil {
		return ctx.Err()
	}
	databaseURL := cfg.databaseURL
	pgStatus := "ready"
	if pgErr != nil {
		// Nothing in the fleet uses the database yet, so a missing
		// PostgreSQL must not block working on the bus.
		log.Warn("PostgreSQL unavailable; continuing without it", "database", db, "error", pgErr.Error(), "hint", postgresHint)
		databaseURL = ""
		pgStatus = "NOT reachable (see the warning in the log)"
	} else {
		log.Info("database ready", "database", db)
	}

	// One exporter for the fleet; each service still traces as itself.
	tel, err := telemetry.Setup(ctx, telemetry.Config{ServiceName: "inthub-dev", Logger: log})
	if err != nil {
		return err
	}
	defer tel.Close(log)
	log.Info("tracing", "exporter", tel.String())

	components, err := devfleet.Build(devfleet.Deps{
		NATSURL:            natsURL,
		NATS:               nc,
		JS:                 js,
		Streams:            settings,
		DatabaseURL:        databaseURL,
		Log:                base,
		DataDir:            dataDir,
		CatalogListen:      cfg.catalogListen,
		HealthPollerListen: cfg.pollerListen,
		AnnotationListen:   cfg.annotationListen,
		EnrichmentListen:   cfg.enrichmentListen,
		WebhookListen:      cfg.webhookListen,
		HealthInterval:     cfg.healthInterval,
		Demo:               cfg.demo,
		Out:                stdout,
		Tracing:            tel,
		PluginDirs:         cfg.pluginDirs,
		PluginChecksums:    cfg.pluginSums,
		DoctorPacksDir:     cfg.doctorPacksDir,
		Vault:              cfg.vault,
	}, builders)
	if err != nil {
		return err
	}

	printBanner(stdout, banner{
		natsURL:    natsURL,
		embedded:   embedded,
		storeDir:   storeDir,
		syncAlways: cfg.syncAlways,
		streams:    names,
		db:         db,
		pgStatus:   pgStatus,
		components: components,
	})
	log.Info("fleet running", "natsUrl", natsURL, "components", len(components))
	return devfleet.Run(ctx, log, components)
}

// startEmbedded checks the port first: nats-server reports a busy port only
// as "not ready", which sends people looking in the wrong place.
func startEmbedded(cfg devConfig, storeDir string) (*natsembed.Server, error) {
	const host = "127.0.0.1"
	if cfg.natsPort != 0 {
		l, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(cfg.natsPort)))
		if err != nil {
			return nil, fmt.Errorf("embedded NATS cannot listen on %s:%d: %w (is another inthub dev or NATS server running? pick another port with --nats-port, 0 for any free one)", host, cfg.natsPort, err)
		}
		l.Close()
	}
	srv, err := natsembed.Start(natsembed.Config{
		Host:       host,
		Port:       cfg.natsPort,
		StoreDir:   storeDir,
		SyncAlways: cfg.syncAlways,
		ServerName: "inthub-dev",
	})
	if err != nil {
		return nil, fmt.Errorf("start embedded NATS: %w", err)
	}
	return srv, nil
}

func streamNames(s bus.StreamSettings) []string {
	var names []string
	for _, c := range bus.Streams(s) {
		names = append(names, c.Name)
	}
	return names
}

type banner struct {
	natsURL    string
	embedded   bool
	storeDir   string
	syncAlways bool
	streams    []string
	db         string
	pgStatus   string
	components []devfleet.Component
}

func printBanner(w io.Writer, b banner) {
	natsNote := "external (NATS_URL)"
	if b.embedded {
		sync := "fsync every 2 min, NATS default"
		if b.syncAlways {
			sync = "fsync on every write"
		}
		natsNote = fmt.Sprintf("embedded; JetStream store %s; %s", b.storeDir, sync)
	}
	services := "none yet: the bus and the database only"
	if len(b.components) > 0 {
		var n []string
		for _, c := range b.components {
			n = append(n, c.Name())
		}
		services = strings.Join(n, ", ")
	}
	fmt.Fprintf(w, `inthub dev is running; Ctrl-C stops it.

  NATS        %s  (%s)
  streams     %s
  PostgreSQL  %s  (%s)
  services    %s

Try:
  nats --server %s stream ls
  nats --server %s sub 'integration.>'
  ./bin/inthubctl dlq list --nats-url %s
`, b.natsURL, natsNote, strings.Join(b.streams, " "), b.db, b.pgStatus, services, b.natsURL, b.natsURL, b.natsURL)
}

// newLogger writes JSON lines with UTC timestamps, as every inthub service
// does, so logs of several machines sort together.
func newLogger(w io.Writer) *slog.Logger {
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if a.Key == slog.TimeKey && len(groups) == 0 {
				a.Value = slog.TimeValue(a.Value.Time().UTC())
			}
			return a
		},
	}))
}
