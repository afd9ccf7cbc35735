package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"inthub.dev/services/internal/devfleet"
)

// The services' plugin, doctor and Vault options reach the fleet's Deps:
// parsed and checked as the services' own binaries check them.
func TestDevPassesServiceFlags(t *testing.T) {
	dir := t.TempDir()
	const sum = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	sums := filepath.Join(dir, "plugins.sha256")
	token := filepath.Join(dir, "token")
	for p, content := range map[string]string{sums: sum + "  registry-quay\n", token: "hvs.x\n"} {
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	started := make(chan devfleet.Deps, 1)
	builders := []devfleet.Builder{{
		Name: "probe",
		Build: func(d devfleet.Deps) (devfleet.Component, error) {
			return devfleet.Func{N: "probe", F: func(ctx context.Context) error {
				started <- d
				<-ctx.Done()
				return ctx.Err()
			}}, nil
		},
	}}
	t.Setenv("INTHUB_VAULT_KV1_MOUNTS", "legacy")
	r := startDev(t, builders, "--nats-url=", "--data-dir", t.TempDir(), "--nats-port", "0",
		"--database-url", "postgres://postgres@127.0.0.1:1/inthub?sslmode=disable&connect_timeout=2",
		"--plugin-dir", "bin/plugins", "--plugin-checksums", sums, "--doctor-packs-dir", "packs",
		"--vault-addr", "https://vault.internal:8200", "--vault-token-file", token)
	var d devfleet.Deps
	select {
	case d = <-started:
	case <-time.After(30 * time.Second):
		t.Fatal("component never started")
	}
	if !slices.Equal(d.PluginDirs, []string{"bin/plugins"}) || !slices.Equal(d.PluginChecksums, []string{sum}) || d.DoctorPacksDir != "packs" {
		t.Errorf("deps: plugins %q %q, doctor packs %q", d.PluginDirs, d.PluginChecksums, d.DoctorPacksDir)
	}
	if v := d.Vault; v == nil || v.Address != "https://vault.internal:8200" || v.TokenFile != token || !slices.Equal(v.KV1Mounts, []string{"legacy"}) {
		t.Errorf("deps: vault %+v", v)
	}
	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}
}

func TestDevServiceFlagMistakes(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--plugin-dir", "bin/plugins"}, "needs --plugin-checksums"},
		{[]string{"--vault-addr", "https://vault:8200"}, "say how to log in"},
		{[]string{"--vault-approle-role-id", "r"}, "needs --vault-addr"},
	} {
		_, err := parseDevFlags(tc.args, &bytes.Buffer{}, &bytes.Buffer{})
		if exitCode(err) != 2 || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: %v (exit %d); want a usage error containing %q", tc.args, err, exitCode(err), tc.want)
		}
	}
}
