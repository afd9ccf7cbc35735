package bus

// These tests document, against the real watermill-nats v2.1.3 jetstream
// subscriber, each gap that DESIGN §4 lists ("Known gaps of watermill-nats"),
// and show that our frame (NewWorker and its subscriber) does not have it.
// If a test's "watermill-nats" half starts failing after an upgrade, the
// library fixed the gap: re-read subscriber.go's doc comment and DESIGN §4.

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wmjs "github.com/ThreeDotsLabs/watermill-nats/v2/pkg/jetstream"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"inthub.dev/events"
	"inthub.dev/pkg/fault"
)

// gapStream creates a stream shaped the way watermill-nats expects by
// default: stream name = subject = topic.
func (e *env) gapStream(topic string) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := e.js.CreateStream(ctx, jetstream.StreamConfig{
		Name: topic, Subjects: []string{topic}, Storage: jetstream.MemoryStorage,
	}); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) gapConsumer(topic string, cfg jetstream.ConsumerConfig) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := e.js.CreateOrUpdateConsumer(ctx, topic, cfg); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) publishRaw(m *nats.Msg) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := e.js.PublishMsg(ctx, m); err != nil {
		e.t.Fatal(err)
	}
}

// wmDurable is a watermill-nats ResourceInitializer that creates (or updates)
// the durable consumer cfg on the topic's stream and never deletes it.
func wmDurable(cfg jetstream.ConsumerConfig) wmjs.ResourceInitializer {
	return func(ctx context.Context, js jetstream.JetStream, topic string) (jetstream.Consumer, func(context.Context, watermill.LoggerAdapter), error) {
		c, err := js.CreateOrUpdateConsumer(ctx, topic, cfg)
		return c, nil, err
	}
}

// runLibrary subscribes watermill-nats's jetstream Subscriber to topic and
// feeds its messages, one at a time, to handle, acking on nil and nacking on
// an error, as a Watermill router handler does. handle's stop channel is
// closed when the test ends, so slow work can be cut short. The subscriber
// gets its own connection: its Close drains the connection it was given.
func runLibrary(t *testing.T, e *env, cfg wmjs.SubscriberConfig, topic string, handle func(m *message.Message, stop <-chan struct{}) error) *wmjs.Subscriber {
	t.Helper()
	cfg.Conn = e.srv.Connect()
	if cfg.Logger == nil {
		cfg.Logger = watermill.NewSlogLogger(testLogger())
	}
	sub, err := wmjs.NewSubscriber(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	msgs, err := sub.Subscribe(ctx, topic)
	if err != nil {
		cancel()
		_ = sub.Close()
		t.Fatal(err)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for m := range msgs {
			if handle(m, stop) != nil {
				m.Nack()
			} else {
				m.Ack()
			}
		}
	})
	t.Cleanup(func() {
		close(stop)
		if err := sub.Close(); err != nil {
			t.Errorf("watermill-nats subscriber close: %v", err)
		}
		wg.Wait()
		cancel()
	})
	return sub
}

// slowWork stands for a handler's work that takes d.
func slowWork(d time.Duration, stop <-chan struct{}) {
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
	case <-stop:
	}
}

const gapChildEnv = "INTHUB_GAP_UNDECODABLE_NATS_URL"

