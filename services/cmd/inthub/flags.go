package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"inthub.dev/pkg/authref"
	"inthub.dev/services/internal/cli"
)

// Defaults of `inthub dev`. The NATS port is not 4222 because a system NATS
// often holds that one already; a clash there would look like a broken bus.
const (
	defaultDataDir     = "./.inthub"
	defaultNATSPort    = 4250
	defaultDatabaseURL = "postgres://postgres@127.0.0.1:5432/inthub?sslmode=disable"
)

type devConfig struct {
	natsURL       string
	dataDir       string
	natsPort      int
	databaseURL   string
	syncAlways    bool
	replicas      int
	catalogListen string
	pollerListen  string
	// annotationListen is the annotation worker's probe and metrics address.
	annotationListen string
	// enrichmentListen and webhookListen are the enrichment service's.
	enrichmentListen, webhookListen string
	// healthInterval is the poller's interval for integrations whose
	// config sets none: short, so health visibly changes in a demo.
	healthInterval time.Duration
	demo           bool
	// pluginDirs and pluginSums are the catalog's plugin host (the other
	// services share its registry in this process); doctorPacksDir the
	// catalog's doctor packs; vault the Vault of every service's resolver.
	pluginDirs, pluginSums []string
	doctorPacksDir         string
	vault                  *authref.VaultConfig
}

// flagDoc drives both the flag set and the help text, so the documented env
// variables and defaults cannot drift from what the code reads.
type flagDoc struct {
	name, arg, env, def, help string
}

var devFlags = []flagDoc{
	{"nats-url", "URL", "NATS_URL", "", "use this NATS server (JetStream enabled) instead of starting an embedded one"},
	{"data-dir", "DIR", "INTHUB_DATA_DIR", defaultDataDir, "local state; the embedded JetStream store lives in DIR/nats"},
	{"nats-port", "PORT", "INTHUB_NATS_PORT", strconv.Itoa(defaultNATSPort), "port of the embedded NATS server on 127.0.0.1; 0 picks a free one (printed at start)"},
	{"database-url", "URL", "DATABASE_URL", defaultDatabaseURL, "PostgreSQL; the database is created if missing"},
	{"sync-always", "", "INTHUB_SYNC_ALWAYS", "false", "embedded JetStream fsyncs every write before acking it (see Durability)"},
	{"replicas", "N", "INTHUB_STREAM_REPLICAS", "1", "replicas of every stream and KV bucket; 3 when --nats-url names a cluster of 3 (the embedded server is one node)"},
	{"catalog-listen", "ADDR", "CATALOG_LISTEN", "127.0.0.1:8080", "address of the catalog API; 127.0.0.1:0 picks a free port (printed at start)"},
	{"health-poller-listen", "ADDR", "HEALTHPOLLER_LISTEN", "127.0.0.1:8081", "address of the health poller's /healthz, /readyz, /metrics; 127.0.0.1:0 picks a free port"},
	{"annotation-listen", "ADDR", "ANNOTATION_LISTEN", "127.0.0.1:8082", "address of the annotation worker's /healthz, /readyz, /metrics; 127.0.0.1:0 picks a free port"},
	{"enrichment-listen", "ADDR", "ENRICHMENT_LISTEN", "127.0.0.1:8083", "address of the enrichment service's /healthz, /readyz, /metrics; 127.0.0.1:0 picks a free port"},
	{"webhook-listen", "ADDR", "ENRICHMENT_WEBHOOK_LISTEN", "127.0.0.1:8090", "address of the webhook ingress (/webhooks/github/{id}, /webhooks/gitlab/{id}, /webhooks/sns/{id})"},
	{"health-interval", "DURATION", "INTHUB_DEV_HEALTH_INTERVAL", "10s", "health-check interval of integrations whose config sets no healthIntervalSeconds (deployments: 5m)"},
	{"demo", "", "INTHUB_DEV_DEMO", "true", "create the demo tenant's in-memory integrations if they are missing (one always healthy, one failing now and then)"},
}

