package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"
)

var (
	demoLineRE = regexp.MustCompile(`(?m)^  (demo-[a-z-]+)\s+([0-9a-f-]{36})\s+.*?( \(created\))?$`)
	tokenRE    = regexp.MustCompile(`export INTHUB_TOKEN=(\S+)`)
	apiRE      = regexp.MustCompile(`Catalog API  (http://127\.0\.0\.1:\d+)/api/v1`)
)

// demoLines waits for the demo block and returns name → id, and which
// were created by this run.
func (r *devRun) demoLines(t *testing.T) (ids map[string]string, created map[string]bool) {
	t.Helper()
	eventually(t, "the demo integrations printed", 60*time.Second, func() error {
		select {
		case err := <-r.done:
			r.done <- err
			t.Fatalf("inthub dev exited early: %v\nstderr:\n%s", err, r.stderr.String())
		default:
		}
		ids, created = map[string]string{}, map[string]bool{}
		for _, m := range demoLineRE.FindAllStringSubmatch(r.stdout.String(), -1) {
			ids[m[1]] = m[2]
			created[m[1]] = m[3] != ""
		}
		if len(ids) < len(demoIntegrations) {
			return fmt.Errorf("%d demo lines so far:\n%s", len(ids), r.stdout.String())
		}
		return nil
	})
	return ids, created
}

// TestDevSeedsTheDemoOnce runs `inthub dev` twice on one database: the first
// run creates the demo integrations, the second finds them; the poller
// checks them, and the catalog's API shows their health.
func TestDevSeedsTheDemoOnce(t *testing.T) {
	dataDir := t.TempDir()
	dbURL := testDatabase(t)
	args := []string{"--nats-url=", "--data-dir", dataDir, "--nats-port", "0", "--database-url", dbURL,
		"--catalog-listen", "127.0.0.1:0", "--health-poller-listen", "127.0.0.1:0", "--annotation-listen", "127.0.0.1:0", "--enrichment-listen", "127.0.0.1:0", "--webhook-listen", "127.0.0.1:0", "--health-interval", "1s"}

	first := startDev(t, fleet, args...)
	ids, created := first.demoLines(t)
	for _, d := range demoIntegrations {
		if ids[d.Name] == "" || !created[d.Name] {
			t.Errorf("first run: %s id %q created %v", d.Name, ids[d.Name], created[d.Name])
		}
	}
	out := first.stdout.String()
	flaky := ids["demo-flaky"]
	for _, want := range []string{
		"health checked every 1s",
		`curl -s -H "Authorization: Bearer $INTHUB_TOKEN" `,
		"/api/v1/integrations/" + flaky + "/health?limit=5",
		"sub integration.health_changed",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("stdout lacks %q:\n%s", want, out)
		}
	}

	// The poller checks them and the catalog records it: what the printed
	// curl line shows.
	base, token := apiRE.FindStringSubmatch(out), tokenRE.FindStringSubmatch(out)
	if base == nil || token == nil {
		t.Fatalf("no API address or token in the banner:\n%s", out)
	}
	client := &http.Client{Timeout: 5 * time.Second}
	defer client.CloseIdleConnections()
	eventually(t, "demo-always-healthy to read healthy in the API", 30*time.Second, func() error {
		var it struct {
			HealthStatus string `json:"healthStatus"`
		}
		code, err := apiCall(context.Background(), client, http.MethodGet, base[1]+"/api/v1/integrations/"+ids["demo-always-healthy"], token[1], nil, &it)
		if err != nil || code != http.StatusOK {
			return fmt.Errorf("HTTP %d: %v", code, err)
		}
		if it.HealthStatus != "healthy" {
			return errors.New("health " + it.HealthStatus)
		}
		return nil
	})
	if err := first.stop(t); err != nil {
		t.Fatalf("first run: %v", err)
	}

	second := startDev(t, fleet, args...)
	ids2, created2 := second.demoLines(t)
	for _, d := range demoIntegrations {
		if ids2[d.Name] != ids[d.Name] || created2[d.Name] {
			t.Errorf("second run: %s id %q (first %q), created %v; want the same, not created", d.Name, ids2[d.Name], ids[d.Name], created2[d.Name])
		}
	}
	base2, token2 := apiRE.FindStringSubmatch(second.stdout.String()), tokenRE.FindStringSubmatch(second.stdout.String())
	if base2 == nil || token2 == nil {
		t.Fatal("no API address or token in the second banner")
	}
	have, err := integrationsByName(context.Background(), client, base2[1], token2[1])
	if err != nil {
		t.Fatal(err)
	}
	if len(have) != len(demoIntegrations) {
		t.Errorf("the demo tenant has %d integrations after two runs, want %d: %v", len(have), len(demoIntegrations), have)
	}
	if err := second.stop(t); err != nil {
		t.Fatalf("second run: %v", err)
	}
}

func TestDevDemoOff(t *testing.T) {
	cfg, err := parseDevFlags([]string{"--demo=false", "--health-interval", "15s"}, &syncBuffer{}, &syncBuffer{})
	if err != nil || cfg.demo || cfg.healthInterval != 15*time.Second {
		t.Fatalf("parse = %+v, %v", cfg, err)
	}
	for _, args := range [][]string{{"--health-interval", "soon"}, {"--health-interval", "10ms"}, {"--demo", "maybe"}} {
		if _, err := parseDevFlags(args, &syncBuffer{}, &syncBuffer{}); err == nil || exitCode(err) != 2 {
			t.Errorf("%v: %v, want a usage error", args, err)
		}
	}
}
