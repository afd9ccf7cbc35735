package bus

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	"inthub.dev/events"
	"inthub.dev/pkg/natstest"
	"inthub.dev/pkg/spool"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, natstest.LeakOptions()...)
}

type env struct {
	t   testing.TB
	srv *natstest.Server
	nc  *nats.Conn
	js  jetstream.JetStream
}

func newEnv(t testing.TB) *env {
	t.Helper()
	srv := natstest.Start(t)
	js, nc := srv.JetStream()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := Provision(ctx, js, DefaultStreamSettings()); err != nil {
		t.Fatal(err)
	}
	return &env{t: t, srv: srv, nc: nc, js: js}
}

const tenantA = "0b5a3bb0-6a43-4d7e-9a39-6f1f9d9a0001"

// integrationID returns a stable uuid for key k.
func integrationID(k int) string {
	return fmt.Sprintf("8f1d2c3e-0000-4000-8000-%012d", k)
}

// healthEvent is a valid integration.health_checked event for integration k,
// with msg carried in the message field.
func healthEvent(t testing.TB, k int, msg string) events.Event {
	t.Helper()
	ev, err := events.New(events.SubjectIntegrationHealthChecked, "inthub/test", tenantA, events.HealthChecked{
		IntegrationID: integrationID(k),
		TenantID:      tenantA,
		Type:          "test.inmemory",
		Status:        events.HealthHealthy,
		LatencyMs:     3,
		Message:       msg,
		CheckedAt:     time.Now().UTC(),
	})
	if err != nil {
		t.Fatal(err)
	}
	return ev
}

func messageOf(t testing.TB, ev events.Event) string {
	var p events.HealthChecked
	if err := json.Unmarshal(ev.Data, &p); err != nil {
		t.Errorf("decode: %v", err)
	}
	return p.Message
}

func (e *env) publisher(cfg PublisherConfig) *Publisher {
	e.t.Helper()
	p, err := NewPublisher(e.nc, cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { _ = p.Close() })
	return p
}

func (e *env) publish(evs ...events.Event) {
	e.t.Helper()
	p := e.publisher(PublisherConfig{})
	for _, ev := range evs {
		if err := p.Publish(context.Background(), ev); err != nil {
			e.t.Fatal(err)
		}
	}
}

// testConfig is a worker config with short delays so tests run fast.
func testConfig(service string) WorkerConfig {
	return WorkerConfig{
		Service:     service,
		Stream:      StreamIntegrations,
		AckWait:     5 * time.Second,
		MaxDeliver:  5,
		Concurrency: 4,
		Retry:       RetryPolicy{Attempts: 3, Initial: 5 * time.Millisecond, Max: 20 * time.Millisecond, MaxElapsed: time.Second},
		Redelivery:  func(uint64) time.Duration { return 20 * time.Millisecond },
		Logger:      testLogger(),
	}
}

func testLogger() *slog.Logger {
	if os.Getenv("INTHUB_TEST_LOG") != "" {
		return slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// start runs w until the test ends (or stop is called) and waits until it
// consumes.
func start(t testing.TB, w *Worker) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	select {
	case <-w.Running():
	case err := <-done:
		cancel()
		t.Fatalf("worker stopped before running: %v", err)
	case <-time.After(10 * time.Second):
		cancel()
		t.Fatal("worker not running after 10s")
	}
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("worker: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

func newWorker(t testing.TB, js jetstream.JetStream, cfg WorkerConfig, subject string, h Handler) *Worker {
	t.Helper()
	w, err := NewWorker(js, cfg)
	if err != nil {
		t.Fatal(err)
	}
	w.Handle(subject, h)
	return w
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %s: %s", within, what)
		}
		<-tick.C
	}
}

func (e *env) streamMsgs(name string) uint64 {
	e.t.Helper()
	s, err := e.js.Stream(context.Background(), name)
	if err != nil {
		e.t.Fatal(err)
	}
	info, err := s.Info(context.Background())
	if err != nil {
		e.t.Fatal(err)
	}
	return info.State.Msgs
}

// readAll returns every message of stream in order.
func (e *env) readAll(stream string) []jetstream.Msg {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	n := e.streamMsgs(stream)
	if n == 0 {
		return nil
	}
	c, err := e.js.OrderedConsumer(ctx, stream, jetstream.OrderedConsumerConfig{})
	if err != nil {
		e.t.Fatal(err)
	}
	var out []jetstream.Msg
	for uint64(len(out)) < n {
		batch, err := c.Fetch(int(min(n-uint64(len(out)), 500)), jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			e.t.Fatal(err)
		}
		for m := range batch.Messages() {
			out = append(out, m)
		}
		if batch.Error() != nil {
			e.t.Fatal(batch.Error())
		}
	}
	return out
}

func (e *env) consumerInfo(stream, name string) *jetstream.ConsumerInfo {
	e.t.Helper()
	c, err := e.js.Consumer(context.Background(), stream, name)
	if err != nil {
		e.t.Fatal(err)
	}
	info, err := c.Info(context.Background())
	if err != nil {
		e.t.Fatal(err)
	}
	return info
}

// settled reports whether the consumer has nothing pending or unacked.
func (e *env) settled(stream, name string) bool {
	info := e.consumerInfo(stream, name)
	return info.NumPending == 0 && info.NumAckPending == 0
}

func mustJS(t testing.TB, nc *nats.Conn) jetstream.JetStream {
	t.Helper()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

func openSpool(t testing.TB) *spool.Spool {
	t.Helper()
	sp, err := spool.Open(filepath.Join(t.TempDir(), "spool.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sp.Close() })
	return sp
}