// serviceFlags are options of the services that inthub dev passes on, with
// the services' own names, variables and defaults (services/internal/cli),
// so that a setting means the same under inthub dev as deployed.
var serviceFlags = slices.Concat(
	cli.PluginFlags("by the catalog at start and on POST /api/v1/plugins/discover; the other services use the catalog's plugins (one process)"),
	[]cli.Option{cli.Flag("doctor-packs-dir", "INTHUB_DOCTOR_PACKS_DIR", "", "the catalog's directory of doctor check packs (*.yaml, commands on an allow-list); none when empty")},
	cli.VaultFlags(),
)

func init() {
	for _, o := range serviceFlags {
		devFlags = append(devFlags, flagDoc{name: o.Name, env: o.Env, def: o.Default, help: o.Help})
	}
}

const devUsageHead = `Usage: inthub dev [flags]

Runs the inthub fleet in one process: an embedded NATS server with JetStream
(unless --nats-url is given), the streams provisioned, the database created in
PostgreSQL, then every service that exists so far. Ctrl-C (SIGINT or SIGTERM)
stops it cleanly. Logs are JSON on stderr; the addresses to use are on stdout.

Flags (each defaults to its environment variable, else to the value shown):
`

const devUsageTail = `
Durability: NATS acknowledges a publish once it is written to the operating
system, and fsyncs only every 2 minutes by default. A crash of the inthub
process loses nothing acknowledged; a crash of the machine or a power loss can
lose up to the last 2 minutes on a server without replicas. --sync-always
closes that gap at a cost in throughput. Clusters rely on --replicas 3
instead: a write is acknowledged once a majority of servers hold it.
`

func writeDevUsage(w io.Writer) {
	fmt.Fprint(w, devUsageHead)
	for _, f := range devFlags {
		head := "  --" + f.name
		if f.arg != "" {
			head += " " + f.arg
		}
		def := f.def
		switch {
		case def != "":
		case f.name == "nats-url":
			def = "none: embedded"
		default:
			def = `""`
		}
		fmt.Fprintf(w, "%s\n        %s\n        (env %s; default %s)\n", head, f.help, f.env, def)
	}
	fmt.Fprint(w, devUsageTail)
}

