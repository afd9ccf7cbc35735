package annotation_test

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"inthub.dev/pkg/bus"
	"inthub.dev/pkg/connectors"
	"inthub.dev/pkg/natstest"
	"inthub.dev/services/annotation"
	"inthub.dev/services/plugins/registry-quay/quaytest"
)

// The worker runs its own plugin host: once ready, the example plugin's
// type is in the worker's registry (its builder makes the connectors);
// after Run the plugin process is gone and the type with it.
func TestWorkerLoadsAndStopsPlugins(t *testing.T) {
	bin, sum := quaytest.Build(t)
	srv := natstest.Start(t)
	nc := srv.Connect()
	reg := connectors.NewRegistry()
	svc, err := annotation.New(annotation.Config{
		DataDir: t.TempDir(), Listen: "-", Streams: bus.DefaultStreamSettings(), Registry: reg,
		PluginDirs: []string{filepath.Dir(bin)}, PluginChecksums: []string{sum},
	}, nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx) }()
	t.Cleanup(cancel)
	select {
	case <-svc.Ready():
	case err := <-done:
		t.Fatalf("Run = %v before ready", err)
	case <-time.After(30 * time.Second):
		t.Fatal("not ready")
	}
	if _, ok := reg.Lookup("registry.quay"); !ok {
		t.Fatal("the plugin's type is not in the worker's registry once ready")
	}
	if len(pidsOf(t, bin)) != 1 {
		t.Errorf("plugin processes %v, want 1", pidsOf(t, bin))
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run = %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return")
	}
	if pids := pidsOf(t, bin); len(pids) > 0 {
		t.Errorf("plugin processes %v still running after Run returned", pids)
	}
	if _, ok := reg.Lookup("registry.quay"); ok {
		t.Error("the plugin's type outlived the worker's plugin host")
	}
}

// pidsOf lists the processes running the executable path.
func pidsOf(t *testing.T, path string) []int {
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
