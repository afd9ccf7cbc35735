package schedule

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"inthub.dev/events"
	"inthub.dev/pkg/fault"
)

func TestStatusNamesMatchEvents(t *testing.T) {
	for got, want := range map[string]events.HealthStatus{
		StatusHealthy: events.HealthHealthy, StatusDegraded: events.HealthDegraded,
		StatusUnhealthy: events.HealthUnhealthy, StatusUnknown: events.HealthUnknown,
	} {
		if got != string(want) {
			t.Errorf("status %q differs from events' %q", got, want)
		}
	}
}

func TestNewRequiresDependencies(t *testing.T) {
	ok := checkFunc(func(context.Context, Target) Result { return Result{Status: StatusHealthy} })
	if _, err := New(Config{}, nil, &recSink{}); err == nil || !strings.Contains(err.Error(), "Checker") {
		t.Errorf("nil checker: err = %v, want one naming the Checker", err)
	}
	if _, err := New(Config{}, ok, nil); err == nil || !strings.Contains(err.Error(), "Sink") {
		t.Errorf("nil sink: err = %v, want one naming the Sink", err)
	}
	if _, err := New(Config{Jitter: 1.5}, ok, &recSink{}); err == nil {
		t.Error("jitter 1.5 accepted")
	}
	s, err := New(Config{}, ok, &recSink{})
	if err != nil {
		t.Fatal(err)
	}
	c := s.cfg
	if c.DefaultInterval != 5*time.Minute || c.Jitter != 0.1 || c.MaxConcurrent != 64 || c.MaxPerProvider != 16 ||
		c.Thresholds != (Thresholds{Failure: 3, Success: 1}) || c.Breaker != (Breaker{Failures: 5, OpenFor: 10 * time.Minute}) {
		t.Errorf("defaults = %+v", c)
	}
	if err := s.Run(canceled()); err != nil {
		t.Errorf("Run: %v", err)
	}
	if err := s.Run(canceled()); err == nil {
		t.Error("second Run accepted")
	}
}

func canceled() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}

// fixture is a scheduler on a fake clock with a scripted checker.
type fixture struct {
	s     *Scheduler
	clock *fakeClock
	sink  *recSink
	calls *counter
	stop  func()
}

func newFixture(t *testing.T, cfg Config, check checkFunc) *fixture {
	t.Helper()
	f := &fixture{clock: newFakeClock(), sink: &recSink{}, calls: newCounter()}
	cfg.Clock = f.clock
	if cfg.Jitter == 0 {
		cfg.Jitter = -1
	}
	s, err := New(cfg, checkFunc(func(ctx context.Context, tg Target) Result {
		f.calls.add(tg.ID, f.clock.Now())
		return check(ctx, tg)
	}), f.sink)
	if err != nil {
		t.Fatal(err)
	}
	f.s = s
	f.stop = run(t, s)
	return f
}

func (f *fixture) step(t *testing.T, d time.Duration) { t.Helper(); step(t, f.s, f.clock, d) }

func healthy(context.Context, Target) Result { return Result{Status: StatusHealthy} }

func TestNewTargetCheckedWithinOneInterval(t *testing.T) {
	f := newFixture(t, Config{}, healthy)
	const n = 200
	for i := range n {
		f.s.Upsert(Target{ID: fmt.Sprint("t", i), Type: "test.inmemory", Interval: time.Minute})
	}
	settle(t, f.s, f.clock)
	// Spread over the first interval: after a quarter of it, roughly a
	// quarter have been checked, not all and not none.
	f.step(t, 15*time.Second)
	if got := f.calls.total(); got < n/10 || got > n/2 {
		t.Errorf("after 15s of a 1m interval %d of %d targets checked; want them spread over the interval", got, n)
	}
	f.step(t, 45*time.Second)
	for i := range n {
		if got := f.calls.get(fmt.Sprint("t", i)); got != 1 {
			t.Fatalf("target t%d checked %d times in its first interval, want 1", i, got)
		}
	}
	if got := f.sink.len(); got != n {
		t.Errorf("%d reports, want %d", got, n)
	}
	r := f.sink.all()[0].r
	if r.Status != StatusHealthy || r.Observed != StatusHealthy || r.CheckedAt.Location() != time.UTC || r.CheckedAt.IsZero() {
		t.Errorf("report = %+v", r)
	}
	if last, ok := f.s.LastChecked("t0"); !ok || last.After(f.clock.Now()) {
		t.Errorf("LastChecked = %v, %v", last, ok)
	}
	if _, ok := f.s.LastChecked("nope"); ok {
		t.Error("LastChecked of an unknown target is set")
	}
}

