package e2e_test

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"inthub.dev/events"
	"inthub.dev/pkg/bus"
	"inthub.dev/pkg/connectors/github/githubtest"
)

// Flags of BenchmarkFleetCluster's failover run; its throughput runs take
// BenchmarkFleet's -e2e.requests, -e2e.changes and -e2e.change-workers.
var (
	failoverRate = flag.Float64("e2e.failover-rate", 40, "BenchmarkFleetCluster: annotation requests per second during the failover run")
	failoverFor  = flag.Duration("e2e.failover-for", 30*time.Second, "BenchmarkFleetCluster: length of the failover run's load")
	failoverAt   = flag.Duration("e2e.failover-at", 6*time.Second, "BenchmarkFleetCluster: when, into the load, the SCM leader's node is killed")
)

// BenchmarkFleetCluster runs the fleet (one process of each service) on
// one NATS server and then on a cluster of three with every stream and
// bucket on three replicas, in the same run (make bench-cluster), and
// reports for each: the annotation path's throughput and latency (a
// burst of -e2e.requests, as BenchmarkFleet's) and the outbox's
// (-e2e.changes integration changes through the API to a durable
// consumer). On the cluster it then kills the node that leads stream SCM
// under a steady load of requests and changes and reports how long the
// fleet took to carry that load again, and what the consumers saw twice:
// deliveries of a request beyond its first (the annotation worker's own
// log and its consumer's counters), result events stored twice, lifecycle
// events redelivered or published twice, and effects on the fake GitHub
// repeated, which must be none.
//
// It skips unless INTHUB_BENCH_E2E is set, as BenchmarkFleet.
func BenchmarkFleetCluster(b *testing.B) {
	if os.Getenv("INTHUB_BENCH_E2E") == "" {
		b.Skip("runs the whole fleet twice; make bench-cluster runs it (INTHUB_BENCH_E2E=1)")
	}
	for _, setup := range []struct {
		name    string
		cluster bool
	}{{"single", false}, {"cluster", true}} {
		b.Run(setup.name, func(b *testing.B) {
			// The fleet belongs to this sub-benchmark: its processes and
			// servers are gone before the next setup starts.
			f := startFleet(b, fleetOptions{Cluster: setup.cluster, GitHubLatency: *benchLatency,
				HealthInterval: 5 * time.Minute, AckWait: time.Minute})
			b.Run("annotations", func(b *testing.B) {
				for i := range b.N {
					benchAnnotations(b, f.with(b), fmt.Sprintf("%s-burst%d", setup.name, i), 0)
				}
			})
			b.Run("changes", func(b *testing.B) {
				for i := range b.N {
					benchChangesRun(b, f.with(b), fmt.Sprintf("%s-chg%d", setup.name, i))
				}
			})
			if setup.cluster {
				b.Run("failover", func(b *testing.B) {
					for i := range b.N {
						benchFailover(b, f.with(b), fmt.Sprintf("failover%d", i))
					}
				})
			}
		})
	}
}