// Gap 1: a message watermill-nats cannot unmarshal is never acked.
//
// handleMsg logs the Unmarshal error and goes on with the nil message it got
// (m.UUID), so the nil dereference panics in nats.go's callback goroutine,
// where nothing recovers: the whole process dies with the message unacked,
// and every redelivery kills the next process the same way. (An Unmarshaler
// that returns a non-nil message with its error avoids the crash, but then
// the error is only logged and the message is handled as if it were fine:
// there is no way to reject or dead-letter it.) The crash is observed from
// a child process.
func TestGapUndecodableNeverAcked(t *testing.T) {
	if url := os.Getenv(gapChildEnv); url != "" {
		undecodableChild(t, url)
		return
	}

	t.Run("watermill-nats", func(t *testing.T) {
		e := newEnv(t)
		const topic, durable = "gap_undecodable", "wm"
		e.gapStream(topic)
		e.gapConsumer(topic, jetstream.ConsumerConfig{Durable: durable, AckPolicy: jetstream.AckExplicitPolicy, AckWait: time.Second})
		// DefaultUnmarshaler refuses a header with two values.
		e.publishRaw(&nats.Msg{Subject: topic, Header: nats.Header{"X": {"a", "b"}}, Data: []byte(`{"ok":true}`)})

		for run := 1; run <= 2; run++ {
			out := runUndecodableChild(t, e.srv.URL())
			for _, want := range []string{
				`multiple values received in NATS header for "X"`,
				"panic: runtime error: invalid memory address or nil pointer dereference",
				"github.com/ThreeDotsLabs/watermill-nats/v2/pkg/jetstream.(*Subscriber).handleMsg",
			} {
				if !strings.Contains(out, want) {
					t.Fatalf("run %d: child output lacks %q:\n%s", run, want, out)
				}
			}
			if i := strings.Index(out, "panic: "); i >= 0 {
				t.Logf("run %d: child died: %s", run, strings.SplitN(out[i:], "\n", 2)[0])
			}
			info := e.consumerInfo(topic, durable)
			if info.Delivered.Consumer != uint64(run) || info.AckFloor.Stream != 0 || info.NumAckPending != 1 {
				t.Fatalf("run %d: delivered=%d ackfloor=%d ackpending=%d, want %d deliveries and the message never acked",
					run, info.Delivered.Consumer, info.AckFloor.Stream, info.NumAckPending, run)
			}
		}
	})

	t.Run("inthub", func(t *testing.T) {
		e := newEnv(t)
		var calls atomic.Int32
		w := newWorker(t, e.js, testConfig("gap1"), events.SubjectIntegrationHealthChecked, func(context.Context, events.Event) error {
			calls.Add(1)
			return nil
		})
		start(t, w)
		// A header with two values does not bother us either.
		e.publishRaw(&nats.Msg{Subject: events.SubjectIntegrationHealthChecked, Header: nats.Header{"X": {"a", "b"}}, Data: []byte("{not json")})
		eventually(t, 10*time.Second, "dead letter, original acked", func() bool {
			return e.streamMsgs(StreamDLQ) == 1 && e.settled(StreamIntegrations, "gap1")
		})
		m := e.readAll(StreamDLQ)[0]
		if m.Subject() != DLQSubject(events.SubjectIntegrationHealthChecked) || string(m.Data()) != "{not json" {
			t.Fatalf("dead letter %q %q, want the untouched body on %s", m.Subject(), m.Data(), DLQSubject(events.SubjectIntegrationHealthChecked))
		}
		h := m.Headers()
		for k, v := range map[string]string{
			HeaderOriginalSubject: events.SubjectIntegrationHealthChecked,
			HeaderStreamSequence:  "1",
			HeaderDeliveryCount:   "1",
			HeaderErrorClass:      "permanent",
			HeaderService:         "gap1",
		} {
			if got := h.Get(k); got != v {
				t.Errorf("header %s = %q, want %q", k, got, v)
			}
		}
		if !strings.Contains(h.Get(HeaderLastError), "undecodable") {
			t.Errorf("last error %q", h.Get(HeaderLastError))
		}
		info := e.consumerInfo(StreamIntegrations, "gap1")
		if info.AckFloor.Stream != 1 || info.NumRedelivered != 0 || info.Delivered.Consumer != 1 {
			t.Fatalf("ackfloor=%d redelivered=%d delivered=%d, want the original acked on its first delivery",
				info.AckFloor.Stream, info.NumRedelivered, info.Delivered.Consumer)
		}
		if calls.Load() != 0 {
			t.Fatalf("handler called %d times for an undecodable body", calls.Load())
		}
	})
}

