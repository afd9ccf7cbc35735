package healthpoller_test

import (
	"context"
	"encoding/json"
	"fmt"
	"runtime"
	"sync"
	"syscall"
	"testing"
	"time"

	"inthub.dev/pkg/bus"
	"inthub.dev/pkg/natstest"
	"inthub.dev/services/healthpoller"
)

func heapAlloc() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkPoller runs the whole service on a 5-minute schedule: the
// integrations in the INTEGRATIONS_STATE bucket of an embedded JetStream,
// leases, the scheduler, the test.inmemory connector set to answer after
// 100 ms (a provider 100 ms away, no CPU), events.New and the publish of
// every result to the stream. It reports:
//
//   - heap per integration: the poller's, from before New to after the
//     snapshot is scheduled (the bucket is filled before, so the embedded
//     server's memory for it is not in the difference; the set's copy of
//     every integration, the schedule and the leases are);
//   - scheduling lag (due slot to start) and checks/s over a window;
//   - CPU over the window, of the whole process: the embedded NATS server
//     storing the results is in it.
//
// --max-per-provider is raised to 64: every integration here has the same
// provider, and 16 slots at 100 ms a check carry 160 checks/s, less than
// the 333/s of 100,000 integrations at 5 minutes.
//
//	go test -run '^$' -bench Poller -benchtime 1x ./healthpoller/
func BenchmarkPoller(b *testing.B) {
	for _, tc := range []struct {
		n      int
		window time.Duration
	}{
		{100_000, 20 * time.Second},
		{10_000, 20 * time.Second},
	} {
		b.Run(fmt.Sprintf("integrations=%d/interval=5m", tc.n), func(b *testing.B) {
			for b.Loop() {
				benchPoller(b, tc.n, tc.window)
			}
		})
	}
}

func benchPoller(b *testing.B, n int, window time.Duration) {
	srv := natstest.Start(b)
	js, _ := srv.JetStream()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if err := bus.Provision(ctx, js, bus.DefaultStreamSettings()); err != nil {
		b.Fatal(err)
	}
	kv, err := js.KeyValue(ctx, bus.BucketIntegrations)
	if err != nil {
		b.Fatal(err)
	}
	// Fill the bucket as the outbox forwarder would, 32 writers at once.
	var wg sync.WaitGroup
	errs := make(chan error, 32)
	for w := range 32 {
		wg.Go(func() {
			for k := w; k < n; k += 32 {
				in := integration(k, `{"latencyMs": 100}`)
				in.TenantID = fmt.Sprintf("10000000-0000-4000-8000-%012d", k%500)
				body, _ := json.Marshal(in)
				if _, err := kv.Put(ctx, bus.IntegrationKey(in.TenantID, in.ID), body); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		b.Fatal(err)
	}

	before := heapAlloc()
	svc, err := healthpoller.New(healthpoller.Config{
		Listen: "-", DataDir: b.TempDir(), DefaultInterval: 5 * time.Minute,
		MaxConcurrent: 128, MaxPerProvider: 64,
	}, srv.Connect())
	if err != nil {
		b.Fatal(err)
	}
	rctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- svc.Run(rctx) }()
	defer func() {
		stop()
		if err := <-done; err != nil {
			b.Error(err)
		}
	}()
	select {
	case <-svc.Ready():
	case err := <-done:
		b.Fatalf("poller stopped: %v", err)
	case <-time.After(3 * time.Minute):
		b.Fatal("poller not ready")
	}
	if got := svc.Stats().Schedule.Targets; got != n {
		b.Fatalf("%d scheduled, want %d", got, n)
	}
	after := heapAlloc()

	st0 := svc.Stats()
	cpu0, t0 := cpuTime(), time.Now()
	time.Sleep(window) // the measurement window, not waiting for an outcome
	st := svc.Stats()
	cpu, elapsed := cpuTime()-cpu0, time.Since(t0)
	checks := st.Schedule.Checks - st0.Schedule.Checks
	b.ReportMetric(float64(after-before)/float64(n), "B/integration")
	b.ReportMetric(float64(st.Schedule.LagP50)/1e6, "lag-p50-ms")
	b.ReportMetric(float64(st.Schedule.LagP99)/1e6, "lag-p99-ms")
	b.ReportMetric(float64(st.Schedule.LagMax)/1e6, "lag-max-ms")
	b.ReportMetric(float64(checks)/elapsed.Seconds(), "checks/s")
	b.ReportMetric(100*cpu.Seconds()/elapsed.Seconds(), "cpu-%")
	b.ReportMetric(float64(st.Schedule.Skipped-st0.Schedule.Skipped), "skipped")
	b.ReportMetric(float64(st.PublishErrors), "publish-errors")
	if st.Reported < checks/2 {
		b.Errorf("%d results reported for %d checks", st.Reported, checks)
	}
}
