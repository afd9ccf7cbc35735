package annotation_test

import (
	"fmt"
	"testing"
	"time"

	"inthub.dev/pkg/bus"
	"inthub.dev/pkg/connectors"
	"inthub.dev/services/annotation"
)

// A burst against an installation whose hourly rate limit is all but spent
// (others share it) and resets moments later, after every write: each post
// pauses the account until the reset, which voids the slots the waiting
// requests reserved, so the last requests of the burst are deferred many
// more times than MaxDeliver. Halfway the worker is replaced. Every request
// is posted once, none is dead-lettered, and each reports one attempt:
// waiting for the budget is not an attempt.
func TestBurstDeferredBeyondMaxDeliverCompletes(t *testing.T) {
	e := newEnv(t)
	id := newID()
	e.put(integration(id, tenantA, "test.recorder", "active"))
	e.rec.mu.Lock()
	e.rec.rateLimit = func() *connectors.RateLimit {
		return &connectors.RateLimit{Limit: 5000, Remaining: 1, Reset: time.Now().Add(80 * time.Millisecond)}
	}
	e.rec.mu.Unlock()
	const maxDeliver, burst = 3, 20
	cfg := annotation.Config{MaxDeliver: maxDeliver, AccountBudget: annotation.Budget{PerSecond: 1000, PerHour: 5000}}
	e.start(cfg)
	var ids []string
	for i := range burst {
		ids = append(ids, e.request(tenantA, status(id, fmt.Sprintf("ctx-%02d", i))))
	}
	// Polled on the fake provider and the DLQ's depth: reading the result
	// events makes a consumer per look.
	posted := func() bool {
		_, effects := e.rec.snapshot()
		if n := dlqDepth(e); n > 0 {
			t.Fatalf("%d requests dead-lettered after %d posted, although none failed", n, len(effects))
		}
		return len(effects) >= burst
	}
	eventually(t, 60*time.Second, "a third posted", func() bool { _, effects := e.rec.snapshot(); posted(); return len(effects) >= burst/3 })
	e.stop()
	e.start(cfg)
	eventually(t, 90*time.Second, "all posted", posted)
	eventually(t, 10*time.Second, "all completed", func() bool { c, _ := e.results(); return len(c) >= burst })

	if n := len(e.dlq()); n != 0 {
		t.Fatalf("%d requests dead-lettered although none failed", n)
	}
	_, effects := e.rec.snapshot()
	for _, rid := range ids {
		if effects[rid] != 1 {
			t.Errorf("request %s posted %d times, want once", rid, effects[rid])
		}
	}
	c, f := e.results()
	if len(c) != burst || len(f) != 0 {
		t.Errorf("%d completed, %d failed; want %d and 0", len(c), len(f), burst)
	}
	for _, x := range c {
		if x.Attempts != 1 {
			t.Errorf("request %s completed after %d attempts, want 1", x.RequestID, x.Attempts)
		}
	}
	// Each request had exactly one delivery that was not a deferral, so
	// more than burst*maxDeliver deliveries means some request was deferred
	// at least maxDeliver times: the case under test happened.
	cons, err := e.js.Consumer(e.ctx, bus.StreamSCM, "annotation")
	if err != nil {
		t.Fatal(err)
	}
	info, err := cons.Info(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.Delivered.Consumer <= burst*maxDeliver {
		t.Fatalf("only %d deliveries for %d requests: no request was deferred %d times", info.Delivered.Consumer, burst, maxDeliver)
	}
	t.Logf("%d deliveries for %d requests", info.Delivered.Consumer, burst)
}

func dlqDepth(e *env) uint64 {
	e.t.Helper()
	st, err := e.js.Stream(e.ctx, bus.StreamDLQ)
	if err != nil {
		e.t.Fatal(err)
	}
	info, err := st.Info(e.ctx)
	if err != nil {
		e.t.Fatal(err)
	}
	return info.State.Msgs
}
