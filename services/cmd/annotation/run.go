package main

import (
	"context"
	"errors"
	"flag"
	"io"
	"log/slog"
	"slices"

	"inthub.dev/pkg/authref"
	"inthub.dev/pkg/bus"
	"inthub.dev/pkg/telemetry"
	"inthub.dev/services/annotation"
	"inthub.dev/services/internal/cli"
)

var command = cli.Command{Name: "annotation", Head: usageHead, Options: append([]cli.Option{
	cli.Flag("nats-url", "NATS_URL", "nats://127.0.0.1:4250", "NATS servers, comma-separated"),
	cli.Flag("listen", "ANNOTATION_LISTEN", "127.0.0.1:8082", "HTTP address of /healthz, /readyz and /metrics"),
	cli.Flag("data-dir", "ANNOTATION_DATA_DIR", "./.inthub/annotation", "local state: the spool of result events waiting for NATS"),
	cli.Flag("durable", "ANNOTATION_DURABLE", "annotation", "JetStream durable consumer shared by the replicas"),
	cli.Flag("concurrency", "ANNOTATION_CONCURRENCY", "8", "requests handled at once"),
	cli.Flag("max-deliver", "ANNOTATION_MAX_DELIVER", "10", "deliveries of a request before it is dead-lettered"),
	cli.Flag("ack-wait", "ANNOTATION_ACK_WAIT", "1m", "a request delivered and not acknowledged this long is redelivered (in-progress acks extend it while one is handled): how soon a crashed worker's requests come back"),
	cli.Flag("writes-per-second", "ANNOTATION_WRITES_PER_SECOND", "1", "write budget per account (GitHub App installation, GitLab token)"),
	cli.Flag("writes-per-minute", "ANNOTATION_WRITES_PER_MINUTE", "80", "write budget per account and minute (0: none)"),
	cli.Flag("writes-per-hour", "ANNOTATION_WRITES_PER_HOUR", "500", "write budget per account and hour (0: none)"),
	cli.Flag("host-writes-per-second", "ANNOTATION_HOST_WRITES_PER_SECOND", "10", "write budget per API host, all accounts together"),
	cli.Flag("offline-after", "ANNOTATION_OFFLINE_AFTER", "2m", "an integration's breaker open this long: its requests go to the spool"),
	cli.EgressPortsFlag(),
	cli.HubIdentityFlag(),
	cli.Flag("dev", "INTHUB_DEV", "false", "development mode: allows loopback and http:// provider endpoints"),
}, slices.Concat(cli.PluginFlags(workerPluginScan), cli.VaultFlags(), cli.TopologyFlags())...)}

// workerPluginScan says when the worker reads the plugin directories; it
// only uses plugins, the catalog records and announces them.
const workerPluginScan = "at start and every minute (the catalog records and announces plugins)"

const usageHead = `Usage: annotation [flags]

Consumes scm.annotation.requested and posts each request to GitHub or
GitLab (comment, commit status, check run), within a write budget per
account and host; reports scm.annotation.completed or scm.annotation.failed.
Requests for an integration that stays down wait in the spool and are
posted when integration.health_changed says it is healthy again. Serves
/healthz, /readyz and /metrics.

Flags (each defaults to its environment variable, else the value shown):
`

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg, dev, natsURL, vault, err := parse(args, stdout, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	if err != nil {
		return err
	}
	cfg.Logger = slog.New(slog.NewJSONHandler(stderr, nil)).With("service", "annotation")
	cfg.Resolver = cli.Resolver(vault, cfg.Logger)
	defer cfg.Resolver.Close()
	tel, err := telemetry.Setup(ctx, telemetry.Config{ServiceName: "annotation", Logger: cfg.Logger})
	if err != nil {
		return err
	}
	defer tel.Close(cfg.Logger)
	cfg.Logger.Info("tracing", "exporter", tel.String())
	cfg.TracerProvider = tel.TracerProvider()
	cfg.Egress.AllowLoopback = dev
	cfg.Egress.AllowHTTP = dev
	nc, err := cli.ConnectNATS(natsURL, "inthub-annotation", cli.NATSEventLog(cfg.Logger)...)
	if err != nil {
		return err
	}
	defer nc.Close()
	svc, err := annotation.New(cfg, nc)
	if err != nil {
		return err
	}
	return svc.Run(ctx)
}

// parse turns flags into the worker's config (the Vault of its resolver
// apart: the resolver needs the logger); --help returns ErrHelp after
// printing.
func parse(args []string, stdout, stderr io.Writer) (cfg annotation.Config, dev bool, natsURL string, vault *authref.VaultConfig, err error) {
	v, err := command.Parse(args, stdout, stderr)
	if err != nil {
		return cfg, false, "", nil, err
	}
	if cfg.PluginDirs, cfg.PluginChecksums, err = v.Plugins(); err != nil {
		return
	}
	if vault, err = v.Vault(); err != nil {
		return
	}
	if dev, err = v.Bool("dev"); err != nil {
		return
	}
	if cfg.Concurrency, err = v.Int("concurrency", 1); err != nil {
		return
	}
	if cfg.MaxDeliver, err = v.Int("max-deliver", 1); err != nil {
		return
	}
	var perSec, hostPerSec float64
	if perSec, err = v.Float("writes-per-second", 0.001); err != nil {
		return
	}
	if hostPerSec, err = v.Float("host-writes-per-second", 0.001); err != nil {
		return
	}
	if cfg.AccountBudget.PerMinute, err = v.Int("writes-per-minute", 0); err != nil {
		return
	}
	if cfg.AccountBudget.PerHour, err = v.Int("writes-per-hour", 0); err != nil {
		return
	}
	cfg.AccountBudget.PerSecond = perSec
	cfg.HostBudget.PerSecond = hostPerSec
	if cfg.OfflineAfter, err = v.Duration("offline-after"); err != nil {
		return
	}
	if cfg.AckWait, err = v.Duration("ack-wait"); err != nil {
		return
	}
	if cfg.Egress.AllowHubIdentity, err = v.Bool("allow-hub-identity"); err != nil {
		return
	}
	if cfg.Egress.AllowPorts, err = v.Ports("egress-allow-ports"); err != nil {
		return
	}
	cfg.Streams = bus.DefaultStreamSettings()
	if cfg.Streams.Topology, err = v.Topology(); err != nil {
		return
	}
	if v.String("data-dir") == "" {
		return cfg, dev, "", nil, cli.Usagef("--data-dir must not be empty")
	}
	cfg.Listen, cfg.DataDir, cfg.Durable = v.String("listen"), v.String("data-dir"), v.String("durable")
	return cfg, dev, v.String("nats-url"), vault, nil
}