// benchFailover loads the fleet with -e2e.failover-rate requests a second
// and two clients changing integrations, kills the node leading SCM
// -e2e.failover-at into the load (routes cut first: no leadership
// hand-over) and leaves it down. It reports the time from the kill until
// each flow stays at 90 % or more of its rate before the kill, and the
// duplicates, then checks the conservation law as the fault tests do.
func benchFailover(b *testing.B, f *fleet, name string) {
	b.StopTimer()
	gh := f.githubIntegration(name+"-github", "")
	// The results' consumer first, and delivering (it got the warm-up's
	// answer) before the load starts: a consumer just created on a
	// cluster may not deliver until its Raft group has a leader.
	res := f.watchResults(b, "bench-"+name+"-results")
	f.warmUp(b, gh, endPosted)
	poll(b, 30*time.Second, "the results' consumer to deliver the warm-up's answer", func() bool {
		res.mu.Lock()
		defer res.mu.Unlock()
		return len(res.first) > 0
	})
	sig := f.subscribe("bench-" + name)
	before := f.annotationDeliveries(b)
	writes := f.gh.Writes(githubtest.RouteAll)

	al := &annotationLoad{f: f, phase: name, github: gh.ID, mixBasic: true}
	cl := &changeLoad{f: f, phase: name, pace: 100 * time.Millisecond}
	var accMu sync.Mutex
	var accepted []time.Time
	ctx, cancel := context.WithTimeout(f.ctx, *failoverFor)
	defer cancel()
	b.StartTimer()
	start := time.Now()
	var wg sync.WaitGroup
	var loadErr error
	wg.Go(func() {
		tick := time.NewTicker(time.Duration(float64(time.Second) / *failoverRate))
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			req, s := al.next()
			ev, err := newRequest(req)
			if err == nil {
				err = al.publish(ctx, ev, s)
			}
			if err != nil {
				loadErr = err
				return
			}
			accMu.Lock()
			accepted = append(accepted, time.Now())
			accMu.Unlock()
		}
	})
	wg.Go(func() { cl.run(ctx, 2) })

	<-time.After(time.Until(start.Add(*failoverAt)))
	leader := f.cluster.WaitStreamLeader(bus.StreamSCM)
	var alsoLed []string
	for _, s := range []string{bus.StreamIntegrations, "KV_" + bus.BucketIntegrations} {
		if f.cluster.StreamLeader(s) == leader {
			alsoLed = append(alsoLed, s)
		}
	}
	// A consumer has a Raft group and a leader of its own; the node may
	// lead some of them (and the meta group) besides SCM.
	for _, c := range []struct{ stream, durable string }{{bus.StreamSCM, "annotation"}, {bus.StreamSCM, res.durable},
		{bus.StreamIntegrations, "bench-" + name}} {
		if f.consumerLeader(c.stream, c.durable) == leader.Name() {
			alsoLed = append(alsoLed, "consumer "+c.durable)
		}
	}
	if f.cluster.MetaLeader() == leader {
		alsoLed = append(alsoLed, "the meta group")
	}
	killed := time.Now()
	leader.Crash()
	next := f.cluster.WaitStreamLeader(bus.StreamSCM, leader)
	elected := time.Since(killed)
	wg.Wait()
	loadEnd := time.Now()
	b.StopTimer()
	if loadErr != nil {
		b.Fatalf("load: %v", loadErr)
	}

	reqs := al.requests()
	outs, summary := f.settle(b, reqs, 3*time.Minute)
	lcs, errs := cl.lifecycles()
	for _, e := range errs {
		b.Errorf("integration change not accepted: %s", e)
	}
	checkLifecycles(b, sig, lcs, time.Minute)
	// A lost ack comes back after the worker's ack wait (a minute): wait
	// until the worker's consumer and the results' have nothing
	// outstanding, so that every redelivery is counted.
	f.waitDrained(b, bus.StreamSCM, "annotation", 3*time.Minute)
	f.waitDrained(b, bus.StreamSCM, res.durable, time.Minute)
	after := f.annotationDeliveries(b)

	// What reached GitHub twice, and what was announced twice.
	var dupEffects, dupResults int
	for _, r := range reqs {
		o := outs[r.id]
		if o == nil {
			continue
		}
		if o.posted > 1 {
			dupEffects++
		}
		if o.completed+o.deadLetter+o.spooled > 1 {
			dupResults++
		}
	}
	handled := f.handledTwice(b, reqs)
	resRedelivered, resTwice := res.duplicates(reqs)
	sig.mu.Lock()
	chgRedelivered := sig.redeliveries
	var changeTimes []time.Time
	ours := map[string]bool{}
	for _, lc := range lcs {
		ours[lc.id] = true
	}
	for _, r := range sig.bySeq {
		if ours[r.integrationID] {
			changeTimes = append(changeTimes, r.at)
		}
	}
	sig.mu.Unlock()
	chgTwice := len(sig.problems())
	// The outbox's own flow: when each of those events was stored in
	// INTEGRATIONS (the server's clock, the same machine's), apart from
	// when the subscriber got it (its consumer has a leader of its own).
	var storedTimes []time.Time
	msgs, err := f.streamMsgs(f.ctx, bus.StreamIntegrations, "integration.>")
	if err != nil {
		b.Fatal(err)
	}
	for _, m := range msgs {
		if ev, err := events.Parse(m.Data); err == nil && ours[ev.IntegrationID()] {
			storedTimes = append(storedTimes, m.Time)
		}
	}

	accMu.Lock()
	accTimes := slices.Clone(accepted)
	accMu.Unlock()
	ansTimes := res.times(reqs)
	// A request whose delivery was lost with the server (pulled, never
	// received) comes back only after the worker's ack wait.
	var late int
	var slowest time.Duration
	res.mu.Lock()
	for _, r := range reqs {
		if at, ok := res.at[r.id]; ok {
			slowest = max(slowest, at.Sub(r.at))
			if at.Sub(r.at) > 30*time.Second {
				late++
			}
		}
	}
	res.mu.Unlock()
	annRec, annRef, annGap := recoveryAfter(ansTimes, start, killed, loadEnd)
	chgRec, chgRef, chgGap := recoveryAfter(changeTimes, start, killed, loadEnd)
	_, _, accGap := recoveryAfter(accTimes, start, killed, loadEnd)
	stRec, stRef, stGap := recoveryAfter(storedTimes, start, killed, loadEnd)

	b.ReportMetric(elected.Seconds(), "elected-s")
	b.ReportMetric(annRec.Seconds(), "ann-recovered-s")
	b.ReportMetric(chgRec.Seconds(), "chg-recovered-s")
	b.ReportMetric(stRec.Seconds(), "outbox-recovered-s")
	b.ReportMetric(float64(dupEffects), "dup-effects")
	b.Logf("killed %s, the leader of SCM%s, %v into the load; %s led SCM %v later",
		leader.Name(), ledToo(alsoLed), killed.Sub(start).Round(time.Millisecond), next.Name(), elected.Round(time.Millisecond))
	b.Logf("annotation requests at %.0f/s: %.1f answered/s before the kill; no request accepted for %v and no answer for %v around it; "+
		"back to >= 90%% %v after the kill",
		*failoverRate, annRef, accGap.Round(time.Millisecond), annGap.Round(time.Millisecond), annRec.Round(time.Millisecond))
	b.Logf("integration changes (2 clients): %.1f events/s before the kill; no event for %v around it; back to >= 90%% %v after the kill",
		chgRef, chgGap.Round(time.Millisecond), chgRec.Round(time.Millisecond))
	b.Logf("the outbox's events stored in INTEGRATIONS: %.1f/s before the kill; none stored for %v around it; back to >= 90%% %v after the kill",
		stRef, stGap.Round(time.Millisecond), stRec.Round(time.Millisecond))
	b.Logf("answers per 500 ms from the start (| = kill): %s", perHalfSecond(ansTimes, start, killed, loadEnd))
	b.Logf("change events per 500 ms from the start (| = kill): %s", perHalfSecond(changeTimes, start, killed, loadEnd))
	b.Logf("events stored in INTEGRATIONS per 500 ms from the start (| = kill): %s", perHalfSecond(storedTimes, start, killed, loadEnd))
	b.Logf("duplicates: the annotation worker handled %d requests more than once (%d extra handlings; its consumer delivered %d messages "+
		"beyond their first delivery); result events: %d requests announced more than once in SCM, the results consumer got %d redeliveries "+
		"and %d requests at two stream sequences; lifecycle events: %d redeliveries, %d published twice; "+
		"effects on GitHub repeated: %d (must be 0); GitHub writes %d for %d requests",
		handled.requests, handled.extra, after.delivered-before.delivered-(after.msgs-before.msgs), dupResults,
		resRedelivered, resTwice, chgRedelivered, chgTwice, dupEffects, f.gh.Writes(githubtest.RouteAll)-writes, len(reqs))
	b.Logf("%d requests answered more than 30s after they were published (the slowest after %v)", late, slowest.Round(time.Millisecond))
	b.Logf("%s; %d integrations created, renamed and deleted", summary, len(lcs))
	if dupEffects > 0 {
		b.Errorf("%d requests took effect on GitHub more than once", dupEffects)
	}
}

