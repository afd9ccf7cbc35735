package store

import (
	"encoding/json"
	"testing"
	"time"

	"inthub.dev/events"
)

func healthEvent(tb testing.TB, it Integration, status events.HealthStatus, at time.Time) events.Event {
	tb.Helper()
	ev, err := events.New(events.SubjectIntegrationHealthChecked, "inthub/health-poller", it.TenantID, events.HealthChecked{
		IntegrationID: it.ID, TenantID: it.TenantID, Type: it.Type, Status: status,
		LatencyMs: 12, Message: string(status), CheckedAt: at,
	})
	if err != nil {
		tb.Fatal(err)
	}
	return ev
}

func healthChangedEvents(tb testing.TB, e *env, tenant string) []events.HealthChanged {
	tb.Helper()
	var out []events.HealthChanged
	for _, r := range outboxRows(tb, e.owner, tenant) {
		if r.Subject != events.SubjectIntegrationHealthChanged {
			continue
		}
		ev := parseOutbox(tb, r)
		var hc events.HealthChanged
		if err := ev.Decode(&hc); err != nil {
			tb.Fatal(err)
		}
		out = append(out, hc)
	}
	return out
}

func TestRecordHealthTransitions(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	a := newTenant()
	it := mustCreate(t, e.store, a, "prod")
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

	// unknown → healthy is itself a transition; then the sequence
	// healthy → unhealthy → healthy, each check delivered twice, and a
	// repeated healthy that changes nothing.
	steps := []struct {
		status      events.HealthStatus
		wantChanged bool
	}{
		{events.HealthHealthy, true},
		{events.HealthHealthy, false},
		{events.HealthUnhealthy, true},
		{events.HealthHealthy, true},
		{events.HealthHealthy, false},
	}
	for i, st := range steps {
		ev := healthEvent(t, it, st.status, t0.Add(time.Duration(i)*time.Minute))
		changed, err := e.store.RecordHealth(ctx, ev)
		if err != nil || changed != st.wantChanged {
			t.Fatalf("step %d (%s): changed=%v %v, want %v", i, st.status, changed, err, st.wantChanged)
		}
		// The redelivery of the same event: nothing at all happens.
		changed, err = e.store.RecordHealth(ctx, ev)
		if err != nil || changed {
			t.Fatalf("step %d redelivered: changed=%v %v", i, changed, err)
		}
	}
	if n := countRows(t, e.owner, `SELECT count(*) FROM health_checks WHERE tenant_id = $1`, a); n != len(steps) {
		t.Fatalf("%d history rows, want %d (one per event id)", n, len(steps))
	}
	hc := healthChangedEvents(t, e, a)
	type tr struct{ from, to events.HealthStatus }
	var got []tr
	for _, h := range hc {
		got = append(got, tr{h.PreviousStatus, h.Status})
		if h.IntegrationID != it.ID || h.TenantID != a || h.Type != "scm.github" {
			t.Errorf("health_changed %+v", h)
		}
	}
	want := []tr{{"unknown", "healthy"}, {"healthy", "unhealthy"}, {"unhealthy", "healthy"}}
	if len(got) != len(want) {
		t.Fatalf("health_changed transitions %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("health_changed transitions %v, want %v", got, want)
		}
	}
	// healthy → unhealthy → healthy is exactly two.
	if n := len(got[1:]); n != 2 {
		t.Fatalf("%d health_changed for healthy→unhealthy→healthy, want 2", n)
	}

	cur, err := e.store.GetIntegration(ctx, a, it.ID)
	if err != nil {
		t.Fatal(err)
	}
	if cur.HealthStatus != "healthy" || cur.LastHealthCheck == nil || !cur.LastHealthCheck.Equal(t0.Add(4*time.Minute)) {
		t.Fatalf("integration health %s at %v", cur.HealthStatus, cur.LastHealthCheck)
	}
	if cur.Version != it.Version || !cur.UpdatedAt.Equal(it.UpdatedAt) {
		t.Fatalf("health bumped the version (%d → %d) or updated_at", it.Version, cur.Version)
	}
}

