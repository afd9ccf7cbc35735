package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	"inthub.dev/pkg/bus"
	"inthub.dev/services/internal/devfleet"
)

func TestMain(m *testing.M) {
	// No goroutine may outlive `inthub dev`: a stray one would mean a
	// component, the NATS client or the embedded server was not shut down.
	// The embedded server's last goroutines (a file store's flush loop,
	// its access-time ticker) end a moment after WaitForShutdown; on a
	// loaded machine that moment outlasts goleak's default ~2 s of
	// retries, so it gets ~10 s. A real leak stays for good.
	code := m.Run()
	for deadline := time.Now().Add(10 * time.Second); code == 0; {
		err := goleak.Find() // retries for ~2 s itself
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// syncBuffer lets the test read what run writes from another goroutine.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

var urlRE = regexp.MustCompile(`nats://127\.0\.0\.1:\d+`)

// eventually polls cond until it holds or the deadline passes.
func eventually(t *testing.T, what string, timeout time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not true after %s: %v", what, timeout, err)
		}
		<-tick.C
	}
}

type devRun struct {
	stdout, stderr *syncBuffer
	cancel         context.CancelFunc
	done           chan error
}

func startDev(t *testing.T, builders []devfleet.Builder, args ...string) *devRun {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &devRun{stdout: &syncBuffer{}, stderr: &syncBuffer{}, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- runDev(ctx, append([]string{}, args...), r.stdout, r.stderr, builders) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-r.done:
		case <-time.After(30 * time.Second):
			t.Error("inthub dev did not stop")
		}
	})
	return r
}

// stop cancels the run as Ctrl-C would and returns what run returned.
func (r *devRun) stop(t *testing.T) error {
	t.Helper()
	r.cancel()
	select {
	case err := <-r.done:
		r.done <- err // let the cleanup see it too
		return err
	case <-time.After(30 * time.Second):
		t.Fatal("inthub dev did not stop within 30s of cancel")
		return nil
	}
}

// natsURL waits for the banner and returns the URL it announces.
func (r *devRun) natsURL(t *testing.T) string {
	t.Helper()
	var url string
	eventually(t, "banner with the NATS URL", 30*time.Second, func() error {
		select {
		case err := <-r.done:
			r.done <- err
			t.Fatalf("inthub dev exited early: %v\nstderr:\n%s", err, r.stderr.String())
		default:
		}
		out := r.stdout.String()
		if !strings.Contains(out, "inthub dev is running") {
			return errors.New("no banner yet")
		}
		url = urlRE.FindString(out)
		if url == "" {
			return fmt.Errorf("banner has no nats:// URL:\n%s", out)
		}
		return nil
	})
	return url
}

func wantStreams(t *testing.T, url string) {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatalf("connect to %s: %v", url, err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{bus.StreamIntegrations, bus.StreamSCM, bus.StreamIngest, bus.StreamEvents, bus.StreamDLQ, bus.StreamSpool}
	eventually(t, "six streams", 10*time.Second, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		var got []string
		names := js.StreamNames(ctx)
		for n := range names.Name() {
			got = append(got, n)
		}
		if err := names.Err(); err != nil {
			return err
		}
		for _, w := range want {
			if !slices.Contains(got, w) {
				return fmt.Errorf("stream %s missing; have %v", w, got)
			}
		}
		return nil
	})
}

// testDatabase names a database of its own for the test and drops it at the
// end, so tests never touch the developer's `inthub` database.
func testDatabase(t *testing.T) string {
	t.Helper()
	name := fmt.Sprintf("inthub_devtest_%d_%d", os.Getpid(), time.Now().UnixNano())
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable")
		if err != nil {
			return // the test itself reports an unreachable server
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
			t.Errorf("drop %s: %v", name, err)
		}
	})
	return "postgres://postgres@127.0.0.1:5432/" + name + "?sslmode=disable"
}

