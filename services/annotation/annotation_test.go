package annotation_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"inthub.dev/events"
	"inthub.dev/pkg/bus"
	"inthub.dev/pkg/connectors"
	"inthub.dev/pkg/connectors/inmemory"
	"inthub.dev/pkg/fault"
	"inthub.dev/schemas"
	"inthub.dev/services/annotation"
)

func TestPostsEachOperationAndReportsCompleted(t *testing.T) {
	e := newEnv(t)
	id := newID()
	e.put(integration(id, tenantA, "test.recorder", "active"))
	e.start(annotation.Config{})
	want := map[string]string{
		e.request(tenantA, status(id, "scan/status")):     events.OpStatus,
		e.request(tenantA, comment(id, 42, "scan", "hi")): events.OpComment,
		e.request(tenantA, checkRun(id, 3)):               events.OpCheckRun,
	}
	eventually(t, 20*time.Second, "three completed", func() bool { c, _ := e.results(); return len(c) == 3 })
	completed, failed := e.results()
	if len(failed) != 0 {
		t.Fatalf("failed events: %+v", failed)
	}
	for _, c := range completed {
		if want[c.RequestID] != c.Operation || c.IntegrationID != id || c.Provider != "recorder" ||
			c.URL != "https://recorder.example/"+c.RequestID || c.Attempts != 1 {
			t.Errorf("completed = %+v", c)
		}
	}
	_, effects := e.rec.snapshot()
	for rid := range want {
		if effects[rid] != 1 {
			t.Errorf("request %s posted %d times, want 1", rid, effects[rid])
		}
	}
	if m := e.metric(`scm_annotation_total{operation="check_run",provider="recorder",status="completed"}`); !strings.HasSuffix(m, " 1") {
		t.Errorf("metric: %q", m)
	}
}

// Requests that cannot be posted go to the DLQ at once, with the reason,
// and are answered with scm.annotation.failed; the provider is never called.
func TestRefusedRequestsAreDeadLettered(t *testing.T) {
	e := newEnv(t)
	active, disabled, other := newID(), newID(), newID()
	e.put(integration(active, tenantA, "test.recorder", "active"))
	e.put(integration(disabled, tenantA, "test.recorder", "disabled"))
	e.put(integration(other, tenantB, "test.recorder", "active"))
	e.put(integration(newID(), tenantA, "test.inmemory", "active"))
	e.start(annotation.Config{})

	cases := map[string]struct {
		tenant string
		req    events.AnnotationRequested
		reason string
	}{
		"unknown integration": {tenantA, status(newID(), "c"), "unknown to tenant"},
		"another tenant's":    {tenantA, status(other, "c"), "unknown to tenant"},
		"disabled":            {tenantA, status(disabled, "c"), "disabled"},
	}
	ids := map[string]string{}
	for name, c := range cases {
		ids[e.request(c.tenant, c.req)] = name
	}
	eventually(t, 20*time.Second, "every refused request dead-lettered", func() bool { return len(e.dlq()) == len(cases) })
	for _, l := range e.dlq() {
		ev, err := events.Parse(l.Data)
		if err != nil {
			t.Fatal(err)
		}
		name := ids[ev.ID]
		// An unknown integration is waited for a few seconds first (the
		// bucket may lag the catalog); the others are refused at once.
		once := cases[name].reason != "unknown to tenant"
		if !strings.Contains(l.LastError, cases[name].reason) || l.ErrorClass != "permanent" || (once && l.DeliveryCount != 1) {
			t.Errorf("%s: dead letter class %s after %d deliveries, error %q, want %q", name, l.ErrorClass, l.DeliveryCount, l.LastError, cases[name].reason)
		}
	}
	eventually(t, 10*time.Second, "a failed event per request", func() bool { _, f := e.results(); return len(f) == len(cases) })
	_, failed := e.results()
	for _, f := range failed {
		if !f.DeadLettered || f.Spooled || f.Attempts != 0 || f.ErrorClass != "permanent" || ids[f.RequestID] == "" {
			t.Errorf("failed = %+v", f)
		}
	}
	if calls, _ := e.rec.snapshot(); len(calls) != 0 {
		t.Errorf("provider called %d times for refused requests", len(calls))
	}
	// The DLQ depth is on /metrics, from the stream itself.
	if m := e.metric(`bus_stream_messages{stream="DLQ"}`); !strings.HasSuffix(m, fmt.Sprintf(" %d", len(cases))) {
		t.Errorf("DLQ depth metric: %q, want %d", m, len(cases))
	}
}

