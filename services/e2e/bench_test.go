package e2e_test

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"inthub.dev/events"
	"inthub.dev/pkg/connectors/github/githubtest"
)

// Flags of BenchmarkFleet (after -args, or as -e2e.* test flags).
var (
	benchRequests = flag.Int("e2e.requests", 2000, "BenchmarkFleet: annotation requests")
	benchRate     = flag.Float64("e2e.rate", 100, "BenchmarkFleet: annotation requests per second of the paced run (the burst publishes as fast as JetStream acks)")
	benchChanges  = flag.Int("e2e.changes", 300, "BenchmarkFleet: integration changes (create, rename, delete: three per integration)")
	benchWorkers  = flag.Int("e2e.change-workers", 4, "BenchmarkFleet: clients changing integrations at once")
	benchLatency  = flag.Duration("e2e.github-latency", 0, "BenchmarkFleet: delay of every answer of the fake GitHub")
)

// BenchmarkFleet drives N annotation requests and M integration changes
// through the fleet of processes (make bench-e2e) and reports throughput
// and latency: request published → scm.annotation.completed received;
// API request sent → lifecycle event received by a durable consumer. It
// also checks that every request was posted once: numbers of a fleet that
// loses or repeats work would mean nothing.
//
// It runs the fleet, so it skips unless INTHUB_BENCH_E2E is set (make
// bench-e2e sets it): make bench would otherwise spend a minute here.
func BenchmarkFleet(b *testing.B) {
	if os.Getenv("INTHUB_BENCH_E2E") == "" {
		b.Skip("runs the whole fleet; make bench-e2e runs it (INTHUB_BENCH_E2E=1)")
	}
	// The worker's production ack wait: the tests' 5s (for quick
	// redelivery after a kill) would redeliver requests that wait their
	// turn behind a slow provider, which a benchmark should not count.
	f := startFleet(b, fleetOptions{GitHubLatency: *benchLatency, HealthInterval: 5 * time.Minute, AckWait: time.Minute})
	// A burst (every request published as fast as JetStream takes it:
	// throughput, and latency that is mostly queueing), then a paced run
	// below that throughput (latency of a request that does not queue).
	b.Run("annotations-burst", func(b *testing.B) {
		for i := range b.N {
			benchAnnotations(b, f.with(b), fmt.Sprintf("burst%d", i), 0)
		}
	})
	b.Run("annotations-paced", func(b *testing.B) {
		for i := range b.N {
			benchAnnotations(b, f.with(b), fmt.Sprintf("paced%d", i), *benchRate)
		}
	})
	b.Run("changes", func(b *testing.B) {
		for i := range b.N {
			benchChangesRun(b, f.with(b), fmt.Sprintf("bench%d", i))
		}
	})
}

// latencies summarises durations.
type latencies []time.Duration