func TestDevStartsEmbeddedNATSProvisionsStreamsAndStops(t *testing.T) {
	dataDir := t.TempDir()
	dbURL := testDatabase(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stdout, stderr := &syncBuffer{}, &syncBuffer{}
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"dev", "--nats-url=", "--data-dir", dataDir, "--nats-port", "0", "--database-url", dbURL, "--catalog-listen", "127.0.0.1:0", "--health-poller-listen", "127.0.0.1:0", "--annotation-listen", "127.0.0.1:0", "--enrichment-listen", "127.0.0.1:0", "--webhook-listen", "127.0.0.1:0"}, stdout, stderr)
	}()
	r := &devRun{stdout: stdout, stderr: stderr, cancel: cancel, done: done}

	url := r.natsURL(t)
	wantStreams(t, url)

	out := stdout.String()
	for _, want := range []string{
		"nats --server " + url + " stream ls",
		"./bin/inthubctl dlq list --nats-url " + url,
		dataDir + "/nats",
		"PostgreSQL  postgres@127.0.0.1:5432/inthub_devtest_",
		"(ready)",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("stdout lacks %q:\n%s", want, out)
		}
	}
	if _, err := os.Stat(dataDir + "/nats/jetstream"); err != nil {
		t.Errorf("JetStream store not under the data dir: %v", err)
	}
	// Each worker prints where it listens once it does.
	for _, want := range []string{"Health poller  http://127.0.0.1:", "Annotation   http://127.0.0.1:",
		"Enrichment   http://127.0.0.1:", "webhooks at http://127.0.0.1:"} {
		eventually(t, "the banner "+want, 60*time.Second, func() error {
			if !strings.Contains(stdout.String(), want) {
				return fmt.Errorf("not printed yet")
			}
			return nil
		})
	}

	if err := r.stop(t); err != nil {
		t.Fatalf("run after cancel = %v, want nil\nstderr:\n%s", err, stderr.String())
	}
	assertJSONLogs(t, stderr.String())

	// The database was created and is usable.
	ctx2, cancel2 := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel2()
	conn, err := pgx.Connect(ctx2, dbURL)
	if err != nil {
		t.Fatalf("database not created: %v", err)
	}
	conn.Close(ctx2)
}

func assertJSONLogs(t *testing.T, logs string) {
	t.Helper()
	for line := range strings.Lines(logs) {
		if !strings.HasPrefix(line, "{") || !strings.Contains(line, `"service":`) || !strings.Contains(line, `"msg":`) {
			t.Errorf("log line is not slog JSON with service and msg: %q", line)
		}
	}
	for _, want := range []string{`"msg":"streams provisioned"`, `"msg":"inthub dev stopped"`, `"msg":"embedded NATS stopped"`} {
		if !strings.Contains(logs, want) {
			t.Errorf("logs lack %s:\n%s", want, logs)
		}
	}
}

func TestDevKeepsStreamsAcrossRestart(t *testing.T) {
	dataDir := t.TempDir()
	args := []string{"--nats-url=", "--data-dir", dataDir, "--nats-port", "0", "--database-url", "postgres://postgres@127.0.0.1:1/none?sslmode=disable&connect_timeout=2"}

	first := startDev(t, nil, args...)
	url := first.natsURL(t)
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := js.Publish(ctx, "integration.created", []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	nc.Close()
	if err := first.stop(t); err != nil {
		t.Fatal(err)
	}

	second := startDev(t, nil, args...)
	url = second.natsURL(t)
	nc, err = nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ = jetstream.New(nc)
	s, err := js.Stream(ctx, bus.StreamIntegrations)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 1 {
		t.Fatalf("INTEGRATIONS holds %d messages after restart, want the 1 published before", info.State.Msgs)
	}
	if err := second.stop(t); err != nil {
		t.Fatal(err)
	}
}

func TestDevContinuesWithoutPostgres(t *testing.T) {
	r := startDev(t, nil, "--nats-url=", "--data-dir", t.TempDir(), "--nats-port", "0",
		"--database-url", "postgres://postgres@127.0.0.1:1/inthub?sslmode=disable&connect_timeout=2")
	url := r.natsURL(t)
	wantStreams(t, url)
	if out := r.stdout.String(); !strings.Contains(out, "NOT reachable") {
		t.Errorf("banner does not say PostgreSQL is unreachable:\n%s", out)
	}
	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}
	logs := r.stderr.String()
	if !strings.Contains(logs, `"level":"WARN"`) || !strings.Contains(logs, "pg_ctlcluster") {
		t.Errorf("no warning with a hint about PostgreSQL:\n%s", logs)
	}
}