// A malformed body (not an event, or an event that fails its schema) is
// poison: DLQ at once.
func TestMalformedRequestIsDeadLettered(t *testing.T) {
	e := newEnv(t)
	e.start(annotation.Config{})
	// A valid envelope whose comment names no pull request: the schema
	// refuses it on consume as it does on publish.
	noPR := `{"specversion":"1.0","id":"` + newID() + `","source":"stellaops/scanner","type":"scm.annotation.requested",` +
		`"time":"2026-01-01T00:00:00Z","datacontenttype":"application/json","tenantid":"` + tenantA + `",` +
		`"data":{"integrationId":"` + newID() + `","operation":"comment","repository":{"owner":"a","name":"b"},` +
		`"comment":{"body":"x","updateExisting":false}}}`
	for _, body := range []string{`{"not":"an event"}`, noPR} {
		if _, err := e.js.Publish(e.ctx, events.SubjectAnnotationRequested, []byte(body)); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, 20*time.Second, "dead-lettered", func() bool { return len(e.dlq()) == 2 })
	// Handled concurrently: the dead letters may be in either order.
	errs := e.dlq()[0].LastError + " | " + e.dlq()[1].LastError
	for _, want := range []string{"invalid event", "pullRequest"} {
		if !strings.Contains(errs, want) {
			t.Errorf("dead letters %q lack %q", errs, want)
		}
	}
	for _, l := range e.dlq() {
		if l.ErrorClass != "permanent" {
			t.Errorf("dead letter class %s", l.ErrorClass)
		}
	}
}

func TestProviderRefusalDeadLettersOnce(t *testing.T) {
	e := newEnv(t)
	id := newID()
	e.put(integration(id, tenantA, "test.recorder", "active"))
	e.rec.setFail(func(connectors.AnnotationRequest, int) error {
		return fault.Permanent(errors.New("401 Bad credentials"))
	})
	e.start(annotation.Config{})
	rid := e.request(tenantA, status(id, "c"))
	eventually(t, 20*time.Second, "dead-lettered", func() bool { return len(e.dlq()) == 1 })
	eventually(t, 10*time.Second, "failed event", func() bool { _, f := e.results(); return len(f) == 1 })
	_, failed := e.results()
	if f := failed[0]; f.RequestID != rid || !f.DeadLettered || f.Attempts != 1 || !strings.Contains(f.Error, "401") {
		t.Errorf("failed = %+v", f)
	}
	if calls, _ := e.rec.snapshot(); len(calls) != 1 {
		t.Errorf("provider called %d times, want once", len(calls))
	}
}