// runUndecodableChild runs the watermill-nats half of gap 1 in a child
// process against url and returns its output; the child must die.
func runUndecodableChild(t *testing.T, url string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestGapUndecodableNeverAcked$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), gapChildEnv+"="+url)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.Success() {
		t.Fatalf("child did not die: %v\n%s", err, out.String())
	}
	return out.String()
}

// undecodableChild subscribes watermill-nats to the durable consumer of the
// parent and waits; the undecodable message is expected to crash it.
func undecodableChild(t *testing.T, url string) {
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	sub, err := wmjs.NewSubscriber(wmjs.SubscriberConfig{
		Conn:   nc,
		Logger: watermill.NewStdLoggerWithOut(os.Stderr, false, false),
		ResourceInitializer: wmjs.ExistingConsumer(func(string, string) jetstream.ConsumerConfig {
			return jetstream.ConsumerConfig{Name: "wm"}
		}, ""),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Close() }()
	msgs, err := sub.Subscribe(context.Background(), "gap_undecodable")
	if err != nil {
		t.Fatal(err)
	}
	timer := time.NewTimer(20 * time.Second)
	defer timer.Stop()
	select {
	case m := <-msgs:
		t.Fatalf("CHILD: watermill-nats delivered the undecodable message (%q) instead of crashing", m.Payload)
	case <-timer.C:
		t.Fatal("CHILD: watermill-nats neither delivered nor crashed within 20s")
	}
}

// Gap 2: watermill-nats's local AckWaitTimeout timer gives up on a message
// and drops the handler's late ack, so a handler slower than the ack wait
// processes the message again (in fact forever: every later ack is late
// too). Our subscriber sends in-progress acks while the handler runs.
func TestGapLateAckDropped(t *testing.T) {
	const ackWait, work = time.Second, 1500 * time.Millisecond

	t.Run("watermill-nats", func(t *testing.T) {
		e := newEnv(t)
		const topic, durable = "gap_late", "wm"
		e.gapStream(topic)
		var calls, acks atomic.Int32
		runLibrary(t, e, wmjs.SubscriberConfig{
			AckWaitTimeout:      ackWait,
			ResourceInitializer: wmDurable(jetstream.ConsumerConfig{Durable: durable, AckPolicy: jetstream.AckExplicitPolicy, AckWait: ackWait}),
		}, topic, func(_ *message.Message, stop <-chan struct{}) error {
			calls.Add(1)
			slowWork(work, stop)
			acks.Add(1) // the loop acks right after
			return nil
		})
		e.publishRaw(&nats.Msg{Subject: topic, Data: []byte("slow")})
		eventually(t, 15*time.Second, "processed a second time", func() bool { return calls.Load() >= 2 })
		// The first delivery was handled and acked before the second call
		// began, yet the server never got that ack.
		info := e.consumerInfo(topic, durable)
		if acks.Load() < 1 || info.AckFloor.Stream != 0 || info.NumRedelivered < 1 || info.Delivered.Consumer < 2 {
			t.Fatalf("handler acks=%d; server ackfloor=%d redelivered=%d delivered=%d, want a dropped ack and a redelivery",
				acks.Load(), info.AckFloor.Stream, info.NumRedelivered, info.Delivered.Consumer)
		}
	})

	t.Run("inthub", func(t *testing.T) {
		e := newEnv(t)
		cfg := testConfig("gap2")
		cfg.AckWait = ackWait
		var calls atomic.Int32
		w := newWorker(t, e.js, cfg, events.SubjectIntegrationHealthChecked, func(ctx context.Context, ev events.Event) error {
			calls.Add(1)
			timer := time.NewTimer(work)
			defer timer.Stop()
			select {
			case <-timer.C:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		})
		start(t, w)
		e.publish(healthEvent(t, 1, "slow"))
		eventually(t, 15*time.Second, "acked", func() bool { return e.settled(StreamIntegrations, "gap2") })
		info := e.consumerInfo(StreamIntegrations, "gap2")
		if calls.Load() != 1 || info.AckFloor.Stream != 1 || info.NumRedelivered != 0 || info.Delivered.Consumer != 1 {
			t.Fatalf("calls=%d ackfloor=%d redelivered=%d delivered=%d, want one delivery, processed and acked once",
				calls.Load(), info.AckFloor.Stream, info.NumRedelivered, info.Delivered.Consumer)
		}
	})
}

// Gap 3: the consumer watermill-nats creates has no MaxDeliver (the server
// reports -1, unlimited) and no BackOff, so a message that keeps failing is
// redelivered forever. SubscriberConfig.ConfigureConsumer cannot fix it: the
// library's own ResourceInitializers never call it.
//
// Our consumer has no server-side limit either, on purpose (a deferral is
// a delivery for the server; see BucketDeferrals): the worker enforces
// MaxDeliver on the deliveries that count, so a message that keeps failing
// ends in the DLQ, not in an endless loop.
func TestGapNoMaxDeliver(t *testing.T) {
	libraryConsumer := func(t *testing.T, cfg wmjs.SubscriberConfig) *jetstream.ConsumerInfo {
		t.Helper()
		e := newEnv(t)
		const topic = "gap_maxdeliver"
		e.gapStream(topic)
		runLibrary(t, e, cfg, topic, func(*message.Message, <-chan struct{}) error { return nil })
		s, err := e.js.Stream(context.Background(), topic)
		if err != nil {
			t.Fatal(err)
		}
		var infos []*jetstream.ConsumerInfo
		list := s.ListConsumers(context.Background())
		for info := range list.Info() {
			infos = append(infos, info)
		}
		if err := list.Err(); err != nil {
			t.Fatal(err)
		}
		if len(infos) != 1 || !strings.HasPrefix(infos[0].Name, "watermill__") {
			t.Fatalf("want the one consumer watermill-nats created, got %d", len(infos))
		}
		return infos[0]
	}

	t.Run("watermill-nats", func(t *testing.T) {
		info := libraryConsumer(t, wmjs.SubscriberConfig{})
		if info.Config.MaxDeliver != -1 || len(info.Config.BackOff) != 0 {
			t.Fatalf("%s: MaxDeliver=%d BackOff=%v, want -1 (unlimited) and none", info.Name, info.Config.MaxDeliver, info.Config.BackOff)
		}
	})

	t.Run("watermill-nats ConfigureConsumer ignored", func(t *testing.T) {
		info := libraryConsumer(t, wmjs.SubscriberConfig{
			ConfigureConsumer: func(topic, group string) jetstream.ConsumerConfig {
				return jetstream.ConsumerConfig{Name: "watermill__" + group, AckPolicy: jetstream.AckExplicitPolicy, MaxDeliver: 5}
			},
		})
		if info.Config.MaxDeliver != -1 {
			t.Fatalf("%s: MaxDeliver=%d, want -1: ConfigureConsumer is not consulted", info.Name, info.Config.MaxDeliver)
		}
	})

	t.Run("inthub", func(t *testing.T) {
		e := newEnv(t)
		cfg := testConfig("gap3")
		cfg.MaxDeliver = 5
		cfg.Retry.Attempts = 1
		cfg.Breaker.Failures = 100
		var calls atomic.Int32
		w := newWorker(t, e.js, cfg, events.SubjectIntegrationHealthChecked, func(context.Context, events.Event) error {
			calls.Add(1)
			return fault.Transient(errors.New("503"))
		})
		start(t, w)
		e.publish(healthEvent(t, 1, "failing"))
		eventually(t, 10*time.Second, "dead letter", func() bool { return e.streamMsgs(StreamDLQ) == 1 && e.settled(StreamIntegrations, "gap3") })
		if got := calls.Load(); got != int32(cfg.MaxDeliver) {
			t.Fatalf("handler called %d times, want MaxDeliver (%d)", got, cfg.MaxDeliver)
		}
	})
}

// Gap 4: with its default NakDelay (nil), watermill-nats answers a handler
// error with a plain Nak, and the server redelivers at once: a failing
// message spins. Our frame nacks with the configured redelivery delay.
func TestGapPlainNakRedeliveredAtOnce(t *testing.T) {
	// calls records when the handler was called; gap is the time between
	// the first two calls.
	type calls struct {
		mu   sync.Mutex
		seen []time.Time
	}
	note := func(c *calls) int {
		c.mu.Lock()
		defer c.mu.Unlock()
		c.seen = append(c.seen, time.Now())
		return len(c.seen)
	}
	count := func(c *calls) int { c.mu.Lock(); defer c.mu.Unlock(); return len(c.seen) }
	gap := func(c *calls) time.Duration { c.mu.Lock(); defer c.mu.Unlock(); return c.seen[1].Sub(c.seen[0]) }

	t.Run("watermill-nats", func(t *testing.T) {
		e := newEnv(t)
		const topic, durable = "gap_nak", "wm"
		e.gapStream(topic)
		var c calls
		runLibrary(t, e, wmjs.SubscriberConfig{
			// Long ack waits: a redelivery can only come from the Nak.
			AckWaitTimeout:      30 * time.Second,
			ResourceInitializer: wmDurable(jetstream.ConsumerConfig{Durable: durable, AckPolicy: jetstream.AckExplicitPolicy, AckWait: 30 * time.Second}),
		}, topic, func(*message.Message, <-chan struct{}) error {
			if note(&c) == 1 {
				return errors.New("try later")
			}
			return nil
		})
		e.publishRaw(&nats.Msg{Subject: topic, Data: []byte("nak")})
		eventually(t, 10*time.Second, "second delivery, acked", func() bool { return count(&c) >= 2 && e.settled(topic, durable) })
		g := gap(&c)
		if g >= 200*time.Millisecond {
			t.Fatalf("redelivered after %s, want at once (< 200ms)", g)
		}
		t.Logf("redelivered after %s", g)
		if info := e.consumerInfo(topic, durable); info.Delivered.Consumer != 2 || info.AckFloor.Stream != 1 {
			t.Fatalf("delivered=%d ackfloor=%d, want two deliveries, then acked", info.Delivered.Consumer, info.AckFloor.Stream)
		}
	})

	t.Run("inthub", func(t *testing.T) {
		e := newEnv(t)
		cfg := testConfig("gap4")
		cfg.Retry.Attempts = 1 // no in-process retry: the error goes back to the server
		const delay = 400 * time.Millisecond
		cfg.Redelivery = func(uint64) time.Duration { return delay }
		var c calls
		w := newWorker(t, e.js, cfg, events.SubjectIntegrationHealthChecked, func(context.Context, events.Event) error {
			if note(&c) == 1 {
				return fault.Transient(errors.New("try later"))
			}
			return nil
		})
		start(t, w)
		e.publish(healthEvent(t, 1, "nak"))
		eventually(t, 10*time.Second, "second delivery, acked", func() bool { return count(&c) >= 2 && e.settled(StreamIntegrations, "gap4") })
		g := gap(&c)
		if g < delay*9/10 {
			t.Fatalf("redelivered after %s, want at least %s", g, delay)
		}
		t.Logf("redelivered after %s", g)
		if info := e.consumerInfo(StreamIntegrations, "gap4"); info.Delivered.Consumer != 2 || info.AckFloor.Stream != 1 {
			t.Fatalf("delivered=%d ackfloor=%d, want two deliveries, then acked", info.Delivered.Consumer, info.AckFloor.Stream)
		}
	})
}