func ledToo(streams []string) string {
	if len(streams) == 0 {
		return ""
	}
	return " (and of " + strings.Join(streams, ", ") + ")"
}

// recoveryAfter reads a flow's arrival times: ref is its rate from two
// seconds after the start (past the ramp-up) to the kill; gap is the
// longest time without an arrival from a second before the kill to the
// load's end; recovered is the time from the kill to the first arrival of
// the first one-second window (sliding by 100 ms) that carries 90 % of ref
// or more after one that carried less: the flow back at full rate (end-kill
// if it never was). A flow whose first short window starts more than two
// seconds after the kill did not dip for the kill but for the machine's
// noise: 0.
func recoveryAfter(times []time.Time, start, kill, end time.Time) (recovered time.Duration, ref float64, gap time.Duration) {
	ts := slices.Clone(times)
	slices.SortFunc(ts, func(a, b time.Time) int { return a.Compare(b) })
	count := func(from, to time.Time) int {
		n := 0
		for _, t := range ts {
			if !t.Before(from) && t.Before(to) {
				n++
			}
		}
		return n
	}
	warm := start.Add(2 * time.Second)
	if kill.After(warm) {
		ref = float64(count(warm, kill)) / kill.Sub(warm).Seconds()
	}
	const win = time.Second
	dipped := false
	recovered = end.Sub(kill)
	for w := kill; !w.Add(win).After(end); w = w.Add(100 * time.Millisecond) {
		full := float64(count(w, w.Add(win))) >= 0.9*ref*win.Seconds()
		if !full && !dipped && w.Sub(kill) > 2*time.Second {
			break
		}
		if !full {
			dipped = true
		} else if dipped {
			// From the window's first arrival: a backlog that arrives at
			// once fills windows that start up to a second before it.
			i, _ := slices.BinarySearchFunc(ts, w, func(a, b time.Time) int { return a.Compare(b) })
			recovered = ts[i].Sub(kill)
			break
		}
	}
	if !dipped {
		recovered = 0
	}
	prev := kill.Add(-time.Second)
	for _, t := range ts {
		if t.Before(prev) {
			continue
		}
		if t.After(end) {
			break
		}
		gap = max(gap, t.Sub(prev))
		prev = t
	}
	gap = max(gap, end.Sub(prev))
	return recovered, ref, gap
}