// The provider down: the breaker opens, requests go to the spool with
// failed(spooled); the provider back and health_changed healthy: every
// request posted once, the newest state per target only.
func TestOfflineSpoolsAndDrainsWhenHealthy(t *testing.T) {
	e := newEnv(t)
	id := newID()
	e.put(integration(id, tenantA, "test.recorder", "active"))
	down := errors.New("dial tcp: connection refused")
	e.rec.setFail(func(connectors.AnnotationRequest, int) error { return fault.Transient(down) })
	e.start(annotation.Config{BreakerFailures: 2, BreakerOpenFor: 200 * time.Millisecond, OfflineAfter: 300 * time.Millisecond,
		MaxDeliver: 50})

	var want []string
	for i := range 8 {
		want = append(want, e.request(tenantA, status(id, "ctx-"+string(rune('a'+i)))))
	}
	// Two requests for one target: only the newer may be posted.
	older := e.request(tenantA, comment(id, 9, "sticky", "old"))
	newer := e.request(tenantA, comment(id, 9, "sticky", "new"))
	want = append(want, newer)
	eventually(t, 60*time.Second, "all ten spooled", func() bool { return len(e.spooled()) == 10 })
	_, failed := e.results()
	spooledEvents := 0
	for _, f := range failed {
		if f.Spooled && !f.DeadLettered && f.ErrorClass == "offline" {
			spooledEvents++
		}
	}
	if spooledEvents != 10 {
		t.Errorf("%d failed(spooled) events, want 10: %+v", spooledEvents, failed)
	}

	e.rec.setFail(nil)
	hc, err := events.New(events.SubjectIntegrationHealthChanged, "inthub/catalog", tenantA, events.HealthChanged{
		IntegrationID: id, TenantID: tenantA, Type: "test.recorder",
		Status: events.HealthHealthy, CheckedAt: time.Now().UTC(), Message: "ok",
		PreviousStatus: events.HealthUnhealthy,
	})
	if err != nil {
		t.Fatal(err)
	}
	e.publishRaw(hc)
	eventually(t, 30*time.Second, "every spooled request posted", func() bool {
		c, _ := e.results()
		return len(c) == len(want)
	})
	_, effects := e.rec.snapshot()
	for _, rid := range want {
		if effects[rid] != 1 {
			t.Errorf("request %s posted %d times, want once", rid, effects[rid])
		}
	}
	if effects[older] != 0 {
		t.Errorf("the superseded comment was posted")
	}
	if n := len(e.spooled()); n != 0 {
		t.Errorf("%d left in the spool", n)
	}
	if len(e.dlq()) != 0 {
		t.Errorf("dead letters: %+v", e.dlq())
	}
}

// A provider's Retry-After stops every write to the account until it ends:
// no request reaches the provider inside the window, none is lost or
// posted twice.
func TestProviderWaitPausesTheAccount(t *testing.T) {
	e := newEnv(t)
	id := newID()
	e.put(integration(id, tenantA, "test.recorder", "active"))
	const penalty = 2 * time.Second
	e.rec.setFail(func(_ connectors.AnnotationRequest, n int) error {
		if n == 2 {
			return fault.RetryAfter(errors.New("403 You have exceeded a secondary rate limit"), penalty)
		}
		return nil
	})
	e.start(annotation.Config{MaxDeliver: 30})
	var ids []string
	for i := range 30 {
		ids = append(ids, e.request(tenantA, status(id, "c"+string(rune('A'+i)))))
	}
	eventually(t, 60*time.Second, "all posted", func() bool { c, _ := e.results(); return len(c) == 30 })
	calls, effects := e.rec.snapshot()
	var limited time.Time
	for _, c := range calls {
		if c.err != nil {
			limited = c.at
			continue
		}
		if !limited.IsZero() && c.at.Before(limited.Add(penalty)) {
			t.Errorf("a request reached the provider %s into the %s penalty", c.at.Sub(limited), penalty)
		}
	}
	if limited.IsZero() {
		t.Fatal("the rate limit was never hit")
	}
	for _, id := range ids {
		if effects[id] != 1 {
			t.Errorf("%s posted %d times", id, effects[id])
		}
	}
	if len(e.dlq()) != 0 {
		t.Errorf("%d dead letters", len(e.dlq()))
	}
}

// With the budget too short for line annotations, a check run is posted
// with its findings in the summary, and the fallback is counted.
func TestShortBudgetDegradesCheckRun(t *testing.T) {
	e := newEnv(t)
	id := newID()
	e.put(integration(id, tenantA, "test.recorder", "active"))
	e.rec.writes = func(req connectors.AnnotationRequest) int {
		if req.CheckRun != nil {
			return 1 + len(req.CheckRun.Annotations)/50
		}
		return 1
	}
	e.start(annotation.Config{AccountBudget: annotation.Budget{PerSecond: 1000, PerMinute: 3}})
	rid := e.request(tenantA, checkRun(id, 237))
	eventually(t, 20*time.Second, "posted", func() bool { c, _ := e.results(); return len(c) == 1 })
	calls, _ := e.rec.snapshot()
	if len(calls) != 1 {
		t.Fatalf("%d calls", len(calls))
	}
	cr := calls[0].req.CheckRun
	if calls[0].req.ID != rid || cr == nil || len(cr.Annotations) != 0 || !strings.Contains(cr.Summary, "finding 236") ||
		!strings.HasPrefix(cr.Summary, "3 findings") {
		t.Errorf("posted %+v", calls[0].req)
	}
	if m := e.metric(`scm_annotation_fallback_total{level="summary"`); !strings.HasSuffix(m, " 1") {
		t.Errorf("fallback metric %q", m)
	}
}

