package store

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/goleak"

	"inthub.dev/events"
	"inthub.dev/pkg/pgtest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// env is a fresh migrated database with the test types seeded, a pool as
// the owner (superuser here: it reads every tenant's rows, to check what
// the store wrote) and a Store on a pool as inthub_app.
type env struct {
	db    *pgtest.DB
	owner *pgxpool.Pool
	app   *pgxpool.Pool
	store *Store
}

var testTypes = []IntegrationType{
	{ID: "scm.github", DisplayName: "GitHub", Provider: "github", ConfigSchema: json.RawMessage(`{"type":"object"}`), Capabilities: []string{"test", "health", "annotate"}, Builtin: true},
	{ID: "registry.harbor", DisplayName: "Harbor", Provider: "harbor", ConfigSchema: json.RawMessage(`{"type":"object"}`), Capabilities: []string{"test", "health", "discovery"}, Builtin: true},
	{ID: "test.inmemory", DisplayName: "In-memory", Provider: "test", ConfigSchema: json.RawMessage(`{"type":"object"}`), Builtin: true},
}

func newEnv(tb testing.TB, opts ...Option) *env {
	tb.Helper()
	db := pgtest.New(tb)
	e := &env{db: db, owner: pgtest.Pool(tb, db.OwnerURL), app: pgtest.Pool(tb, db.AppURL)}
	if err := SeedTypes(context.Background(), e.owner, testTypes); err != nil {
		tb.Fatalf("seed types: %v", err)
	}
	e.store = New(e.app, opts...)
	return e
}

func ctxT(tb testing.TB) context.Context {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	tb.Cleanup(cancel)
	return ctx
}

func newTenant() string { return uuid.NewString() }

func mustCreate(tb testing.TB, s *Store, tenant, name string) Integration {
	tb.Helper()
	it, err := s.CreateIntegration(context.Background(), tenant, "alice", IntegrationInput{
		Type: "scm.github", Name: name,
		Config:  json.RawMessage(`{"endpoint":"https://github.com","appId":42,"privateKey":"authref://vault/gh#key"}`),
		AuthRef: "authref://env/GH_TOKEN",
	})
	if err != nil {
		tb.Fatalf("create %q in %s: %v", name, tenant, err)
	}
	return it
}

type outboxRow struct {
	TenantID, AggregateID, Subject, EventID string
	Partition                               int
	Payload                                 []byte
}

// outboxRows reads a tenant's outbox rows in commit order, as the owner.
func outboxRows(tb testing.TB, owner *pgxpool.Pool, tenant string) []outboxRow {
	tb.Helper()
	rows, err := owner.Query(context.Background(),
		`SELECT tenant_id::text, aggregate_id::text, subject, event_id::text, partition, payload
		 FROM outbox WHERE tenant_id = $1 ORDER BY id`, tenant)
	if err != nil {
		tb.Fatal(err)
	}
	defer rows.Close()
	var out []outboxRow
	for rows.Next() {
		var r outboxRow
		if err := rows.Scan(&r.TenantID, &r.AggregateID, &r.Subject, &r.EventID, &r.Partition, &r.Payload); err != nil {
			tb.Fatal(err)
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		tb.Fatal(err)
	}
	return out
}

func countRows(tb testing.TB, owner *pgxpool.Pool, query string, args ...any) int {
	tb.Helper()
	var n int
	if err := owner.QueryRow(context.Background(), query, args...).Scan(&n); err != nil {
		tb.Fatalf("%s: %v", query, err)
	}
	return n
}

func wantErr(tb testing.TB, err, target error) {
	tb.Helper()
	if !errors.Is(err, target) {
		tb.Fatalf("error = %v, want %v", err, target)
	}
}

// parseOutbox parses an outbox payload as a consumer would.
func parseOutbox(tb testing.TB, r outboxRow) events.Event {
	tb.Helper()
	ev, err := events.Parse(r.Payload)
	if err != nil {
		tb.Fatalf("outbox payload of %s does not parse: %v\n%s", r.Subject, err, r.Payload)
	}
	if ev.Type != r.Subject || ev.ID != r.EventID || ev.TenantID != r.TenantID {
		tb.Fatalf("outbox row %+v disagrees with its event %+v", r, ev)
	}
	return ev
}

// jsonEqual compares two JSON documents by value.
func jsonEqual(tb testing.TB, a, b []byte) bool {
	tb.Helper()
	var x, y any
	if err := json.Unmarshal(a, &x); err != nil {
		tb.Fatalf("%s: %v", a, err)
	}
	if err := json.Unmarshal(b, &y); err != nil {
		tb.Fatalf("%s: %v", b, err)
	}
	xa, _ := json.Marshal(x)
	ya, _ := json.Marshal(y)
	return string(xa) == string(ya)
}
