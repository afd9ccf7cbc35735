package natstest_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"inthub.dev/pkg/natstest"
)

// BenchmarkClusterPublish compares JetStream publish throughput on one
// server (R1) with a three-node cluster in the same process (R1 and R3),
// 1 KiB messages with a Nats-Msg-Id as inthub's publishers send them.
// "sync" waits for each ack from 8 goroutines; "async" publishes from one
// goroutine with up to 4,000 acks outstanding (the client's default).
//
//	cd pkg && go test -run '^$' -bench ClusterPublish -benchtime 20000x -count 3 ./natstest/
func BenchmarkClusterPublish(b *testing.B) {
	for _, setup := range []struct {
		name     string
		replicas int
		start    func(b *testing.B) jetstream.JetStream
	}{
		{"single/R1", 1, func(b *testing.B) jetstream.JetStream { js, _ := natstest.Start(b).JetStream(); return js }},
		{"cluster/R1", 1, func(b *testing.B) jetstream.JetStream { js, _ := natstest.Cluster(b, 3).JetStream(); return js }},
		{"cluster/R3", 3, func(b *testing.B) jetstream.JetStream { js, _ := natstest.Cluster(b, 3).JetStream(); return js }},
	} {
		for _, mode := range []string{"sync", "async"} {
			b.Run(setup.name+"/"+mode, func(b *testing.B) {
				js := setup.start(b)
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
				defer cancel()
				if _, err := js.CreateStream(ctx, jetstream.StreamConfig{
					Name: "BENCH", Subjects: []string{"bench.>"}, Storage: jetstream.FileStorage,
					Replicas: setup.replicas, Duplicates: 2 * time.Minute,
				}); err != nil {
					b.Fatal(err)
				}
				body := make([]byte, 1024)
				var seq atomic.Int64
				msg := func() *nats.Msg {
					m := nats.NewMsg("bench.x")
					m.Data = body
					m.Header.Set(jetstream.MsgIDHeader, fmt.Sprint(seq.Add(1)))
					return m
				}
				b.SetBytes(int64(len(body)))
				b.ResetTimer()
				if mode == "sync" {
					b.SetParallelism(4) // 8 goroutines on 2 cores
					b.RunParallel(func(pb *testing.PB) {
						for pb.Next() {
							if _, err := js.PublishMsg(ctx, msg()); err != nil {
								b.Error(err)
								return
							}
						}
					})
				} else {
					for range b.N {
						if _, err := js.PublishMsgAsync(msg(), jetstream.WithStallWait(time.Minute)); err != nil {
							b.Fatal(err)
						}
					}
					select {
					case <-js.PublishAsyncComplete():
					case <-ctx.Done():
						b.Fatal("async publishes not acknowledged")
					}
				}
				b.StopTimer()
				s, err := js.Stream(ctx, "BENCH")
				if err != nil {
					b.Fatal(err)
				}
				if got := s.CachedInfo().State.Msgs; got != uint64(b.N) {
					b.Fatalf("stream holds %d messages, want %d", got, b.N)
				}
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
			})
		}
	}
}
