package schedule

import (
	"context"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"inthub.dev/pkg/fault"
)

// TestThousandTargetsSpreadOverTheInterval runs 1,000 targets at a 2 s
// interval for 20 s on the real clock, on aligned slots as the service
// runs them (the random offsets of the other mode are covered on the fake
// clock).
func TestThousandTargetsSpreadOverTheInterval(t *testing.T) {
	if testing.Short() {
		t.Skip("20 s of real time")
	}
	const (
		n        = 1000
		interval = 2 * time.Second
		runFor   = 20 * time.Second
	)
	var mu sync.Mutex
	starts := make(map[string][]time.Time, n)
	var all []time.Time
	check := checkFunc(func(_ context.Context, tg Target) Result {
		now := time.Now()
		mu.Lock()
		starts[tg.ID] = append(starts[tg.ID], now)
		all = append(all, now)
		mu.Unlock()
		return Result{Status: StatusHealthy}
	})
	sink := &recSink{}
	s, err := New(Config{Align: true}, check, sink)
	if err != nil {
		t.Fatal(err)
	}
	begin := time.Now()
	for i := range n {
		s.Upsert(Target{ID: fmt.Sprintf("i%04d", i), TenantID: "t", Type: "test.inmemory", Provider: fmt.Sprint("p", i%4), Interval: interval})
	}
	stop := run(t, s)
	time.Sleep(time.Until(begin.Add(runFor))) // the run's length, not waiting for an outcome
	stop()

	end := time.Now()

	mu.Lock()
	defer mu.Unlock()
	st := s.Stats()
	// On a loaded machine checks start late (lag) and a slot whose check
	// still waits is skipped; the bounds come from the lag the scheduler
	// measured, not from how fast the machine is. A check starts at most
	// LagMax after its slot, so consecutive starts are an interval apart
	// plus the lag of both and up to two skipped slots.
	maxGap := 3*interval + 2*st.LagMax
	iv := int64(interval)
	slotAt := func(id string, at time.Time) int64 {
		phase := int64(Phase(id, interval))
		return floorDiv(at.UnixNano()-phase, iv)*iv + phase
	}
	var due []time.Time
	for i := range n {
		id := fmt.Sprintf("i%04d", i)
		ts := starts[id]
		prev := begin
		// A start's slot is the last one at or before it. Lag can carry
		// it past the next slot, but that slot was then skipped (the
		// check still waited), so one target's starts never share a slot.
		slots := map[int64]bool{}
		for _, at := range ts {
			k := slotAt(id, at)
			if slots[k] {
				t.Errorf("%s checked twice for its slot at %v", id, time.Unix(0, k).Sub(begin))
			}
			slots[k] = true
			due = append(due, time.Unix(0, k))
			if gap := at.Sub(prev); gap > maxGap {
				t.Errorf("%s not checked for %v (allowed %v)", id, gap, maxGap)
			}
			prev = at
		}
		if gap := end.Sub(prev); gap > maxGap {
			t.Errorf("%s not checked for the last %v of the run (%d checks; allowed %v)", id, gap, len(ts), maxGap)
		}
	}
	// No herd: the slots are spread over the interval. Measured on the
	// slots, not the starts: a stall of the machine bunches starts
	// whatever the schedule.
	herd := func(ts []time.Time) int {
		slices.SortFunc(ts, func(a, b time.Time) int { return a.Compare(b) })
		maxIn, lo := 0, 0
		for hi := range ts {
			for ts[hi].Sub(ts[lo]) >= 100*time.Millisecond {
				lo++
			}
			maxIn = max(maxIn, hi-lo+1)
		}
		return maxIn
	}
	dueIn, startIn := herd(due), herd(all)
	t.Logf("%d checks; max %d due in any 100 ms, %d started (mean %d); lag p50 %v p99 %v max %v; skipped %d",
		len(all), dueIn, startIn, n/int(interval/(100*time.Millisecond)), st.LagP50, st.LagP99, st.LagMax, st.Skipped)
	if dueIn >= 150 {
		t.Errorf("%d checks due within 100 ms, want < 150 (a herd)", dueIn)
	}
	// Every check is reported, except those Run's end cut (dropped).
	if got := sink.len() + int(st.Dropped); got != len(all) {
		t.Errorf("%d reports and %d dropped for %d checks", sink.len(), st.Dropped, len(all))
	}
}

