package schedule

import (
	"context"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeClock moves only when told to.
type fakeClock struct {
	mu     sync.Mutex
	now    time.Time
	timers map[*fakeTimer]struct{}
}

type fakeTimer struct {
	at time.Time
	ch chan time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Date(2025, 3, 4, 5, 0, 0, 0, time.UTC), timers: map[*fakeTimer]struct{}{}}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) TimerAt(at time.Time) (<-chan time.Time, func() bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &fakeTimer{at: at, ch: make(chan time.Time, 1)}
	if !at.After(c.now) {
		t.ch <- c.now
		return t.ch, func() bool { return false }
	}
	c.timers[t] = struct{}{}
	return t.ch, func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		_, ok := c.timers[t]
		delete(c.timers, t)
		return ok
	}
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	for t := range c.timers {
		if !t.at.After(c.now) {
			t.ch <- c.now
			delete(c.timers, t)
		}
	}
}

// sleeping reports whether some timer is set in the future: after an
// Advance, the scheduler has caught up once it sets one.
func (c *fakeClock) sleeping() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for t := range c.timers {
		if t.at.After(c.now) {
			return true
		}
	}
	return false
}

type checkFunc func(ctx context.Context, t Target) Result

func (f checkFunc) Check(ctx context.Context, t Target) Result { return f(ctx, t) }

type report struct {
	t  Target
	r  Result
	at time.Time // real time
}

// recSink records every report.
type recSink struct {
	mu      sync.Mutex
	reports []report
	err     error
}

func (s *recSink) Report(_ context.Context, t Target, r Result) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.reports = append(s.reports, report{t: t, r: r, at: time.Now()})
	return s.err
}

func (s *recSink) all() []report {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]report(nil), s.reports...)
}

func (s *recSink) of(id string) []Result {
	var out []Result
	for _, r := range s.all() {
		if r.t.ID == id {
			out = append(out, r.r)
		}
	}
	return out
}

func (s *recSink) len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.reports)
}

// run starts s.Run and stops it at cleanup, failing if it does not return.
func run(tb testing.TB, s *Scheduler) (stop func()) {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					tb.Errorf("Run: %v", err)
				}
			case <-time.After(10 * time.Second):
				tb.Errorf("Run did not return within 10s of cancel")
			}
		})
	}
	tb.Cleanup(stop)
	return stop
}

// eventually polls cond until it holds or the deadline passes.
func eventually(tb testing.TB, within time.Duration, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(within)
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out after %v waiting for %s", within, what)
		}
		<-tick.C
	}
}

// settle waits until the scheduler has processed the clock's last move and
// every check it started has been reported.
func settle(tb testing.TB, s *Scheduler, c *fakeClock) {
	tb.Helper()
	eventually(tb, 5*time.Second, "scheduler to settle", func() bool {
		// The loop's state first: a Stats read before it could predate
		// the dispatch that the timer seen after it was set by.
		loopIdle := s.armed.Load() == s.signals.Load() && c.sleeping()
		st := s.Stats()
		return (loopIdle || st.Targets == 0) && st.InFlight == 0 && st.Queued == 0
	})
}

// step advances the fake clock and waits for the scheduler to settle.
func step(tb testing.TB, s *Scheduler, c *fakeClock, d time.Duration) {
	tb.Helper()
	settle(tb, s, c)
	c.Advance(d)
	settle(tb, s, c)
}

// counter counts calls per target, safely.
type counter struct {
	mu sync.Mutex
	n  map[string]int
	at map[string][]time.Time
}

func newCounter() *counter { return &counter{n: map[string]int{}, at: map[string][]time.Time{}} }

func (c *counter) add(id string, at time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.n[id]++
	c.at[id] = append(c.at[id], at)
}

func (c *counter) get(id string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[id]
}

func (c *counter) times(id string) []time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]time.Time(nil), c.at[id]...)
}

func (c *counter) total() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, v := range c.n {
		n += v
	}
	return n
}