// perHalfSecond counts arrivals per 500 ms from start to end, a bar before the
// bucket that holds the kill.
func perHalfSecond(times []time.Time, start, kill, end time.Time) string {
	const step = 500 * time.Millisecond
	n := int(end.Sub(start)/step) + 1
	counts := make([]int, n)
	for _, t := range times {
		if i := int(t.Sub(start) / step); i >= 0 && i < n {
			counts[i]++
		}
	}
	k := int(kill.Sub(start) / step)
	var sb strings.Builder
	for i, c := range counts {
		if i == k {
			sb.WriteString("| ")
		}
		fmt.Fprintf(&sb, "%d ", c)
	}
	return strings.TrimSpace(sb.String())
}

// consumerDeliveries is what the server says of the annotation worker's
// consumer: its consumer sequence counts every delivery, first or not,
// and msgs counts the requests in the stream, so the growth of the one
// beyond the other is deliveries beyond a message's first.
type consumerDeliveries struct{ delivered, msgs uint64 }

func (f *fleet) annotationDeliveries(tb testing.TB) consumerDeliveries {
	tb.Helper()
	ctx, cancel := context.WithTimeout(f.ctx, 30*time.Second)
	defer cancel()
	var d consumerDeliveries
	ok := eventually(30*time.Second, func() bool {
		c, err := f.js.Consumer(ctx, bus.StreamSCM, "annotation")
		if err != nil {
			return false
		}
		st, err := f.js.Stream(ctx, bus.StreamSCM)
		if err != nil {
			return false
		}
		info, err := st.Info(ctx, jetstream.WithSubjectFilter(events.SubjectAnnotationRequested))
		if err != nil {
			return false
		}
		d = consumerDeliveries{delivered: c.CachedInfo().Delivered.Consumer, msgs: info.State.Subjects[events.SubjectAnnotationRequested]}
		return true
	})
	if !ok {
		tb.Fatal("no info of the annotation consumer within 30s")
	}
	return d
}

