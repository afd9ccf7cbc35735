package main

import (
	"context"
	"errors"
	"flag"
	"io"
	"log/slog"
	"os"
	"slices"

	"inthub.dev/pkg/bus"
	"inthub.dev/pkg/telemetry"
	"inthub.dev/services/catalog"
	"inthub.dev/services/catalog/auth"
	"inthub.dev/services/internal/cli"
)

var command = cli.Command{Name: "catalog", Head: usageHead, Options: append([]cli.Option{
	cli.Flag("listen", "CATALOG_LISTEN", "127.0.0.1:8080", "HTTP address of the API"),
	cli.Flag("database-url", "DATABASE_URL", "postgres://postgres@127.0.0.1:5432/inthub?sslmode=disable", "PostgreSQL as the owner of the tables (migrations, type seeding)"),
	cli.Flag("app-database-url", "CATALOG_APP_DATABASE_URL", "", "PostgreSQL as inthub_app, for requests (default: --database-url with user inthub_app)"),
	cli.Flag("forwarder-database-url", "CATALOG_FORWARDER_DATABASE_URL", "", "PostgreSQL as inthub_forwarder, for the outbox (default: --database-url with user inthub_forwarder)"),
	cli.Flag("skip-migrations", "CATALOG_SKIP_MIGRATIONS", "false", "do not migrate at start (run inthubctl migrate instead)"),
	cli.Flag("nats-url", "NATS_URL", "nats://127.0.0.1:4250", "NATS servers, comma-separated"),
	cli.Flag("jwt-issuer", "JWT_ISSUER", "", "required iss claim"),
	cli.Flag("jwt-audience", "JWT_AUDIENCE", "inthub", "required aud claim"),
	cli.Flag("jwt-tenant-claim", "JWT_TENANT_CLAIM", "tenant_id", "claim holding the tenant id"),
	cli.Flag("jwks-url", "JWT_JWKS_URL", "", "the Authority's JWK Set URL"),
	cli.Flag("jwt-key-file", "JWT_KEY_FILE", "", "PEM public keys instead of a JWKS"),
	cli.Flag("dev-hs256-secret-file", "JWT_DEV_HS256_SECRET_FILE", "", "DEV ONLY: file with an HS256 secret (>= 32 bytes); needs --dev"),
	cli.EgressPortsFlag(),
	cli.HubIdentityFlag(),
	cli.Flag("doctor-packs-dir", "INTHUB_DOCTOR_PACKS_DIR", "", "directory of doctor check packs (*.yaml, commands on an allow-list); none when empty"),
	cli.Flag("doctor-signing-key", "INTHUB_DOCTOR_SIGNING_KEY", "", "AuthRef (env or file) of an ed25519 PKCS#8 key that signs each doctor run (DSSE); unsigned when empty"),
	cli.Flag("dev", "INTHUB_DEV", "false", "development mode: allows HS256 tokens and loopback endpoints"),
}, slices.Concat(cli.PluginFlags("at start and on POST /api/v1/plugins/discover"), cli.VaultFlags(), cli.TopologyFlags())...)}

func exitCode(err error) int { return cli.ExitCode(err) }

const usageHead = `Usage: catalog [flags]

Serves the inthub catalog: /api/v1 (OpenAPI at /api/v1/openapi.json),
/healthz, /readyz, /metrics; publishes integration.* events through the
transactional outbox and records integration.health_checked.

Flags (each defaults to its environment variable, else the value shown):
`

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	v, err := command.Parse(args, stdout, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	if err != nil {
		return err
	}
	get := v.String
	dev, err := v.Bool("dev")
	if err != nil {
		return err
	}
	skip, err := v.Bool("skip-migrations")
	if err != nil {
		return err
	}
	topo, err := v.Topology()
	if err != nil {
		return err
	}
	ports, err := v.Ports("egress-allow-ports")
	if err != nil {
		return err
	}
	hubIdentity, err := v.Bool("allow-hub-identity")
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
	ac := auth.Config{
		Issuer: get("jwt-issuer"), Audience: get("jwt-audience"), TenantClaim: get("jwt-tenant-claim"),
		JWKSURL: get("jwks-url"), KeyFile: get("jwt-key-file"), DevMode: dev,
	}
	if f := get("dev-hs256-secret-file"); f != "" {
		secret, err := os.ReadFile(f)
		if err != nil {
			return cli.Usagef("--dev-hs256-secret-file: %w", err)
		}
		ac.DevHS256Secret = secret
	}

	log := slog.New(slog.NewJSONHandler(stderr, nil)).With("service", "catalog")
	ac.Logger = log
	tel, err := telemetry.Setup(ctx, telemetry.Config{ServiceName: "catalog", Logger: log})
	if err != nil {
		return err
	}
	defer tel.Close(log)
	log.Info("tracing", "exporter", tel.String())
	nc, err := cli.ConnectNATS(get("nats-url"), "inthub-catalog", cli.NATSEventLog(log)...)
	if err != nil {
		return err
	}
	defer nc.Close()
	settings := bus.DefaultStreamSettings()
	settings.Topology = topo
	cfg := catalog.Config{
		Listen: get("listen"), DatabaseURL: get("database-url"),
		AppDatabaseURL: get("app-database-url"), ForwarderDatabaseURL: get("forwarder-database-url"),
		SkipMigrations: skip, Streams: settings, Auth: ac, Logger: log,
		TracerProvider: tel.TracerProvider(),
		DoctorPacksDir: get("doctor-packs-dir"), DoctorSigningKey: get("doctor-signing-key"),
		Vault: vault,
	}
	if vault != nil {
		log.Info("authref://vault references are read from this Vault", "vault", *vault)
	}
	cfg.Egress.AllowLoopback = dev
	cfg.Egress.AllowPorts = ports
	cfg.Egress.AllowHubIdentity = hubIdentity
	cfg.Egress.AllowHTTP = dev
	cfg.PluginDirs, cfg.PluginChecksums = pluginDirs, pluginSums
	svc, err := catalog.New(cfg, nc)
	if err != nil {
		return err
	}
	return svc.Run(ctx)
}