func TestDevRunsComponentsWithDeps(t *testing.T) {
	started := make(chan devfleet.Deps, 1)
	stopped := make(chan struct{})
	builders := []devfleet.Builder{{
		Name: "probe",
		Build: func(d devfleet.Deps) (devfleet.Component, error) {
			return devfleet.Func{N: "probe", F: func(ctx context.Context) error {
				started <- d
				<-ctx.Done()
				close(stopped)
				return ctx.Err()
			}}, nil
		},
	}}
	r := startDev(t, builders, "--nats-url=", "--data-dir", t.TempDir(), "--nats-port", "0",
		"--database-url", "postgres://postgres@127.0.0.1:1/inthub?sslmode=disable&connect_timeout=2")
	url := r.natsURL(t)
	var d devfleet.Deps
	select {
	case d = <-started:
	case <-time.After(30 * time.Second):
		t.Fatal("component never started")
	}
	if d.NATSURL != url || d.NATS == nil || d.JS == nil || d.Log == nil {
		t.Fatalf("component got incomplete deps: %+v", d)
	}
	if d.DatabaseURL != "" {
		t.Errorf("DatabaseURL = %q although PostgreSQL is down; components must be able to tell", d.DatabaseURL)
	}
	if !strings.Contains(r.stdout.String(), "services    probe") {
		t.Errorf("banner does not list the component:\n%s", r.stdout.String())
	}
	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}
	select {
	case <-stopped:
	default:
		t.Fatal("run returned before the component stopped")
	}
}

func TestDevFailsWhenAComponentFails(t *testing.T) {
	boom := errors.New("boom")
	builders := []devfleet.Builder{{
		Name: "broken",
		Build: func(devfleet.Deps) (devfleet.Component, error) {
			return devfleet.Func{N: "broken", F: func(context.Context) error { return boom }}, nil
		},
	}}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var stdout, stderr bytes.Buffer
	err := runDev(ctx, []string{"--nats-url=", "--data-dir", t.TempDir(), "--nats-port", "0",
		"--database-url", "postgres://postgres@127.0.0.1:1/inthub?sslmode=disable&connect_timeout=2"}, &stdout, &stderr, builders)
	if !errors.Is(err, boom) {
		t.Fatalf("run = %v, want the component's error", err)
	}
}

func TestDevReportsBusyPort(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	port := strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
	var stdout, stderr bytes.Buffer
	err = run(context.Background(), []string{"dev", "--nats-url=", "--data-dir", t.TempDir(), "--nats-port", port}, &stdout, &stderr)
	if err == nil || !strings.Contains(err.Error(), "--nats-port") {
		t.Fatalf("run = %v, want an error pointing at --nats-port", err)
	}
}

func TestDevReportsUnreachableExternalNATS(t *testing.T) {
	var stdout, stderr bytes.Buffer
	err := run(context.Background(), []string{"dev", "--nats-url", "nats://127.0.0.1:1", "--data-dir", t.TempDir()}, &stdout, &stderr)
	if err == nil || !strings.Contains(err.Error(), "NATS_URL") {
		t.Fatalf("run = %v, want an error with a hint about NATS_URL", err)
	}
}

func TestHelp(t *testing.T) {
	for _, args := range [][]string{{"--help"}, {"-h"}, {"help"}, {"dev", "--help"}, {"dev", "-h"}, {"help", "dev"}} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			if err := run(context.Background(), args, &stdout, &stderr); err != nil {
				t.Fatalf("run(%q) = %v, want nil", args, err)
			}
			if !strings.Contains(stdout.String(), "inthub dev") {
				t.Errorf("no usage on stdout:\n%s", stdout.String())
			}
			if stderr.Len() != 0 {
				t.Errorf("help wrote to stderr: %s", stderr.String())
			}
		})
	}
	var stdout, stderr bytes.Buffer
	_ = run(context.Background(), []string{"dev", "--help"}, &stdout, &stderr)
	for _, want := range []string{"--nats-url", "NATS_URL", "INTHUB_DATA_DIR", "INTHUB_NATS_PORT", "4250", "DATABASE_URL", "--sync-always", "2 minutes"} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("dev usage does not document %q", want)
		}
	}
}

