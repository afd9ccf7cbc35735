package bus

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"inthub.dev/events"
	"inthub.dev/pkg/fault"
)

func TestTransientThenSuccess(t *testing.T) {
	e := newEnv(t)
	var calls, done atomic.Int32
	w := newWorker(t, e.js, testConfig("t1"), events.SubjectIntegrationHealthChecked, func(ctx context.Context, ev events.Event) error {
		if calls.Add(1) <= 3 {
			return fault.Transient(errors.New("provider 503"))
		}
		done.Add(1)
		return nil
	})
	start(t, w)
	e.publish(healthEvent(t, 1, "x"))
	eventually(t, 10*time.Second, "processed", func() bool { return done.Load() == 1 && e.settled(StreamIntegrations, "t1") })
	if got := calls.Load(); got != 4 {
		t.Fatalf("attempts = %d, want 4", got)
	}
	if n := e.streamMsgs(StreamDLQ); n != 0 {
		t.Fatalf("DLQ has %d messages, want 0", n)
	}
	info := e.consumerInfo(StreamIntegrations, "t1")
	// three in-process tries in the first delivery, the fourth in the second
	if info.Delivered.Consumer != 2 {
		t.Fatalf("deliveries = %d, want 2", info.Delivered.Consumer)
	}
}

func TestPermanentErrorDeadLettersOnce(t *testing.T) {
	e := newEnv(t)
	var calls atomic.Int32
	w := newWorker(t, e.js, testConfig("t2"), events.SubjectIntegrationHealthChecked, func(ctx context.Context, ev events.Event) error {
		calls.Add(1)
		return fault.Permanent(errors.New("404 repository not found"))
	})
	start(t, w)
	ev := healthEvent(t, 7, "perm")
	e.publish(ev)
	eventually(t, 10*time.Second, "dead letter", func() bool { return e.streamMsgs(StreamDLQ) == 1 && e.settled(StreamIntegrations, "t2") })

	msgs := e.readAll(StreamDLQ)
	m := msgs[0]
	if m.Subject() != "dlq."+events.SubjectIntegrationHealthChecked {
		t.Fatalf("subject %q", m.Subject())
	}
	body, _ := ev.Marshal()
	if string(m.Data()) != string(body) {
		t.Fatalf("body changed:\n%s\n%s", m.Data(), body)
	}
	h := m.Headers()
	want := map[string]string{
		HeaderOriginalSubject: events.SubjectIntegrationHealthChecked,
		HeaderStreamSequence:  "1",
		HeaderDeliveryCount:   "1",
		HeaderErrorClass:      "permanent",
		HeaderService:         "t2",
		HeaderTenantID:        tenantA,
		HeaderIntegrationID:   integrationID(7),
		HeaderOriginalMsgID:   ev.ID,
	}
	for k, v := range want {
		if got := h.Get(k); got != v {
			t.Errorf("header %s = %q, want %q", k, got, v)
		}
	}
	if got := h.Get(HeaderLastError); got != "404 repository not found" {
		t.Errorf("last error %q", got)
	}
	for _, k := range []string{HeaderFirstFailure, HeaderLastFailure} {
		ts, err := time.Parse(time.RFC3339Nano, h.Get(k))
		if err != nil || ts.Location() != time.UTC {
			t.Errorf("header %s = %q: %v", k, h.Get(k), err)
		}
	}
	if calls.Load() != 1 {
		t.Fatalf("handler calls = %d, want 1 (permanent errors are not retried)", calls.Load())
	}
	info := e.consumerInfo(StreamIntegrations, "t2")
	if info.NumRedelivered != 0 || info.AckFloor.Stream != 1 {
		t.Fatalf("original not acked once: redelivered=%d ackfloor=%d", info.NumRedelivered, info.AckFloor.Stream)
	}
}