func TestIntervalChangeStartsNewCadence(t *testing.T) {
	f := newFixture(t, Config{}, healthy)
	tg := Target{ID: "a", Type: "test.inmemory", Interval: time.Minute, Version: 1}
	f.s.Upsert(tg)
	for range 3 {
		f.step(t, time.Minute)
	}
	if got := f.calls.get("a"); got != 3 {
		t.Fatalf("%d checks in 3 intervals, want 3", got)
	}
	changedAt := f.clock.Now()
	tg.Interval, tg.Version = 10*time.Second, 2
	f.s.Upsert(tg)
	for range 6 {
		f.step(t, 10*time.Second)
	}
	at := f.calls.times("a")
	if len(at) != 3+6 {
		t.Fatalf("%d checks in 6 new intervals after 3 old ones, want 9: %v (changed at %v)", len(at), at, changedAt)
	}
	if first := at[3].Sub(changedAt); first <= 0 || first > 10*time.Second {
		t.Errorf("first check %v after the change, want within the new interval", first)
	}
	for i := 4; i < len(at); i++ {
		if gap := at[i].Sub(at[i-1]); gap != 10*time.Second {
			t.Errorf("gap %d = %v, want 10s", i, gap)
		}
	}
	// Back to a long interval: no check for most of it.
	tg.Interval, tg.Version = time.Hour, 3
	f.s.Upsert(tg)
	f.step(t, time.Hour)
	if got := len(f.calls.times("a")); got != 10 {
		t.Errorf("%d checks, want 10 (one in the first hour-long interval): %v; stats %+v", got, f.calls.times("a"), f.s.Stats())
	}
}

func TestUpsertIgnoresStaleAndIdentical(t *testing.T) {
	f := newFixture(t, Config{}, healthy)
	f.s.Upsert(Target{ID: "a", Interval: time.Minute, Version: 5})
	settle(t, f.s, f.clock)
	f.s.mu.Lock()
	due := f.s.byID["a"].due
	f.s.mu.Unlock()
	f.s.Upsert(Target{ID: "a", Interval: time.Minute, Version: 5})             // a replayed snapshot
	f.s.Upsert(Target{ID: "a", Interval: time.Second, Version: 4})             // a late event
	f.s.Upsert(Target{ID: "a", Interval: time.Minute, Timeout: 0, Version: 5}) // defaults match
	f.s.mu.Lock()
	e := f.s.byID["a"]
	if e.due != due || e.t.Interval != time.Minute || e.t.Version != 5 || e.gen != 0 {
		t.Errorf("entry changed: due %v→%v, %+v gen %d", due, e.due, e.t, e.gen)
	}
	f.s.mu.Unlock()
	f.s.Upsert(Target{ID: ""}) // ignored, not scheduled
	if got := f.s.Stats().Targets; got != 1 {
		t.Errorf("%d targets, want 1", got)
	}
}

func TestRemoveStopsChecksAtOnce(t *testing.T) {
	f := newFixture(t, Config{}, healthy)
	f.s.Upsert(Target{ID: "a", Interval: time.Minute})
	f.s.Upsert(Target{ID: "b", Interval: time.Minute})
	f.step(t, time.Minute)
	f.s.Remove("a")
	f.s.Remove("never-added")
	for range 5 {
		f.step(t, time.Minute)
	}
	if got := f.calls.get("a"); got != 1 {
		t.Errorf("removed target checked %d times, want 1 (before the remove)", got)
	}
	if got := f.calls.get("b"); got != 6 {
		t.Errorf("other target checked %d times, want 6", got)
	}
	f.s.Remove("b")
	settle(t, f.s, f.clock)
	f.clock.Advance(time.Hour)
	settle(t, f.s, f.clock)
	if got := f.calls.get("b"); got != 6 {
		t.Errorf("removed target checked %d times, want 6", got)
	}
}

