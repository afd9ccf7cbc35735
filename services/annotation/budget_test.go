package annotation

import (
	"fmt"
	"testing"
	"time"
)

type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func TestBudgetsSpreadWaitersInOrder(t *testing.T) {
	c := &clock{time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	b := newBudgets(Budget{PerSecond: 1}, Budget{PerSecond: 100}, c.now)
	var waits []time.Duration
	for i := range 5 {
		g := b.acquire(fmt.Sprint(i), "acc", "host", []int{1})
		waits = append(waits, g.wait)
	}
	for i, w := range waits {
		if w != time.Duration(i)*time.Second {
			t.Fatalf("waits = %v, want 0s 1s 2s 3s 4s", waits)
		}
	}
	// Each comes back when its slot is due and writes without paying again.
	c.t = c.t.Add(2 * time.Second)
	if g := b.acquire("2", "acc", "host", []int{1}); g.wait != 0 {
		t.Fatalf("due ticket: wait %v", g.wait)
	}
	if g := b.acquire("4", "acc", "host", []int{1}); g.wait != 2*time.Second {
		t.Fatalf("early ticket: wait %v, want the 2s left", g.wait)
	}
}

func TestBudgetPenaltyVoidsTickets(t *testing.T) {
	c := &clock{time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	b := newBudgets(Budget{PerSecond: 10}, Budget{PerSecond: 100}, c.now)
	b.acquire("a", "acc", "host", []int{1})
	if g := b.acquire("b", "acc", "host", []int{1}); g.wait != 100*time.Millisecond {
		t.Fatalf("second slot wait %v", g.wait)
	}
	b.penalize("acc", c.t.Add(10*time.Second))
	c.t = c.t.Add(time.Second)
	g := b.acquire("b", "acc", "host", []int{1})
	if g.wait < 9*time.Second {
		t.Fatalf("ticket honoured inside a penalty: wait %v", g.wait)
	}
	if !b.penaltyOf("acc").Equal(c.t.Add(9 * time.Second)) {
		t.Fatalf("penalty %v", b.penaltyOf("acc"))
	}
}

func TestBudgetDegradesToWhatFitsNow(t *testing.T) {
	c := &clock{time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	b := newBudgets(Budget{PerSecond: 1000, PerMinute: 3}, Budget{PerSecond: 1000}, c.now)
	if g := b.acquire("x", "acc", "host", []int{5, 1}); g.level != 1 || g.wait != 0 {
		t.Fatalf("5 writes against a minute budget of 3: %+v, want level 1 now", g)
	}
	c.t = c.t.Add(time.Second)
	if g := b.acquire("y", "acc", "host", []int{2, 1}); g.level != 0 || g.wait != 0 {
		t.Fatalf("2 writes with 2 left: %+v, want level 0 now", g)
	}
	g := b.acquire("z", "acc", "host", []int{2, 1})
	if g.wait <= 0 || g.level != 1 {
		t.Fatalf("budget spent: %+v, want a wait at the cheapest level", g)
	}
}
