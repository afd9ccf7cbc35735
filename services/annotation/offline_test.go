package annotation_test

import (
	"strings"
	"testing"
	"time"

	"inthub.dev/services/annotation"
)

// Requests for an integration marked offline are spooled without calling
// the provider; that is no call, so the integration's breaker must not
// count it. Once the integration is active again, its next request is
// posted at once instead of waiting out a breaker that nobody's call
// opened.
func TestOfflineStatusSpoolsDoNotOpenTheBreaker(t *testing.T) {
	e := newEnv(t)
	id := newID()
	in := integration(id, tenantA, "test.recorder", "offline")
	e.put(in)
	e.start(annotation.Config{BreakerFailures: 2, BreakerOpenFor: time.Minute})
	for _, c := range []string{"a", "b", "c", "d", "e"} {
		e.request(tenantA, status(id, c))
	}
	eventually(t, 20*time.Second, "five spooled", func() bool { return len(e.spooled()) == 5 })
	if m := e.metric(`bus_breakers{state="open"}`); !strings.HasSuffix(m, " 0") {
		t.Fatalf("breakers: %q, want none open", m)
	}
	if calls, _ := e.rec.snapshot(); len(calls) != 0 {
		t.Fatalf("provider called %d times", len(calls))
	}

	in.Status, in.Version = "active", in.Version+1
	e.put(in)
	eventually(t, 10*time.Second, "the worker sees it active", func() bool {
		rid := e.request(tenantA, status(id, "probe-"+newID()[:8]))
		deadline := time.Now().Add(2 * time.Second)
		for time.Now().Before(deadline) {
			if _, effects := e.rec.snapshot(); effects[rid] == 1 {
				return true
			}
			time.Sleep(20 * time.Millisecond) // pace the poll of the fake provider
		}
		return false
	})
	if n := len(e.dlq()); n != 0 {
		t.Errorf("%d dead letters", n)
	}
}
