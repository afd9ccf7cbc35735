package e2e_test

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// binDir holds the binaries of the fleet, built once per test run; empty
// under -short, where every test here skips.
var binDir string

// binaries are the commands the tests run as processes.
var binaries = []string{"catalog", "health-poller", "annotation", "enrichment", "inthubctl"}

func TestMain(m *testing.M) {
	flag.Parse()
	code := run(m)
	if code == 0 {
		if err := goleak.Find(leakOptions()...); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

func run(m *testing.M) int {
	if !testing.Short() {
		dir, err := os.MkdirTemp("", "inthub-e2e-bin-")
		if err != nil {
			fmt.Fprintln(os.Stderr, "e2e:", err)
			return 1
		}
		defer os.RemoveAll(dir)
		if err := build(dir); err != nil {
			fmt.Fprintln(os.Stderr, "e2e:", err)
			return 1
		}
		binDir = dir
	}
	return m.Run()
}

// build compiles the fleet's commands into dir, without -race: the race
// detector belongs to the test process, and the binaries are what a
// deployment runs.
func build(dir string) error {
	gobin, err := exec.LookPath("go")
	if err != nil {
		return fmt.Errorf("the go command builds the fleet: %w", err)
	}
	args := []string{"build", "-o", dir + string(filepath.Separator)}
	for _, b := range binaries {
		args = append(args, "inthub.dev/services/cmd/"+b)
	}
	cmd := exec.Command(gobin, args...)
	// VCS stamping fails in some checkouts and nothing reads it (see the
	// Makefile).
	cmd.Env = append(os.Environ(), "GOFLAGS=-buildvcs=false")
	start := time.Now()
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("go build of the fleet: %w\n%s", err, out)
	}
	fmt.Fprintf(os.Stderr, "e2e: built %v in %v\n", binaries, time.Since(start).Round(100*time.Millisecond))
	return nil
}

func leakOptions() []goleak.Option {
	return []goleak.Option{
		goleak.IgnoreTopFunction("github.com/nats-io/nats-server/v2/server.(*Server).startGoRoutine.func1"),
		goleak.IgnoreAnyFunction("github.com/nats-io/nats-server/v2/server.(*fileStore).syncBlocks"),
		goleak.IgnoreAnyFunction("github.com/nats-io/nats-server/v2/server.ipQueue[...].pop"),
		goleak.IgnoreTopFunction("time.Sleep"),
		goleak.IgnoreTopFunction("net/http.(*persistConn).readLoop"),
		goleak.IgnoreTopFunction("net/http.(*persistConn).writeLoop"),
		goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"),
	}
}

// needFleet skips a test under -short: it builds and runs processes.
func needFleet(t testing.TB) {
	t.Helper()
	if binDir == "" {
		t.Skip("runs the fleet as processes; skipped with -short")
	}
}