var _ = bus.Defer

// An integration marked offline in the catalog has its requests spooled
// without calling the provider.
func TestIntegrationMarkedOfflineSpools(t *testing.T) {
	e := newEnv(t)
	id := newID()
	e.put(integration(id, tenantA, "test.recorder", "offline"))
	e.start(annotation.Config{})
	rid := e.request(tenantA, status(id, "c"))
	eventually(t, 20*time.Second, "spooled", func() bool { return len(e.spooled()) == 1 })
	eventually(t, 10*time.Second, "failed(spooled)", func() bool { _, f := e.results(); return len(f) == 1 })
	_, f := e.results()
	if f[0].RequestID != rid || !f[0].Spooled || f[0].DeadLettered || f[0].ErrorClass != "offline" || f[0].Attempts != 0 {
		t.Errorf("failed = %+v", f[0])
	}
	if calls, _ := e.rec.snapshot(); len(calls) != 0 {
		t.Errorf("provider called %d times", len(calls))
	}
	if l := e.spooled()[0]; l.IntegrationID != id {
		t.Errorf("spooled under %q, want %s", l.IntegrationID, id)
	}
}

// A provider answer that does not fit the completed event (a URL that is
// not http(s)) must not fail a request whose effect is already there.
func TestOddProviderURLStillCompletes(t *testing.T) {
	e := newEnv(t)
	id := newID()
	e.put(integration(id, tenantA, "test.recorder", "active"))
	e.rec.mu.Lock()
	e.rec.url = func(string) string { return "inmemory://acme/api" }
	e.rec.mu.Unlock()
	e.start(annotation.Config{})
	rid := e.request(tenantA, status(id, "c"))
	eventually(t, 20*time.Second, "completed", func() bool { c, _ := e.results(); return len(c) == 1 })
	c, _ := e.results()
	if c[0].RequestID != rid || c[0].URL != "" {
		t.Errorf("completed = %+v", c[0])
	}
	if n := len(e.dlq()); n != 0 {
		t.Errorf("%d dead letters", n)
	}
}

// The in-memory provider of `make run` answers with URLs that fit the
// contract: its requests complete, none is dead-lettered.
func TestInMemoryProviderCompletes(t *testing.T) {
	e := newEnv(t)
	schema, err := schemas.ConfigSchema(inmemory.Type)
	if err != nil {
		t.Fatal(err)
	}
	e.reg.Register(inmemory.Info(schema), inmemory.New)
	id := newID()
	e.put(integration(id, tenantA, inmemory.Type, "active"))
	e.start(annotation.Config{})
	e.request(tenantA, comment(id, 1, "demo", "hello"))
	e.request(tenantA, status(id, "c"))
	e.request(tenantA, checkRun(id, 2))
	eventually(t, 20*time.Second, "completed", func() bool { c, _ := e.results(); return len(c) == 3 })
	c, f := e.results()
	for _, x := range c {
		if !strings.HasPrefix(x.URL, "https://") {
			t.Errorf("completed %+v", x)
		}
	}
	if len(f) != 0 || len(e.dlq()) != 0 {
		t.Errorf("failed %+v, %d dead letters", f, len(e.dlq()))
	}
}

// A request for an integration this worker learns of a moment later (the
// bucket lags the catalog) is posted, not dead-lettered.
func TestIntegrationKnownALittleLateIsWaitedFor(t *testing.T) {
	e := newEnv(t)
	e.start(annotation.Config{})
	id := newID()
	rid := e.request(tenantA, status(id, "c"))
	time.Sleep(1500 * time.Millisecond) // the lag being simulated, not an outcome awaited
	e.put(integration(id, tenantA, "test.recorder", "active"))
	eventually(t, 20*time.Second, "posted", func() bool { c, _ := e.results(); return len(c) == 1 })
	if c, _ := e.results(); c[0].RequestID != rid {
		t.Errorf("completed %+v", c[0])
	}
	if n := len(e.dlq()); n != 0 {
		t.Errorf("%d dead letters", n)
	}
}