func TestInFlightResultDroppedOnRemoveChangeAndShutdown(t *testing.T) {
	entered := make(chan string, 10)
	release := make(chan struct{})
	f := newFixture(t, Config{}, func(ctx context.Context, tg Target) Result {
		entered <- tg.ID
		select {
		case <-release:
		case <-ctx.Done():
		}
		return Result{Status: StatusHealthy}
	})
	f.s.Upsert(Target{ID: "removed", Interval: time.Minute, Version: 1})
	f.s.Upsert(Target{ID: "changed", Interval: time.Minute, Version: 1})
	f.s.Upsert(Target{ID: "kept", Interval: time.Minute, Version: 1})
	settle(t, f.s, f.clock)
	f.clock.Advance(time.Minute)
	for range 3 {
		<-entered
	}
	f.s.Remove("removed")
	f.s.Upsert(Target{ID: "changed", Interval: time.Minute, Version: 2})
	close(release)
	eventually(t, 5*time.Second, "results to be dealt with", func() bool { return f.s.Stats().InFlight == 0 })
	st := f.s.Stats()
	if st.Dropped != 2 || st.Checks != 3 {
		t.Errorf("stats = %+v, want 3 checks and 2 dropped", st)
	}
	if got := f.sink.all(); len(got) != 1 || got[0].t.ID != "kept" {
		t.Errorf("reports = %+v, want only kept's", got)
	}

	// A check in flight at shutdown is cancelled and not reported as a
	// failure of the integration.
	g := newFixture(t, Config{}, func(ctx context.Context, tg Target) Result {
		entered <- tg.ID
		<-ctx.Done()
		return Result{Status: StatusUnhealthy, Message: ctx.Err().Error()}
	})
	g.s.Upsert(Target{ID: "x", Interval: time.Minute})
	settle(t, g.s, g.clock)
	g.clock.Advance(time.Minute)
	<-entered
	g.stop()
	if got := g.sink.len(); got != 0 {
		t.Errorf("%d reports of a check cancelled by shutdown, want 0", got)
	}
	if st := g.s.Stats(); st.Dropped != 1 || st.InFlight != 0 {
		t.Errorf("after shutdown stats = %+v, want 1 dropped, none in flight", st)
	}
}

func TestCheckStillRunningIsNotStartedTwice(t *testing.T) {
	entered := make(chan struct{}, 10)
	release := make(chan struct{})
	f := newFixture(t, Config{}, func(ctx context.Context, tg Target) Result {
		entered <- struct{}{}
		<-release
		return Result{Status: StatusHealthy}
	})
	f.s.Upsert(Target{ID: "slow", Interval: time.Minute, Timeout: time.Minute})
	settle(t, f.s, f.clock)
	f.clock.Advance(time.Minute)
	<-entered
	for range 3 {
		f.clock.Advance(time.Minute)
		eventually(t, 5*time.Second, "the due time to be handled", func() bool { return f.clock.sleeping() })
	}
	if got, st := f.calls.get("slow"), f.s.Stats(); got != 1 || st.Skipped != 3 || st.InFlight != 1 {
		t.Errorf("calls %d, stats %+v; want 1 call, 3 skipped, 1 in flight", got, st)
	}
	close(release)
	f.step(t, time.Minute)
	if got := f.calls.get("slow"); got != 2 {
		t.Errorf("calls %d after release and one interval, want 2", got)
	}
}

