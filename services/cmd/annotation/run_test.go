package main

import (
	"bytes"
	"context"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestHelpExitsZero(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if err := run(context.Background(), []string{"--help"}, &stdout, &stderr); err != nil {
		t.Fatalf("--help = %v, want nil", err)
	}
	for _, want := range []string{"--nats-url", "NATS_URL", "--listen", "ANNOTATION_LISTEN", "127.0.0.1:8082",
		"--data-dir", "--writes-per-second", "--writes-per-minute", "--offline-after", "--ack-wait", "ANNOTATION_ACK_WAIT", "--egress-allow-ports", "INTHUB_EGRESS_ALLOW_PORTS", "--dev"} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("help lacks %q:\n%s", want, stdout.String())
		}
	}
}

// A shorter ack wait brings a killed worker's requests back sooner; the
// end-to-end tests kill the process and need that.
func TestAckWaitFlag(t *testing.T) {
	var out bytes.Buffer
	cfg, _, _, _, err := parse([]string{"--ack-wait", "5s"}, &out, &out)
	if err != nil || cfg.AckWait != 5*time.Second {
		t.Fatalf("--ack-wait 5s: AckWait %v, err %v", cfg.AckWait, err)
	}
	if cfg, _, _, _, err = parse([]string{"--egress-allow-ports", "8443,8080"}, &out, &out); err != nil ||
		!slices.Equal(cfg.Egress.AllowPorts, []int{8443, 8080}) {
		t.Fatalf("--egress-allow-ports 8443,8080: %v, err %v", cfg.Egress.AllowPorts, err)
	}
	t.Setenv("ANNOTATION_ACK_WAIT", "7s")
	if cfg, _, _, _, err = parse(nil, &out, &out); err != nil || cfg.AckWait != 7*time.Second {
		t.Fatalf("ANNOTATION_ACK_WAIT=7s: AckWait %v, err %v", cfg.AckWait, err)
	}
}

func TestBadFlagsAreUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		{"--nope"}, {"extra"}, {"--concurrency", "0"}, {"--writes-per-second", "fast"},
		{"--writes-per-minute", "-1"}, {"--offline-after", "soon"}, {"--ack-wait", "0s"}, {"--egress-allow-ports", "https"}, {"--dev", "maybe"}, {"--data-dir", ""},
	} {
		var stdout, stderr bytes.Buffer
		err := run(context.Background(), args, &stdout, &stderr)
		if err == nil || exitCode(err) != 2 {
			t.Errorf("run(%q) = %v (exit %d), want a usage error", args, err, exitCode(err))
		}
	}
}

func TestFlagsMakeTheConfig(t *testing.T) {
	t.Setenv("ANNOTATION_WRITES_PER_MINUTE", "40")
	var out bytes.Buffer
	cfg, dev, url, _, err := parse([]string{"--writes-per-second", "0.5", "--offline-after", "5m", "--dev=true", "--nats-url", "nats://a:1,nats://b:2"}, &out, &out)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.AccountBudget.PerSecond != 0.5 || cfg.AccountBudget.PerMinute != 40 || cfg.AccountBudget.PerHour != 500 ||
		cfg.HostBudget.PerSecond != 10 || cfg.OfflineAfter != 5*time.Minute || !dev || url != "nats://a:1,nats://b:2" ||
		cfg.Durable != "annotation" || cfg.MaxDeliver != 10 || cfg.AckWait != time.Minute {
		t.Fatalf("cfg = %+v dev=%v url=%s", cfg, dev, url)
	}
}
