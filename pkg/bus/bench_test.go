package bus

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"inthub.dev/events"
)

// Throughput of the worker frame against a raw nats.go pull consumer on the
// same embedded server, 1 KiB events. Run with a fixed count, e.g.
//
//	go test -run '^$' -bench 'Consume' -benchtime 50000x ./bus/
//
// Each iteration is one message; msgs/s is reported. The clock stops when
// the consumer's ack floor reaches the last message, polled the same way
// for every variant.

const benchConcurrency = 8

// benchPull is nats.go's default pull batch.
const benchPull = 500

func benchEvent(b *testing.B) []byte {
	b.Helper()
	ev := healthEvent(b, 1, strings.Repeat("x", 700))
	body, err := ev.Marshal()
	if err != nil {
		b.Fatal(err)
	}
	return body
}

// fill publishes n copies of body (no Nats-Msg-Id: the copies must all be
// stored) with async publishes.
func fill(b *testing.B, js jetstream.JetStream, n int, body []byte) {
	b.Helper()
	for i := range n {
		if _, err := js.PublishMsgAsync(&nats.Msg{Subject: events.SubjectIntegrationHealthChecked, Data: body,
			Header: nats.Header{HeaderIntegrationID: []string{integrationID(i % 100)}}}); err != nil {
			b.Fatal(err)
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(time.Minute):
		b.Fatal("publish did not complete")
	}
}

func waitAckFloor(b *testing.B, c jetstream.Consumer, n int) {
	b.Helper()
	ctx := context.Background()
	for {
		info, err := c.Info(ctx)
		if err != nil {
			b.Fatal(err)
		}
		if info.AckFloor.Stream >= uint64(n) {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func benchSetup(b *testing.B) (*env, []byte) {
	b.Helper()
	e := newEnv(b)
	body := benchEvent(b)
	fill(b, e.js, b.N, body)
	return e, body
}

func BenchmarkConsumeRaw(b *testing.B) {
	for _, confirmed := range []bool{false, true} {
		b.Run(ackMode(confirmed), func(b *testing.B) {
			e, _ := benchSetup(b)
			ctx := context.Background()
			c, err := e.js.CreateOrUpdateConsumer(ctx, StreamIntegrations, jetstream.ConsumerConfig{
				Durable: "raw", AckPolicy: jetstream.AckExplicitPolicy, MaxAckPending: 1000})
			if err != nil {
				b.Fatal(err)
			}
			in := make(chan jetstream.Msg, benchConcurrency)
			workers := benchConcurrency // parallel confirmed acks, as the frame does
			for range workers {
				go func() {
					for m := range in {
						if confirmed {
							_ = m.DoubleAck(ctx)
						} else {
							_ = m.Ack()
						}
					}
				}()
			}
			b.ResetTimer()
			handle := func(m jetstream.Msg) { in <- m }
			if !confirmed {
				// The fastest raw consumer: ack in the callback.
				handle = func(m jetstream.Msg) { _ = m.Ack() }
			}
			cc, err := c.Consume(handle, jetstream.PullMaxMessages(benchPull))
			if err != nil {
				b.Fatal(err)
			}
			waitAckFloor(b, c, b.N)
			b.StopTimer()
			cc.Stop()
			close(in)
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
		})
	}
}

// BenchmarkConsumeFrame runs the full middleware stack. "decode" includes
// events.Parse with schema validation, as every service handler gets;
// "stack" replaces only the innermost decode-and-dispatch with a no-op to
// show what the frame itself costs.
func BenchmarkConsumeFrame(b *testing.B) {
	for _, confirmed := range []bool{false, true} {
		for _, decode := range []bool{false, true} {
			name := ackMode(confirmed) + "/stack"
			if decode {
				name = ackMode(confirmed) + "/decode"
			}
			b.Run(name, func(b *testing.B) {
				e, _ := benchSetup(b)
				cfg := WorkerConfig{Service: "bench", Stream: StreamIntegrations, Concurrency: benchConcurrency, ConfirmAcks: confirmed, PullBatch: pullBatch}
				var handled atomic.Int64
				w, err := NewWorker(e.js, cfg)
				if err != nil {
					b.Fatal(err)
				}
				w.Handle(events.SubjectIntegrationHealthChecked, func(context.Context, events.Event) error {
					handled.Add(1)
					return nil
				})
				if !decode {
					w.innermost = func(*message.Message) error { handled.Add(1); return nil }
				}
				b.ResetTimer()
				ctx, cancel := context.WithCancel(context.Background())
				done := make(chan error, 1)
				go func() { done <- w.Run(ctx) }()
				<-w.Running()
				c, err := e.js.Consumer(ctx, StreamIntegrations, "bench")
				if err != nil {
					b.Fatal(err)
				}
				waitAckFloor(b, c, b.N)
				b.StopTimer()
				cancel()
				<-done
				if handled.Load() < int64(b.N) {
					b.Fatalf("handled %d of %d", handled.Load(), b.N)
				}
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
			})
		}
	}
}

var pullBatch = 0

func ackMode(confirmed bool) string {
	if confirmed {
		return "confirmed"
	}
	return "plain"
}

// Publish throughput, 1 KiB events, 8 publishing goroutines for the
// synchronous variants:
//
//	go test -run '^$' -bench 'Publish' -benchtime 20000x ./bus/
func BenchmarkPublish(b *testing.B) {
	b.Run("raw/async", func(b *testing.B) {
		e := newEnv(b)
		body := benchEvent(b)
		b.ResetTimer()
		fill(b, e.js, b.N, body)
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
	})
	b.Run("raw/sync", func(b *testing.B) {
		e := newEnv(b)
		body := benchEvent(b)
		b.SetParallelism(benchConcurrency / 2)
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := e.js.Publish(context.Background(), events.SubjectIntegrationHealthChecked, body); err != nil {
					b.Error(err)
					return
				}
			}
		})
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
	})
	for _, v := range []struct {
		name  string
		cfg   func(b *testing.B) PublisherConfig
		down  bool
		fresh bool
	}{
		{name: "publisher/validated", cfg: func(*testing.B) PublisherConfig { return PublisherConfig{} }},
		{name: "publisher/unvalidated", cfg: func(*testing.B) PublisherConfig { return PublisherConfig{SkipValidation: true} }},
		{name: "publisher/spool-configured", cfg: func(b *testing.B) PublisherConfig { return PublisherConfig{Spool: openSpool(b)} }},
		{name: "publisher/bus-down-into-spool", cfg: func(b *testing.B) PublisherConfig { return PublisherConfig{Spool: openSpool(b)} }, down: true},
	} {
		b.Run(v.name, func(b *testing.B) {
			e := newEnv(b)
			p := e.publisher(v.cfg(b))
			evs := make([]events.Event, b.N)
			for i := range evs {
				evs[i] = healthEvent(b, i%100, strings.Repeat("x", 700))
			}
			if v.down {
				e.srv.Stop()
			}
			var next atomic.Int64
			b.SetParallelism(benchConcurrency / 2)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if err := p.Publish(context.Background(), evs[next.Add(1)-1]); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
			if v.down {
				_ = p.Close() // leave the spool; the server is gone
			}
		})
	}
}
