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

	"inthub.dev/services/healthpoller"
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
	{"nats-url", "NATS_URL", "nats://127.0.0.1:4250", "NATS servers, comma-separated"},
	{"listen", "HEALTHPOLLER_LISTEN", "127.0.0.1:8081", "HTTP address of /healthz, /readyz and /metrics"},
	{"data-dir", "HEALTHPOLLER_DATA_DIR", "./.inthub/health-poller", "local state: the spool of results waiting for NATS"},
	{"default-interval", "HEALTHPOLLER_DEFAULT_INTERVAL", "5m", "interval of an integration whose config sets no healthIntervalSeconds"},
	{"max-concurrent", "HEALTHPOLLER_MAX_CONCURRENT", "64", "checks running at once"},
	{"max-per-provider", "HEALTHPOLLER_MAX_PER_PROVIDER", "16", "checks running at once against one provider"},
	{"dev", "INTHUB_DEV", "false", "development mode: allows loopback and http:// provider endpoints"},
}

const usageHead = `Usage: health-poller [flags]

Checks every live integration (from the INTEGRATIONS_STATE bucket) on its
interval through its connector and publishes integration.health_checked.
Results wait in a local spool while NATS is unreachable. Serves /healthz,
/readyz and /metrics.

Flags (each defaults to its environment variable, else the value shown):
`

func usage(w io.Writer) {
	fmt.Fprint(w, usageHead)
	for _, o := range options {
		fmt.Fprintf(w, "  --%s\n        %s\n        (env %s; default %s)\n", o.name, o.help, o.env, o.def)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("health-poller", flag.ContinueOnError)
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
	dev, err := strconv.ParseBool(get("dev"))
	if err != nil {
		return usageError{fmt.Errorf("--dev: %q is not a boolean", get("dev"))}
	}
	interval, err := time.ParseDuration(get("default-interval"))
	if err != nil || interval <= 0 {
		return usageError{fmt.Errorf("--default-interval: %q is not a positive duration (e.g. 5m)", get("default-interval"))}
	}
	positive := func(name string) (int, error) {
		n, err := strconv.Atoi(get(name))
		if err != nil || n < 1 {
			return 0, usageError{fmt.Errorf("--%s: %q is not a positive number", name, get(name))}
		}
		return n, nil
	}
	maxConc, err := positive("max-concurrent")
	if err != nil {
		return err
	}
	maxProv, err := positive("max-per-provider")
	if err != nil {
		return err
	}
	if get("data-dir") == "" {
		return usageError{errors.New("--data-dir must not be empty")}
	}

	log := slog.New(slog.NewJSONHandler(stderr, nil)).With("service", "health-poller")
	nc, err := nats.Connect(get("nats-url"), nats.Name("inthub-health-poller"), nats.MaxReconnects(-1),
		nats.ReconnectWait(250*time.Millisecond), nats.RetryOnFailedConnect(true))
	if err != nil {
		return fmt.Errorf("connect to NATS at %s: %w", get("nats-url"), err)
	}
	defer nc.Close()
	cfg := healthpoller.Config{
		Listen: get("listen"), DataDir: get("data-dir"), DefaultInterval: interval,
		MaxConcurrent: maxConc, MaxPerProvider: maxProv, Logger: log,
	}
	cfg.Egress.AllowLoopback = dev
	cfg.Egress.AllowHTTP = dev
	svc, err := healthpoller.New(cfg, nc)
	if err != nil {
		return err
	}
	return svc.Run(ctx)
}
