package schedule

import (
	"context"
	"fmt"
	"testing"
	"time"
)

func TestPhaseIsStableAndSpread(t *testing.T) {
	const iv = 10 * time.Second
	buckets := make([]int, 10)
	for i := range 10_000 {
		id := fmt.Sprintf("8f1d2c3e-0000-4000-8000-%012d", i)
		p := Phase(id, iv)
		if p != Phase(id, iv) || p < 0 || p >= iv {
			t.Fatalf("Phase(%s) = %v: not stable or out of [0, %v)", id, p, iv)
		}
		buckets[p/time.Second]++
	}
	for i, n := range buckets {
		if n < 850 || n > 1150 {
			t.Errorf("second %d of the interval holds %d of 10,000 phases, want about 1,000: %v", i, n, buckets)
		}
	}
	if Phase("x", 0) != 0 {
		t.Error("Phase with no interval")
	}
}

func TestFloorDiv(t *testing.T) {
	for _, tc := range []struct{ a, b, want int64 }{{7, 2, 3}, {-7, 2, -4}, {-8, 2, -4}, {0, 3, 0}, {6, 3, 2}} {
		if got := floorDiv(tc.a, tc.b); got != tc.want {
			t.Errorf("floorDiv(%d, %d) = %d, want %d", tc.a, tc.b, got, tc.want)
		}
	}
}

// twoReplicas are two aligned schedulers on clocks that show the same time,
// as two processes on NTP-synchronised machines do.
type twoReplicas struct {
	a, b *fixture
}

func (r twoReplicas) step(t *testing.T, d time.Duration) {
	t.Helper()
	settle(t, r.a.s, r.a.clock)
	settle(t, r.b.s, r.b.clock)
	r.a.clock.Advance(d)
	r.b.clock.Advance(d)
	settle(t, r.a.s, r.a.clock)
	settle(t, r.b.s, r.b.clock)
}

// TestAlignedHandoffNeitherDoublesNorSkips moves targets between two
// aligned schedulers mid-interval, both ways, and checks that every target
// is checked exactly once per interval throughout, on its phase.
func TestAlignedHandoffNeitherDoublesNorSkips(t *testing.T) {
	const (
		n  = 100
		iv = time.Minute
	)
	r := twoReplicas{
		a: newFixture(t, Config{Align: true, Jitter: 0.3}, healthy),
		b: newFixture(t, Config{Align: true, Jitter: 0.3}, healthy),
	}
	start := r.a.clock.Now()
	tg := func(i int) Target { return Target{ID: fmt.Sprint("t", i), Type: "test.inmemory", Interval: iv} }
	for i := range n {
		r.a.s.Upsert(tg(i))
	}
	for range 4 {
		r.step(t, 15*time.Second)
	}
	// Half move to b at 1m07s, then back at 2m31s.
	r.step(t, 7*time.Second)
	for i := range n / 2 {
		r.a.s.Handoff(tg(i).ID)
		r.b.s.Upsert(tg(i))
	}
	for range 5 {
		r.step(t, 16*time.Second)
	}
	for i := range n / 2 {
		r.b.s.Handoff(tg(i).ID)
		r.a.s.Upsert(tg(i))
	}
	for range 10 {
		r.step(t, 15*time.Second)
	}
	end := r.a.clock.Now()
	for i := range n {
		id := tg(i).ID
		at := append(r.a.calls.times(id), r.b.calls.times(id)...)
		sortTimes(at)
		phase := Phase(id, iv)
		// Checks fall on slots (the fake clock fires a timer when it is
		// advanced past it, so a check is seen at the end of the step
		// that crossed its slot; compare slots, not instants).
		want := 0
		for s := start.UnixNano() - start.UnixNano()%int64(iv) + int64(phase); s <= end.UnixNano(); s += int64(iv) {
			if s > start.UnixNano() {
				want++
			}
		}
		if len(at) != want {
			t.Errorf("%s checked %d times over %v, want %d (one per interval): %v", id, len(at), end.Sub(start), want, at)
			continue
		}
		for j := 1; j < len(at); j++ {
			if gap := at[j].Sub(at[j-1]); gap < iv-15*time.Second || gap > iv+15*time.Second {
				t.Errorf("%s: checks %v apart, want one interval (±one step)", id, gap)
			}
		}
	}
	if got := r.b.calls.total(); got == 0 {
		t.Error("b never checked: the handoff did nothing")
	}
}

func sortTimes(ts []time.Time) {
	for i := 1; i < len(ts); i++ {
		for j := i; j > 0 && ts[j].Before(ts[j-1]); j-- {
			ts[j], ts[j-1] = ts[j-1], ts[j]
		}
	}
}

// TestAlignedSlotsAreWallClockPhases: a check is due at k·interval + Phase,
// whatever the time the target was added.
func TestAlignedSlotsAreWallClockPhases(t *testing.T) {
	f := newFixture(t, Config{Align: true}, healthy)
	f.clock.Advance(1234 * time.Millisecond) // not on any round time
	for i := range 20 {
		f.s.Upsert(Target{ID: fmt.Sprint("p", i), Interval: 10 * time.Second})
	}
	settle(t, f.s, f.clock)
	f.s.mu.Lock()
	for id, e := range f.s.byID {
		wall := f.s.epochWall + e.due
		if got, want := time.Duration(wall%int64(10*time.Second)), Phase(id, 10*time.Second); got != want {
			t.Errorf("%s due at phase %v, want %v", id, got, want)
		}
		if e.due <= f.s.now() || e.due > f.s.now()+int64(10*time.Second) {
			t.Errorf("%s first due %v from now, want within one interval", id, time.Duration(e.due-f.s.now()))
		}
	}
	f.s.mu.Unlock()
	// A stall of several intervals resumes at each target's next slot, once.
	f.step(t, 35*time.Second)
	for i := range 20 {
		if got := f.calls.get(fmt.Sprint("p", i)); got != 1 {
			t.Errorf("p%d checked %d times after a 35 s stall, want 1", i, got)
		}
	}
}

