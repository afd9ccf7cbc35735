package healthpoller_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
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

// TestTwoPollersShareTheWork: 400 integrations at a 2 s interval, two
// pollers. While both run, each holds half the partitions (never one both
// hold), no slot is checked twice, and no integration waits longer than an
// interval plus the lag the schedulers measured; when one stops, or dies
// without handing anything back, the other covers every integration.
//
// Nothing here is a throughput threshold: on a loaded machine the
// schedulers start checks late (lag) and skip a slot whose previous check
// is still waiting, which the bounds take from the schedulers' own lag
// statistics. What they must never do is double a slot, leave an
// integration unchecked, or both hold a partition.
func TestTwoPollersShareTheWork(t *testing.T) {
	if testing.Short() {
		t.Skip("about 35 s of real time")
	}
	const (
		n        = 400
		interval = 2 * time.Second
		// The lease TTL outlives a renewal on a machine loaded enough to
		// take seconds for it: with 2 s, a load of 12 on 2 cores expired
		// 32 to 79 leases per run, and a lease lost mid-window moves
		// partitions between the pollers.
		ttl   = 8 * time.Second
		renew = 500 * time.Millisecond
	)
	e := newEnv(t)
	for k := range n {
		e.put(integration(k, `{}`))
	}
	col := e.collect()
	opts := func(id string) func(*healthpoller.Config) {
		return func(c *healthpoller.Config) {
			c.IntervalOverride = interval
			c.LeaseTTL, c.LeaseRenew = ttl, renew
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
	waitFor(t, 30*time.Second, "an even split of the partitions", balanced(a, b))

	// Three whole intervals, starting one interval after the split.
	from := time.Now().Add(interval)
	to := from.Add(3 * interval)
	<-time.After(time.Until(from)) // the window's bounds, not an outcome
	a0, b0 := a.svc.Stats(), b.svc.Stats()
	// The split is sampled through the window: a partition both hold
	// shows as more than 64 owned, one neither holds as fewer.
	var split []string
	for time.Now().Before(to) {
		sa, sb := a.svc.Stats().Leases, b.svc.Stats().Leases
		if sa.Owned != 32 || sb.Owned != 32 {
			split = append(split, fmt.Sprintf("a %d, b %d", sa.Owned, sb.Owned))
		}
		<-time.After(100 * time.Millisecond) // a sampling period, not an outcome
	}
	a1, b1 := a.svc.Stats(), b.svc.Stats()
	// The bound on a wait: a check starts up to LagMax after its slot,
	// and a slot is skipped while the previous check still waits or runs
	// (reporting included: a publish that waits on a loaded server), so
	// consecutive starts are an interval apart plus the lag of both and
	// up to two skipped slots. A target no replica schedules waits for
	// ever.
	lagMax := max(a1.Schedule.LagMax, b1.Schedule.LagMax)
	maxGap := 3*interval + 2*lagMax
	// One target's results are reported in order, so once each has a
	// result due after the window, the window's are all on the stream.
	var cs []checked
	var errs []error
	deadline := time.Now().Add(maxGap + 30*time.Second)
	for {
		cs, errs = col.snapshot()
		after := map[string]bool{}
		for _, c := range cs {
			if !c.CheckedAt.Before(to) {
				after[c.IntegrationID] = true
			}
		}
		if len(after) == n {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("%d of %d integrations not checked after the window by %v", n-len(after), n, deadline.Sub(to).Round(time.Second))
			break
		}
		<-time.After(50 * time.Millisecond) // polling period
	}
	if len(errs) > 0 {
		t.Fatalf("events that do not parse: %v", errs[0])
	}
	t.Logf("window of %v: lag p50 %v p99 %v max %v; a checked %d, skipped %d; b checked %d, skipped %d; wait allowed %v",
		to.Sub(from), max(a1.Schedule.LagP50, b1.Schedule.LagP50), max(a1.Schedule.LagP99, b1.Schedule.LagP99), lagMax,
		a1.Schedule.Checks-a0.Schedule.Checks, a1.Schedule.Skipped-a0.Schedule.Skipped,
		b1.Schedule.Checks-b0.Schedule.Checks, b1.Schedule.Skipped-b0.Schedule.Skipped, maxGap)

	// Each replica holds its half the whole window and loses nothing.
	if len(split) > 0 {
		t.Errorf("partitions owned during the window (want a 32, b 32): %v", split[:min(len(split), 5)])
	}
	if a1.Leases.Lost != a0.Leases.Lost || b1.Leases.Lost != b0.Leases.Lost {
		t.Errorf("leases lost during the window: a %d, b %d (TTL %v)", a1.Leases.Lost-a0.Leases.Lost, b1.Leases.Lost-b0.Leases.Lost, ttl)
	}
	// Both work, and in proportion to the halves they hold.
	da, db := a1.Schedule.Checks-a0.Schedule.Checks, b1.Schedule.Checks-b0.Schedule.Checks
	if da == 0 || db == 0 || float64(da) < 0.3*float64(da+db) || float64(db) < 0.3*float64(da+db) {
		t.Errorf("checks in the window by a %d, by b %d: each should do about half", da, db)
	}

	// No slot checked twice. A check's slot is the last one at or before
	// its start; lag can carry it to a later slot, but that slot was then
	// skipped (the check was still waiting), so one replica's checks never
	// share a slot: two in one slot are two replicas checking one target.
	perSlot := map[string]int{}
	starts := map[string][]time.Time{}
	for _, c := range cs {
		starts[c.IntegrationID] = append(starts[c.IntegrationID], c.CheckedAt)
		due := slotOf(c, interval)
		if due.Before(from) || !due.Before(to) {
			continue
		}
		perSlot[c.IntegrationID+"@"+due.Format(time.RFC3339Nano)]++
	}
	var doubled []string
	for k, v := range perSlot {
		if v > 1 {
			doubled = append(doubled, k)
		}
	}
	if len(doubled) > 0 {
		t.Errorf("%d slots checked twice, e.g. %v", len(doubled), doubled[:min(len(doubled), 3)])
	}

	// Every integration checked, none waiting longer than maxGap: from
	// the window's start to its first check, and between checks that
	// touch the window.
	late := 0
	for k := range n {
		id := integrationID(k)
		ts := starts[id]
		slices.SortFunc(ts, func(x, y time.Time) int { return x.Compare(y) })
		prev := from
		for _, at := range ts {
			if !at.After(from) {
				continue
			}
			if at.Sub(prev) > maxGap {
				if late < 5 {
					t.Errorf("%s not checked for %v (from %v after the window's start)", id, at.Sub(prev).Round(time.Millisecond), prev.Sub(from).Round(time.Millisecond))
				}
				late++
			}
			prev = at
			if !at.Before(to) {
				break
			}
		}
		if prev.Before(to) && time.Since(prev) > maxGap {
			if late < 5 {
				t.Errorf("%s not checked since %v after the window's start", id, prev.Sub(from).Round(time.Millisecond))
			}
			late++
		}
	}
	if late > 0 {
		t.Errorf("%d of %d integrations waited longer than %v for a check", late, n, maxGap)
	}

	// A clean stop hands b's partitions back at once; a takes them at its
	// next round and each integration is due within an interval. Two
	// intervals is the bound; the rest is the lag a measured (b's
	// shutdown, its checks in flight, alone took over 2 s once on a loaded
	// machine).
	stopped := time.Now()
	b.stop(t)
	coversAll(t, col, n, stopped, 2*interval+renew, interval, a, "a after b stopped")

	// A replica that dies hands nothing back: its leases expire a TTL
	// later. c replaces b, then loses its connection for good.
	c := e.start(t.TempDir(), opts("c"))
	waitFor(t, 30*time.Second, "an even split with c", balanced(a, c))
	killed := time.Now()
	c.nc.Close()
	c.cancel()
	// Its partitions are free once its leases expire (the TTL); then each
	// integration is due within one interval. With the production
	// defaults (15 s, 5 min) that is well within two intervals; here the
	// TTL is longer than an interval (see ttl), so allow it on top.
	coversAll(t, col, n, killed, ttl+2*interval, interval, a, "a after c died")
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
func coversAll(t *testing.T, col *collector, n int, since time.Time, within, interval time.Duration, by *running, who string) {
	t.Helper()
	var first map[string]time.Time
	var cs []checked
	waitFor(t, 30*time.Second, fmt.Sprintf("%s to check every integration", who), func() bool {
		cs, _ = col.snapshot()
		first = firstAfter(cs, since)
		return len(first) == n
	})
	// A check's slot is taken from its start, which lag delays: a
	// check due at the bound but started late counts in a later slot.
	lag := by.svc.Stats().Schedule.LagMax
	within += (lag + interval - 1) / interval * interval
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
