package health_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"inthub.dev/events"
	"inthub.dev/pkg/bus"
	"inthub.dev/pkg/natstest"
	"inthub.dev/pkg/pgtest"
	"inthub.dev/services/catalog/health"
	"inthub.dev/services/catalog/store"
)

const tenantB = "0b5a3bb0-6a43-4d7e-9a39-6f1f9d9a0002"

type sweepEnv struct {
	t     *testing.T
	ctx   context.Context
	st    *store.Store
	owner *pgxpool.Pool
}

func newSweepEnv(t *testing.T) *sweepEnv {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	db := pgtest.New(t)
	owner := pgtest.Pool(t, db.OwnerURL)
	if err := store.SeedTypes(ctx, owner, []store.IntegrationType{{
		ID: "test.inmemory", DisplayName: "In-memory", Provider: "inmemory", ConfigSchema: json.RawMessage(`{"type":"object"}`), Builtin: true,
	}}); err != nil {
		t.Fatal(err)
	}
	return &sweepEnv{t: t, ctx: ctx, st: store.New(pgtest.Pool(t, db.AppURL)), owner: owner}
}

func (e *sweepEnv) create(tenantID, name, config string) string {
	e.t.Helper()
	it, err := e.st.CreateIntegration(e.ctx, tenantID, "tester", store.IntegrationInput{Type: "test.inmemory", Name: name, Config: json.RawMessage(config)})
	if err != nil {
		e.t.Fatal(err)
	}
	return it.ID
}

func (e *sweepEnv) record(tenantID, id string, status events.HealthStatus, at time.Time) bool {
	e.t.Helper()
	ev, err := events.New(events.SubjectIntegrationHealthChecked, "inthub/health-poller", tenantID, events.HealthChecked{
		IntegrationID: id, TenantID: tenantID, Type: "test.inmemory", Status: status, LatencyMs: 3,
		Message: "checked", CheckedAt: at.UTC(),
	})
	if err != nil {
		e.t.Fatal(err)
	}
	changed, err := e.st.RecordHealth(e.ctx, ev)
	if err != nil {
		e.t.Fatal(err)
	}
	return changed
}

func (e *sweepEnv) get(tenantID, id string) store.Integration {
	e.t.Helper()
	it, err := e.st.GetIntegration(e.ctx, tenantID, id)
	if err != nil {
		e.t.Fatal(err)
	}
	return it
}

// changes returns the integration.health_changed events in the outbox for
// one integration, oldest first.
func (e *sweepEnv) changes(id string) []events.HealthChanged {
	e.t.Helper()
	rows, err := e.owner.Query(e.ctx, `SELECT payload FROM outbox WHERE subject = $1 AND aggregate_id = $2 ORDER BY id`,
		events.SubjectIntegrationHealthChanged, id)
	if err != nil {
		e.t.Fatal(err)
	}
	defer rows.Close()
	var out []events.HealthChanged
	for rows.Next() {
		var b []byte
		if err := rows.Scan(&b); err != nil {
			e.t.Fatal(err)
		}
		ev, err := events.Parse(b)
		if err != nil {
			e.t.Fatal(err)
		}
		var hc events.HealthChanged
		if err := ev.Decode(&hc); err != nil {
			e.t.Fatal(err)
		}
		out = append(out, hc)
	}
	return out
}

