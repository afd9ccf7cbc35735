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
	for _, want := range []string{"--nats-url", "NATS_URL", "--roles", "ENRICHMENT_ROLES", "--listen", "127.0.0.1:8083",
		"--webhook-listen", "ENRICHMENT_WEBHOOK_LISTEN", "127.0.0.1:8090", "--data-dir", "--database-url", "DATABASE_URL",
		"--app-database-url", "--skip-migrations", "--rules-dir", "--window", "--half-life", "--max-matches", "--auto-enrich",
		"--retention", "--poll-interval", "--dev", "poller", "--max-body", "--concurrency", "--max-deliver", "--stream-replicas", "--stream-placement"} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("help lacks %q:\n%s", want, stdout.String())
		}
	}
}

func TestBadFlagsAreUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		{"--nope"}, {"extra"}, {"--roles", "ingress,scanner"}, {"--auto-enrich", "everything"}, {"--window", "soon"},
		{"--half-life", "0s"}, {"--max-matches", "0"}, {"--retention", "forever"}, {"--max-body", "12"},
		{"--concurrency", "x"}, {"--poll-interval", "often"}, {"--dev", "perhaps"}, {"--max-deliver", "0"}, {"--skip-migrations", "maybe"}, {"--data-dir", ""}, {"--stream-replicas", "0"}, {"--stream-placement", "east"},
	} {
		var stdout, stderr bytes.Buffer
		err := run(context.Background(), args, &stdout, &stderr)
		if err == nil || exitCode(err) != 2 {
			t.Errorf("run(%q) = %v (exit %d), want a usage error", args, err, exitCode(err))
		}
	}
}
