package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

func TestHelpExitsZero(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if err := run(context.Background(), []string{"--help"}, &stdout, &stderr); err != nil {
		t.Fatalf("--help = %v, want nil", err)
	}
	for _, want := range []string{"--nats-url", "NATS_URL", "--listen", "HEALTHPOLLER_LISTEN", "127.0.0.1:8081", "--data-dir", "--default-interval", "--max-concurrent", "--max-per-provider", "--dev",
		"--partitions", "HEALTHPOLLER_PARTITIONS", "--lease-ttl", "15s", "--lease-renew", "HEALTHPOLLER_LEASE_RENEW", "--stream-replicas", "--stream-placement", "--replica-id", "--egress-allow-ports", "INTHUB_EGRESS_ALLOW_PORTS"} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("help lacks %q:\n%s", want, stdout.String())
		}
	}
}

func TestBadFlagsAreUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		{"--nope"}, {"extra"}, {"--default-interval", "soon"}, {"--max-concurrent", "0"},
		{"--max-per-provider", "x"}, {"--dev", "maybe"}, {"--data-dir", ""},
		{"--partitions", "0"}, {"--lease-ttl", "500ms"}, {"--lease-ttl", "10s", "--lease-renew", "6s"}, {"--lease-renew", "never"},
		{"--stream-replicas", "0"}, {"--stream-placement", "east"}, {"--egress-allow-ports", "0"},
	} {
		var stdout, stderr bytes.Buffer
		err := run(context.Background(), args, &stdout, &stderr)
		if err == nil || exitCode(err) != 2 {
			t.Errorf("run(%q) = %v (exit %d), want a usage error", args, err, exitCode(err))
		}
	}
}