// TestSweepRecordsStaleHealthAsUnknown: against PostgreSQL, with row-level
// security as in production, the sweep finds the stale integrations of
// every tenant and no other, by each one's own interval or the default.
func TestSweepRecordsStaleHealthAsUnknown(t *testing.T) {
	e := newSweepEnv(t)
	now := time.Now().UTC()
	ids := map[string]string{}
	type row struct {
		tenant, name, config string
		status               events.HealthStatus
		checkedAgo           time.Duration // 0: never checked
		stale                bool
	}
	rows := []row{
		{tenant, "fresh", `{}`, events.HealthHealthy, time.Minute, false},
		{tenant, "stale-default", `{}`, events.HealthHealthy, 11 * time.Minute, true},
		{tenant, "stale-own", `{"healthIntervalSeconds": 60}`, events.HealthHealthy, 3 * time.Minute, true},
		{tenant, "fresh-own", `{"healthIntervalSeconds": 600}`, events.HealthHealthy, 15 * time.Minute, false},
		{tenant, "degraded-stale", `{}`, events.HealthDegraded, 11 * time.Minute, true},
		{tenant, "bad-interval", `{"healthIntervalSeconds": "soon"}`, events.HealthHealthy, 11 * time.Minute, true},
		{tenant, "never", `{}`, "", 0, false},
		{tenantB, "stale-other-tenant", `{}`, events.HealthUnhealthy, 30 * time.Minute, true},
	}
	for _, r := range rows {
		ids[r.name] = e.create(r.tenant, r.name, r.config)
		if r.checkedAgo > 0 {
			e.record(r.tenant, ids[r.name], r.status, now.Add(-r.checkedAgo))
		}
	}
	deleted := e.create(tenant, "deleted", `{}`)
	e.record(tenant, deleted, events.HealthHealthy, now.Add(-time.Hour))
	if _, err := e.st.DeleteIntegration(e.ctx, tenant, "tester", deleted, 0); err != nil {
		t.Fatal(err)
	}

	res, err := e.st.SweepStaleHealth(e.ctx, 5*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if res.Marked != 5 {
		t.Errorf("marked %d, want 5", res.Marked)
	}
	// The next to turn stale: fresh-own at 15m ago + 2×10m, in 5 minutes.
	if res.Next < 4*time.Minute+50*time.Second || res.Next > 5*time.Minute {
		t.Errorf("next deadline in %v, want about 5m", res.Next)
	}
	for _, r := range rows {
		id := ids[r.name]
		it := e.get(r.tenant, id)
		ch := e.changes(id)
		if !r.stale {
			if r.checkedAgo > 0 && (it.HealthStatus != string(r.status) || len(ch) != 1) {
				t.Errorf("%s: %s with %d changes, want %s untouched", r.name, it.HealthStatus, len(ch), r.status)
			}
			continue
		}
		if it.HealthStatus != "unknown" {
			t.Errorf("%s: health %s, want unknown", r.name, it.HealthStatus)
			continue
		}
		interval := 5 * time.Minute
		if r.name == "stale-own" {
			interval = time.Minute
		}
		staleAt := now.Add(-r.checkedAgo).Add(2 * interval).Truncate(time.Microsecond)
		if it.LastHealthCheck == nil || !it.LastHealthCheck.Equal(staleAt) {
			t.Errorf("%s: lastHealthCheck %v, want the moment it turned stale %v", r.name, it.LastHealthCheck, staleAt)
		}
		if len(ch) != 2 {
			t.Fatalf("%s: %d health_changed, want the first result's and the sweep's", r.name, len(ch))
		}
		last := ch[1]
		if last.Status != events.HealthUnknown || last.PreviousStatus != r.status || !last.CheckedAt.Equal(staleAt) ||
			last.TenantID != r.tenant || last.IntegrationID != id || last.Type != "test.inmemory" ||
			!strings.Contains(last.Message, "no health check result since") {
			t.Errorf("%s: health_changed %+v", r.name, last)
		}
		latest, history, _, err := e.st.HealthHistory(e.ctx, r.tenant, id, 10, "")
		if err != nil {
			t.Fatal(err)
		}
		if latest == nil || latest.Status != "unknown" || len(history) != 2 || !strings.Contains(latest.Message, interval.String()) {
			t.Errorf("%s: latest %+v, %d in history; want the unknown on top naming the %v interval", r.name, latest, len(history), interval)
		}
	}
	if it := e.get(tenant, ids["never"]); it.HealthStatus != "unknown" || len(e.changes(ids["never"])) != 0 {
		t.Errorf("never checked: %+v", it)
	}
	if ch := e.changes(deleted); len(ch) != 1 {
		t.Errorf("deleted integration: %d health_changed, want only its first", len(ch))
	}

	// Once is enough: a second sweep finds nothing.
	if res, err := e.st.SweepStaleHealth(e.ctx, 5*time.Minute); err != nil || res.Marked != 0 {
		t.Errorf("second sweep marked %d, %v", res.Marked, err)
	}

	// A result checked before the integration turned stale arrives late:
	// history only. One checked after: the status follows it.
	id := ids["stale-default"]
	if e.record(tenant, id, events.HealthHealthy, now.Add(-10*time.Minute-time.Second)) {
		t.Error("a result older than the unknown changed the status")
	}
	if e.get(tenant, id).HealthStatus != "unknown" {
		t.Error("a result older than the unknown changed the status")
	}
	if !e.record(tenant, id, events.HealthHealthy, now) || e.get(tenant, id).HealthStatus != "healthy" {
		t.Error("a fresh result did not bring the integration back")
	}
	if ch := e.changes(id); len(ch) != 3 || ch[2].PreviousStatus != events.HealthUnknown || ch[2].Status != events.HealthHealthy {
		t.Errorf("changes after recovery: %+v", ch)
	}
}

// TestConcurrentSweepsRecordEachTransitionOnce: catalog replicas sweep at
// the same moments.
func TestConcurrentSweepsRecordEachTransitionOnce(t *testing.T) {
	e := newSweepEnv(t)
	const n = 40
	old := time.Now().Add(-time.Hour)
	var ids []string
	for i := range n {
		tid := tenant
		if i%2 == 1 {
			tid = tenantB
		}
		id := e.create(tid, fmt.Sprint("s", i), `{}`)
		e.record(tid, id, events.HealthHealthy, old)
		ids = append(ids, id)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	total := 0
	for range 4 {
		wg.Go(func() {
			res, err := e.st.SweepStaleHealth(e.ctx, 5*time.Minute)
			if err != nil {
				t.Error(err)
			}
			mu.Lock()
			total += res.Marked
			mu.Unlock()
		})
	}
	wg.Wait()
	if total != n {
		t.Errorf("4 concurrent sweeps marked %d in all, want %d", total, n)
	}
	for _, id := range ids {
		if ch := e.changes(id); len(ch) != 2 {
			t.Errorf("%s: %d health_changed, want 2", id, len(ch))
		}
	}
}

// TestConsumerSweepsAtTheDeadline runs the consumer as the catalog does:
// an integration checked once, on a 1 s interval, reads unknown about 2 s
// later, without anyone asking, long before the sweep's longest pause: the
// sweeper sleeps until the next deadline it knows of.
func TestConsumerSweepsAtTheDeadline(t *testing.T) {
	e := newSweepEnv(t)
	srv := natstest.Start(t)
	js, _ := srv.JetStream()
	if err := bus.Provision(e.ctx, js, bus.DefaultStreamSettings()); err != nil {
		t.Fatal(err)
	}
	id := e.create(tenant, "short", `{"healthIntervalSeconds": 1}`)
	// Recorded before the consumer starts: its first sweep sees the
	// deadline (checkedAt + 2 s) and sleeps until then, not its longest
	// pause of a minute.
	checkedAt := time.Now().UTC()
	e.record(tenant, id, events.HealthHealthy, checkedAt)
	c, err := health.NewConsumer(js, e.st, nil, nil, health.WithSweep(health.SweepConfig{MinPause: 50 * time.Millisecond, MaxPause: time.Minute}))
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(e.ctx)
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	defer func() {
		stop()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	var flipped time.Time
	deadline := time.Now().Add(30 * time.Second)
	for {
		if e.get(tenant, id).HealthStatus == "unknown" {
			flipped = time.Now()
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the integration never read unknown")
		}
		<-time.After(20 * time.Millisecond)
	}
	if late := flipped.Sub(checkedAt.Add(2 * time.Second)); late < 0 || late > 5*time.Second {
		t.Errorf("read unknown %v after its deadline, want shortly after (the longest pause is a minute)", late)
	}
	if ch := e.changes(id); len(ch) != 2 || ch[1].Status != events.HealthUnknown {
		t.Errorf("health_changed: %+v", ch)
	}
}
