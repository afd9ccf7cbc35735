package main

import (
	"context"
	"errors"
	"flag"
	"io"
	"log/slog"
	"slices"
	"strings"

	"inthub.dev/pkg/bus"
	"inthub.dev/pkg/telemetry"
	"inthub.dev/services/enrichment"
	"inthub.dev/services/enrichment/correlate"
	"inthub.dev/services/internal/cli"
)

var command = cli.Command{Name: "enrichment", Head: usageHead, Options: append([]cli.Option{
	cli.Flag("nats-url", "NATS_URL", "nats://127.0.0.1:4250", "NATS servers, comma-separated"),
	cli.Flag("roles", "ENRICHMENT_ROLES", "ingress,mapper,correlator", "what this process runs: ingress, mapper, correlator, poller (CloudWatch alarms and metrics; run it in one replica) (comma-separated)"),
	cli.Flag("listen", "ENRICHMENT_LISTEN", "127.0.0.1:8083", `HTTP address of /healthz, /readyz and /metrics ("-": none)`),
	cli.Flag("webhook-listen", "ENRICHMENT_WEBHOOK_LISTEN", "127.0.0.1:8090", `HTTP address of /webhooks/github/{id} and /webhooks/gitlab/{id}, the one to expose to providers ("-": none)`),
	cli.Flag("data-dir", "ENRICHMENT_DATA_DIR", "./.inthub/enrichment", "local state: the spool of events waiting for NATS"),
	cli.Flag("database-url", "DATABASE_URL", "postgres://postgres@127.0.0.1:5432/inthub?sslmode=disable", "PostgreSQL as the owner of the enrichment schema (migrations); the correlator only"),
	cli.Flag("app-database-url", "ENRICHMENT_APP_DATABASE_URL", "", "PostgreSQL as "+correlate.AppRole+" (default: --database-url with that user)"),
	cli.Flag("skip-migrations", "ENRICHMENT_SKIP_MIGRATIONS", "false", "do not migrate the enrichment schema at start"),
	cli.Flag("rules-dir", "ENRICHMENT_RULES_DIR", "", "directory of custom mapping rule sets (*.yaml, *.json); one for a source replaces the default rules of that source"),
	cli.Flag("window", "ENRICHMENT_WINDOW", "2h", "correlation window before and after an event's time"),
	cli.Flag("half-life", "ENRICHMENT_HALF_LIFE", "15m", "time distance at which proximity counts half"),
	cli.Flag("max-matches", "ENRICHMENT_MAX_MATCHES", "10", "matches per event.enriched"),
	cli.Flag("auto-enrich", "ENRICHMENT_AUTO_ENRICH", "system,security", `canonical categories enriched as they are indexed ("none": only on enrichment.requested)`),
	cli.Flag("poll-interval", "ENRICHMENT_POLL_INTERVAL", "1m", "how often the poller reads the alarms and metrics of each monitoring.cloudwatch integration that asks for them"),
	cli.Flag("dev", "INTHUB_DEV", "false", "development mode: the poller may reach loopback and http:// endpoints"),
	cli.Flag("retention", "ENRICHMENT_RETENTION", "720h", "how long indexed events are kept"),
	cli.Flag("max-body", "ENRICHMENT_MAX_BODY", "786432", "largest webhook body in bytes (also capped by NATS max_payload)"),
	cli.Flag("concurrency", "ENRICHMENT_CONCURRENCY", "8", "messages handled at once per worker"),
	cli.Flag("max-deliver", "ENRICHMENT_MAX_DELIVER", "5", "deliveries of a message before a transient failure is dead-lettered"),
}, slices.Concat(cli.VaultFlags(), cli.TopologyFlags())...)}