func TestBreakerOpensShortCircuitsAndHalfOpens(t *testing.T) {
	var status = StatusUnhealthy
	var statusMu = make(chan struct{}, 1)
	setStatus := func(s string) { statusMu <- struct{}{}; status = s; <-statusMu }
	getStatus := func() string { statusMu <- struct{}{}; defer func() { <-statusMu }(); return status }
	f := newFixture(t, Config{Breaker: Breaker{Failures: 3, OpenFor: 5 * time.Minute}},
		func(context.Context, Target) Result {
			return Result{Status: getStatus(), Message: "connection refused", Class: fault.ClassTransient}
		})
	f.s.Upsert(Target{ID: "a", Interval: time.Minute, Version: 1})
	// One letter per interval: C = checker called, S = short-circuited.
	var pattern strings.Builder
	stepAndRecord := func() {
		before, reports := f.calls.get("a"), f.sink.len()
		f.step(t, time.Minute)
		switch {
		case f.sink.len() != reports+1:
			pattern.WriteString("?")
		case f.calls.get("a") == before+1:
			pattern.WriteString("C")
		default:
			pattern.WriteString("S")
		}
	}
	for range 13 {
		stepAndRecord()
	}
	if got, want := pattern.String(), "CCCSSSSCSSSSC"; got != want {
		t.Errorf("calls per interval = %s, want %s (3 failures open it for 5m, then one trial per 5m)", got, want)
	}
	if st := f.s.Stats(); st.BreakersOpen != 1 || st.ShortCircuited != 8 || st.Checks != 5 {
		t.Errorf("stats = %+v", st)
	}
	res := f.sink.of("a")
	short := res[3]
	if short.Status != StatusUnhealthy || short.Observed != StatusUnhealthy || short.Class != fault.ClassTransient ||
		!strings.Contains(short.Message, "circuit breaker open") {
		t.Errorf("short-circuit result = %+v", short)
	}

	// Recovery: the next trial succeeds and closes the breaker.
	setStatus(StatusHealthy)
	pattern.Reset()
	for range 7 {
		stepAndRecord()
	}
	if got, want := pattern.String(), "SSSSCCC"; got != want {
		t.Errorf("after recovery calls per interval = %s, want %s", got, want)
	}
	if st := f.s.Stats(); st.BreakersOpen != 0 {
		t.Errorf("breakers open = %d after a good trial", st.BreakersOpen)
	}
	if last := f.sink.of("a"); last[len(last)-1].Status != StatusHealthy {
		t.Errorf("last reported %+v", last[len(last)-1])
	}

	// A new version closes an open breaker at once.
	setStatus(StatusUnhealthy)
	for range 3 {
		stepAndRecord()
	}
	if f.s.Stats().BreakersOpen != 1 {
		t.Fatal("breaker did not reopen")
	}
	f.s.Upsert(Target{ID: "a", Interval: time.Minute, Version: 2})
	pattern.Reset()
	stepAndRecord()
	if pattern.String() != "C" || f.s.Stats().BreakersOpen != 0 {
		t.Errorf("after a new version: %s, %+v; want a call and a closed breaker", pattern.String(), f.s.Stats())
	}
}

func TestThresholdsEndToEnd(t *testing.T) {
	script := []string{StatusHealthy, StatusUnhealthy, StatusUnhealthy, StatusUnhealthy, StatusHealthy, StatusUnhealthy}
	i := 0
	f := newFixture(t, Config{Breaker: Breaker{Failures: -1}}, func(context.Context, Target) Result {
		s := script[i%len(script)]
		i++
		return Result{Status: s, Message: s}
	})
	f.s.Upsert(Target{ID: "a", Interval: time.Minute})
	for range len(script) {
		f.step(t, time.Minute)
	}
	var got, observed []string
	for _, r := range f.sink.of("a") {
		got = append(got, r.Status)
		observed = append(observed, r.Observed)
	}
	want := []string{StatusHealthy, StatusHealthy, StatusHealthy, StatusUnhealthy, StatusHealthy, StatusHealthy}
	if fmt.Sprint(got) != fmt.Sprint(want) || fmt.Sprint(observed) != fmt.Sprint(script) {
		t.Errorf("reported %v observed %v; want %v and %v", got, observed, want, script)
	}
}

func TestCheckerMisbehaviour(t *testing.T) {
	tests := []struct {
		name    string
		result  func() Result
		status  string
		message string
	}{
		{"panic", func() Result { panic("boom") }, StatusUnhealthy, "panicked: boom"},
		{"bad status", func() Result { return Result{Status: "fine"} }, StatusUnknown, `status "fine"`},
		{"empty status", func() Result { return Result{} }, StatusUnknown, `status ""`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, Config{}, func(context.Context, Target) Result { return tc.result() })
			f.s.Upsert(Target{ID: "a", Interval: time.Minute})
			f.step(t, time.Minute)
			res := f.sink.of("a")
			if len(res) != 1 || res[0].Status != tc.status || !strings.Contains(res[0].Message, tc.message) {
				t.Errorf("reports = %+v, want one %s containing %q", res, tc.status, tc.message)
			}
		})
	}
}

func TestSinkErrorsCounted(t *testing.T) {
	f := newFixture(t, Config{}, healthy)
	f.sink.err = fault.Transient(fmt.Errorf("bus down"))
	f.s.Upsert(Target{ID: "a", Interval: time.Minute})
	f.step(t, time.Minute)
	f.step(t, time.Minute)
	if st := f.s.Stats(); st.ReportErrors != 2 || st.Checks != 2 {
		t.Errorf("stats = %+v, want 2 checks, 2 report errors", st)
	}
}