func TestPoisonMessagesDeadLetteredWithoutRetry(t *testing.T) {
	e := newEnv(t)
	var calls atomic.Int32
	w := newWorker(t, e.js, testConfig("t3"), events.SubjectIntegrationHealthChecked, func(ctx context.Context, ev events.Event) error {
		calls.Add(1)
		return nil
	})
	start(t, w)

	good := healthEvent(t, 1, "ok")
	bad := healthEvent(t, 1, "bad")
	bad.Data = []byte(`{"integrationId":"` + integrationID(1) + `","status":"sideways"}`)
	badBody, _ := bad.Marshal()
	ctx := context.Background()
	if _, err := e.js.Publish(ctx, events.SubjectIntegrationHealthChecked, []byte("{not json")); err != nil {
		t.Fatal(err)
	}
	if _, err := e.js.Publish(ctx, events.SubjectIntegrationHealthChecked, badBody); err != nil {
		t.Fatal(err)
	}
	e.publish(good)
	eventually(t, 10*time.Second, "two dead letters", func() bool { return e.streamMsgs(StreamDLQ) == 2 && e.settled(StreamIntegrations, "t3") })
	if calls.Load() != 1 {
		t.Fatalf("handler calls = %d, want 1 (only the good event)", calls.Load())
	}
	for i, m := range e.readAll(StreamDLQ) {
		h := m.Headers()
		if h.Get(HeaderErrorClass) != "permanent" || h.Get(HeaderDeliveryCount) != "1" {
			t.Errorf("letter %d: class %q deliveries %q", i, h.Get(HeaderErrorClass), h.Get(HeaderDeliveryCount))
		}
		if h.Get(HeaderLastError) == "" {
			t.Errorf("letter %d: no reason", i)
		}
		t.Logf("letter %d: %s", i, h.Get(HeaderLastError))
	}
	if info := e.consumerInfo(StreamIntegrations, "t3"); info.NumRedelivered != 0 {
		t.Fatalf("poison was redelivered %d times", info.NumRedelivered)
	}
}

func TestRetriesExhaustedDeadLetters(t *testing.T) {
	e := newEnv(t)
	var calls atomic.Int32
	cfg := testConfig("t4")
	cfg.MaxDeliver = 3
	cfg.Breaker.Failures = 100 // this test is about redeliveries, not the breaker
	w := newWorker(t, e.js, cfg, events.SubjectIntegrationHealthChecked, func(ctx context.Context, ev events.Event) error {
		calls.Add(1)
		return fault.Transient(errors.New("connection reset"))
	})
	start(t, w)
	e.publish(healthEvent(t, 2, "x"))
	eventually(t, 10*time.Second, "dead letter", func() bool { return e.streamMsgs(StreamDLQ) == 1 && e.settled(StreamIntegrations, "t4") })
	h := e.readAll(StreamDLQ)[0].Headers()
	if h.Get(HeaderDeliveryCount) != "3" || h.Get(HeaderErrorClass) != "transient" {
		t.Fatalf("delivery count %q class %q", h.Get(HeaderDeliveryCount), h.Get(HeaderErrorClass))
	}
	if calls.Load() != 9 {
		t.Fatalf("calls = %d, want 3 deliveries x 3 tries", calls.Load())
	}
}

func TestConsumerConfigSetsMaxDeliverAndExplicitAck(t *testing.T) {
	e := newEnv(t)
	w := newWorker(t, e.js, testConfig("t5"), events.SubjectIntegrationHealthChecked, func(context.Context, events.Event) error { return nil })
	// The consumer as an earlier release made it, with a server-side limit.
	old := w.Consumer()
	old.MaxDeliver = 5 + spareDeliveries
	if _, err := e.js.CreateOrUpdateConsumer(context.Background(), StreamIntegrations, old); err != nil {
		t.Fatal(err)
	}
	start(t, w)
	info := e.consumerInfo(StreamIntegrations, "t5")
	if info.Config.Durable != "t5" || info.Config.AckPolicy != jetstream.AckExplicitPolicy {
		t.Fatalf("durable %q ack %v", info.Config.Durable, info.Config.AckPolicy)
	}
	// The worker enforces MaxDeliver on counted deliveries; the server
	// would count deferrals too.
	if info.Config.MaxDeliver != -1 {
		t.Fatalf("MaxDeliver = %d, want -1", info.Config.MaxDeliver)
	}
}

func TestTransientRedeliveryIsDelayed(t *testing.T) {
	e := newEnv(t)
	cfg := testConfig("t6")
	cfg.Retry.Attempts = 1
	const delay = 400 * time.Millisecond
	cfg.Redelivery = func(uint64) time.Duration { return delay }
	var mu sync.Mutex
	var seen []time.Time
	w := newWorker(t, e.js, cfg, events.SubjectIntegrationHealthChecked, func(ctx context.Context, ev events.Event) error {
		mu.Lock()
		seen = append(seen, time.Now())
		n := len(seen)
		mu.Unlock()
		if n == 1 {
			return fault.Transient(errors.New("try later"))
		}
		return nil
	})
	start(t, w)
	e.publish(healthEvent(t, 1, "x"))
	eventually(t, 10*time.Second, "second delivery", func() bool { mu.Lock(); defer mu.Unlock(); return len(seen) == 2 })
	mu.Lock()
	gap := seen[1].Sub(seen[0])
	mu.Unlock()
	// A plain Nak would be redelivered at once.
	if gap < delay*9/10 {
		t.Fatalf("redelivered after %s, want at least %s", gap, delay)
	}
}

