package bus

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/sony/gobreaker/v2"

	"inthub.dev/pkg/fault"
)

func TestBreakerTurnsOfflineAfterStayingOpen(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	b := NewBreakers(BreakerPolicy{
		Key:          func(*message.Message) string { return "i1" },
		Failures:     2,
		OpenFor:      10 * time.Millisecond,
		OfflineAfter: time.Minute,
	}, nil)
	b.now = func() time.Time { return now }
	calls := 0
	down := errors.New("connection refused")
	h := b.Middleware(func(*message.Message) ([]*message.Message, error) {
		calls++
		return nil, fault.Transient(down)
	})
	msg := message.NewMessage("1", nil)
	for range 2 {
		if _, err := h(msg); !errors.Is(err, down) {
			t.Fatalf("err = %v, want the handler's", err)
		}
	}
	_, err := h(msg)
	if fault.ClassOf(err) != fault.ClassTransient || fault.RetryAfterOf(err) != 10*time.Millisecond || calls != 2 {
		t.Fatalf("just opened: err = %v (class %v, calls %d), want transient fast-fail", err, fault.ClassOf(err), calls)
	}
	if b.OpenFor("i1") != 0 {
		t.Fatalf("OpenFor = %v with a frozen clock", b.OpenFor("i1"))
	}
	now = now.Add(61 * time.Second)
	if got := b.OpenFor("i1"); got != 61*time.Second {
		t.Fatalf("OpenFor = %v, want 61s", got)
	}
	// The trial after OpenFor fails: still open, and now long enough to be
	// offline (gobreaker's own clock moved on too, so wait it out).
	deadline := time.Now().Add(5 * time.Second)
	for _, err = h(msg); fault.ClassOf(err) != fault.ClassOffline; _, err = h(msg) {
		if time.Now().After(deadline) {
			t.Fatalf("never offline: %v", err)
		}
		time.Sleep(time.Millisecond) // pace the poll; the outcome is checked, not slept for
	}
	b.Reset("i1")
	if b.OpenFor("i1") != 0 || b.State("i1") != "closed" {
		t.Fatalf("after Reset: open for %v, state %s", b.OpenFor("i1"), b.State("i1"))
	}
}

func TestDeferralNeitherTripsTheBreakerNorRetriesInProcess(t *testing.T) {
	b := NewBreakers(BreakerPolicy{Key: func(*message.Message) string { return "k" }, Failures: 1}, nil)
	h := b.Middleware(func(*message.Message) ([]*message.Message, error) {
		return nil, Defer(50*time.Millisecond, "budget")
	})
	for range 3 {
		_, err := h(message.NewMessage("1", nil))
		if !IsDeferral(err) || fault.RetryAfterOf(err) != 50*time.Millisecond {
			t.Fatalf("err = %v, want the deferral", err)
		}
	}
	if b.State("k") != "closed" {
		t.Fatalf("breaker %s after deferrals", b.State("k"))
	}
	if retryable(Defer(time.Millisecond, "x"), RetryPolicy{}.withDefaults()) {
		t.Fatal("a deferral is retried in process")
	}
}

// An error decided without calling the downstream (an integration marked
// offline, a refused request) and a deferral are neither failures nor
// successes for the breaker: they open no breaker, break no run of real
// failures, and close no half-open breaker in place of its trial.
func TestBreakerIgnoresWhatDidNotCallTheDownstream(t *testing.T) {
	offline := NotCalled(fault.Offline(errors.New("integration marked offline")))
	if fault.ClassOf(offline) != fault.ClassOffline || !IsNotCalled(fmt.Errorf("wrapped: %w", offline)) || NotCalled(nil) != nil {
		t.Fatalf("NotCalled lost the class or cannot be found: %v", offline)
	}
	refused := NotCalled(fault.Permanent(errors.New("integration disabled")))
	down := fault.Transient(errors.New("connection refused"))
	for _, tc := range []struct {
		name string
		err  error
	}{
		{"not called (offline)", offline},
		{"not called (refused)", refused},
		{"deferral", Defer(time.Millisecond, "budget")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := NewBreakers(BreakerPolicy{Key: func(*message.Message) string { return "k" }, Failures: 2, OpenFor: 20 * time.Millisecond}, nil)
			var next error
			h := b.Middleware(func(*message.Message) ([]*message.Message, error) { return nil, next })
			call := func(err error) error {
				next = err
				_, got := h(message.NewMessage("1", nil))
				return got
			}
			for range 10 {
				call(tc.err)
			}
			if s := b.State("k"); s != "closed" {
				t.Fatalf("breaker %s after 10 of them", s)
			}
			// One real failure, any number of these, one more real
			// failure: the run of two is not broken, the breaker opens.
			call(down)
			call(tc.err)
			call(down)
			if s := b.State("k"); s != "open" {
				t.Fatalf("breaker %s: the run of real failures was reset", s)
			}
			// Half-open: these pass through without taking the trial's
			// place; the next real call is the trial.
			eventually(t, 5*time.Second, "half-open", func() bool { return b.State("k") == "half-open" })
			if err := call(tc.err); errors.Is(err, gobreaker.ErrTooManyRequests) {
				t.Fatalf("refused in half-open: %v", err)
			}
			if s := b.State("k"); s != "half-open" {
				t.Fatalf("breaker %s after one of them in half-open, want still half-open", s)
			}
			if err := call(nil); err != nil {
				t.Fatalf("trial: %v", err)
			}
			if s := b.State("k"); s != "closed" {
				t.Fatalf("breaker %s after a successful trial", s)
			}
		})
	}
}