// consumerLeader names the server leading durable's Raft group, "" if
// unknown.
func (f *fleet) consumerLeader(stream, durable string) string {
	ctx, cancel := context.WithTimeout(f.ctx, 5*time.Second)
	defer cancel()
	c, err := f.js.Consumer(ctx, stream, durable)
	if err != nil || c.CachedInfo().Cluster == nil {
		return ""
	}
	return c.CachedInfo().Cluster.Leader
}

// waitDrained waits until durable on stream has nothing pending and
// nothing awaiting its ack.
func (f *fleet) waitDrained(tb testing.TB, stream, durable string, d time.Duration) {
	tb.Helper()
	poll(tb, d, fmt.Sprintf("consumer %s of %s drained", durable, stream), func() bool {
		ctx, cancel := context.WithTimeout(f.ctx, 5*time.Second)
		defer cancel()
		c, err := f.js.Consumer(ctx, stream, durable)
		if err != nil {
			return false
		}
		info := c.CachedInfo()
		return info.NumPending == 0 && info.NumAckPending == 0
	})
}

// handledCount is how often the annotation worker handled the same request to
// the end (its "annotation posted" log line, one per handling that
// reached GitHub and was answered).
type handledCount struct{ requests, extra int }

func (f *fleet) handledTwice(tb testing.TB, reqs []sentRequest) handledCount {
	tb.Helper()
	ours := map[string]int{}
	for _, r := range reqs {
		ours[r.id] = 0
	}
	file, err := os.Open(f.annotation.logPath)
	if err != nil {
		tb.Fatalf("annotation log: %v", err)
	}
	defer file.Close()
	sc := bufio.NewScanner(file)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var line struct {
			Msg       string `json:"msg"`
			RequestID string `json:"requestId"`
		}
		if json.Unmarshal(sc.Bytes(), &line) != nil || line.Msg != "annotation posted" {
			continue
		}
		if n, ok := ours[line.RequestID]; ok {
			ours[line.RequestID] = n + 1
		}
	}
	if err := sc.Err(); err != nil {
		tb.Fatalf("annotation log: %v", err)
	}
	var h handledCount
	for _, n := range ours {
		if n > 1 {
			h.requests++
			h.extra += n - 1
		}
	}
	return h
}

// resultsWatch is a consumer of the annotation results as Scanner would
// run one: a durable consumer of SCM, explicit acks. It stamps each
// stream message's first arrival and counts what arrives again.
type resultsWatch struct {
	durable      string
	mu           sync.Mutex
	first        map[uint64]time.Time // stream sequence → first arrival
	seqs         map[string][]uint64  // request id → stream sequences
	at           map[string]time.Time // request id → first arrival
	redeliveries int
}

func (f *fleet) watchResults(tb testing.TB, durable string) *resultsWatch {
	tb.Helper()
	cons, err := f.js.CreateOrUpdateConsumer(f.ctx, bus.StreamSCM, jetstream.ConsumerConfig{
		Durable: durable, AckPolicy: jetstream.AckExplicitPolicy, DeliverPolicy: jetstream.DeliverNewPolicy,
		AckWait: 5 * time.Second, MaxAckPending: 10_000,
		FilterSubjects: []string{events.SubjectAnnotationCompleted, events.SubjectAnnotationFailed},
	})
	if err != nil {
		tb.Fatal(err)
	}
	w := &resultsWatch{durable: durable, first: map[uint64]time.Time{}, seqs: map[string][]uint64{}, at: map[string]time.Time{}}
	cc, err := cons.Consume(w.handle, jetstream.ConsumeErrHandler(func(jetstream.ConsumeContext, error) {
		// Leader elections and reconnects: Consume resumes by itself.
	}))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(cc.Stop)
	return w
}

