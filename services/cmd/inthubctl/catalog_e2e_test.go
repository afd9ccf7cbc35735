package main

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"inthub.dev/pkg/bus"
	"inthub.dev/pkg/natstest"
	"inthub.dev/pkg/pgtest"
	"inthub.dev/services/catalog"
	"inthub.dev/services/catalog/auth"
)

// startCatalog runs the real catalog service (API, outbox, health
// consumer) on a fresh database and an embedded JetStream, and returns its
// base URL and a dev token for a fresh tenant.
func startCatalog(t *testing.T) (server, token string) {
	t.Helper()
	db := pgtest.New(t)
	ns := natstest.Start(t)
	nc := ns.Connect()
	secret := []byte("inthubctl-end-to-end-test-secret-0123456789")
	svc, err := catalog.New(catalog.Config{
		Listen:      "127.0.0.1:0",
		DatabaseURL: db.OwnerURL,
		Streams:     bus.DefaultStreamSettings(),
		Auth: auth.Config{Issuer: "t", Audience: "inthub", DevMode: true, DevHS256Secret: secret,
			Logger: slog.New(slog.DiscardHandler)},
	}, nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx) }()
	// Registered after natstest's cleanup, so it runs first: the service
	// stops before the NATS server and the database go away.
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("catalog Run: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Error("catalog did not stop within 30s")
		}
	})
	select {
	case <-svc.Ready():
	case err := <-done:
		done <- err
		t.Fatalf("catalog stopped before it was ready: %v", err)
	case <-time.After(60 * time.Second):
		t.Fatal("catalog not ready within 60s")
	}
	token, err = auth.DevToken(secret, "t", "inthub", "inthubctl-test", "22222222-2222-4222-8222-222222222222",
		[]string{"integrations:read", "integrations:write"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return "http://" + svc.Addr().String(), token
}

// The commands against the real catalog API: create → list → update →
// delete, with the API's own ETag and problem documents.
func TestCatalogEndToEnd(t *testing.T) {
	server, token := startCatalog(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	env := map[string]string{"INTHUB_SERVER": server, "INTHUB_TOKEN": token}
	run := func(args ...string) result { t.Helper(); return runWith(ctx, env, args...) }

	r := run("types", "list")
	_, rows := tableRows(t, r.stdout)
	if r.code != exitOK || !slices.ContainsFunc(rows, func(row []string) bool { return row[0] == "test.inmemory" }) {
		t.Fatalf("types list: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	r = run("types", "get", "test.inmemory")
	if r.code != exitOK || !strings.Contains(r.stdout, "healthIntervalSeconds") {
		t.Errorf("types get: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}

	r = run("integrations", "create", "--type", "test.inmemory", "--name", "e2e", "--config", `{"healthy": true, "latencyMs": 5}`,
		"--idempotency-key", "e2e-1", "-o", "json")
	var created struct {
		ID       string          `json:"id"`
		TenantID string          `json:"tenantId"`
		Version  int64           `json:"version"`
		Config   json.RawMessage `json:"config"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &created); err != nil || r.code != exitOK {
		t.Fatalf("create: exit %d, %v\n%s\n%s", r.code, err, r.stdout, r.stderr)
	}
	if created.ID == "" || created.Version != 1 || created.TenantID != "22222222-2222-4222-8222-222222222222" {
		t.Errorf("created = %+v", created)
	}
	// The same key again: the first integration, not a second one.
	r = run("integrations", "create", "--type", "test.inmemory", "--name", "e2e", "--config", `{"healthy": true, "latencyMs": 5}`,
		"--idempotency-key", "e2e-1")
	if _, rows := tableRows(t, r.stdout); r.code != exitOK || len(rows) != 1 || rows[0][0] != created.ID || !strings.Contains(r.stderr, "nothing new was created") {
		t.Errorf("repeated create: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}

	// The API's problem documents, through the CLI.
	r = run("integrations", "create", "--type", "test.inmemory", "--name", "e2e")
	if r.code != exitError || !strings.HasPrefix(r.stderr, "error: Conflict (409): ") || !strings.Contains(r.stderr, "\n  body.name: ") {
		t.Errorf("duplicate name: exit %d, %q", r.code, r.stderr)
	}
	r = run("integrations", "create", "--type", "test.inmemory", "--name", "leaky", "--config", `{"token": "ghp_0123456789abcdefghijklmnopqrstuvwxyzAB"}`)
	if r.code != exitError || !strings.HasPrefix(r.stderr, "error: Unprocessable Entity (422): ") || !strings.Contains(r.stderr, "\n  body.config.token: ") {
		t.Errorf("secret in clear: exit %d, %q", r.code, r.stderr)
	}
	if strings.Contains(r.stderr, "ghp_0123456789") {
		t.Errorf("the secret is echoed: %q", r.stderr)
	}

	r = run("integrations", "list")
	header, rows := tableRows(t, r.stdout)
	if r.code != exitOK || !slices.Equal(header, integrationHeader) || len(rows) != 1 ||
		!slices.Equal(rows[0][:6], []string{created.ID, "e2e", "test.inmemory", "active", "unknown", "1"}) {
		t.Fatalf("list: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}

	r = run("integrations", "update", created.ID, "--name", "e2e-renamed", "--status", "disabled")
	_, rows = tableRows(t, r.stdout)
	if r.code != exitOK || len(rows) != 1 || rows[0][1] != "e2e-renamed" || rows[0][3] != "disabled" || rows[0][5] != "2" {
		t.Fatalf("update: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	// The config was carried over untouched by the GET-then-PUT.
	r = run("integrations", "get", created.ID, "-o", "json")
	var got struct {
		Name    string          `json:"name"`
		Config  json.RawMessage `json:"config"`
		Version int64           `json:"version"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &got); err != nil || r.code != exitOK {
		t.Fatalf("get: exit %d, %v, %s", r.code, err, r.stderr)
	}
	if !jsonEqual(got.Config, created.Config) || got.Version != 2 || got.Name != "e2e-renamed" {
		t.Errorf("after update: %s (version %d), config %s, want config %s", got.Name, got.Version, got.Config, created.Config)
	}

	// A stale version is refused by the API, and nothing changes.
	r = run("integrations", "update", created.ID, "--name", "stale", "--if-match", "1")
	if r.code != exitError || !strings.HasPrefix(r.stderr, "error: Precondition Failed (412): ") || !strings.Contains(r.stderr, "\n  header.If-Match: ") {
		t.Errorf("stale update: exit %d, %q", r.code, r.stderr)
	}
	r = run("integrations", "delete", created.ID, "--if-match", "1")
	if r.code != exitError || !strings.Contains(r.stderr, "(412)") {
		t.Errorf("stale delete: exit %d, %q", r.code, r.stderr)
	}

	r = run("integrations", "delete", created.ID, "--if-match", "2")
	if r.code != exitOK || r.stdout != "deleted integration "+created.ID+"\n" {
		t.Fatalf("delete: exit %d, %q, %s", r.code, r.stdout, r.stderr)
	}
	r = run("integrations", "get", created.ID)
	if r.code != exitError || !strings.HasPrefix(r.stderr, "error: Not Found (404)") {
		t.Errorf("get after delete: exit %d, %q", r.code, r.stderr)
	}
	r = run("integrations", "list", "-o", "json")
	if r.code != exitOK || strings.Join(strings.Fields(r.stdout), "") != `{"items":[]}` {
		t.Errorf("list after delete: exit %d, %q", r.code, r.stdout)
	}

	// A token whose signature does not verify is refused with 401.
	bad := map[string]string{"INTHUB_SERVER": server, "INTHUB_TOKEN": token + "x"}
	r = runWith(ctx, bad, "integrations", "list")
	if r.code != exitError || !strings.HasPrefix(r.stderr, "error: Unauthorized (401)") || !strings.Contains(r.stderr, "hint: ") {
		t.Errorf("forged token: exit %d, %q", r.code, r.stderr)
	}
}

func jsonEqual(a, b json.RawMessage) bool {
	var x, y any
	if errors.Join(json.Unmarshal(a, &x), json.Unmarshal(b, &y)) != nil {
		return false
	}
	xa, _ := json.Marshal(x)
	ya, _ := json.Marshal(y)
	return string(xa) == string(ya)
}