const usageHead = `Usage: enrichment [flags]

Receives GitHub and GitLab webhooks (signature checked against the
integration's webhookSecret) and publishes them as ingest.<provider>.<kind>;
maps ingest.* to event.canonical.<category> with declarative rules; indexes
canonical events in PostgreSQL (schema enrichment) and answers
enrichment.requested with event.enriched. Serves /healthz, /readyz and
/metrics on --listen and the webhooks on --webhook-listen.

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
	get := v.String
	cfg := enrichment.Config{Listen: get("listen"), WebhookListen: get("webhook-listen"), DataDir: get("data-dir"),
		DatabaseURL: get("database-url"), AppDatabaseURL: get("app-database-url"), RulesDir: get("rules-dir")}
	if cfg.DataDir == "" {
		return cli.Usagef("--data-dir must not be empty")
	}
	for _, r := range strings.Split(get("roles"), ",") {
		switch r = strings.TrimSpace(r); r {
		case enrichment.RoleIngress, enrichment.RoleMapper, enrichment.RoleCorrelator, enrichment.RolePoller:
			cfg.Roles = append(cfg.Roles, r)
		default:
			return cli.Usagef("--roles: %q is not ingress, mapper, correlator or poller", r)
		}
	}
	cfg.AutoEnrich = []string{}
	for _, c := range strings.Split(get("auto-enrich"), ",") {
		switch c = strings.TrimSpace(c); c {
		case "none", "":
		case "delivery", "system", "security":
			cfg.AutoEnrich = append(cfg.AutoEnrich, c)
		default:
			return cli.Usagef("--auto-enrich: %q is not delivery, system, security or none", c)
		}
	}
	if cfg.SkipMigrations, err = v.Bool("skip-migrations"); err != nil {
		return err
	}
	if cfg.Correlation.Window, err = v.Duration("window"); err != nil {
		return err
	}
	if cfg.Correlation.HalfLife, err = v.Duration("half-life"); err != nil {
		return err
	}
	if cfg.Correlation.MaxMatches, err = v.Int("max-matches", 1); err != nil {
		return err
	}
	if cfg.PollInterval, err = v.Duration("poll-interval"); err != nil {
		return err
	}
	dev, err := v.Bool("dev")
	if err != nil {
		return err
	}
	cfg.Egress.AllowLoopback, cfg.Egress.AllowHTTP = dev, dev
	if cfg.Retention, err = v.Duration("retention"); err != nil {
		return err
	}
	if cfg.Concurrency, err = v.Int("concurrency", 1); err != nil {
		return err
	}
	if cfg.MaxDeliver, err = v.Int("max-deliver", 1); err != nil {
		return err
	}
	maxBody, err := v.Int("max-body", 1024)
	if err != nil {
		return err
	}
	cfg.MaxBody = int64(maxBody)
	cfg.Streams = bus.DefaultStreamSettings()
	if cfg.Streams.Topology, err = v.Topology(); err != nil {
		return err
	}
	vault, err := v.Vault()
	if err != nil {
		return err
	}

	log := slog.New(slog.NewJSONHandler(stderr, nil)).With("service", "enrichment")
	cfg.Logger = log
	// Webhook secrets and the CloudWatch poller's AWS keys may be
	// authref://vault references.
	cfg.Resolver = cli.Resolver(vault, log)
	defer cfg.Resolver.Close()
	tel, err := telemetry.Setup(ctx, telemetry.Config{ServiceName: "enrichment", Logger: log})
	if err != nil {
		return err
	}
	defer tel.Close(log)
	log.Info("tracing", "exporter", tel.String())
	cfg.TracerProvider = tel.TracerProvider()
	nc, err := cli.ConnectNATS(get("nats-url"), "inthub-enrichment", cli.NATSEventLog(log)...)
	if err != nil {
		return err
	}
	defer nc.Close()
	svc, err := enrichment.New(cfg, nc)
	if err != nil {
		return err
	}
	log.Info("starting", "roles", cfg.Roles, "window", cfg.Correlation.Window.String())
	return svc.Run(ctx)
}
