package schedule

import (
	"context"
	"fmt"
	"runtime"
	"syscall"
	"testing"
	"time"
)

// sleepChecker answers after latency without using CPU, like a provider
// 100 ms away.
type sleepChecker struct{ latency time.Duration }

func (c sleepChecker) Check(ctx context.Context, _ Target) Result {
	t := time.NewTimer(c.latency)
	defer t.Stop()
	select {
	case <-t.C:
		return Result{Status: StatusHealthy}
	case <-ctx.Done():
		return Result{Status: StatusUnhealthy, Message: ctx.Err().Error()}
	}
}

type nopSink struct{}

func (nopSink) Report(context.Context, Target, Result) error { return nil }

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

// BenchmarkSchedule100k keeps N targets on a schedule against a checker of
// 100 ms latency and reports heap per target (targets' own strings
// included: they are made after the baseline) and the scheduling lag (due
// time to start) over a window of real time. The 5-minute case is the real
// schedule observed for 15 s (about 5,000 checks); the 30 s and 5 s cases
// compress the interval, with the concurrency limit raised to what that
// rate needs at 100 ms a check (rate × latency, doubled), to load the
// scheduler 10× and 60× harder than the real schedule does.
//
//	go test -run '^$' -bench Schedule100k -benchtime 1x ./healthpoller/schedule/
func BenchmarkSchedule100k(b *testing.B) {
	cases := []struct {
		targets  int
		interval time.Duration
		window   time.Duration
		maxConc  int
	}{
		{100_000, 5 * time.Minute, 15 * time.Second, 64},
		{100_000, 30 * time.Second, 30 * time.Second, 1024},
		{100_000, 5 * time.Second, 10 * time.Second, 4096},
		{10_000, 5 * time.Minute, 15 * time.Second, 64},
	}
	for _, tc := range cases {
		b.Run(fmt.Sprintf("targets=%d/interval=%v", tc.targets, tc.interval), func(b *testing.B) {
			for b.Loop() {
				benchSchedule(b, tc.targets, tc.interval, tc.window, tc.maxConc)
			}
		})
	}
}

func benchSchedule(b *testing.B, n int, interval, window time.Duration, maxConc int) {
	s, err := New(Config{Align: true, MaxConcurrent: maxConc, MaxPerProvider: maxConc}, sleepChecker{100 * time.Millisecond}, nopSink{})
	if err != nil {
		b.Fatal(err)
	}
	before := heapAlloc()
	for i := range n {
		s.Upsert(Target{
			ID:       fmt.Sprintf("00000000-0000-4000-8000-%012d", i),
			TenantID: fmt.Sprintf("10000000-0000-4000-8000-%012d", i%500),
			Type:     "scm.github", Provider: fmt.Sprint("github-", i%8),
			Interval: interval, Timeout: 10 * time.Second, Version: 1,
		})
	}
	after := heapAlloc()
	perTarget := float64(after-before) / float64(n)

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	cpu0, t0 := cpuTime(), time.Now()
	go func() { done <- s.Run(ctx) }()
	time.Sleep(window) // the measurement window, not waiting for an outcome
	st := s.Stats()
	cpu, elapsed := cpuTime()-cpu0, time.Since(t0)
	cancel()
	if err := <-done; err != nil {
		b.Fatal(err)
	}
	runtime.KeepAlive(s)
	b.ReportMetric(perTarget, "B/target")
	b.ReportMetric(float64(st.LagP50)/1e6, "lag-p50-ms")
	b.ReportMetric(float64(st.LagP99)/1e6, "lag-p99-ms")
	b.ReportMetric(float64(st.LagMax)/1e6, "lag-max-ms")
	b.ReportMetric(float64(st.Checks)/elapsed.Seconds(), "checks/s")
	b.ReportMetric(100*cpu.Seconds()/elapsed.Seconds(), "cpu-%")
	b.ReportMetric(float64(st.Skipped), "skipped")
}
