package catalog_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	"inthub.dev/events"
	"inthub.dev/pkg/bus"
	"inthub.dev/pkg/natstest"
	"inthub.dev/pkg/pgtest"
	"inthub.dev/services/catalog"
	"inthub.dev/services/catalog/auth"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const tenant = "0b5a3bb0-6a43-4d7e-9a39-6f1f9d9a0001"

var secret = []byte("catalog-test-secret-0123456789abcdef")

type fleet struct {
	t     *testing.T
	srv   *natstest.Server
	js    jetstream.JetStream
	db    *pgtest.DB
	base  string
	token string
}

// start runs a real catalog (HTTP API, outbox forwarder, health consumer)
// on a fresh database and an embedded NATS server.
func start(t *testing.T) *fleet {
	t.Helper()
	db := pgtest.New(t)
	srv := natstest.Start(t)
	js, _ := srv.JetStream()
	base := runCatalog(t, db, srv)
	token, err := auth.DevToken(secret, "test", "inthub", "tester", tenant, []string{"integrations:write"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return &fleet{t: t, srv: srv, js: js, db: db, base: base, token: token}
}

// runCatalog runs one more catalog replica on db and srv until the test
// ends and returns its API's base URL.
func runCatalog(t *testing.T, db *pgtest.DB, srv *natstest.Server) string {
	t.Helper()
	nc := srv.Connect()
	svc, err := catalog.New(catalog.Config{
		Listen:         "127.0.0.1:0",
		DatabaseURL:    db.OwnerURL,
		SkipMigrations: true, // pgtest migrated it
		Auth:           auth.Config{Issuer: "test", Audience: "inthub", DevMode: true, DevHS256Secret: secret},
		Logger:         testLogger(),
	}, nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("catalog: %v", err)
		}
	})
	select {
	case <-svc.Ready():
	case err := <-done:
		t.Fatalf("catalog stopped: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("catalog not ready")
	}
	return "http://" + svc.Addr().String()
}

func (f *fleet) call(method, path string, body any, ifMatch string) (int, map[string]any) {
	f.t.Helper()
	var rd bytes.Buffer
	if body != nil {
		_ = json.NewEncoder(&rd).Encode(body)
	}
	req, _ := http.NewRequest(method, f.base+path, &rd)
	req.Header.Set("Authorization", "Bearer "+f.token)
	req.Header.Set("Content-Type", "application/json")
	if ifMatch != "" {
		req.Header.Set("If-Match", ifMatch)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		f.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	var out map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out
}

// A subscriber of the lifecycle events (Scheduler, Signals) with its own
// durable consumer: every API change arrives exactly once, in commit order
// per integration, even when NATS was down while the changes were made,
// and the database connections were cut in the middle.
func TestLifecycleEventsSurviveBusAndDatabaseOutages(t *testing.T) {
	f := start(t)
	ctx := context.Background()

	f.srv.Stop() // the bus is down while the changes are accepted
	type change struct{ subject, id string }
	var want []change
	ids := make([]string, 0, 60)
	for i := range 60 {
		code, it := f.call("POST", "/api/v1/integrations", map[string]any{"type": "test.inmemory", "name": "i" + strconv.Itoa(i), "config": map[string]any{}}, "")
		if code != http.StatusCreated {
			t.Fatalf("create %d: %d %v", i, code, it)
		}
		id := it["id"].(string)
		ids = append(ids, id)
		want = append(want, change{events.SubjectIntegrationCreated, id})
	}
	cutConnections(t, f.db) // as if PostgreSQL restarted
	accepted := 60
	for round := range 3 {
		for i, id := range ids {
			if round == 2 && i%4 == 0 {
				code, out := f.call("DELETE", "/api/v1/integrations/"+id, nil, "")
				if code != http.StatusOK && code != http.StatusNoContent {
					t.Fatalf("delete: %d %v", code, out)
				}
				want = append(want, change{events.SubjectIntegrationDeleted, id})
				accepted++
				continue
			}
			if round == 2 && i%4 != 1 {
				continue
			}
			code, out := f.call("PUT", "/api/v1/integrations/"+id, map[string]any{
				"type": "test.inmemory", "name": fmt.Sprintf("i%d-r%d", i, round), "config": map[string]any{}}, "")
			if code != http.StatusOK {
				t.Fatalf("update: %d %v", code, out)
			}
			want = append(want, change{events.SubjectIntegrationUpdated, id})
			accepted++
		}
		if round == 0 {
			cutConnections(t, f.db)
		}
	}
	if accepted < 200 {
		t.Fatalf("only %d changes accepted", accepted)
	}
	if err := f.srv.Start(); err != nil {
		t.Fatal(err)
	}

	// Signals' own durable consumer.
	cons, err := f.js.CreateOrUpdateConsumer(ctx, bus.StreamIntegrations, jetstream.ConsumerConfig{
		Durable: "signals", AckPolicy: jetstream.AckExplicitPolicy,
		FilterSubjects: []string{"integration.created", "integration.updated", "integration.deleted"},
	})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var got []change
	seen := map[string]int{}
	cc, err := cons.Consume(func(m jetstream.Msg) {
		ev, err := events.Parse(m.Data())
		if err != nil {
			t.Errorf("bad event: %v", err)
		}
		mu.Lock()
		seen[ev.ID]++
		got = append(got, change{ev.Type, ev.IntegrationID()})
		mu.Unlock()
		_ = m.Ack()
	})
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Stop()
	deadline := time.Now().Add(60 * time.Second)
	for {
		mu.Lock()
		n := len(got)
		mu.Unlock()
		if n >= len(want) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("received %d of %d events", n, len(want))
		}
		<-time.After(20 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	for id, n := range seen {
		if n != 1 {
			t.Errorf("event %s delivered %d times", id, n)
		}
	}
	if len(got) != len(want) {
		t.Fatalf("got %d events, want %d", len(got), len(want))
	}
	// Per integration, the order of the API calls.
	perWant, perGot := map[string][]string{}, map[string][]string{}
	for _, c := range want {
		perWant[c.id] = append(perWant[c.id], c.subject)
	}
	for _, c := range got {
		perGot[c.id] = append(perGot[c.id], c.subject)
	}
	for id, w := range perWant {
		if fmt.Sprint(w) != fmt.Sprint(perGot[id]) {
			t.Errorf("integration %s: events %v, want %v", id, perGot[id], w)
		}
	}
}

// cutConnections ends every server connection of the catalog's roles to
// the test database: what the service sees when PostgreSQL restarts. The
// server itself keeps running for the other test packages.
func cutConnections(t *testing.T, db *pgtest.DB) {
	t.Helper()
	admin, err := pgxpool.New(context.Background(), pgtest.AdminURL())
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	if _, err := admin.Exec(context.Background(),
		`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND usename IN ('inthub_app', 'inthub_forwarder') AND pid <> pg_backend_pid()`,
		db.Name); err != nil {
		t.Fatal(err)
	}
}

func testLogger() *slog.Logger {
	if os.Getenv("INTHUB_TEST_LOG") != "" {
		return slog.New(slog.NewJSONHandler(os.Stderr, nil))
	}
	return slog.New(slog.DiscardHandler)
}

// The bus loses the integrations bucket (a new NATS store, a purge): a
// catalog starting on the database puts back every live integration at its
// version, leaves deleted ones out, and removes keys the database does not
// know.
func TestIntegrationsBucketRebuiltFromTheDatabase(t *testing.T) {
	f := start(t)
	ctx := context.Background()
	var ids []string
	for i := range 3 {
		code, it := f.call("POST", "/api/v1/integrations", map[string]any{"type": "test.inmemory", "name": "r" + strconv.Itoa(i), "config": map[string]any{}}, "")
		if code != http.StatusCreated {
			t.Fatalf("create: %d %v", code, it)
		}
		ids = append(ids, it["id"].(string))
	}
	if code, out := f.call("PUT", "/api/v1/integrations/"+ids[1], map[string]any{"type": "test.inmemory", "name": "r1-v2", "config": map[string]any{}}, ""); code != http.StatusOK {
		t.Fatalf("update: %d %v", code, out)
	}
	if code, out := f.call("DELETE", "/api/v1/integrations/"+ids[2], nil, ""); code != http.StatusOK && code != http.StatusNoContent {
		t.Fatalf("delete: %d %v", code, out)
	}
	kv, err := f.js.KeyValue(ctx, bus.BucketIntegrations)
	if err != nil {
		t.Fatal(err)
	}
	liveKeys := func() map[string]int64 {
		out := map[string]int64{}
		keys, err := kv.ListKeys(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for k := range keys.Keys() {
			e, err := kv.Get(ctx, k)
			if err != nil {
				continue
			}
			var in events.Integration
			_ = json.Unmarshal(e.Value(), &in)
			out[k] = in.Version
		}
		return out
	}
	want := map[string]int64{bus.IntegrationKey(tenant, ids[0]): 1, bus.IntegrationKey(tenant, ids[1]): 2}
	eventually := func(what string) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for got := liveKeys(); fmt.Sprint(got) != fmt.Sprint(want); got = liveKeys() {
			if time.Now().After(deadline) {
				t.Fatalf("%s: bucket holds %v, want %v", what, got, want)
			}
			time.Sleep(50 * time.Millisecond) // poll interval
		}
	}
	eventually("before the loss")

	if err := f.js.DeleteKeyValue(ctx, bus.BucketIntegrations); err != nil {
		t.Fatal(err)
	}
	if err := bus.ProvisionKV(ctx, f.js, bus.DefaultStreamSettings()); err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, bus.IntegrationKey(tenant, "5f0c7a4e-0000-4000-8000-00000000dead"), []byte(`{"version":9}`)); err != nil {
		t.Fatal(err)
	}
	if n := len(liveKeys()); n != 1 {
		t.Fatalf("after the loss the bucket holds %d keys, want only the stray one", n)
	}
	runCatalog(t, f.db, f.srv)
	eventually("after a catalog started")
}
