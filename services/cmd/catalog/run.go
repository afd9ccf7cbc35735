package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"

	"inthub.dev/pkg/bus"
	"inthub.dev/services/catalog"
	"inthub.dev/services/catalog/auth"
)

type usageError struct{ error }

func (e usageError) Unwrap() error { return e.error }

func exitCode(err error) int {
	if errors.As(err, new(usageError)) {
		return 2
	}
	return 1
}

// option is one flag with the environment variable it defaults to, so the
// help text and the code read the same table.
type option struct {
	name, env, def, help string
}

var options = []option{
	{"listen", "CATALOG_LISTEN", "127.0.0.1:8080", "HTTP address of the API"},
	{"database-url", "DATABASE_URL", "postgres://postgres@127.0.0.1:5432/inthub?sslmode=disable", "PostgreSQL as the owner of the tables (migrations, type seeding)"},
	{"app-database-url", "CATALOG_APP_DATABASE_URL", "", "PostgreSQL as inthub_app, for requests (default: --database-url with user inthub_app)"},
	{"forwarder-database-url", "CATALOG_FORWARDER_DATABASE_URL", "", "PostgreSQL as inthub_forwarder, for the outbox (default: --database-url with user inthub_forwarder)"},
	{"skip-migrations", "CATALOG_SKIP_MIGRATIONS", "false", "do not migrate at start (run inthubctl migrate instead)"},
	{"nats-url", "NATS_URL", "nats://127.0.0.1:4250", "NATS servers, comma-separated"},
	{"stream-replicas", "INTHUB_STREAM_REPLICAS", "1", "replicas per stream (3 on a cluster)"},
	{"jwt-issuer", "JWT_ISSUER", "", "required iss claim"},
	{"jwt-audience", "JWT_AUDIENCE", "inthub", "required aud claim"},
	{"jwt-tenant-claim", "JWT_TENANT_CLAIM", "tenant_id", "claim holding the tenant id"},
	{"jwks-url", "JWT_JWKS_URL", "", "the Authority's JWK Set URL"},
	{"jwt-key-file", "JWT_KEY_FILE", "", "PEM public keys instead of a JWKS"},
	{"dev-hs256-secret-file", "JWT_DEV_HS256_SECRET_FILE", "", "DEV ONLY: file with an HS256 secret (>= 32 bytes); needs --dev"},
	{"dev", "INTHUB_DEV", "false", "development mode: allows HS256 tokens and loopback endpoints"},
}

const usageHead = `Usage: catalog [flags]

Serves the inthub catalog: /api/v1 (OpenAPI at /api/v1/openapi.json),
/healthz, /readyz, /metrics; publishes integration.* events through the
transactional outbox and records integration.health_checked.

Flags (each defaults to its environment variable, else the value shown):
`

func usage(w io.Writer) {
	fmt.Fprint(w, usageHead)
	for _, o := range options {
		def := o.def
		if def == "" {
			def = `""`
		}
		fmt.Fprintf(w, "  --%s\n        %s\n        (env %s; default %s)\n", o.name, o.help, o.env, def)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("catalog", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	vals := map[string]*string{}
	for _, o := range options {
		def := o.def
		if v, ok := os.LookupEnv(o.env); ok {
			def = v
		}
		vals[o.name] = fs.String(o.name, def, o.help)
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			usage(stdout)
			return nil
		}
		usage(stderr)
		return usageError{err}
	}
	if fs.NArg() > 0 {
		usage(stderr)
		return usageError{fmt.Errorf("unexpected arguments %v", fs.Args())}
	}
	get := func(name string) string { return *vals[name] }
	boolOf := func(name string) (bool, error) {
		b, err := strconv.ParseBool(get(name))
		if err != nil {
			return false, usageError{fmt.Errorf("--%s: %q is not a boolean", name, get(name))}
		}
		return b, nil
	}
	dev, err := boolOf("dev")
	if err != nil {
		return err
	}
	skip, err := boolOf("skip-migrations")
	if err != nil {
		return err
	}
	replicas, err := strconv.Atoi(get("stream-replicas"))
	if err != nil {
		return usageError{fmt.Errorf("--stream-replicas: %q is not a number", get("stream-replicas"))}
	}
	ac := auth.Config{
		Issuer: get("jwt-issuer"), Audience: get("jwt-audience"), TenantClaim: get("jwt-tenant-claim"),
		JWKSURL: get("jwks-url"), KeyFile: get("jwt-key-file"), DevMode: dev,
	}
	if f := get("dev-hs256-secret-file"); f != "" {
		secret, err := os.ReadFile(f)
		if err != nil {
			return usageError{fmt.Errorf("--dev-hs256-secret-file: %w", err)}
		}
		ac.DevHS256Secret = secret
	}

	log := slog.New(slog.NewJSONHandler(stderr, nil)).With("service", "catalog")
	ac.Logger = log
	nc, err := nats.Connect(get("nats-url"), nats.Name("inthub-catalog"), nats.MaxReconnects(-1),
		nats.ReconnectWait(250*time.Millisecond), nats.RetryOnFailedConnect(true))
	if err != nil {
		return fmt.Errorf("connect to NATS at %s: %w", get("nats-url"), err)
	}
	defer nc.Close()
	settings := bus.DefaultStreamSettings()
	settings.Replicas = replicas
	cfg := catalog.Config{
		Listen: get("listen"), DatabaseURL: get("database-url"),
		AppDatabaseURL: get("app-database-url"), ForwarderDatabaseURL: get("forwarder-database-url"),
		SkipMigrations: skip, Streams: settings, Auth: ac, Logger: log,
	}
	cfg.Egress.AllowLoopback = dev
	cfg.Egress.AllowHTTP = dev
	svc, err := catalog.New(cfg, nc)
	if err != nil {
		return err
	}
	return svc.Run(ctx)
}
