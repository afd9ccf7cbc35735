package main

import (
	"context"
	"errors"
	"flag"
	"io"
	"log/slog"
	"slices"
	"time"

	"inthub.dev/pkg/telemetry"
	"inthub.dev/services/healthpoller"
	"inthub.dev/services/internal/cli"
)

var command = cli.Command{Name: "health-poller", Head: usageHead, Options: append([]cli.Option{
	cli.Flag("nats-url", "NATS_URL", "nats://127.0.0.1:4250", "NATS servers, comma-separated"),
	cli.Flag("listen", "HEALTHPOLLER_LISTEN", "127.0.0.1:8081", "HTTP address of /healthz, /readyz and /metrics"),
	cli.Flag("data-dir", "HEALTHPOLLER_DATA_DIR", "./.inthub/health-poller", "local state: the spool of results waiting for NATS"),
	cli.Flag("default-interval", "HEALTHPOLLER_DEFAULT_INTERVAL", "5m", "interval of an integration whose config sets no healthIntervalSeconds"),
	cli.Flag("max-concurrent", "HEALTHPOLLER_MAX_CONCURRENT", "64", "checks running at once"),
	cli.Flag("max-per-provider", "HEALTHPOLLER_MAX_PER_PROVIDER", "16", "checks running at once against one provider"),
	cli.Flag("partitions", "HEALTHPOLLER_PARTITIONS", "64", "partitions the integrations are shared in between replicas; the same on every replica"),
	cli.Flag("lease-ttl", "HEALTHPOLLER_LEASE_TTL", "15s", "how long a replica's partitions outlive its last renewal: how soon the others cover for a dead one"),
	cli.Flag("lease-renew", "HEALTHPOLLER_LEASE_RENEW", "5s", "how often leases are renewed and shares rebalanced; at most half the lease TTL"),
	cli.Flag("replica-id", "HEALTHPOLLER_REPLICA_ID", "", "this replica's name in the lease buckets (letters, digits, - and _); default host name + random"),
	cli.EgressPortsFlag(),
	cli.HubIdentityFlag(),
	cli.Flag("dev", "INTHUB_DEV", "false", "development mode: allows loopback and http:// provider endpoints"),
}, slices.Concat(cli.PluginFlags(workerPluginScan), cli.VaultFlags(), cli.TopologyFlags())...)}

// workerPluginScan says when the poller reads the plugin directories; it
// only uses plugins, the catalog records and announces them.
const workerPluginScan = "at start and every minute (the catalog records and announces plugins)"

const usageHead = `Usage: health-poller [flags]

Checks every live integration (from the INTEGRATIONS_STATE bucket) on its
interval through its connector and publishes integration.health_checked.
Results wait in a local spool while NATS is unreachable. Replicas share the
integrations through leases on partitions (JetStream KV buckets
HEALTH_LEASES and HEALTH_MEMBERS). Serves /healthz, /readyz and /metrics.

Flags (each defaults to its environment variable, else the value shown):
`

func exitCode(err error) int { return cli.ExitCode(err) }

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	v, err := command.Parse(args, stdout, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	if err != nil {
		return err
	}
	dev, err := v.Bool("dev")
	if err != nil {
		return err
	}
	interval, err := v.Duration("default-interval")
	if err != nil {
		return err
	}
	maxConc, err := v.Int("max-concurrent", 1)
	if err != nil {
		return err
	}
	maxProv, err := v.Int("max-per-provider", 1)
	if err != nil {
		return err
	}
	if v.String("data-dir") == "" {
		return cli.Usagef("--data-dir must not be empty")
	}
	parts, err := v.Int("partitions", 1)
	if err != nil {
		return err
	}
	ttl, err := v.Duration("lease-ttl")
	if err != nil {
		return err
	}
	renew, err := v.Duration("lease-renew")
	if err != nil {
		return err
	}
	if ttl < time.Second || renew > ttl/2 {
		return cli.Usagef("--lease-ttl %v, --lease-renew %v: the TTL must be at least 1s and the renew period at most half of it", ttl, renew)
	}
	topo, err := v.Topology()
	if err != nil {
		return err
	}
	hubIdentity, err := v.Bool("allow-hub-identity")
	if err != nil {
		return err
	}
	ports, err := v.Ports("egress-allow-ports")
	if err != nil {
		return err
	}
	pluginDirs, pluginSums, err := v.Plugins()
	if err != nil {
		return err
	}
	vault, err := v.Vault()
	if err != nil {
		return err
	}
	get := v.String

	log := slog.New(slog.NewJSONHandler(stderr, nil)).With("service", "health-poller")
	tel, err := telemetry.Setup(ctx, telemetry.Config{ServiceName: "health-poller", Logger: log})
	if err != nil {
		return err
	}
	defer tel.Close(log)
	log.Info("tracing", "exporter", tel.String())
	nc, err := cli.ConnectNATS(get("nats-url"), "inthub-health-poller", cli.NATSEventLog(log)...)
	if err != nil {
		return err
	}
	defer nc.Close()
	cfg := healthpoller.Config{
		Listen: get("listen"), DataDir: get("data-dir"), DefaultInterval: interval,
		MaxConcurrent: maxConc, MaxPerProvider: maxProv, Logger: log,
		Partitions: parts, LeaseTTL: ttl, LeaseRenew: renew, Topology: topo, ReplicaID: get("replica-id"),
		TracerProvider: tel.TracerProvider(),
		PluginDirs:     pluginDirs, PluginChecksums: pluginSums,
	}
	cfg.Resolver = cli.Resolver(vault, log)
	defer cfg.Resolver.Close()
	cfg.Egress.AllowLoopback = dev
	cfg.Egress.AllowPorts = ports
	cfg.Egress.AllowHubIdentity = hubIdentity
	cfg.Egress.AllowHTTP = dev
	svc, err := healthpoller.New(cfg, nc)
	if err != nil {
		return err
	}
	return svc.Run(ctx)
}
