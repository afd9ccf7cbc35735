package quaytest

import (
	"os/exec"
	"path/filepath"
	"testing"

	"inthub.dev/pkg/plugin"
)

// Build compiles the registry-quay plugin into a temporary directory of
// tb's and returns the binary's path and its SHA-256, the form a plugin
// host's allow-list takes.
func Build(tb testing.TB) (bin, checksum string) {
	tb.Helper()
	bin = filepath.Join(tb.TempDir(), "registry-quay")
	out, err := exec.Command("go", "build", "-o", bin, "inthub.dev/services/plugins/registry-quay").CombinedOutput()
	if err != nil {
		tb.Fatalf("build the example plugin: %v\n%s", err, out)
	}
	sum, err := plugin.FileChecksum(bin)
	if err != nil {
		tb.Fatal(err)
	}
	return bin, sum
}