// TestHangingProvider: every check hangs until its timeout. Each is cut at
// the timeout and reported unhealthy/transient, the breaker opens after 3,
// no call is made while it is open, one trial goes through after OpenFor,
// and goroutines stay bounded throughout.
func TestHangingProvider(t *testing.T) {
	const (
		n        = 200
		interval = 30 * time.Millisecond
		timeout  = 10 * time.Millisecond
		openFor  = 200 * time.Millisecond
		maxConc  = 16
	)
	calls := newCounter()
	var inCheck atomic.Int64
	check := checkFunc(func(ctx context.Context, tg Target) Result {
		calls.add(tg.ID, time.Now())
		inCheck.Add(1)
		defer inCheck.Add(-1)
		<-ctx.Done() // a provider that never answers
		return Result{}
	})
	sink := &recSink{}
	s, err := New(Config{MaxConcurrent: maxConc, Breaker: Breaker{Failures: 3, OpenFor: openFor}}, check, sink)
	if err != nil {
		t.Fatal(err)
	}
	base := runtime.NumGoroutine()
	for i := range n {
		s.Upsert(Target{ID: fmt.Sprint("h", i), Type: "test.inmemory", Interval: interval, Timeout: timeout})
	}
	run(t, s)
	maxG := 0
	sawAllOpen := false
	eventually(t, 20*time.Second, "every target to have had two half-open trials", func() bool {
		maxG = max(maxG, runtime.NumGoroutine())
		if s.Stats().BreakersOpen == n {
			sawAllOpen = true
		}
		for i := range n {
			if calls.get(fmt.Sprint("h", i)) < 5 {
				return false
			}
		}
		return true
	})
	// Run's goroutine + the slots; a finished check's goroutine may still be
	// on its way out when its slot is taken again (under -race on a busy
	// machine, many are: 50 were seen once against 16 slots), so allow
	// three times as many again. A pile-up would approach one per target
	// (200) and grow.
	if limit := base + 1 + 4*maxConc; maxG > limit {
		t.Errorf("%d goroutines during the run, want at most %d (base %d)", maxG, limit, base)
	}
	if !sawAllOpen {
		t.Errorf("never saw all %d breakers open at once", n)
	}
	for i := range n {
		id := fmt.Sprint("h", i)
		ts := calls.times(id)
		res := sink.of(id)
		for j, r := range res[:3] {
			if r.Observed != StatusUnhealthy || r.Class != fault.ClassTransient || !strings.Contains(r.Message, "timed out after 10ms") ||
				r.Latency < timeout {
				t.Fatalf("%s result %d = %+v, want unhealthy/transient timeout", id, j, r)
			}
		}
		if res[2].Status != StatusUnhealthy {
			t.Errorf("%s reported %s after 3 timeouts", id, res[2].Status)
		}
		// Calls 4 and 5 are half-open trials: at least OpenFor after the
		// call that opened the breaker, with short-circuits in between.
		for j := 3; j < 5; j++ {
			if gap := ts[j].Sub(ts[j-1]); gap < openFor {
				t.Errorf("%s: call %d came %v after the previous one, within the %v the breaker is open", id, j+1, gap, openFor)
			}
		}
		shorts := 0
		for _, r := range res {
			if strings.Contains(r.Message, "circuit breaker open") {
				shorts++
			}
		}
		if shorts < 2 {
			t.Errorf("%s: %d short-circuit reports, want some while open", id, shorts)
		}
	}
	st := s.Stats()
	t.Logf("stats %+v, max goroutines %d (base %d)", st, maxG, base)
	if st.Timeouts < st.Checks || st.Timeouts > st.Checks+maxConc {
		t.Errorf("timeouts %d of %d checks: every check should time out", st.Timeouts, st.Checks)
	}
}