func TestRecordHealthOutOfOrder(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	a := newTenant()
	it := mustCreate(t, e.store, a, "prod")
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	if _, err := e.store.RecordHealth(ctx, healthEvent(t, it, events.HealthHealthy, t0.Add(time.Minute))); err != nil {
		t.Fatal(err)
	}
	before := len(outboxRows(t, e.owner, a))
	// An older result arrives late: history only.
	changed, err := e.store.RecordHealth(ctx, healthEvent(t, it, events.HealthUnhealthy, t0))
	if err != nil || changed {
		t.Fatalf("older check: changed=%v %v", changed, err)
	}
	// And one at the very same time does not win either.
	if changed, err := e.store.RecordHealth(ctx, healthEvent(t, it, events.HealthDegraded, t0.Add(time.Minute))); err != nil || changed {
		t.Fatalf("same-time check: changed=%v %v", changed, err)
	}
	cur, err := e.store.GetIntegration(ctx, a, it.ID)
	if err != nil || cur.HealthStatus != "healthy" || !cur.LastHealthCheck.Equal(t0.Add(time.Minute)) {
		t.Fatalf("an older check overwrote a newer one: %+v %v", cur, err)
	}
	if n := len(outboxRows(t, e.owner, a)); n != before {
		t.Fatalf("an older check wrote %d outbox rows", n-before)
	}

	latest, hist, next, err := e.store.HealthHistory(ctx, a, it.ID, 2, "")
	if err != nil || latest == nil || next == "" || len(hist) != 2 {
		t.Fatalf("history page 1: %v %d %q %v", latest, len(hist), next, err)
	}
	if latest.Status != "degraded" && latest.Status != "healthy" || !latest.CheckedAt.Equal(t0.Add(time.Minute)) {
		t.Fatalf("latest %+v", latest)
	}
	_, hist2, next2, err := e.store.HealthHistory(ctx, a, it.ID, 2, next)
	if err != nil || len(hist2) != 1 || next2 != "" || hist2[0].Status != "unhealthy" || !hist2[0].CheckedAt.Equal(t0) {
		t.Fatalf("history page 2: %+v %q %v", hist2, next2, err)
	}
	all := append(hist, hist2...)
	for i := 1; i < len(all); i++ {
		p, c := all[i-1], all[i]
		if c.CheckedAt.After(p.CheckedAt) || c.CheckedAt.Equal(p.CheckedAt) && c.ID > p.ID {
			t.Fatalf("history not newest first: %+v", all)
		}
	}
	if _, _, _, err := e.store.HealthHistory(ctx, a, it.ID, 2, "bogus"); err == nil {
		t.Fatal("bad cursor accepted")
	}
	fresh := mustCreate(t, e.store, a, "fresh")
	latest, hist, _, err = e.store.HealthHistory(ctx, a, fresh.ID, 0, "")
	if err != nil || latest != nil || len(hist) != 0 {
		t.Fatalf("no checks: %v %v %v", latest, hist, err)
	}
}

func TestRecordHealthUnknownIntegration(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	a := newTenant()
	it := mustCreate(t, e.store, a, "prod")
	now := time.Now().UTC()

	ghost := it
	ghost.ID = "0190a6d2-0000-7000-8000-000000000001"
	_, err := e.store.RecordHealth(ctx, healthEvent(t, ghost, events.HealthHealthy, now))
	wantErr(t, err, ErrNotFound)

	recorded := healthEvent(t, it, events.HealthHealthy, now)
	if _, err := e.store.RecordHealth(ctx, recorded); err != nil {
		t.Fatal(err)
	}
	if _, err := e.store.DeleteIntegration(ctx, a, "alice", it.ID, 0); err != nil {
		t.Fatal(err)
	}
	_, err = e.store.RecordHealth(ctx, healthEvent(t, it, events.HealthUnhealthy, now.Add(time.Second)))
	wantErr(t, err, ErrNotFound)
	// A redelivery of what was recorded before the delete is still a no-op.
	if changed, err := e.store.RecordHealth(ctx, recorded); err != nil || changed {
		t.Fatalf("redelivery after delete: %v %v", changed, err)
	}
	if n := countRows(t, e.owner, `SELECT count(*) FROM health_checks`); n != 1 {
		t.Fatalf("%d history rows, want 1", n)
	}
	// Another event type is refused, not recorded.
	other, _ := events.New(events.SubjectIntegrationDeleted, "x", a, json.RawMessage(`{"id":"`+it.ID+`","tenantId":"`+a+`","type":"scm.github","name":"n","deletedAt":"2026-01-01T00:00:00Z"}`))
	if _, err := e.store.RecordHealth(ctx, other); err == nil {
		t.Fatal("RecordHealth accepted an integration.deleted event")
	}
}