func TestUsageErrors(t *testing.T) {
	cases := []struct {
		name string
		args []string
		env  map[string]string
	}{
		{"no command", nil, nil},
		{"unknown command", []string{"serve"}, nil},
		{"unknown flag", []string{"dev", "--nope"}, nil},
		{"stray argument", []string{"dev", "extra"}, nil},
		{"bad port env", []string{"dev"}, map[string]string{"INTHUB_NATS_PORT": "abc"}},
		{"port out of range", []string{"dev", "--nats-port", "70000"}, nil},
		{"empty data dir", []string{"dev", "--data-dir", ""}, nil},
		{"bad database url", []string{"dev", "--database-url", "postgres://%zz"}, nil},
		{"replicas on the embedded server", []string{"dev", "--replicas", "3"}, nil},
		{"too many replicas", []string{"dev", "--nats-url", "nats://a:1", "--replicas", "7"}, nil},
		{"bad nats url", []string{"dev", "--nats-url", "http://a:1"}, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			for k, v := range c.env {
				t.Setenv(k, v)
			}
			var stdout, stderr bytes.Buffer
			err := run(context.Background(), c.args, &stdout, &stderr)
			if err == nil || exitCode(err) != 2 {
				t.Fatalf("run(%q) = %v (exit %d), want a usage error (exit 2)", c.args, err, exitCode(err))
			}
		})
	}
}

func TestEnvDefaults(t *testing.T) {
	t.Setenv("NATS_URL", "nats://example.invalid:4222")
	t.Setenv("INTHUB_DATA_DIR", "/tmp/x")
	t.Setenv("INTHUB_NATS_PORT", "4999")
	t.Setenv("DATABASE_URL", "postgres://u@h/db")
	t.Setenv("INTHUB_SYNC_ALWAYS", "true")
	t.Setenv("INTHUB_STREAM_REPLICAS", "3")
	t.Setenv("CATALOG_LISTEN", "127.0.0.1:9999")
	t.Setenv("HEALTHPOLLER_LISTEN", "127.0.0.1:9998")
	t.Setenv("ANNOTATION_LISTEN", "127.0.0.1:9997")
	t.Setenv("ENRICHMENT_LISTEN", "127.0.0.1:9996")
	t.Setenv("ENRICHMENT_WEBHOOK_LISTEN", "127.0.0.1:9995")
	t.Setenv("INTHUB_DEV_HEALTH_INTERVAL", "20s")
	t.Setenv("INTHUB_DEV_DEMO", "false")
	cfg, err := parseDevFlags(nil, &bytes.Buffer{}, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	want := devConfig{natsURL: "nats://example.invalid:4222", dataDir: "/tmp/x", natsPort: 4999, databaseURL: "postgres://u@h/db", syncAlways: true, replicas: 3, catalogListen: "127.0.0.1:9999", pollerListen: "127.0.0.1:9998",
		annotationListen: "127.0.0.1:9997", enrichmentListen: "127.0.0.1:9996", webhookListen: "127.0.0.1:9995", healthInterval: 20 * time.Second, demo: false}
	if !reflect.DeepEqual(cfg, want) {
		t.Fatalf("cfg = %+v, want %+v", cfg, want)
	}
	// Flags beat the environment.
	cfg, err = parseDevFlags([]string{"--nats-port", "0", "--sync-always=false"}, &bytes.Buffer{}, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.natsPort != 0 || cfg.syncAlways {
		t.Fatalf("flags did not override env: %+v", cfg)
	}
}

func TestEnsureDatabaseIsIdempotent(t *testing.T) {
	dbURL := testDatabase(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for i := range 2 {
		desc, err := ensureDatabase(ctx, dbURL)
		if err != nil {
			t.Fatalf("call %d: %v", i+1, err)
		}
		if strings.Contains(desc, "sslmode") || !strings.HasPrefix(desc, "postgres@127.0.0.1:5432/inthub_devtest_") {
			t.Errorf("description %q", desc)
		}
	}
}
