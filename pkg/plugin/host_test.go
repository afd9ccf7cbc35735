package plugin_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/cenkalti/backoff/v4"
	"go.uber.org/goleak"

	"inthub.dev/pkg/connectors"
	"inthub.dev/pkg/egress"
	"inthub.dev/pkg/fault"
	"inthub.dev/pkg/plugin"
)

// binaries built once for the package: the test plugin, the same for a
// protocol the host does not speak, and for a type a built-in owns.
var bins struct{ v1, v2, dup string }

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "plugin-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	bins.v1 = filepath.Join(dir, "v1")
	bins.v2 = filepath.Join(dir, "v2")
	bins.dup = filepath.Join(dir, "dup")
	for _, b := range []struct{ out, ldflags string }{
		{bins.v1, ""},
		{bins.v2, "-X main.protocol=2"},
		{bins.dup, "-X main.pluginType=test.builtin"},
	} {
		cmd := exec.Command("go", "build", "-ldflags", b.ldflags, "-o", b.out, "./internal/testplugin")
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			fmt.Fprintln(os.Stderr, "build test plugin:", err)
			os.Exit(1)
		}
	}
	code := m.Run()
	_ = os.RemoveAll(dir)
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

const token = "s3cret-token"

// api is the provider the test plugin pings: it wants the bearer token,
// and can be told to hang until released (to kill the plugin mid-call) or
// to fail with a status.
type api struct {
	*httptest.Server
	status  atomic.Int32
	hang    atomic.Bool
	entered chan struct{}
	release chan struct{}
}

func newAPI(t *testing.T) *api {
	a := &api{entered: make(chan struct{}, 8), release: make(chan struct{})}
	a.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer "+token {
			http.Error(w, `{"error":"unauthorized"}`, http.StatusUnauthorized)
			return
		}
		if a.hang.Load() {
			a.entered <- struct{}{}
			select {
			case <-a.release:
			case <-r.Context().Done():
			}
			return
		}
		if s := a.status.Load(); s != 0 {
			w.WriteHeader(int(s))
			return
		}
		_, _ = io.WriteString(w, "pong")
	}))
	t.Cleanup(func() {
		close(a.release)
		a.Close()
	})
	return a
}

// secrets resolves the one AuthRef the tests use.
type secrets struct{}

func (secrets) Resolve(_ context.Context, ref string) ([]byte, error) {
	if ref == "authref://env/TEST_TOKEN" {
		return []byte(token), nil
	}
	return nil, fault.Permanentf("unknown ref")
}

func install(t *testing.T, bin, dir, name string) (path, sum string) {
	t.Helper()
	b, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	path = filepath.Join(dir, name)
	if err := os.WriteFile(path, b, 0o755); err != nil {
		t.Fatal(err)
	}
	sum, err = plugin.FileChecksum(path)
	if err != nil {
		t.Fatal(err)
	}
	return path, sum
}

