package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

func TestHelpListsEveryFlag(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if err := run(context.Background(), []string{"--help"}, &stdout, &stderr); err != nil {
		t.Fatalf("--help = %v, want nil", err)
	}
	for _, want := range []string{"--listen", "CATALOG_LISTEN", "--database-url", "DATABASE_URL", "--nats-url",
		"--jwks-url", "--jwt-key-file", "--dev-hs256-secret-file", "--skip-migrations", "--stream-replicas", "--stream-placement", "--egress-allow-ports", "INTHUB_EGRESS_ALLOW_PORTS", "--dev"} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("help lacks %q:\n%s", want, stdout.String())
		}
	}
}

func TestBadFlagsAreUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		{"--nope"}, {"extra"}, {"--dev", "maybe"}, {"--skip-migrations", "x"}, {"--stream-replicas", "0"}, {"--stream-placement", "east"}, {"--egress-allow-ports", "8443,x"},
		{"--dev", "--dev-hs256-secret-file", "/nonexistent/secret"},
	} {
		var stdout, stderr bytes.Buffer
		err := run(context.Background(), args, &stdout, &stderr)
		if err == nil || exitCode(err) != 2 {
			t.Errorf("run(%q) = %v (exit %d), want a usage error", args, err, exitCode(err))
		}
	}
}
