package secretaudit

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"go.uber.org/goleak"

	"inthub.dev/events"
	"inthub.dev/pkg/authref"
	"inthub.dev/pkg/connectors"
	"inthub.dev/pkg/connectors/connect"
	"inthub.dev/pkg/connectors/inmemory"
	"inthub.dev/pkg/egress"
	"inthub.dev/services/catalog/store"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// fakeAuditor records audit rows, failing when told to.
type fakeAuditor struct {
	mu   sync.Mutex
	rows []store.SecretResolution
	fail bool
}

func (a *fakeAuditor) AuditSecretResolution(_ context.Context, r store.SecretResolution) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.fail {
		return errors.New("database down")
	}
	a.rows = append(a.rows, r)
	return nil
}

type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestSecretsAuditedPerIntegration: a connector's resolutions reach the
// hook with its tenant, integration and actor; a failing audit is logged
// and the call goes on; the secret is in no row and no log line.
func TestSecretsAuditedPerIntegration(t *testing.T) {
	const secret = "connect-secret-9d1e"
	t.Setenv("INTHUB_CONNECT_TEST_TOKEN", secret)
	var logs logBuffer
	log := slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	aud := &fakeAuditor{}
	audit := New(aud, log)
	resolver := authref.NewResolver(authref.WithHook(audit.Hook), authref.WithLogger(log))
	reg := connectors.NewRegistry()
	reg.Register(inmemory.Info(nil), inmemory.New)
	b, err := connect.New(reg, resolver, egress.Policy{}, connect.WithLogger(log))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	it := events.Integration{ID: "0b5c7d1e-8f7a-4c3b-9a2d-1e2f3a4b5c6d", TenantID: "6f1a2b3c-4d5e-4f60-8a7b-9c0d1e2f3a4b",
		Type: inmemory.Type, Version: 1, Config: json.RawMessage(`{"token":"authref://env/INTHUB_CONNECT_TEST_TOKEN"}`)}
	ctx := connect.WithActor(context.Background(), "alice")

	out, err := b.Test(ctx, it, false)
	if err != nil || out.Result.Status != connectors.StatusHealthy {
		t.Fatalf("test: %v %+v", err, out.Result)
	}
	aud.mu.Lock()
	rows := append([]store.SecretResolution(nil), aud.rows...)
	aud.fail = true
	aud.mu.Unlock()
	if len(rows) != 1 || rows[0].TenantID != it.TenantID || rows[0].IntegrationID != it.ID || rows[0].Actor != "alice" ||
		rows[0].Ref != "authref://env/INTHUB_CONNECT_TEST_TOKEN" || rows[0].Failed {
		t.Fatalf("audit rows %+v", rows)
	}

	// The audit fails: the health check still runs, the failure is logged.
	h, err := b.CheckHealth(ctx, it)
	if err != nil || h.Result.Status != connectors.StatusHealthy {
		t.Fatalf("health with a failing audit: %v %+v", err, h.Result)
	}
	if !strings.Contains(logs.String(), "audit of a secret resolution failed") {
		t.Error("the failed audit was not logged")
	}
	// A resolution outside a Builder's call is not audited, and says so.
	if _, err := resolver.Resolve(context.Background(), "authref://env/INTHUB_CONNECT_TEST_TOKEN"); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(logs.String(), "outside an integration call") {
		t.Error("an unattributed resolution was not logged")
	}
	if strings.Contains(logs.String(), secret) {
		t.Error("the logs contain the secret")
	}
}