// parseDevFlags reads flags over env over built-in defaults. Help goes to
// stdout (it was asked for); mistakes go to stderr with the usage.
func parseDevFlags(args []string, stdout, stderr io.Writer) (devConfig, error) {
	var cfg devConfig
	env := func(f flagDoc) string {
		if v, ok := os.LookupEnv(f.env); ok {
			return v
		}
		return f.def
	}
	byName := map[string]flagDoc{}
	for _, f := range devFlags {
		byName[f.name] = f
	}
	port, err := strconv.Atoi(env(byName["nats-port"]))
	if err != nil {
		return cfg, usageError{fmt.Errorf("INTHUB_NATS_PORT: %q is not a port number", os.Getenv("INTHUB_NATS_PORT"))}
	}
	sync, err := strconv.ParseBool(env(byName["sync-always"]))
	if err != nil {
		return cfg, usageError{fmt.Errorf("INTHUB_SYNC_ALWAYS: %q is not a boolean", os.Getenv("INTHUB_SYNC_ALWAYS"))}
	}
	replicas, err := strconv.Atoi(env(byName["replicas"]))
	if err != nil {
		return cfg, usageError{fmt.Errorf("INTHUB_STREAM_REPLICAS: %q is not a number", os.Getenv("INTHUB_STREAM_REPLICAS"))}
	}
	interval, err := time.ParseDuration(env(byName["health-interval"]))
	if err != nil {
		return cfg, usageError{fmt.Errorf("INTHUB_DEV_HEALTH_INTERVAL: %q is not a duration", os.Getenv("INTHUB_DEV_HEALTH_INTERVAL"))}
	}
	demo, err := strconv.ParseBool(env(byName["demo"]))
	if err != nil {
		return cfg, usageError{fmt.Errorf("INTHUB_DEV_DEMO: %q is not a boolean", os.Getenv("INTHUB_DEV_DEMO"))}
	}

	fs := flag.NewFlagSet("inthub dev", flag.ContinueOnError)
	var msgs bytes.Buffer
	fs.SetOutput(&msgs)
	fs.Usage = func() {}
	fs.StringVar(&cfg.natsURL, "nats-url", env(byName["nats-url"]), "")
	fs.StringVar(&cfg.dataDir, "data-dir", env(byName["data-dir"]), "")
	fs.IntVar(&cfg.natsPort, "nats-port", port, "")
	fs.StringVar(&cfg.databaseURL, "database-url", env(byName["database-url"]), "")
	fs.BoolVar(&cfg.syncAlways, "sync-always", sync, "")
	fs.IntVar(&cfg.replicas, "replicas", replicas, "")
	fs.StringVar(&cfg.catalogListen, "catalog-listen", env(byName["catalog-listen"]), "")
	fs.StringVar(&cfg.pollerListen, "health-poller-listen", env(byName["health-poller-listen"]), "")
	fs.StringVar(&cfg.annotationListen, "annotation-listen", env(byName["annotation-listen"]), "")
	fs.StringVar(&cfg.enrichmentListen, "enrichment-listen", env(byName["enrichment-listen"]), "")
	fs.StringVar(&cfg.webhookListen, "webhook-listen", env(byName["webhook-listen"]), "")
	fs.DurationVar(&cfg.healthInterval, "health-interval", interval, "")
	fs.BoolVar(&cfg.demo, "demo", demo, "")
	svc := map[string]*string{}
	for _, o := range serviceFlags {
		svc[o.Name] = fs.String(o.Name, env(byName[o.Name]), "")
	}

	err = fs.Parse(args)
	switch {
	case errors.Is(err, flag.ErrHelp):
		writeDevUsage(stdout)
		return cfg, flag.ErrHelp
	case err != nil:
		writeDevUsage(stderr)
		return cfg, usageError{err}
	case fs.NArg() > 0:
		writeDevUsage(stderr)
		return cfg, usageError{fmt.Errorf("unexpected arguments: %s", strings.Join(fs.Args(), " "))}
	}
	if cfg.natsPort < 0 || cfg.natsPort > 65535 {
		return cfg, usageError{fmt.Errorf("--nats-port %d is outside 0..65535", cfg.natsPort)}
	}
	// A malformed URL is a mistake to fix now, unlike a server that is
	// merely down, which only earns a warning at start.
	if _, err := pgx.ParseConfig(cfg.databaseURL); err != nil {
		return cfg, usageError{fmt.Errorf("--database-url: %w", err)}
	}
	if cfg.dataDir == "" {
		return cfg, usageError{errors.New("--data-dir must not be empty")}
	}
	if cfg.natsURL != "" {
		if cfg.natsURL, err = cli.NATSServers(cfg.natsURL); err != nil {
			return cfg, usageError{fmt.Errorf("--nats-url: %w", err)}
		}
	}
	// The embedded server is one node; replicas need a cluster.
	if cfg.natsURL == "" && cfg.replicas != 1 {
		return cfg, usageError{fmt.Errorf("--replicas %d needs --nats-url naming a NATS cluster (the embedded server is a single node)", cfg.replicas)}
	}
	if cfg.replicas < 1 || cfg.replicas > 5 {
		return cfg, usageError{fmt.Errorf("--replicas %d is outside 1..5", cfg.replicas)}
	}
	if cfg.healthInterval < time.Second {
		return cfg, usageError{fmt.Errorf("--health-interval %v: want at least 1s", cfg.healthInterval)}
	}
	get := func(name string) string { return *svc[name] }
	if cfg.pluginDirs, cfg.pluginSums, err = cli.ParsePlugins(get); err != nil {
		return cfg, usageError{err}
	}
	if cfg.vault, err = cli.ParseVault(get); err != nil {
		return cfg, usageError{err}
	}
	cfg.doctorPacksDir = get("doctor-packs-dir")
	return cfg, nil
}