// TestCheckerIgnoringItsContext: a checker that never returns is reported
// timed out by the watchdog, and keeps its provider slot, so goroutines do
// not pile up; once it returns, checks resume.
func TestCheckerIgnoringItsContext(t *testing.T) {
	release := make(chan struct{})
	calls := newCounter()
	check := checkFunc(func(ctx context.Context, tg Target) Result {
		calls.add(tg.ID, time.Now())
		if tg.Provider == "stuck" {
			<-release
		}
		return Result{Status: StatusHealthy}
	})
	sink := &recSink{}
	s, err := New(Config{MaxPerProvider: 2}, check, sink)
	if err != nil {
		t.Fatal(err)
	}
	base := runtime.NumGoroutine()
	for i := range 5 {
		s.Upsert(Target{ID: fmt.Sprint("x", i), Provider: "stuck", Interval: 20 * time.Millisecond, Timeout: 10 * time.Millisecond})
	}
	s.Upsert(Target{ID: "other", Provider: "fine", Interval: 20 * time.Millisecond, Timeout: 10 * time.Millisecond})
	stop := run(t, s)
	var once sync.Once
	unblock := func() { once.Do(func() { close(release) }) }
	t.Cleanup(unblock) // before stop: Run waits for the stuck checkers
	maxG := 0
	eventually(t, 10*time.Second, "timeouts reported, later checks skipped, the other provider checked", func() bool {
		maxG = max(maxG, runtime.NumGoroutine())
		st := s.Stats()
		return st.Timeouts == 2 && st.Skipped >= 20 && calls.get("other") >= 10
	})
	if got := calls.total() - calls.get("other"); got != 2 {
		t.Errorf("%d calls into a provider whose 2 slots are stuck, want 2", got)
	}
	if limit := base + 1 + 2 + 2; maxG > limit {
		t.Errorf("%d goroutines, want at most %d", maxG, limit)
	}
	for _, r := range sink.all() {
		if r.t.ID == "other" {
			continue
		}
		if !strings.Contains(r.r.Message, "timed out") || r.r.Observed != StatusUnhealthy {
			t.Errorf("report %+v, want a timeout", r)
		}
	}
	unblock()
	eventually(t, 10*time.Second, "checks to resume", func() bool { return calls.total()-calls.get("other") >= 10 })
	stop()
}

// TestConcurrencyLimits measures the limits from inside the checker.
func TestConcurrencyLimits(t *testing.T) {
	const maxConc, maxPer = 5, 2
	var mu sync.Mutex
	global, peakGlobal := 0, 0
	per, peakPer := map[string]int{}, map[string]int{}
	check := checkFunc(func(ctx context.Context, tg Target) Result {
		mu.Lock()
		global++
		per[tg.Provider]++
		peakGlobal = max(peakGlobal, global)
		peakPer[tg.Provider] = max(peakPer[tg.Provider], per[tg.Provider])
		mu.Unlock()
		tm := time.NewTimer(5 * time.Millisecond)
		select {
		case <-tm.C:
		case <-ctx.Done():
		}
		tm.Stop()
		mu.Lock()
		global--
		per[tg.Provider]--
		mu.Unlock()
		return Result{Status: StatusHealthy}
	})
	s, err := New(Config{MaxConcurrent: maxConc, MaxPerProvider: maxPer}, check, &recSink{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 60 {
		s.Upsert(Target{ID: fmt.Sprint("c", i), Provider: fmt.Sprint("p", i%3), Interval: 20 * time.Millisecond, Timeout: 15 * time.Millisecond})
	}
	run(t, s)
	eventually(t, 10*time.Second, "300 checks", func() bool { return s.Stats().Checks >= 300 })
	mu.Lock()
	defer mu.Unlock()
	if peakGlobal != maxConc {
		t.Errorf("peak %d checks at once, want exactly the limit %d (demand is far above it)", peakGlobal, maxConc)
	}
	for p, n := range peakPer {
		if n != maxPer {
			t.Errorf("provider %s peaked at %d at once, want the limit %d", p, n, maxPer)
		}
	}
	if len(peakPer) != 3 {
		t.Errorf("providers seen: %v", peakPer)
	}
}