func TestHandoffKeepsTheResultInFlight(t *testing.T) {
	entered := make(chan string, 10)
	release := make(chan struct{})
	f := newFixture(t, Config{}, func(ctx context.Context, tg Target) Result {
		entered <- tg.ID
		select {
		case <-release:
		case <-ctx.Done():
		}
		return Result{Status: StatusUnhealthy}
	})
	f.s.Upsert(Target{ID: "moved", Interval: time.Minute})
	f.s.Upsert(Target{ID: "deleted", Interval: time.Minute})
	settle(t, f.s, f.clock)
	f.clock.Advance(time.Minute)
	<-entered
	<-entered
	f.s.Handoff("moved")
	f.s.Remove("deleted")
	close(release)
	eventually(t, 5*time.Second, "both checks to end", func() bool { return f.s.Stats().InFlight == 0 })
	if got := f.sink.all(); len(got) != 1 || got[0].t.ID != "moved" {
		t.Errorf("reports %+v, want the handed-off target's only", got)
	}
	if st := f.s.Stats(); st.Targets != 0 || st.Dropped != 1 || st.BreakersOpen != 0 {
		t.Errorf("stats %+v", st)
	}
	f.step(t, time.Hour)
	if got := f.calls.total(); got != 2 {
		t.Errorf("%d checks after handoff and remove, want none more", got-2)
	}
}

func TestStatusesReadUnknownWhenStale(t *testing.T) {
	block := make(chan struct{})
	stuckCalls := 0 // only the scheduler's one check at a time touches it
	f := newFixture(t, Config{}, func(ctx context.Context, tg Target) Result {
		if tg.ID == "stuck" {
			stuckCalls++
			if stuckCalls > 1 {
				select {
				case <-block:
				case <-ctx.Done():
				}
			}
		}
		return Result{Status: StatusHealthy}
	})
	t.Cleanup(func() { close(block) })
	statuses := func() map[string]string {
		m := map[string]string{}
		f.s.Statuses(func(t Target, s string) { m[t.ID] = s })
		return m
	}
	f.s.Upsert(Target{ID: "fresh", Interval: time.Minute})
	f.s.Upsert(Target{ID: "stuck", Interval: 10 * time.Minute, Timeout: 10 * time.Minute})
	settle(t, f.s, f.clock)
	if got := statuses(); got["fresh"] != StatusUnknown || got["stuck"] != StatusUnknown {
		t.Errorf("before any check: %v", got)
	}
	for range 10 {
		f.step(t, time.Minute)
	}
	if got := statuses(); got["fresh"] != StatusHealthy || got["stuck"] != StatusHealthy {
		t.Errorf("after healthy checks: %v", got)
	}
	// stuck's second check hangs (its timeout is real time, far away);
	// fresh keeps being checked. Two intervals after stuck's last result,
	// it reads unknown.
	f.clock.Advance(10 * time.Minute)
	eventually(t, 5*time.Second, "stuck's second check to start", func() bool { return f.s.Stats().InFlight == 1 })
	for range 11 {
		f.clock.Advance(time.Minute)
		eventually(t, 5*time.Second, "fresh's check", func() bool { return f.s.Stats().InFlight == 1 && f.clock.sleeping() })
	}
	if got := statuses(); got["fresh"] != StatusHealthy || got["stuck"] != StatusUnknown {
		t.Errorf("with stuck's last result more than two intervals old: %v, want fresh healthy, stuck unknown", got)
	}
}

// TestAlignedCreateUpdateDelete: in aligned mode a new target is checked
// within one interval, an interval change moves it to the new interval's
// slots at once, and a removed one is not checked again.
func TestAlignedCreateUpdateDelete(t *testing.T) {
	f := newFixture(t, Config{Align: true}, healthy)
	tg := Target{ID: "a", Interval: 10 * time.Second, Version: 1}
	created := f.clock.Now()
	f.s.Upsert(tg)
	for range 10 {
		f.step(t, time.Second)
	}
	at := f.calls.times("a")
	if len(at) != 1 || at[0].Sub(created) > 10*time.Second {
		t.Fatalf("checks %v in the first interval after creation at %v, want one", at, created)
	}
	tg.Interval, tg.Version = 25*time.Second, 2
	changed := f.clock.Now()
	f.s.Upsert(tg)
	for range 60 {
		f.step(t, time.Second)
	}
	at = f.calls.times("a")[1:]
	if len(at) < 2 {
		t.Fatalf("checks after the change: %v", at)
	}
	if first := at[0].Sub(changed); first <= 0 || first > 25*time.Second {
		t.Errorf("first check %v after the change, want within the new interval", first)
	}
	for i, x := range at {
		if got, want := time.Duration(x.UnixNano()%int64(25*time.Second)), Phase("a", 25*time.Second).Truncate(time.Second)+time.Second; got != want && got != want-time.Second {
			t.Errorf("check %d at phase %v of the new interval, want about %v", i, got, want)
		}
		if i > 0 && x.Sub(at[i-1]) != 25*time.Second {
			t.Errorf("checks %v apart after the change, want 25s", x.Sub(at[i-1]))
		}
	}
	f.s.Remove("a")
	n := f.calls.total()
	f.step(t, time.Minute)
	if f.calls.total() != n {
		t.Error("a removed target was checked")
	}
}