func (w *resultsWatch) handle(msg jetstream.Msg) {
	now := time.Now()
	defer func() { _ = msg.Ack() }()
	md, err := msg.Metadata()
	if err != nil {
		return
	}
	var ev struct {
		Data struct {
			RequestID string `json:"requestId"`
		} `json:"data"`
	}
	if json.Unmarshal(msg.Data(), &ev) != nil {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	seq := md.Sequence.Stream
	if _, seen := w.first[seq]; seen {
		w.redeliveries++
		return
	}
	w.first[seq] = now
	w.seqs[ev.Data.RequestID] = append(w.seqs[ev.Data.RequestID], seq)
	if _, ok := w.at[ev.Data.RequestID]; !ok {
		w.at[ev.Data.RequestID] = now
	}
}

// times is the first answer's arrival of each of reqs that was answered.
func (w *resultsWatch) times(reqs []sentRequest) []time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []time.Time
	for _, r := range reqs {
		if t, ok := w.at[r.id]; ok {
			out = append(out, t)
		}
	}
	return out
}

// duplicates: messages delivered again, and requests of reqs answered at
// more than one stream sequence.
func (w *resultsWatch) duplicates(reqs []sentRequest) (redeliveries, twice int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, r := range reqs {
		if len(w.seqs[r.id]) > 1 {
			twice++
		}
	}
	return w.redeliveries, twice
}

// TestRecoveryAfter holds BenchmarkFleetCluster's reading of a flow to
// its definition; it needs no fleet.
func TestRecoveryAfter(t *testing.T) {
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	kill, end := start.Add(10*time.Second), start.Add(30*time.Second)
	// every 50 ms (20/s) over [from, to)
	steady := func(from, to time.Duration) []time.Time {
		var ts []time.Time
		for d := from; d < to; d += 50 * time.Millisecond {
			ts = append(ts, start.Add(d))
		}
		return ts
	}
	cat := func(parts ...[]time.Time) []time.Time { return slices.Concat(parts...) }
	for _, tc := range []struct {
		name          string
		times         []time.Time
		recovered     time.Duration
		gap, gapSlack time.Duration
	}{
		{"no dip", steady(0, 30*time.Second), 0, 50 * time.Millisecond, 0},
		{"5s outage", cat(steady(0, 10*time.Second), steady(15*time.Second, 30*time.Second)), 5 * time.Second, 5 * time.Second, 50 * time.Millisecond},
		{"backlog at once, then steady", cat(steady(0, 10*time.Second), slices.Repeat([]time.Time{start.Add(15 * time.Second)}, 100),
			steady(15*time.Second+50*time.Millisecond, 30*time.Second)), 5 * time.Second, 5 * time.Second, 50 * time.Millisecond},
		{"a dip long after the kill is not the kill's", cat(steady(0, 18*time.Second), steady(20*time.Second, 30*time.Second)),
			0, 2 * time.Second, 50 * time.Millisecond},
		{"never back", steady(0, 10*time.Second), 20 * time.Second, 20 * time.Second, 50 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec, ref, gap := recoveryAfter(tc.times, start, kill, end)
			if ref < 19.9 || ref > 20.1 {
				t.Errorf("ref %.2f/s, want 20", ref)
			}
			if d := rec - tc.recovered; d < -200*time.Millisecond || d > 200*time.Millisecond {
				t.Errorf("recovered after %v, want %v", rec, tc.recovered)
			}
			if gap < tc.gap || gap > tc.gap+tc.gapSlack {
				t.Errorf("gap %v, want %v", gap, tc.gap)
			}
		})
	}
}