// newHost scans dir; the egress policy lets the plugin reach a (nil: no
// provider).
func newHost(t *testing.T, reg *connectors.Registry, dir string, a *api, allowed ...string) *plugin.Host {
	t.Helper()
	pol := egress.Policy{AllowLoopback: true, AllowHTTP: true}
	if a != nil {
		u, err := url.Parse(a.URL)
		if err != nil {
			t.Fatal(err)
		}
		port, _ := strconv.Atoi(u.Port())
		pol.AllowPorts = []int{port}
	}
	h, err := plugin.New(plugin.Config{
		Dirs: []string{dir}, Allowed: allowed, Registry: reg,
		Egress: pol,
		Logger: slog.New(slog.NewTextHandler(testWriter{t}, nil)),
		Backoff: func() backoff.BackOff {
			return backoff.NewConstantBackOff(50 * time.Millisecond)
		},
		PollInterval: 50 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = h.Close() })
	return h
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

func connector(t *testing.T, reg *connectors.Registry, a *api) connectors.Connector {
	t.Helper()
	cfg, _ := json.Marshal(map[string]string{"endpoint": a.URL})
	c, err := reg.New(connectors.Config{IntegrationID: "0191a3c4-0000-7000-8000-000000000001", TenantID: "0191a3c4-0000-7000-8000-000000000002",
		Type: "test.plugin", Config: cfg, AuthRef: "authref://env/TEST_TOKEN", Secrets: secrets{},
		HTTPClient: &http.Client{Timeout: 5 * time.Second}})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	if err := c.(connectors.Provisioner).Provision(context.Background()); err != nil {
		t.Fatalf("Provision: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func TestDiscoverRegistersAndRemovalUnregisters(t *testing.T) {
	a := newAPI(t)
	dir := t.TempDir()
	_, sum := install(t, bins.v1, dir, "inthub-plugin-test")
	reg := connectors.NewRegistry()
	h := newHost(t, reg, dir, a, sum)

	rep, err := h.Discover(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Registered) != 1 || len(rep.Refused) != 0 {
		t.Fatalf("report = %+v", rep)
	}
	got := rep.Registered[0]
	if got.ID != "testplugin" || got.Type != "test.plugin" || got.Version != "0.1.0" || got.Checksum != sum || got.Pid == 0 {
		t.Fatalf("registered = %+v", got)
	}
	info, ok := reg.Lookup("test.plugin")
	if !ok || info.Provider != "testplugin" || len(info.ConfigSchema) == 0 {
		t.Fatalf("registry: %+v %v", info, ok)
	}

	c := connector(t, reg, a)
	if res := c.TestConnection(context.Background()); res.Status != connectors.StatusHealthy {
		t.Fatalf("TestConnection = %+v", res)
	}
	page, err := c.(connectors.Discoverer).ListRepositories(context.Background(), connectors.ListOptions{})
	if err != nil || len(page.Items) != 1 || page.Items[0].FullName != "acme/api" {
		t.Fatalf("ListRepositories = %+v, %v", page, err)
	}

	// A second scan of the same directory changes nothing.
	rep, err = h.Discover(context.Background())
	if err != nil || len(rep.Registered)+len(rep.Unregistered) != 0 || len(rep.Plugins) != 1 {
		t.Fatalf("rescan = %+v, %v", rep, err)
	}

	if err := os.Remove(filepath.Join(dir, "inthub-plugin-test")); err != nil {
		t.Fatal(err)
	}
	rep, err = h.Discover(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Unregistered) != 1 || rep.Unregistered[0].Type != "test.plugin" || len(rep.Plugins) != 0 {
		t.Fatalf("after removal = %+v", rep)
	}
	if _, ok := reg.Lookup("test.plugin"); ok {
		t.Fatal("type still registered after its binary was removed")
	}
	// A connector built before fails transient, not with a panic.
	res := c.TestConnection(context.Background())
	if res.Class != fault.ClassTransient {
		t.Fatalf("call after unload = %+v", res)
	}
}

func TestErrorClassesCrossTheWire(t *testing.T) {
	a := newAPI(t)
	dir := t.TempDir()
	_, sum := install(t, bins.v1, dir, "p")
	reg := connectors.NewRegistry()
	h := newHost(t, reg, dir, a, sum)
	if _, err := h.Discover(context.Background()); err != nil {
		t.Fatal(err)
	}
	c := connector(t, reg, a)
	tests := []struct {
		status int
		want   fault.Class
	}{
		{http.StatusServiceUnavailable, fault.ClassTransient},
		{http.StatusTooManyRequests, fault.ClassTransient},
		{http.StatusNotFound, fault.ClassPermanent},
	}
	for _, tt := range tests {
		t.Run(http.StatusText(tt.status), func(t *testing.T) {
			a.status.Store(int32(tt.status))
			defer a.status.Store(0)
			res := c.CheckHealth(context.Background())
			if res.Status != connectors.StatusUnhealthy || res.Class != tt.want {
				t.Fatalf("result = %+v", res)
			}
			var fe *fault.Error
			if !errors.As(res.Err, &fe) || fe.Class != tt.want {
				t.Fatalf("errors.As(%v) = %v", res.Err, fe)
			}
			var re *plugin.RemoteError
			if !errors.As(res.Err, &re) || !strings.Contains(re.Message, fmt.Sprint(tt.status)) {
				t.Fatalf("RemoteError = %v", re)
			}
			if len(res.Checks) != 1 || res.Checks[0].Class != tt.want || fault.ClassOf(res.Checks[0].Err) != tt.want {
				t.Fatalf("checks = %+v", res.Checks)
			}
		})
	}

	// A bad config is permanent, from Validate.
	bad, err := reg.New(connectors.Config{Type: "test.plugin", Config: json.RawMessage(`{"endpoint":"x","nope":1}`)})
	if err != nil {
		t.Fatal(err)
	}
	if err := bad.Validate(); fault.ClassOf(err) != fault.ClassPermanent || !strings.Contains(err.Error(), "nope") {
		t.Fatalf("Validate = %v (%v)", err, fault.ClassOf(err))
	}
	// So is a token the provider refuses (the secret is the host's to send).
	wrong, _ := reg.New(connectors.Config{Type: "test.plugin", Config: json.RawMessage(`{"endpoint":"` + a.URL + `"}`),
		AuthRef: "authref://env/OTHER", Secrets: secrets{}})
	if err := wrong.(connectors.Provisioner).Provision(context.Background()); fault.ClassOf(err) != fault.ClassPermanent {
		t.Fatalf("Provision with an unknown ref = %v", err)
	}
}

func TestCrashMidCallFailsTransientAndRestarts(t *testing.T) {
	a := newAPI(t)
	dir := t.TempDir()
	_, sum := install(t, bins.v1, dir, "p")
	reg := connectors.NewRegistry()
	h := newHost(t, reg, dir, a, sum)
	if _, err := h.Discover(context.Background()); err != nil {
		t.Fatal(err)
	}
	c := connector(t, reg, a)
	pid := h.Plugins()[0].Pid

	a.hang.Store(true)
	done := make(chan connectors.Result, 1)
	go func() { done <- c.TestConnection(context.Background()) }()
	select {
	case <-a.entered:
	case <-time.After(10 * time.Second):
		t.Fatal("the plugin's call never reached the provider")
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	var res connectors.Result
	select {
	case res = <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the call in flight did not end when the plugin died")
	}
	a.hang.Store(false)
	var ue *plugin.UnavailableError
	if res.OK() || res.Class != fault.ClassTransient || !errors.As(res.Err, &ue) {
		t.Fatalf("call in flight = %+v", res)
	}

	// The next call waits for the restart and works.
	res = c.TestConnection(context.Background())
	deadline := time.Now().Add(15 * time.Second)
	for !res.OK() && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond) // polling the outcome, with a deadline
		res = c.TestConnection(context.Background())
	}
	if !res.OK() {
		t.Fatalf("after restart = %+v", res)
	}
	info := h.Plugins()[0]
	if info.Restarts != 1 || info.Pid == pid || info.Pid == 0 {
		t.Fatalf("info after restart = %+v (old pid %d)", info, pid)
	}

	// A crash while idle is noticed by the supervisor alone.
	if err := syscall.Kill(info.Pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	deadline = time.Now().Add(15 * time.Second)
	for h.Plugins()[0].Restarts < 2 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if got := h.Plugins()[0]; got.Restarts != 2 || got.Pid == 0 {
		t.Fatalf("idle crash not restarted: %+v", got)
	}
	if res := c.CheckHealth(context.Background()); !res.OK() {
		t.Fatalf("after idle restart = %+v", res)
	}
}

func TestRefusals(t *testing.T) {
	notPlugin := filepath.Join(t.TempDir(), "script")
	if err := os.WriteFile(notPlugin, []byte("#!/bin/sh\necho not a plugin\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	reg := connectors.NewRegistry()
	reg.Register(connectors.Info{Type: "test.builtin", Provider: "builtin"}, func(connectors.Config) (connectors.Connector, error) {
		return nil, errors.New("unused")
	})
	tests := []struct {
		name    string
		bin     string
		listed  bool
		reason  string
		present string // a type that must (still) be registered
	}{
		{"unlisted checksum", bins.v1, false, "not on the plugin allow-list", ""},
		{"not a plugin", notPlugin, true, "does not start as a connector plugin", ""},
		{"unknown protocol version", bins.v2, true, "does not start as a connector plugin", ""},
		{"type of a built-in", bins.dup, true, "already provided", "test.builtin"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			_, sum := install(t, tt.bin, dir, "p")
			var allowed []string
			if tt.listed {
				allowed = append(allowed, sum)
			}
			h := newHost(t, reg, dir, nil, allowed...)
			rep, err := h.Discover(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if len(rep.Registered) != 0 || len(rep.Refused) != 1 || !strings.Contains(rep.Refused[0].Reason, tt.reason) ||
				rep.Refused[0].Checksum != sum {
				t.Fatalf("report = %+v", rep)
			}
			if _, ok := reg.Lookup("test.plugin"); ok {
				t.Fatal("a refused plugin's type was registered")
			}
			if tt.present != "" {
				if _, ok := reg.Lookup(tt.present); !ok {
					t.Fatalf("%s was unregistered", tt.present)
				}
			}
		})
	}
}

func TestParseChecksums(t *testing.T) {
	const a = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
	tests := []struct {
		name, in string
		want     []string
		err      bool
	}{
		{"sha256sum output", a + "  registry-quay\n", []string{a}, false},
		{"bare, comments, blanks", "# plugins\n\n" + strings.ToUpper(a) + "\n", []string{a}, false},
		{"prefixed", "sha256:" + a, []string{a}, false},
		{"short", "abc  x", nil, true},
		{"not hex", strings.Repeat("z", 64), nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := plugin.ParseChecksums(strings.NewReader(tt.in))
			if (err != nil) != tt.err || fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Fatalf("got %v, %v", got, err)
			}
		})
	}
}

// The host's egress policy travels with each call and the sdk's client
// enforces it: a port the policy does not allow is refused in the plugin,
// permanently, before any request leaves.
func TestEgressPolicyAppliesInThePlugin(t *testing.T) {
	a := newAPI(t)
	dir := t.TempDir()
	_, sum := install(t, bins.v1, dir, "p")
	reg := connectors.NewRegistry()
	h := newHost(t, reg, dir, nil, sum) // loopback and http allowed, not the API's port
	if _, err := h.Discover(context.Background()); err != nil {
		t.Fatal(err)
	}
	a.hang.Store(true) // a request that got through would be announced on entered
	res := connector(t, reg, a).TestConnection(context.Background())
	if res.OK() || res.Class != fault.ClassPermanent || !strings.Contains(res.Message, "not allowed by the egress policy") {
		t.Fatalf("result = %+v", res)
	}
	if len(a.entered) != 0 {
		t.Fatal("the request reached the provider")
	}
}

// Watch follows the directory without anyone calling Discover.
func TestWatchFollowsTheDirectory(t *testing.T) {
	dir := t.TempDir()
	sum, err := plugin.FileChecksum(bins.v1)
	if err != nil {
		t.Fatal(err)
	}
	reg := connectors.NewRegistry()
	h := newHost(t, reg, dir, nil, sum)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.Watch(ctx, 20*time.Millisecond) }()
	defer func() {
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("Watch = %v", err)
		}
	}()

	waitFor := func(present bool) {
		t.Helper()
		deadline := time.Now().Add(15 * time.Second)
		for {
			if _, ok := reg.Lookup("test.plugin"); ok == present {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("type registered = %v after 15 s, want %v", !present, present)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	install(t, bins.v1, dir, "p")
	waitFor(true)
	if err := os.Remove(filepath.Join(dir, "p")); err != nil {
		t.Fatal(err)
	}
	waitFor(false)
}
