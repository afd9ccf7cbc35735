package healthpoller_test

import (
	"encoding/json"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"inthub.dev/events"
	"inthub.dev/pkg/connectors"
	"inthub.dev/pkg/egress"
	"inthub.dev/services/healthpoller"
	"inthub.dev/services/plugins/registry-quay/quaytest"
)

// The poller runs its own plugin host: a registry.quay integration (the
// example plugin, out of process) is checked on schedule against the fake
// Quay and reported healthy; without the binary on the allow-list the
// same integration has no connector. The plugin process ends with Run.
func TestPluginIntegrationIsChecked(t *testing.T) {
	bin, sum := quaytest.Build(t)
	quay := quaytest.New(t, "quay-token", "acme", "api", "web")
	t.Setenv("QUAY_TEST_TOKEN", "quay-token")
	u, _ := url.Parse(quay.URL)
	port, _ := strconv.Atoi(u.Port())
	pol := egress.Policy{AllowLoopback: true, AllowHTTP: true, AllowPorts: []int{port}}
	cfg, _ := json.Marshal(map[string]any{"endpoint": quay.URL, "namespace": "acme"})

	for _, tc := range []struct {
		name    string
		allowed []string
		want    events.HealthStatus
	}{
		{"allowed", []string{sum}, events.HealthHealthy},
		// Another binary's sum: the plugin is refused, its type unknown.
		{"not allowed", []string{strings.Repeat("0", 64)}, events.HealthUnknown},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			in := integration(1, string(cfg))
			in.Type, in.AuthRef = "registry.quay", "authref://env/QUAY_TEST_TOKEN"
			e.put(in)
			calls := quay.Calls.Load()
			r := e.start(t.TempDir(), func(c *healthpoller.Config) {
				// A registry of its own: the built-ins are not needed, and
				// the test does not touch the process-wide one.
				c.Registry = connectors.NewRegistry()
				c.PluginDirs, c.PluginChecksums = []string{filepath.Dir(bin)}, tc.allowed
				c.Egress = pol
			})
			var got []checked
			waitFor(t, 20*time.Second, "a check of the plugin's integration", func() bool {
				got = byID(e.checks())[in.ID]
				return len(got) > 0
			})
			c := got[0]
			if c.Status != tc.want || c.Type != "registry.quay" {
				t.Fatalf("health_checked = %+v, want status %s", c.HealthChecked, tc.want)
			}
			if tc.want == events.HealthUnknown {
				if !strings.Contains(c.Message, "registry.quay") {
					t.Errorf("message %q does not name the type without a connector", c.Message)
				}
				if n := quay.Calls.Load() - calls; n != 0 {
					t.Errorf("quay got %d authenticated calls from a refused plugin", n)
				}
			} else if quay.Calls.Load() == calls {
				t.Error("healthy without an authenticated call to quay: the token did not travel")
			}
			r.stop(t)
			if pids := processesOf(t, bin); len(pids) > 0 {
				t.Errorf("plugin processes %v still running after Run returned", pids)
			}
		})
	}
}

// processesOf lists the processes running the executable path.
func processesOf(t *testing.T, path string) []int {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Skipf("no /proc to look for processes in: %v", err)
	}
	var out []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if exe, err := os.Readlink(filepath.Join("/proc", e.Name(), "exe")); err == nil && exe == path {
			out = append(out, pid)
		}
	}
	return out
}
