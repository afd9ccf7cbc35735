package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestDoctorEndToEnd: inthubctl doctor against the real catalog (API,
// PostgreSQL, the doctor wired in by catalog.New): the table, -o json,
// the exit status by verdict (0, 3, 4; 1 when the API refuses), --last
// and --evidence.
func TestDoctorEndToEnd(t *testing.T) {
	server, token := startCatalog(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	env := map[string]string{"INTHUB_SERVER": server, "INTHUB_TOKEN": token}
	run := func(args ...string) result { t.Helper(); return runWith(ctx, env, args...) }
	create := func(name, config string) string {
		t.Helper()
		r := run("integrations", "create", "--type", "test.inmemory", "--name", name, "--config", config, "-o", "json")
		var it struct {
			ID string `json:"id"`
		}
		if err := json.Unmarshal([]byte(r.stdout), &it); err != nil || r.code != exitOK {
			t.Fatalf("create %s: exit %d, %v\n%s", name, r.code, err, r.stderr)
		}
		return it.ID
	}
	healthy := create("doc-ok", `{"healthy": true}`)
	degraded := create("doc-degraded", `{"script": ["degraded"]}`)
	failing := create("doc-bad", `{"failWith": "permanent"}`)

	r := run("doctor", healthy)
	if r.code != exitOK || !regexp.MustCompile(`(?m)^Overall:\s+HEALTHY$`).MatchString(r.stdout) ||
		!regexp.MustCompile(`(?m)^authentication\s+pass\s+`).MatchString(r.stdout) ||
		!regexp.MustCompile(`(?m)^connectivity\s+skip\s+the integration has no network endpoint`).MatchString(r.stdout) {
		t.Errorf("healthy: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}

	r = run("doctor", degraded, "-o", "json")
	var rep struct {
		RunID         string `json:"runId"`
		OverallStatus string `json:"overallStatus"`
		Checks        []struct {
			Name   string `json:"name"`
			Status string `json:"status"`
		} `json:"checks"`
		Evidence string `json:"evidence"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil || r.code != exitDegraded || rep.OverallStatus != "degraded" {
		t.Fatalf("degraded -o json: exit %d, %v\n%s\n%s", r.code, err, r.stdout, r.stderr)
	}

	r = run("doctor", failing)
	if r.code != exitUnhealthy || !regexp.MustCompile(`(?m)^Overall:\s+UNHEALTHY$`).MatchString(r.stdout) ||
		!regexp.MustCompile(`(?m)^authentication\s+fail\s+`).MatchString(r.stdout) ||
		!strings.Contains(r.stdout, "\nauthentication (fail):\n  - Check that the integration's AuthRef") {
		t.Errorf("failing: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}

	// --last shows the stored run without starting one; --evidence writes
	// its JSONL log.
	file := filepath.Join(t.TempDir(), "evidence.jsonl")
	r = run("doctor", degraded, "--last", "--evidence", file, "-o", "json")
	var last struct {
		RunID string `json:"runId"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &last); err != nil || r.code != exitDegraded || last.RunID != rep.RunID {
		t.Errorf("--last: exit %d, %v, run %q want %q\n%s", r.code, err, last.RunID, rep.RunID, r.stderr)
	}
	b, err := os.ReadFile(file)
	if err != nil || string(b) != rep.Evidence || !strings.Contains(string(b), `"doctor_command":"POST /api/v1/integrations/{id}/doctor"`) {
		t.Errorf("evidence file: %v\n%s", err, b)
	}

	r = run("doctor", "7b1d2a4e-0000-4000-8000-000000000000")
	if r.code != exitError || !strings.HasPrefix(r.stderr, "error: Not Found (404)") {
		t.Errorf("unknown id: exit %d, %q", r.code, r.stderr)
	}
	r = run("doctor")
	if r.code != exitUsage {
		t.Errorf("no id: exit %d, %q", r.code, r.stderr)
	}
}
