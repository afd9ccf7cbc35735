package bus

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"inthub.dev/events"
	"inthub.dev/pkg/fault"
)

// A message deferred far more often than MaxDeliver (a long budget
// shortage) is handled once when its turn comes, not dead-lettered: a
// deferral is a delivery for JetStream but not an attempt.
func TestDeferredManyTimesCompletesOnce(t *testing.T) {
	e := newEnv(t)
	const deferrals = 50
	var calls, done atomic.Int32
	var mu sync.Mutex
	var counted []uint64
	w := newWorker(t, e.js, testConfig("defer50"), events.SubjectIntegrationHealthChecked, func(ctx context.Context, ev events.Event) error {
		if calls.Add(1) <= deferrals {
			return Defer(2*time.Millisecond, "budget")
		}
		mu.Lock()
		counted = append(counted, DeliveryFrom(ctx).Counted())
		mu.Unlock()
		done.Add(1)
		return nil
	})
	start(t, w)
	e.publish(healthEvent(t, 1, "x"))
	eventually(t, 30*time.Second, "handled", func() bool { return done.Load() == 1 && e.settled(StreamIntegrations, "defer50") })
	if n := e.streamMsgs(StreamDLQ); n != 0 {
		t.Fatalf("DLQ has %d messages after %d deferrals (MaxDeliver %d)", n, deferrals, testConfig("").MaxDeliver)
	}
	if c := calls.Load(); c != deferrals+1 {
		t.Fatalf("handler calls = %d, want %d", c, deferrals+1)
	}
	if info := e.consumerInfo(StreamIntegrations, "defer50"); info.Delivered.Consumer != deferrals+1 {
		t.Fatalf("deliveries = %d, want %d", info.Delivered.Consumer, deferrals+1)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(counted) != 1 || counted[0] != 1 {
		t.Fatalf("the delivery that did the work counted as %v, want its first attempt", counted)
	}
}

// The deferrals of a message are counted outside the process: a worker
// started after another one deferred a message many times gives it its
// full MaxDeliver of attempts.
func TestDeferralCountSurvivesRestart(t *testing.T) {
	e := newEnv(t)
	cfg := testConfig("restart")
	cfg.MaxDeliver = 6
	cfg.Retry.Attempts = 1
	cfg.Breaker.Failures = 100
	var deferred atomic.Int32
	w1 := newWorker(t, e.js, cfg, events.SubjectIntegrationHealthChecked, func(context.Context, events.Event) error {
		deferred.Add(1)
		return Defer(20*time.Millisecond, "budget")
	})
	stop1 := start(t, w1)
	e.publish(healthEvent(t, 1, "x"))
	eventually(t, 20*time.Second, "deferred 8 times", func() bool { return deferred.Load() >= 8 })
	stop1()

	var calls, done atomic.Int32
	var mu sync.Mutex
	var counted []uint64
	w2 := newWorker(t, e.js, cfg, events.SubjectIntegrationHealthChecked, func(ctx context.Context, ev events.Event) error {
		mu.Lock()
		counted = append(counted, DeliveryFrom(ctx).Counted())
		mu.Unlock()
		if calls.Add(1) <= 4 {
			return fault.Transient(errors.New("provider 503"))
		}
		done.Add(1)
		return nil
	})
	start(t, w2)
	eventually(t, 20*time.Second, "settled", func() bool { return e.settled(StreamIntegrations, "restart") })
	if n := e.streamMsgs(StreamDLQ); n != 0 {
		t.Fatalf("dead-lettered after %d deferrals and 4 failures (MaxDeliver %d): the count did not survive the restart", deferred.Load(), cfg.MaxDeliver)
	}
	if done.Load() != 1 {
		t.Fatalf("done = %d", done.Load())
	}
	mu.Lock()
	defer mu.Unlock()
	// A delivery the first worker had buffered but not handled when it
	// stopped counts (it ended without an outcome): 1..5 or 2..6.
	for i, c := range counted {
		if c != counted[0]+uint64(i) || counted[0] > 2 {
			t.Fatalf("counted deliveries seen by the handler: %v", counted)
		}
	}
}

// Deferrals do not shield a message that really fails: MaxDeliver counted
// failures dead-letter it once, however many deferrals came between.
func TestFailuresBetweenDeferralsStillDeadLetter(t *testing.T) {
	e := newEnv(t)
	cfg := testConfig("mixed")
	cfg.MaxDeliver = 3
	cfg.Retry.Attempts = 1
	cfg.Breaker.Failures = 100
	var calls, failures atomic.Int32
	w := newWorker(t, e.js, cfg, events.SubjectIntegrationHealthChecked, func(context.Context, events.Event) error {
		if calls.Add(1)%2 == 1 {
			return Defer(5*time.Millisecond, "budget")
		}
		failures.Add(1)
		return fault.Transient(errors.New("connection reset"))
	})
	start(t, w)
	e.publish(healthEvent(t, 3, "x"))
	eventually(t, 20*time.Second, "dead letter", func() bool { return e.streamMsgs(StreamDLQ) == 1 && e.settled(StreamIntegrations, "mixed") })
	if f, c := failures.Load(), calls.Load(); f != 3 || c != 6 {
		t.Fatalf("failures = %d, calls = %d; want 3 failures among 6 deliveries", f, c)
	}
	h := e.readAll(StreamDLQ)[0].Headers()
	if h.Get(HeaderDeliveryCount) != "6" || h.Get(HeaderDeferralCount) != "3" || h.Get(HeaderErrorClass) != "transient" {
		t.Fatalf("deliveries %q deferrals %q class %q", h.Get(HeaderDeliveryCount), h.Get(HeaderDeferralCount), h.Get(HeaderErrorClass))
	}
}

// The consumer has no server-side limit, so the worker stops a message
// whose deliveries keep ending without an outcome (here: naked by someone
// else, as a crashing worker would leave it) itself, into the DLQ, without
// calling the handler.
func TestMessageWithoutOutcomeIsDeadLetteredPastSpares(t *testing.T) {
	e := newEnv(t)
	cfg := testConfig("noout")
	var calls atomic.Int32
	w := newWorker(t, e.js, cfg, events.SubjectIntegrationHealthChecked, func(context.Context, events.Event) error {
		calls.Add(1)
		return nil
	})
	ctx := context.Background()
	cons, err := e.js.CreateOrUpdateConsumer(ctx, StreamIntegrations, w.Consumer())
	if err != nil {
		t.Fatal(err)
	}
	e.publish(healthEvent(t, 4, "x"))
	for range cfg.MaxDeliver + spareDeliveries {
		m, err := cons.Next(jetstream.FetchMaxWait(5 * time.Second))
		if err != nil {
			t.Fatal(err)
		}
		if err := m.Nak(); err != nil {
			t.Fatal(err)
		}
	}
	start(t, w)
	eventually(t, 10*time.Second, "dead letter", func() bool { return e.streamMsgs(StreamDLQ) == 1 && e.settled(StreamIntegrations, "noout") })
	if calls.Load() != 0 {
		t.Fatalf("handler called %d times", calls.Load())
	}
	h := e.readAll(StreamDLQ)[0].Headers()
	if n, _ := strconv.Atoi(h.Get(HeaderDeliveryCount)); n != cfg.MaxDeliver+spareDeliveries+1 {
		t.Fatalf("delivery count %q", h.Get(HeaderDeliveryCount))
	}
}

// A deferral that would outlast half of what the stream keeps is
// dead-lettered: left waiting, the stream would drop the message
// unannounced.
func TestDeferralBeyondTheStreamsAgeIsDeadLettered(t *testing.T) {
	e := newEnv(t)
	var calls atomic.Int32
	w := newWorker(t, e.js, testConfig("toolong"), events.SubjectIntegrationHealthChecked, func(context.Context, events.Event) error {
		calls.Add(1)
		return Defer(30*24*time.Hour, "budget")
	})
	start(t, w)
	e.publish(healthEvent(t, 5, "x"))
	eventually(t, 10*time.Second, "dead letter", func() bool { return e.streamMsgs(StreamDLQ) == 1 && e.settled(StreamIntegrations, "toolong") })
	h := e.readAll(StreamDLQ)[0].Headers()
	if h.Get(HeaderErrorClass) != "permanent" || calls.Load() != 1 {
		t.Fatalf("class %q after %d calls", h.Get(HeaderErrorClass), calls.Load())
	}
}

func TestLedgerKeys(t *testing.T) {
	l := newLedger(nil, "SCM", "annotation-health")
	if got := l.key(42); got != "SCM.annotation-health.42" {
		t.Errorf("key %q", got)
	}
	if got := newLedger(nil, "SCM", "a b").key(1); got != "SCM.x612062.1" {
		t.Errorf("key of an odd durable %q", got)
	}
	var nl *ledger
	if n, err := nl.count(context.Background(), 1); n != 0 || err != nil {
		t.Errorf("nil ledger count = %d, %v", n, err)
	}
}

// A worker that stops hands the messages it holds but has not handled back
// at once, and they count as no attempt: a restart neither waits out the
// ack wait nor uses up deliveries.
func TestStoppingWorkerHandsBackUnhandledMessages(t *testing.T) {
	e := newEnv(t)
	cfg := testConfig("handback")
	cfg.AckWait = 30 * time.Second
	cfg.Concurrency = 1
	cfg.PullBatch = 50
	const total = 30
	for i := range total {
		e.publish(healthEvent(t, i%3, strconv.Itoa(i)))
	}
	var first atomic.Int32
	w1 := newWorker(t, e.js, cfg, events.SubjectIntegrationHealthChecked, func(context.Context, events.Event) error {
		first.Add(1)
		time.Sleep(20 * time.Millisecond) // a slow handler, so that most messages wait in the client's buffer
		return nil
	})
	stop1 := start(t, w1)
	eventually(t, 10*time.Second, "a few handled", func() bool { return first.Load() >= 3 })
	stop1()

	var mu sync.Mutex
	counted := map[string]uint64{}
	w2 := newWorker(t, e.js, cfg, events.SubjectIntegrationHealthChecked, func(ctx context.Context, ev events.Event) error {
		mu.Lock()
		counted[messageOf(t, ev)] = DeliveryFrom(ctx).Counted()
		mu.Unlock()
		return nil
	})
	start(t, w2)
	// Well within the 30 s ack wait: handed back, not timed out.
	eventually(t, 10*time.Second, "the rest handled by the second worker", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(counted)+int(first.Load()) >= total && e.settled(StreamIntegrations, "handback")
	})
	mu.Lock()
	defer mu.Unlock()
	for m, c := range counted {
		if c != 1 {
			t.Errorf("message %s: counted delivery %d in the second worker, want 1", m, c)
		}
	}
}
