package bus

import (
	"errors"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

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
