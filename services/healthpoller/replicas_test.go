package healthpoller_test

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"inthub.dev/events"
	"inthub.dev/pkg/bus"
	"inthub.dev/services/healthpoller"
	"inthub.dev/services/healthpoller/schedule"
)

// collector follows integration.health_checked on the stream with one
// ordered consumer, so a test can poll what arrived without re-reading
// thousands of events each time.
type collector struct {
	mu   sync.Mutex
	all  []checked
	errs []error
}

func (e *env) collect() *collector {
	e.t.Helper()
	c := &collector{}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cons, err := e.js.OrderedConsumer(ctx, bus.StreamIntegrations, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{events.SubjectIntegrationHealthChecked},
	})
	if err != nil {
		e.t.Fatal(err)
	}
	cc, err := cons.Consume(func(msg jetstream.Msg) {
		// Only the fields counted: the poller's own tests check the
		// events in full, and with thousands a second the test's parsing
		// would compete with the pollers for CPU.
		var ev struct {
			Data struct {
				IntegrationID string    `json:"integrationId"`
				CheckedAt     time.Time `json:"checkedAt"`
			} `json:"data"`
		}
		err := json.Unmarshal(msg.Data(), &ev)
		c.mu.Lock()
		defer c.mu.Unlock()
		if err != nil || ev.Data.IntegrationID == "" || ev.Data.CheckedAt.IsZero() {
			c.errs = append(c.errs, fmt.Errorf("health_checked %q: %v", msg.Data(), err))
			return
		}
		c.all = append(c.all, checked{HealthChecked: events.HealthChecked{IntegrationID: ev.Data.IntegrationID, CheckedAt: ev.Data.CheckedAt}})
	})
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(cc.Stop)
	return c
}

func (c *collector) snapshot() ([]checked, []error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]checked(nil), c.all...), append([]error(nil), c.errs...)
}

// slotOf is the slot a check was due at: the last one at or before its
// start (the poller's slots are k·interval + schedule.Phase).
func slotOf(c checked, interval time.Duration) time.Time {
	phase := int64(schedule.Phase(c.IntegrationID, interval))
	at := c.CheckedAt.UnixNano() - phase
	return time.Unix(0, at-at%int64(interval)+phase).UTC()
}

// firstAfter is each integration's first check that started after t.
func firstAfter(cs []checked, t time.Time) map[string]time.Time {
	m := map[string]time.Time{}
	for _, c := range cs {
		if c.CheckedAt.After(t) {
			if f, ok := m[c.IntegrationID]; !ok || c.CheckedAt.Before(f) {
				m[c.IntegrationID] = c.CheckedAt
			}
		}
	}
	return m
}

