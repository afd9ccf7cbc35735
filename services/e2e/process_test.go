package e2e_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"
)

// process is one service binary that a test starts, kills with SIGKILL,
// stops with SIGTERM and starts again with the same arguments, data
// directory and port, as an orchestrator restarts a crashed container. Its
// output (JSON logs) goes to a file in the test's temporary directory,
// across restarts, so a failure can show its tail.
type process struct {
	tb      testing.TB
	name    string
	path    string
	args    []string
	env     []string
	logPath string
	// health is the address of its /readyz ("" when it serves none).
	health string

	mu      sync.Mutex
	cmd     *exec.Cmd
	done    chan struct{} // closed when the current run has exited
	exitErr error
	killed  bool // the current run was stopped or killed by the test
	starts  int
}

func newProcess(tb testing.TB, name string, args, env []string, health string) *process {
	tb.Helper()
	logDir := tb.TempDir()
	if d := os.Getenv("E2E_LOG_DIR"); d != "" {
		// Kept after the run, for reading what the processes did.
		logDir = d
	}
	p := &process{tb: tb, name: name, path: filepath.Join(binDir, name), args: args, env: env,
		logPath: filepath.Join(logDir, name+".log"), health: health}
	tb.Cleanup(func() {
		if err := p.stop(); err != nil {
			tb.Errorf("%s: %v", p.name, err)
		}
		if tb.Failed() {
			tb.Logf("last lines of %s's log:\n%s", p.name, p.tail(40))
		}
	})
	return p
}

// start runs the binary; it does not wait for readiness (ready does).
func (p *process) start(tb testing.TB) {
	tb.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil && !isClosed(p.done) {
		tb.Fatalf("%s is already running", p.name)
	}
	logf, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		tb.Fatalf("%s: log file: %v", p.name, err)
	}
	p.starts++
	fmt.Fprintf(logf, "---- start %d at %s\n", p.starts, time.Now().UTC().Format(time.RFC3339Nano))
	cmd := exec.Command(p.path, p.args...)
	cmd.Env = p.env
	cmd.Stdout, cmd.Stderr = logf, logf
	// Its own process group: a signal to the test's group (Ctrl-C) does
	// not reach it before the test's cleanup does. Killed with the test
	// process should that die without cleaning up (a panic, a timeout).
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		tb.Fatalf("%s: start: %v", p.name, err)
	}
	done := make(chan struct{})
	p.cmd, p.done, p.killed, p.exitErr = cmd, done, false, nil
	go func() {
		err := cmd.Wait()
		logf.Close()
		p.mu.Lock()
		p.exitErr = err
		p.mu.Unlock()
		close(done)
	}()
}

// kill sends SIGKILL and waits until the process is gone: nothing it had
// not made durable survives.
func (p *process) kill(tb testing.TB) {
	tb.Helper()
	if err := p.sigkill(); err != nil {
		tb.Fatalf("%s: kill: %v", p.name, err)
	}
}

// sigkill is kill for goroutines other than the test's.
func (p *process) sigkill() error {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	if cmd == nil || isClosed(done) {
		p.mu.Unlock()
		return errors.New("not running")
	}
	p.killed = true
	p.mu.Unlock()
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		return err
	}
	<-done
	return nil
}

// stop sends SIGTERM, as an orchestrator does, and waits up to 30s for a
// clean exit (status 0), then kills. It reports an exit the test did not
// cause, or an unclean one.
func (p *process) stop() error {
	p.mu.Lock()
	cmd, done, killed := p.cmd, p.done, p.killed
	p.killed = true
	p.mu.Unlock()
	if cmd == nil {
		return nil
	}
	if isClosed(done) {
		if killed {
			return nil
		}
		return fmt.Errorf("exited by itself: %v", p.exit())
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Signal(syscall.SIGKILL)
		<-done
		return errors.New("did not stop within 30s of SIGTERM; killed")
	}
	if err := p.exit(); err != nil {
		return fmt.Errorf("SIGTERM: unclean exit: %w", err)
	}
	return nil
}

func (p *process) exit() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.exitErr
}

// running reports whether the current run is alive.
func (p *process) running() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cmd != nil && !isClosed(p.done)
}

// ready waits until /readyz answers 200, failing the test if the process
// exits first or d passes.
func (p *process) ready(tb testing.TB, d time.Duration) {
	tb.Helper()
	if p.health == "" {
		return
	}
	client := &http.Client{Timeout: time.Second}
	ok := eventually(d, func() bool {
		if !p.running() {
			tb.Fatalf("%s exited before it was ready: %v\n%s", p.name, p.exit(), p.tail(30))
		}
		resp, err := client.Get("http://" + p.health + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	if !ok {
		tb.Fatalf("%s not ready within %v:\n%s", p.name, d, p.tail(30))
	}
}

// restart starts the process again after kill or stop and waits until it
// is ready.
func (p *process) restart(tb testing.TB, d time.Duration) {
	tb.Helper()
	p.start(tb)
	p.ready(tb, d)
}

// tail is the last n lines of the process's output.
func (p *process) tail(n int) string {
	b, err := os.ReadFile(p.logPath)
	if err != nil {
		return "(no log: " + err.Error() + ")"
	}
	lines := bytes.Split(bytes.TrimRight(b, "\n"), []byte("\n"))
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return string(bytes.Join(lines, []byte("\n")))
}

func isClosed(c chan struct{}) bool {
	if c == nil {
		return true
	}
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// freeAddr picks a loopback address that is free now, for a process that
// must keep its port across restarts.
func freeAddr(tb testing.TB) string {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// eventually polls cond until it holds (true) or d passes (false).
func eventually(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		<-time.After(50 * time.Millisecond)
	}
	return true
}

// poll is eventually that fails the test on timeout.
func poll(tb testing.TB, d time.Duration, what string, cond func() bool) {
	tb.Helper()
	if !eventually(d, cond) {
		tb.Fatalf("timed out after %v waiting for %s", d, what)
	}
}

// runCmd runs a short-lived binary (inthubctl) to completion.
func runCmd(ctx context.Context, env []string, name string, args ...string) (stdout, stderr string, code int, err error) {
	cmd := exec.CommandContext(ctx, filepath.Join(binDir, name), args...)
	cmd.Env = env
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err = cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return out.String(), errb.String(), ee.ExitCode(), nil
	}
	return out.String(), errb.String(), 0, err
}