func (l latencies) pct(p float64) time.Duration {
	if len(l) == 0 {
		return 0
	}
	s := slices.Clone(l)
	slices.Sort(s)
	return s[min(len(s)-1, int(float64(len(s))*p))]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func benchAnnotations(b *testing.B, f *fleet, name string, rate float64) {
	b.StopTimer()
	gh := f.githubIntegration(name+"-github", "")
	f.warmUp(b, gh, endPosted)

	// Results as Scanner would watch them: a plain subscription, stamped
	// on arrival.
	var mu sync.Mutex
	done := map[string]time.Time{}
	all := make(chan struct{})
	want := *benchRequests
	sub, err := f.nc.Subscribe("scm.annotation.*", func(m *nats.Msg) {
		if m.Subject != events.SubjectAnnotationCompleted && m.Subject != events.SubjectAnnotationFailed {
			return
		}
		var ev struct {
			Data struct {
				RequestID string `json:"requestId"`
			} `json:"data"`
		}
		if json.Unmarshal(m.Data, &ev) != nil {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		if _, seen := done[ev.Data.RequestID]; !seen {
			done[ev.Data.RequestID] = time.Now()
			if len(done) == want { // the warm-up's was published before
				close(all)
			}
		}
	})
	if err != nil {
		b.Fatal(err)
	}
	defer sub.Unsubscribe()

	al := &annotationLoad{f: f, phase: name, github: gh.ID, mixBasic: true}
	writes := f.gh.Writes(githubtest.RouteAll)
	var tick <-chan time.Time
	if rate > 0 {
		t := time.NewTicker(time.Duration(float64(time.Second) / rate))
		defer t.Stop()
		tick = t.C
	}
	b.StartTimer()
	start := time.Now()
	for range want {
		if tick != nil {
			<-tick
		}
		req, s := al.next()
		ev, err := newRequest(req)
		if err != nil {
			b.Fatal(err)
		}
		if err := al.publish(f.ctx, ev, s); err != nil {
			b.Fatal(err)
		}
	}
	published := time.Since(start)
	select {
	case <-all:
	case <-time.After(10 * time.Minute):
		mu.Lock()
		n := len(done)
		mu.Unlock()
		b.Fatalf("%d of %d requests answered after 10 minutes", n, want)
	}
	b.StopTimer()

	reqs := al.requests()
	var lat latencies
	var last time.Time
	mu.Lock()
	for _, r := range reqs {
		at := done[r.id]
		lat = append(lat, at.Sub(r.at))
		if at.After(last) {
			last = at
		}
	}
	mu.Unlock()
	elapsed := last.Sub(reqs[0].at)
	_, summary := f.settle(b, reqs, 2*time.Minute)
	tput := float64(len(reqs)) / elapsed.Seconds()
	b.ReportMetric(tput, "req/s")
	b.ReportMetric(ms(lat.pct(0.50)), "p50-ms")
	b.ReportMetric(ms(lat.pct(0.99)), "p99-ms")
	b.Logf("%d annotation requests (comments, statuses, check runs) published in %v (%s), all answered after %v: %.0f req/s; "+
		"publish → completed p50 %.1f ms, p99 %.1f ms, max %.1f ms; GitHub writes %d; %s",
		len(reqs), published.Round(time.Millisecond), pacing(rate), elapsed.Round(time.Millisecond), tput,
		ms(lat.pct(0.50)), ms(lat.pct(0.99)), ms(lat.pct(1)), f.gh.Writes(githubtest.RouteAll)-writes, summary)
}

func benchChangesRun(b *testing.B, f *fleet, name string) {
	b.StopTimer()
	sig := f.subscribe("bench-" + name)
	n := (*benchChanges + 2) / 3
	cl := &changeLoad{f: f, phase: name, limit: n}
	b.StartTimer()
	start := time.Now()
	cl.run(context.Background(), *benchWorkers)
	lcs, errs := cl.lifecycles()
	if len(errs) > 0 {
		b.Fatalf("changes not accepted: %v", errs)
	}
	var lat latencies
	var last time.Time
	deadline := time.Now().Add(2 * time.Minute)
	for _, lc := range lcs {
		got, ok := sig.waitFor(time.Until(deadline), lc.id, func(rs []received) bool {
			return len(rs) > 0 && rs[len(rs)-1].subject == events.SubjectIntegrationDeleted
		})
		if !ok {
			b.Fatalf("integration %s: received %v", lc.id, got)
		}
		for _, r := range got {
			var sent time.Time
			switch r.subject {
			case events.SubjectIntegrationCreated:
				sent = lc.created
			case events.SubjectIntegrationUpdated:
				sent = lc.updated
			case events.SubjectIntegrationDeleted:
				sent = lc.deleted
			default:
				continue
			}
			lat = append(lat, r.at.Sub(sent))
			if r.at.After(last) {
				last = r.at
			}
		}
	}
	b.StopTimer()
	checkLifecycles(b, sig, lcs, time.Minute)
	elapsed := last.Sub(start)
	tput := float64(len(lat)) / elapsed.Seconds()
	b.ReportMetric(tput, "changes/s")
	b.ReportMetric(ms(lat.pct(0.50)), "p50-ms")
	b.ReportMetric(ms(lat.pct(0.99)), "p99-ms")
	b.Logf("%d integration changes (%d integrations created, renamed, deleted by %d clients) in %v: %.0f changes/s; "+
		"API request sent → event received p50 %.1f ms, p99 %.1f ms, max %.1f ms",
		len(lat), len(lcs), *benchWorkers, elapsed.Round(time.Millisecond), tput,
		ms(lat.pct(0.50)), ms(lat.pct(0.99)), ms(lat.pct(1)))
}

func pacing(rate float64) string {
	if rate <= 0 {
		return "burst"
	}
	return fmt.Sprintf("%.0f/s", rate)
}