func TestSlowHandlerBeyondAckWaitProcessedOnce(t *testing.T) {
	e := newEnv(t)
	cfg := testConfig("t7")
	cfg.AckWait = time.Second
	cfg.HandlerTimeout = 10 * time.Second
	var calls atomic.Int32
	w := newWorker(t, e.js, cfg, events.SubjectIntegrationHealthChecked, func(ctx context.Context, ev events.Event) error {
		calls.Add(1)
		// Work that takes 2.5 AckWaits.
		select {
		case <-time.After(2500 * time.Millisecond):
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	})
	start(t, w)
	e.publish(healthEvent(t, 1, "slow"))
	eventually(t, 15*time.Second, "acked", func() bool { return e.settled(StreamIntegrations, "t7") })
	info := e.consumerInfo(StreamIntegrations, "t7")
	if calls.Load() != 1 || info.NumRedelivered != 0 || info.Delivered.Consumer != 1 {
		t.Fatalf("calls=%d redelivered=%d delivered=%d, want one delivery", calls.Load(), info.NumRedelivered, info.Delivered.Consumer)
	}
}

func TestPerKeyBreaker(t *testing.T) {
	e := newEnv(t)
	cfg := testConfig("t8")
	cfg.MaxDeliver = 1000 // nothing may be dead-lettered here
	cfg.Retry.Attempts = 1
	cfg.Breaker = BreakerPolicy{Failures: 3, OpenFor: 300 * time.Millisecond}
	keyA := integrationID(1)
	var broken atomic.Bool
	broken.Store(true)
	var aDone, bDone, aCalls atomic.Int32
	w := newWorker(t, e.js, cfg, events.SubjectIntegrationHealthChecked, func(ctx context.Context, ev events.Event) error {
		if ev.IntegrationID() == keyA {
			aCalls.Add(1)
			if broken.Load() {
				return fault.Transient(errors.New("A is down"))
			}
			aDone.Add(1)
			return nil
		}
		bDone.Add(1)
		return nil
	})
	start(t, w)
	for i := range 5 {
		e.publish(healthEvent(t, 1, "a"+strconv.Itoa(i)))
	}
	eventually(t, 10*time.Second, "A's breaker open", func() bool { return w.Breakers().State(keyA) == "open" })
	for i := range 50 {
		e.publish(healthEvent(t, 2, "b"+strconv.Itoa(i)))
	}
	eventually(t, 10*time.Second, "B flows while A is open", func() bool { return bDone.Load() == 50 })
	if aDone.Load() != 0 {
		t.Fatalf("A processed while broken")
	}
	if s := w.Breakers().State(integrationID(2)); s != "closed" {
		t.Fatalf("B's breaker %s", s)
	}
	callsWhileOpen := aCalls.Load()
	broken.Store(false)
	eventually(t, 20*time.Second, "A recovers", func() bool { return aDone.Load() == 5 && e.settled(StreamIntegrations, "t8") })
	if s := w.Breakers().State(keyA); s != "closed" {
		t.Fatalf("A's breaker %s after recovery", s)
	}
	if n := e.streamMsgs(StreamDLQ); n != 0 {
		t.Fatalf("DLQ has %d", n)
	}
	t.Logf("A calls while failing: %d (breaker kept the rest from the downstream)", callsWhileOpen)
}

func TestBusDownPublishesSpoolAndArriveOnce(t *testing.T) {
	e := newEnv(t)
	sp := openSpool(t)
	p := e.publisher(PublisherConfig{Spool: sp, Timeout: 500 * time.Millisecond, RetryEvery: 50 * time.Millisecond})
	const total, keys = 1000, 10
	ctx := context.Background()
	for i := range total {
		switch i {
		case 300:
			e.srv.Stop()
		case 700:
			if p.Spooled() == 0 {
				t.Fatal("nothing spooled while the bus was down")
			}
			if err := e.srv.Start(); err != nil {
				t.Fatal(err)
			}
		}
		if err := p.Publish(ctx, healthEvent(t, i%keys, strconv.Itoa(i))); err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
	}
	eventually(t, 30*time.Second, "all 1000 in the stream", func() bool {
		return e.nc.Status() == nats.CONNECTED && p.Spooled() == 0 && e.streamMsgs(StreamIntegrations) >= total
	})
	msgs := e.readAll(StreamIntegrations)
	if len(msgs) != total {
		t.Fatalf("stream has %d messages, want %d", len(msgs), total)
	}
	seen := map[int]bool{}
	last := map[string]int{}
	for _, m := range msgs {
		ev, err := events.Parse(m.Data())
		if err != nil {
			t.Fatal(err)
		}
		n, _ := strconv.Atoi(messageOf(t, ev))
		if seen[n] {
			t.Fatalf("event %d twice", n)
		}
		seen[n] = true
		key := ev.IntegrationID()
		if prev, ok := last[key]; ok && prev > n {
			t.Fatalf("key %s: %d after %d", key, n, prev)
		}
		last[key] = n
	}
}

func TestWorkerKilledMidBatchLosesNothing(t *testing.T) {
	e := newEnv(t)
	const total = 200
	for i := range total {
		e.publish(healthEvent(t, i%5, strconv.Itoa(i)))
	}
	var mu sync.Mutex
	processed := map[string]int{}
	record := func(ev events.Event) {
		mu.Lock()
		processed[messageOf(t, ev)]++
		mu.Unlock()
	}
	count := func() int { mu.Lock(); defer mu.Unlock(); return len(processed) }

	// The first worker has its own connection, which is cut while it has
	// messages in hand: no ack or nack reaches the server, as with kill -9.
	nc1 := e.srv.Connect()
	js1 := mustJS(t, nc1)
	cfg := testConfig("t9")
	cfg.AckWait = time.Second
	var handled atomic.Int32
	block := make(chan struct{})
	w1 := newWorker(t, js1, cfg, events.SubjectIntegrationHealthChecked, func(ctx context.Context, ev events.Event) error {
		if handled.Add(1) > 50 {
			<-block // in flight when the connection dies
			return errors.New("killed")
		}
		record(ev)
		return nil
	})
	stop1 := start(t, w1)
	eventually(t, 10*time.Second, "first worker in the middle", func() bool { return handled.Load() > 50+int32(cfg.Concurrency)-1 })
	nc1.Close()
	close(block)
	stop1()

	w2 := newWorker(t, e.js, cfg, events.SubjectIntegrationHealthChecked, func(ctx context.Context, ev events.Event) error {
		record(ev)
		return nil
	})
	start(t, w2)
	eventually(t, 20*time.Second, "all processed after restart", func() bool { return count() == total && e.settled(StreamIntegrations, "t9") })
	if n := e.streamMsgs(StreamDLQ); n != 0 {
		t.Fatalf("DLQ has %d", n)
	}
}

func TestMiddlewareOrderDeadLetterOutsideRetry(t *testing.T) {
	// One delivery only; the handler fails twice, then succeeds. With the
	// outcome layer outside the retry, the retry cures it. Moved inside,
	// the first failure of the last delivery is dead-lettered and acked
	// before the retry sees it.
	run := func(t *testing.T, reorder func([]message.HandlerMiddleware)) (dlq uint64, succeeded int32) {
		e := newEnv(t)
		cfg := testConfig("order")
		cfg.MaxDeliver = 1
		var calls, ok atomic.Int32
		w := newWorker(t, e.js, cfg, events.SubjectIntegrationHealthChecked, func(ctx context.Context, ev events.Event) error {
			if calls.Add(1) <= 2 {
				return fault.Transient(errors.New("flaky"))
			}
			ok.Add(1)
			return nil
		})
		if reorder != nil {
			reorder(w.layers)
		}
		start(t, w)
		e.publish(healthEvent(t, 1, "x"))
		eventually(t, 10*time.Second, "settled", func() bool { return e.settled(StreamIntegrations, "order") })
		return e.streamMsgs(StreamDLQ), ok.Load()
	}
	t.Run("stack", func(t *testing.T) {
		dlq, ok := run(t, nil)
		if dlq != 0 || ok != 1 {
			t.Fatalf("dlq=%d succeeded=%d, want 0 and 1", dlq, ok)
		}
	})
	t.Run("outcome inside retry is wrong", func(t *testing.T) {
		dlq, ok := run(t, func(l []message.HandlerMiddleware) {
			l[1], l[2] = l[2], l[1] // trace, retry, outcome, ...
		})
		if dlq != 1 || ok != 0 {
			t.Fatalf("dlq=%d succeeded=%d: the order check cannot tell the orders apart", dlq, ok)
		}
	})
}

func TestConservation(t *testing.T) {
	if testing.Short() {
		t.Skip("10,000 messages")
	}
	e := newEnv(t)
	const total = 10_000
	p := e.publisher(PublisherConfig{})
	ctx := context.Background()
	for i := range total {
		if err := p.Publish(ctx, healthEvent(t, i%50, strconv.Itoa(i))); err != nil {
			t.Fatal(err)
		}
	}
	guard, err := NewIdempotencyGuard(ctx, e.js, "conservation", time.Hour, Topology{})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	effects := map[int]int{}
	var attempts sync.Map
	handler := func(ctx context.Context, ev events.Event) error {
		n, _ := strconv.Atoi(messageOf(t, ev))
		a, _ := attempts.LoadOrStore(n, new(atomic.Int32))
		try := a.(*atomic.Int32).Add(1)
		switch {
		case n%20 == 7: // 5% are bad input
			return fault.Permanent(fmt.Errorf("bad input %d", n))
		case (n*31+int(try)*17)%5 == 0: // ~20% of tries fail for a while
			return fault.Transient(fmt.Errorf("flaky %d", n))
		}
		mu.Lock()
		effects[n]++
		mu.Unlock()
		return nil
	}
	count := func() int { mu.Lock(); defer mu.Unlock(); return len(effects) }
	cfg := testConfig("conservation")
	cfg.Concurrency = 16
	cfg.Idempotency = guard
	cfg.Retry = RetryPolicy{Attempts: 2, Initial: time.Millisecond, Max: 2 * time.Millisecond, MaxElapsed: 100 * time.Millisecond}
	cfg.Redelivery = func(uint64) time.Duration { return 5 * time.Millisecond }

	stop1 := start(t, newWorker(t, e.js, cfg, events.SubjectIntegrationHealthChecked, handler))
	eventually(t, 60*time.Second, "half processed", func() bool { return count() >= total/2 })
	stop1() // restart in the middle
	start(t, newWorker(t, e.js, cfg, events.SubjectIntegrationHealthChecked, handler))
	eventually(t, 120*time.Second, "all settled", func() bool {
		return e.settled(StreamIntegrations, "conservation") && uint64(count())+e.streamMsgs(StreamDLQ) >= total
	})

	dlq := map[int]bool{}
	for _, m := range e.readAll(StreamDLQ) {
		ev, err := events.Parse(m.Data())
		if err != nil {
			t.Fatal(err)
		}
		n, _ := strconv.Atoi(messageOf(t, ev))
		if dlq[n] {
			t.Fatalf("%d dead-lettered twice", n)
		}
		dlq[n] = true
	}
	mu.Lock()
	defer mu.Unlock()
	for n, c := range effects {
		if c != 1 {
			t.Errorf("effect of %d applied %d times", n, c)
		}
		if dlq[n] {
			t.Errorf("%d both processed and dead-lettered", n)
		}
	}
	if len(effects)+len(dlq) != total {
		t.Fatalf("processed %d + DLQ %d != %d", len(effects), len(dlq), total)
	}
	t.Logf("processed %d, dead-lettered %d", len(effects), len(dlq))
}

// A worker started while NATS is down waits for it, then consumes: a
// service that starts during an outage must not die of it.
func TestWorkerStartedDuringOutageBeginsWhenBusIsBack(t *testing.T) {
	e := newEnv(t)
	var done atomic.Int32
	w := newWorker(t, e.js, testConfig("late"), events.SubjectIntegrationHealthChecked, func(context.Context, events.Event) error {
		done.Add(1)
		return nil
	})
	e.srv.Stop()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	res := make(chan error, 1)
	go func() { res <- w.Run(ctx) }()
	select {
	case err := <-res:
		t.Fatalf("Run returned during the outage: %v", err)
	case <-time.After(6 * time.Second): // longer than a JetStream API request waits
	}
	if err := e.srv.Start(); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "running", func() bool {
		select {
		case <-w.Running():
			return true
		default:
			return false
		}
	})
	e.publish(healthEvent(t, 1, "x"))
	eventually(t, 10*time.Second, "consumed", func() bool { return done.Load() == 1 })
	cancel()
	if err := <-res; err != nil {
		t.Fatalf("Run: %v", err)
	}
}

// A message over the server's max_payload is refused as permanent, not
// spooled: the spool would replay it, refused, forever.
func TestOversizedPublishIsPermanentNotSpooled(t *testing.T) {
	e := newEnv(t)
	sp := openSpool(t)
	p := e.publisher(PublisherConfig{Spool: sp, SkipValidation: true})
	big := &nats.Msg{Subject: events.SubjectIntegrationHealthChecked, Data: make([]byte, int(e.nc.MaxPayload())+1), Header: nats.Header{}}
	err := p.PublishMsg(context.Background(), big)
	if fault.ClassOf(err) != fault.ClassPermanent || !errors.Is(err, nats.ErrMaxPayload) {
		t.Fatalf("err = %v (class %v), want permanent max payload", err, fault.ClassOf(err))
	}
	if n := p.Spooled(); n != 0 {
		t.Fatalf("%d spooled", n)
	}
}