// TestTwoPollersShareTheWork: 1,000 integrations at a 2 s interval, two
// pollers. Together they check each integration once per interval (the
// total within 2 %); when one stops, or dies without handing anything
// back, the other covers every integration within two intervals.
func TestTwoPollersShareTheWork(t *testing.T) {
	if testing.Short() {
		t.Skip("about 25 s of real time")
	}
	const (
		n        = 1000
		interval = 2 * time.Second
		ttl      = 2 * time.Second
	)
	e := newEnv(t)
	for k := range n {
		e.put(integration(k, `{}`))
	}
	col := e.collect()
	opts := func(id string) func(*healthpoller.Config) {
		return func(c *healthpoller.Config) {
			c.IntervalOverride = interval
			c.LeaseTTL, c.LeaseRenew = ttl, 250*time.Millisecond
			c.ReplicaID = id
			c.MaxConcurrent, c.MaxPerProvider = 256, 256
		}
	}
	balanced := func(rs ...*running) func() bool {
		return func() bool {
			owned, targets := 0, 0
			for _, r := range rs {
				st := r.svc.Stats()
				if st.Leases.Owned != 32 || st.Leases.Members != 2 {
					return false
				}
				owned += st.Leases.Owned
				targets += st.Schedule.Targets
			}
			return owned == 64 && targets == n
		}
	}
	a := e.start(t.TempDir(), opts("a"))
	b := e.start(t.TempDir(), opts("b"))
	waitFor(t, 20*time.Second, "an even split of the partitions", balanced(a, b))

	// Three whole intervals, starting one interval after the split.
	from := time.Now().Add(interval)
	to := from.Add(3 * interval)
	// Checks the pollers skipped in the window because the one before was
	// still running: a machine too loaded to keep up, not the sharing.
	skipped := func() uint64 { return a.svc.Stats().Schedule.Skipped + b.svc.Stats().Schedule.Skipped }
	<-time.After(time.Until(from)) // the window's bounds, not an outcome
	skipped0 := skipped()
	<-time.After(time.Until(to))
	skippedIn := int(skipped() - skipped0)
	// One target's results are reported in order, so once each has a
	// result due after the window, the window's are all on the stream.
	waitFor(t, 3*time.Minute, "the window's checks on the stream", func() bool {
		cs, _ := col.snapshot()
		after := map[string]bool{}
		for _, c := range cs {
			if !slotOf(c, interval).Before(to) {
				after[c.IntegrationID] = true
			}
		}
		return len(after) == n
	})
	cs, errs := col.snapshot()
	if len(errs) > 0 {
		t.Fatalf("events that do not parse: %v", errs[0])
	}
	// Each check is counted in the interval of the slot it was due at
	// (its start minus its lag, which on a loaded machine can carry a
	// check due just before a boundary over it).
	perInterval := make([]int, 3)
	perIntegration := map[string]int{}
	perSlot := map[string]int{}
	for _, c := range cs {
		due := slotOf(c, interval)
		if due.Before(from) || !due.Before(to) {
			continue
		}
		perInterval[due.Sub(from)/interval]++
		perIntegration[c.IntegrationID]++
		perSlot[c.IntegrationID+"@"+due.Format(time.RFC3339Nano)]++
	}
	t.Logf("checks per interval with two pollers: %v, %d skipped; a %+v; b %+v", perInterval, skippedIn, a.svc.Stats(), b.svc.Stats())
	switch {
	case skippedIn > 3*n*5/100:
		t.Fatalf("the machine could not keep up: %d of %d checks skipped in the window (checks: %v); run it on a less loaded one", skippedIn, 3*n, perInterval)
	case skippedIn > 0:
		// Skips cannot be placed in an interval; the window as a whole
		// must still hold one check or one skip per slot.
		total := perInterval[0] + perInterval[1] + perInterval[2] + skippedIn
		if total < 3*n*98/100 || total > 3*n*102/100 {
			t.Errorf("%d checks and %d skipped in 3 intervals, want %d ± 2 %%", total-skippedIn, skippedIn, 3*n)
		}
	default:
		for i, got := range perInterval {
			if got < n*98/100 || got > n*102/100 {
				t.Errorf("interval %d: %d checks, want %d ± 2 %%", i, got, n)
			}
		}
	}
	for k := range n {
		if got := perIntegration[integrationID(k)]; got > 4 || (got < 2 && skippedIn == 0) {
			t.Errorf("%s checked %d times in 3 intervals", integrationID(k), got)
		}
	}
	doubled := 0
	for _, v := range perSlot {
		if v > 1 {
			doubled++
		}
	}
	if doubled > n/100 {
		t.Errorf("%d checks done twice for the same slot", doubled)
	}
	if sa, sb := a.svc.Stats().Schedule, b.svc.Stats().Schedule; sa.Checks == 0 || sb.Checks == 0 {
		t.Errorf("checks by a %d, by b %d: both should work", sa.Checks, sb.Checks)
	}

	// A clean stop hands b's partitions back at once; a takes them at its
	// next round (250 ms) and each integration is due within an interval.
	// Two intervals is the bound; the extra interval is for a CI
	// machine running other suites beside this one, where b's shutdown
	// (its checks in flight) alone took over 2 s once.
	stopped := time.Now()
	b.stop(t)
	coversAll(t, col, n, stopped, 3*interval, interval, "a after b stopped")

	// A replica that dies hands nothing back: its leases expire a TTL
	// later. c replaces b, then loses its connection for good.
	c := e.start(t.TempDir(), opts("c"))
	waitFor(t, 20*time.Second, "an even split with c", balanced(a, c))
	killed := time.Now()
	c.nc.Close()
	c.cancel()
	// Its partitions are free once its leases expire (the TTL); then each
	// integration is due within one interval. With the production
	// defaults (15 s, 5 min) that is well within two intervals; here the
	// TTL is as long as an interval (shorter makes leases expire on a
	// machine loaded enough to delay a renewal by a second), so allow it
	// on top.
	coversAll(t, col, n, killed, ttl+2*interval, interval, "a after c died")
	if st := a.svc.Stats().Leases; st.Owned != 64 {
		t.Errorf("a holds %d partitions, want all 64", st.Owned)
	}
	if st := a.svc.Stats(); st.Schedule.Dropped != 0 || st.Schedule.Skipped != 0 {
		t.Logf("a dropped %d results and skipped %d checks", st.Schedule.Dropped, st.Schedule.Skipped)
	}
	a.stop(t)
}

// coversAll waits until every integration has a check that started after
// since, then fails if the slot one of them was due at is more than within
// later. The lag from slot to start, which is the machine's load and not
// the hand-over, is logged.
func coversAll(t *testing.T, col *collector, n int, since time.Time, within, interval time.Duration, who string) {
	t.Helper()
	var first map[string]time.Time
	var cs []checked
	waitFor(t, 30*time.Second, fmt.Sprintf("%s to check every integration", who), func() bool {
		cs, _ = col.snapshot()
		first = firstAfter(cs, since)
		return len(first) == n
	})
	var latest, latestDue time.Duration
	late := 0
	for id, at := range first {
		due := slotOf(checked{HealthChecked: events.HealthChecked{IntegrationID: id, CheckedAt: at}}, interval)
		latest = max(latest, at.Sub(since))
		latestDue = max(latestDue, due.Sub(since))
		if due.Sub(since) > within {
			late++
		}
	}
	t.Logf("%s: every integration due within %v, checked within %v", who, latestDue.Round(time.Millisecond), latest.Round(time.Millisecond))
	if late > 0 {
		t.Errorf("%s: %d integrations first due more than %v later (the last after %v)", who, late, within, latestDue)
		for id, at := range first {
			if at.Sub(since) > within {
				var ts []string
				for _, c := range cs {
					if c.IntegrationID == id && c.CheckedAt.After(since.Add(-2*interval)) {
						ts = append(ts, c.CheckedAt.Sub(since).Round(time.Millisecond).String())
					}
				}
				t.Logf("%s checked at %v from then", id, ts)
			}
		}
	}
}
