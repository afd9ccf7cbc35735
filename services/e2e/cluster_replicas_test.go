package e2e_test

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"inthub.dev/events"
	"inthub.dev/pkg/bus"
	"inthub.dev/pkg/natstest"
	"inthub.dev/services/healthpoller/schedule"
)

// The replicated fleet's load and health schedule.
const (
	// replicaInterval is every poller's --default-interval: each
	// integration of the cadence set is due once per interval.
	replicaInterval = 2 * time.Second
	// replicaLeaseTTL is the pollers' --lease-ttl (renewed every
	// second): longer than a Raft election of a lease bucket (4 to 9 s,
	// during which no lease is renewed) plus a renewal, as the default
	// (15 s) is, so that an election expires no lease. The fleet's usual
	// 3 s made every lease expire in every election of the lease
	// buckets, and a lease taken by the other poller before its holder
	// learnt it was gone had one slot checked twice.
	replicaLeaseTTL = 12 * time.Second
	// cadenceTolerance is how much later than one interval after its
	// last check an integration may be checked again, at worst: a dead
	// poller's leases expire a lease TTL after their last renewal, a
	// survivor takes them at its next round (1 s) and checks from the
	// next slot (an interval); a second to spare.
	cadenceTolerance = replicaLeaseTTL + time.Second + replicaInterval + time.Second
	// cadenceSet is the number of long-lived integrations whose checks
	// are counted.
	cadenceSet = 16
	// webhookRate is deployment webhooks per second, spread over the
	// ingresses.
	webhookRate = 3.0
)

// replicaFleet is the fleet on a three-node NATS cluster with several
// replicas of each service: two catalogs on one database, two
// health-pollers, three annotation workers, two enrichment services. The
// API and the webhook ingresses are reached through a round-robin
// balancer each, as behind a load balancer: an attempt that meets a dead
// replica fails (502) and the client's retry goes to the next one.
type replicaFleet struct {
	*fleet
	catalogs, pollers, annotations, enrichments []*process
	// api and hooks are the balancers' base URLs.
	api, hooks string
	sig        *signals
	gh         integration // posts the annotation load
	hooksIt    integration // receives the webhook load
	cadence    *cadence
	phases     int
	// overlapFrom and overlapTo bound a partition of the phase under way:
	// slots checked twice then are the lease design's, not faults.
	overlapFrom, overlapTo time.Time
}

// all is every process of the fleet.
func (rf *replicaFleet) all() []*process {
	return slices.Concat(rf.catalogs, rf.pollers, rf.annotations, rf.enrichments)
}

func startReplicaFleet(t *testing.T) *replicaFleet {
	t.Helper()
	f := startFleet(t, fleetOptions{Cluster: true, Enrichment: true, HealthInterval: replicaInterval,
		LeaseTTL: replicaLeaseTTL})
	rf := &replicaFleet{fleet: f,
		catalogs: []*process{f.catalog}, pollers: []*process{f.poller},
		annotations: []*process{f.annotation}, enrichments: []*process{f.enrichment}}
	rf.catalogs = append(rf.catalogs, rf.replica(t, f.catalog, 2))
	rf.pollers = append(rf.pollers, rf.replica(t, f.poller, 2))
	rf.annotations = append(rf.annotations, rf.replica(t, f.annotation, 2), rf.replica(t, f.annotation, 3))
	rf.enrichments = append(rf.enrichments, rf.replica(t, f.enrichment, 2))
	for _, p := range rf.all() {
		if !p.running() {
			p.start(t)
		}
	}
	for _, p := range rf.all() {
		p.ready(t, 90*time.Second)
	}
	rf.api = balance(t, rf.addrs(rf.catalogs, "--listen"))
	rf.hooks = balance(t, rf.addrs(rf.enrichments, "--webhook-listen"))

	rf.cadence = rf.collectCadence(t)
	rf.sig = f.subscribe("e2e-cluster-replicas")
	for i := range cadenceSet {
		it := f.create("test.inmemory", fmt.Sprintf("cadence-%d", i), map[string]any{"healthy": true}, "")
		rf.cadence.watch(it.ID)
	}
	rf.gh = f.githubIntegration("replicas-github", "")
	rf.hooksIt = f.create("scm.github", "replicas-webhooks", map[string]any{
		"endpoint": f.ghEndpoint, "appId": f.gh.AppID(), "installationId": f.gh.InstallationID(),
		"privateKey": f.ghKeyRef, "webhookSecret": "authref://env/" + webhookSecretEnv, "healthIntervalSeconds": 86400,
	}, "")
	f.warmUp(t, rf.gh, endPosted)
	// Every ingress answers a ping 200 once its copy of the bucket knows
	// the integration, 404 before.
	for _, p := range rf.enrichments {
		base := "http://" + flagValue(p.args, "--webhook-listen")
		ping := 0
		poll(t, 30*time.Second, p.name+" knows the webhook integration", func() bool {
			ping++
			code, err := postWebhook(f.ctx, f.http, base, rf.hooksIt.ID, "ping", fmt.Sprintf("ping-%s-%d", p.name, ping),
				[]byte(`{"zen":"Keep it logically awesome.","hook_id":1}`))
			return err == nil && code == http.StatusOK
		})
	}
	// Every poller has its share of the partitions before the first
	// phase counts the cadence.
	poll(t, 30*time.Second, "the cadence set checked", func() bool {
		return len(rf.cadence.firstAfter(time.Now().Add(-replicaInterval))) == cadenceSet
	})
	return rf
}

// replica makes the k-th replica of p: the same binary and arguments but
// an HTTP address (and webhook address) and data directory of its own. It
// is not started.
func (rf *replicaFleet) replica(t *testing.T, p *process, k int) *process {
	t.Helper()
	args := slices.Clone(p.args)
	health := freeAddr(t)
	for i := 0; i+1 < len(args); i++ {
		switch args[i] {
		case "--listen":
			args[i+1] = health
		case "--webhook-listen":
			args[i+1] = freeAddr(t)
		case "--data-dir":
			args[i+1] = filepath.Join(rf.dir, fmt.Sprintf("%s-%d", filepath.Base(args[i+1]), k))
		}
	}
	name := p.name
	r := newProcess(t, name, args, p.env, health)
	// The binary's path is set; the name is the replica's in messages
	// and log files.
	r.name = fmt.Sprintf("%s-%d", name, k)
	r.logPath = filepath.Join(filepath.Dir(r.logPath), r.name+".log")
	return r
}

func (rf *replicaFleet) addrs(ps []*process, flag string) []string {
	var out []string
	for _, p := range ps {
		out = append(out, "http://"+flagValue(p.args, flag))
	}
	return out
}

func flagValue(args []string, flag string) string {
	for i := 0; i+1 < len(args); i++ {
		if args[i] == flag {
			return args[i+1]
		}
	}
	return ""
}

// balance serves a round-robin reverse proxy over backends: each request
// goes to the next one; a backend that does not answer is a 502, which
// the loads retry, as clients behind a load balancer would.
func balance(t *testing.T, backends []string) string {
	t.Helper()
	targets := make([]*url.URL, len(backends))
	for i, b := range backends {
		u, err := url.Parse(b)
		if err != nil {
			t.Fatal(err)
		}
		targets[i] = u
	}
	var next atomic.Uint64
	proxy := &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(targets[next.Add(1)%uint64(len(targets))])
		},
		// A fresh connection per request: a killed backend leaves no idle
		// connection behind to fail the next request on.
		Transport:    &http.Transport{DisableKeepAlives: true},
		ErrorHandler: func(w http.ResponseWriter, _ *http.Request, _ error) { w.WriteHeader(http.StatusBadGateway) },
	}
	srv := httptest.NewServer(proxy)
	t.Cleanup(srv.Close)
	return srv.URL
}

// --- the health schedule's cadence

// cadence collects integration.health_checked of the integrations it
// watches, by their checkedAt, with one ordered consumer.
type cadence struct {
	mu     sync.Mutex
	ids    map[string]bool
	checks map[string][]time.Time
	bad    []string
}

func (rf *replicaFleet) collectCadence(t *testing.T) *cadence {
	t.Helper()
	c := &cadence{ids: map[string]bool{}, checks: map[string][]time.Time{}}
	ctx, cancel := context.WithTimeout(rf.ctx, 30*time.Second)
	defer cancel()
	cons, err := rf.js.OrderedConsumer(ctx, bus.StreamIntegrations, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{events.SubjectIntegrationHealthChecked},
	})
	if err != nil {
		t.Fatal(err)
	}
	cc, err := cons.Consume(func(msg jetstream.Msg) {
		var ev struct {
			Data events.HealthChecked `json:"data"`
		}
		err := json.Unmarshal(msg.Data(), &ev)
		c.mu.Lock()
		defer c.mu.Unlock()
		switch {
		case err != nil:
			c.bad = append(c.bad, fmt.Sprintf("health_checked does not parse: %v", err))
		case c.ids[ev.Data.IntegrationID]:
			c.checks[ev.Data.IntegrationID] = append(c.checks[ev.Data.IntegrationID], ev.Data.CheckedAt)
		}
	}, jetstream.ConsumeErrHandler(func(jetstream.ConsumeContext, error) {
		// Leader elections and node deaths: the ordered consumer resets
		// itself from the last sequence it saw.
	}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cc.Stop)
	return c
}

func (c *cadence) watch(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.ids[id] = true
}

// firstAfter is each watched integration's first check after t.
func (c *cadence) firstAfter(t time.Time) map[string]time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[string]time.Time{}
	for id, cs := range c.checks {
		for _, at := range cs {
			if at.After(t) && (out[id].IsZero() || at.Before(out[id])) {
				out[id] = at
			}
		}
	}
	return out
}

// slot is the due time a check belongs to: the poller's slots are
// k·interval + schedule.Phase(id).
func slot(id string, at time.Time) int64 {
	phase := int64(schedule.Phase(id, replicaInterval))
	return (at.UnixNano() - phase) / int64(replicaInterval)
}

// cadenceReport is the schedule between from and to: the longest time
// from one check of an integration to its next, the slots checked twice,
// and the checks counted.
type cadenceReport struct {
	maxGap  time.Duration
	gapOf   string
	doubled []doubledSlot
	checks  int
}

// doubledSlot is the second check of an integration in one slot.
type doubledSlot struct {
	id string
	at time.Time
}

func (d doubledSlot) String() string { return d.id + "@" + d.at.Format("15:04:05.000") }

func (c *cadence) report(from, to time.Time) cadenceReport {
	c.mu.Lock()
	defer c.mu.Unlock()
	var r cadenceReport
	for id, cs := range c.checks {
		cs = slices.Clone(cs)
		slices.SortFunc(cs, func(a, b time.Time) int { return a.Compare(b) })
		var prev time.Time
		seen := map[int64]int{}
		for _, at := range cs {
			// The check before the window counts as the start of the
			// window's first gap.
			if at.Before(from.Add(-replicaInterval - cadenceTolerance)) {
				continue
			}
			if at.After(to) {
				// The first check after the window closes its last gap.
				if !prev.IsZero() && !prev.Before(from) {
					if g := at.Sub(prev); g > r.maxGap {
						r.maxGap, r.gapOf = g, fmt.Sprintf("%s from %s", id, prev.Format("15:04:05.000"))
					}
				}
				break
			}
			if !at.Before(from) {
				r.checks++
				s := slot(id, at)
				seen[s]++
				if seen[s] == 2 {
					r.doubled = append(r.doubled, doubledSlot{id, at})
				}
				if !prev.IsZero() {
					if g := at.Sub(prev); g > r.maxGap {
						r.maxGap, r.gapOf = g, fmt.Sprintf("%s from %s", id, prev.Format("15:04:05.000"))
					}
				}
			}
			prev = at
		}
	}
	return r
}

// --- a webhook load through the ingresses

// webhookLoad sends deployment deliveries, as GitHub does: each with a
// delivery id of its own, sent again (the same delivery id) after a
// transport error or a 5xx until an ingress accepts it.
type webhookLoad struct {
	rf       *replicaFleet
	base     int // deployment ids start after it
	mu       sync.Mutex
	n        int
	accepted []int
	retries  int
	errs     []string
}

func (l *webhookLoad) run(ctx context.Context, rate float64) {
	tick := time.NewTicker(time.Duration(float64(time.Second) / rate))
	defer tick.Stop()
	sha := strings.Repeat("c1", 20)
	at := time.Now().UTC().Add(-time.Hour).Truncate(time.Second)
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		l.mu.Lock()
		id := l.base + l.n
		l.n++
		l.mu.Unlock()
		// A delivery begun is seen through, concurrently: a slow ingress
		// does not slow the pace.
		wg.Go(func() { l.one(context.WithoutCancel(ctx), id, deploymentWebhook("cluster", id, sha, at)) })
	}
}

func (l *webhookLoad) one(ctx context.Context, id int, body []byte) {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	delivery := fmt.Sprintf("dep-%d", id)
	for attempt := 0; ; attempt++ {
		rctx, rcancel := context.WithTimeout(ctx, 10*time.Second)
		code, err := postWebhook(rctx, l.rf.http, l.rf.hooks, l.rf.hooksIt.ID, "deployment", delivery, body)
		rcancel()
		l.mu.Lock()
		switch {
		case err == nil && code == http.StatusAccepted:
			l.accepted = append(l.accepted, id)
			l.retries += attempt
			l.mu.Unlock()
			return
		case err == nil && code < 500:
			l.errs = append(l.errs, fmt.Sprintf("delivery %s: %d", delivery, code))
			l.mu.Unlock()
			return
		}
		l.mu.Unlock()
		select {
		case <-ctx.Done():
			l.mu.Lock()
			l.errs = append(l.errs, fmt.Sprintf("delivery %s: not accepted within a minute (%d, %v)", delivery, code, err))
			l.mu.Unlock()
			return
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// postWebhook posts one GitHub delivery signed with the webhook secret.
func postWebhook(ctx context.Context, client *http.Client, base, integrationID, event, delivery string, body []byte) (int, error) {
	m := hmac.New(sha256.New, []byte(webhookSecret))
	m.Write(body)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/webhooks/github/"+integrationID, bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-GitHub-Event", event)
	req.Header.Set("X-GitHub-Delivery", delivery)
	req.Header.Set("X-Hub-Signature-256", "sha256="+hex.EncodeToString(m.Sum(nil)))
	resp, err := client.Do(req)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

// checkWebhooks waits until every accepted delivery is a canonical event
// and checks that each is exactly one.
func (rf *replicaFleet) checkWebhooks(t *testing.T, ids []int, d time.Duration) {
	t.Helper()
	want := map[string]bool{}
	for _, id := range ids {
		want[strconv.Itoa(id)] = true
	}
	var count map[string]int
	read := func() bool {
		ctx, cancel := context.WithTimeout(rf.ctx, 20*time.Second)
		defer cancel()
		msgs, err := rf.streamMsgs(ctx, bus.StreamEvents, events.SubjectCanonicalDelivery)
		if err != nil {
			return false // a leader election: read again
		}
		count = map[string]int{}
		for _, m := range msgs {
			ev, err := events.Parse(m.Data)
			if err != nil {
				t.Fatalf("canonical seq %d: %v", m.Sequence, err)
			}
			var c events.Canonical
			if err := ev.Decode(&c); err != nil {
				t.Fatalf("canonical event %s: %v", ev.ID, err)
			}
			if want[c.Context.ExternalID] {
				count[c.Context.ExternalID]++
			}
		}
		return len(count) == len(want)
	}
	if !eventually(d, read) {
		var missing []string
		for id := range want {
			if count[id] == 0 {
				missing = append(missing, id)
			}
		}
		t.Errorf("%d of %d accepted deliveries not mapped to a canonical event within %v (lost?): %v", len(missing), len(want), d, missing)
	}
	for id, n := range count {
		if n > 1 {
			t.Errorf("deployment %s mapped to %d canonical events", id, n)
		}
	}
}

// --- phases

// phase runs the load for loadFor (annotation requests, integration
// changes through the API balancer, webhooks through the ingress
// balancer), injects the fault faultAt into it, and after it checks:
// every request posted once, dead-lettered once or spooled once; every
// change announced once, in order per integration; every delivery one
// canonical event; every integration of the cadence set checked at
// least once per interval plus cadenceTolerance, no slot twice; every
// process up.
func (rf *replicaFleet) phase(t *testing.T, name string, loadFor time.Duration, inject func(t *testing.T)) {
	f := rf.fleet.with(t)
	rf.phases++
	offline := f.githubIntegration("offline-"+name, "offline")
	f.warmUp(t, offline, endSpool)
	sig0 := rf.sig.redeliveryCount()

	start := time.Now()
	al := &annotationLoad{f: f, phase: name, github: rf.gh.ID, offline: offline.ID}
	api := f.with(t)
	api.api = rf.api
	cl := &changeLoad{f: api, phase: name, pace: 100 * time.Millisecond}
	wl := &webhookLoad{rf: rf, base: rf.phases * 100_000}
	ctx, cancel := context.WithTimeout(f.ctx, loadFor)
	defer cancel()
	var wg sync.WaitGroup
	var loadErr error
	wg.Go(func() { loadErr = al.run(ctx, loadRate) })
	wg.Go(func() { cl.run(ctx, changeWorkers) })
	wg.Go(func() { wl.run(ctx, webhookRate) })
	select {
	case <-time.After(faultAt):
		inject(t)
	case <-ctx.Done():
	}
	wg.Wait()
	if loadErr != nil {
		t.Fatalf("load: %v", loadErr)
	}
	loaded := time.Since(start)

	reqs := al.requests()
	outs, summary := f.settle(t, reqs, 120*time.Second)
	settled := time.Since(start)
	redelivered := 0
	completed, _, err := f.results(f.ctx)
	if err != nil {
		t.Errorf("read the results: %v", err)
	}
	for _, r := range reqs {
		for _, c := range completed[r.id] {
			if c.Attempts > 1 && outs[r.id] != nil && outs[r.id].posted == 1 {
				redelivered++
				break
			}
		}
	}

	rf.explainAnswers(t, reqs, outs)

	lcs, errs := cl.lifecycles()
	for _, e := range errs {
		t.Errorf("integration change not accepted: %s", e)
	}
	checkLifecycles(t, rf.sig, lcs, 90*time.Second)
	changed := time.Since(start)

	wl.mu.Lock()
	accepted, retries, werrs := slices.Clone(wl.accepted), wl.retries, slices.Clone(wl.errs)
	wl.mu.Unlock()
	for _, e := range werrs {
		t.Errorf("webhook: %s", e)
	}
	rf.checkWebhooks(t, accepted, 90*time.Second)
	mapped := time.Since(start)

	// The window's checks are all on the stream once each integration has
	// one after it (one poller reports an integration's checks in order).
	end := time.Now()
	poll(t, 60*time.Second, "a check of every cadence integration after the phase", func() bool {
		return len(rf.cadence.firstAfter(end)) == cadenceSet
	})
	cr := rf.cadence.report(start, end)
	switch {
	case cr.maxGap > replicaInterval+cadenceTolerance:
		t.Errorf("cadence: %v between two checks of %s, want at most %v", cr.maxGap.Round(time.Millisecond), cr.gapOf,
			replicaInterval+cadenceTolerance)
	case cr.checks < cadenceSet*int(end.Sub(start)/replicaInterval)/2:
		t.Errorf("cadence: %d checks of %d integrations in %v", cr.checks, cadenceSet, end.Sub(start).Round(time.Second))
	}
	// A poller cut off from the lease bucket keeps checking its
	// partitions (healthpoller/partition: availability first), and once
	// its leases expire the other poller takes them: while a partition
	// lasts, and until the holder's next renewal after it, the two check
	// those slots both. Allowed there, counted; anywhere else a doubled
	// slot is a fault.
	var overlap, doubled []doubledSlot
	for _, d := range cr.doubled {
		if !rf.overlapFrom.IsZero() && !d.at.Before(rf.overlapFrom) && !d.at.After(rf.overlapTo) {
			overlap = append(overlap, d)
		} else {
			doubled = append(doubled, d)
		}
	}
	if len(doubled) > 0 {
		t.Errorf("cadence: %d slots checked twice: %v", len(doubled), doubled)
	}
	rf.overlapFrom, rf.overlapTo = time.Time{}, time.Time{}
	rf.cadence.mu.Lock()
	if len(rf.cadence.bad) > 0 {
		t.Errorf("cadence: %v", rf.cadence.bad)
	}
	rf.cadence.mu.Unlock()

	t.Logf("%s: %s; %d redelivered and posted once; %d integrations created, renamed and deleted, %d redeliveries to the subscriber; "+
		"%d deliveries accepted (%d retried sends); cadence: %d checks, longest gap %v, %d slots doubled (%d while partitioned); "+
		"load done at %v, requests settled at %v, changes at %v, deliveries at %v",
		name, summary, redelivered, len(lcs), rf.sig.redeliveryCount()-sig0, len(accepted), retries,
		cr.checks, cr.maxGap.Round(time.Millisecond), len(doubled), len(overlap),
		loaded.Round(100*time.Millisecond), settled.Round(100*time.Millisecond), changed.Round(100*time.Millisecond),
		mapped.Round(100*time.Millisecond))
	if os.Getenv("E2E_LOGS") != "" {
		for _, p := range rf.all() {
			t.Logf("%s:\n%s", p.name, p.tail(40))
		}
	}
	for _, p := range rf.all() {
		if !p.running() {
			t.Fatalf("%s is down: %v\n%s", p.name, p.exit(), p.tail(30))
		}
	}
}

// explainAnswers logs, for each request whose end was announced more
// than once (allowed: its effect is counted once), how many copies of the
// request SCM holds: two copies are a publish retried across an election
// that the duplicate window did not drop, one copy a result published
// twice.
func (rf *replicaFleet) explainAnswers(t *testing.T, reqs []sentRequest, outs map[string]*outcome) {
	t.Helper()
	var twice []string
	for _, r := range reqs {
		if o := outs[r.id]; o != nil && o.completed+o.deadLetter+o.spooled > 1 {
			twice = append(twice, r.id)
		}
	}
	if len(twice) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(rf.ctx, 60*time.Second)
	defer cancel()
	msgs, err := rf.streamMsgs(ctx, bus.StreamSCM, events.SubjectAnnotationRequested)
	if err != nil {
		t.Logf("requests answered twice %v; reading SCM: %v", twice, err)
		return
	}
	copies := map[string][]uint64{}
	for _, m := range msgs {
		if id := m.Header.Get(bus.HeaderMsgID); slices.Contains(twice, id) {
			copies[id] = append(copies[id], m.Sequence)
		}
	}
	for _, id := range twice {
		t.Logf("request %s answered %+v; SCM holds it at sequences %v", id, *outs[id], copies[id])
	}
}

func (s *signals) redeliveryCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.redeliveries
}

// fleetStreams are the streams and buckets the fleet provisions.
var fleetStreams = []string{bus.StreamIntegrations, bus.StreamSCM, bus.StreamIngest, bus.StreamEvents, bus.StreamDLQ,
	bus.StreamSpool, "KV_" + bus.BucketIntegrations, "KV_HEALTH_LEASES", "KV_HEALTH_MEMBERS"}

// led lists the streams node leads.
func led(c *natstest.TestCluster, node *natstest.ClusterNode) []string {
	var out []string
	for _, s := range fleetStreams {
		if c.StreamLeader(s) == node {
			out = append(out, s)
		}
	}
	return out
}

// TestClusterReplicas runs the fleet with several replicas of each
// service on a NATS cluster of three servers, every stream and bucket on
// three replicas, and under a steady load of annotation requests,
// integration changes and webhooks: crashes the server leading SCM, then
// restarts it; crashes the one leading INTEGRATIONS, then restarts it;
// partitions one server away for 20 s; kills -9 one replica of each
// service. After each phase it counts every request, change and delivery
// (see phase) and the health schedule's cadence.
//
// Several minutes on a small machine: set E2E_CLUSTER=1 to run it (make
// test-cluster).
func TestClusterReplicas(t *testing.T) {
	if os.Getenv("E2E_CLUSTER") == "" {
		t.Skip("set E2E_CLUSTER=1 to run the replicated fleet on a NATS cluster")
	}
	t.Parallel()
	rf := startReplicaFleet(t)
	c := rf.cluster
	const load = 8 * time.Second
	var down *natstest.ClusterNode
	crash := func(stream string) func(t *testing.T) {
		return func(t *testing.T) {
			leader := c.WaitStreamLeader(stream)
			streams := led(c, leader)
			crashed := time.Now()
			leader.Crash()
			next := c.WaitStreamLeader(stream, leader)
			t.Logf("%s (leading %v) crashed: %s leads %s after %v", leader.Name(), streams, next.Name(), stream,
				time.Since(crashed).Round(time.Millisecond))
			down = leader
		}
	}
	restart := func(t *testing.T) {
		if down == nil {
			t.Fatal("no node was crashed")
		}
		started := time.Now()
		down.Restart()
		c.WaitReady()
		t.Logf("%s restarted, the cluster whole again after %v", down.Name(), time.Since(started).Round(time.Millisecond))
	}
	t.Run("CrashSCMLeader", func(t *testing.T) { rf.phase(t, "CrashSCMLeader", load, crash(bus.StreamSCM)) })
	t.Run("RestartSCMLeader", func(t *testing.T) { rf.phase(t, "RestartSCMLeader", load, restart) })
	t.Run("CrashIntegrationsLeader", func(t *testing.T) {
		rf.phase(t, "CrashIntegrationsLeader", load, crash(bus.StreamIntegrations))
	})
	t.Run("RestartIntegrationsLeader", func(t *testing.T) { rf.phase(t, "RestartIntegrationsLeader", load, restart) })
	t.Run("Partition20s", func(t *testing.T) {
		rf.phase(t, "Partition20s", 25*time.Second, func(t *testing.T) {
			// The node that leads the most: its leaderships move, and the
			// processes connected to it keep their connection to a server
			// that can no longer reach the streams.
			node, most := c.Node(0), -1
			for _, n := range c.Nodes() {
				if l := led(c, n); len(l) > most {
					node, most = n, len(l)
				}
			}
			streams := led(c, node)
			cut := time.Now()
			c.Partition(node)
			t.Logf("%s (leading %v) partitioned away", node.Name(), streams)
			<-time.After(time.Until(cut.Add(20 * time.Second)))
			c.Heal(node)
			c.WaitReady()
			// Leases that expired while the lease buckets did not answer
			// are taken again after the heal, and a holder that could not
			// renew learns that its lease went to the other poller only
			// at its next renewal: until a lease TTL after the heal, a
			// slot may still be checked twice.
			rf.overlapFrom, rf.overlapTo = cut, time.Now().Add(replicaLeaseTTL)
			t.Logf("%s healed, the cluster whole again after %v", node.Name(), time.Since(cut).Round(time.Millisecond))
		})
	})
	t.Run("KillReplicas", func(t *testing.T) {
		rf.phase(t, "KillReplicas", load, func(t *testing.T) {
			victims := []*process{rf.catalogs[1], rf.pollers[1], rf.annotations[1], rf.enrichments[1]}
			for _, p := range victims {
				p.kill(t)
			}
			// Down for 5 s, as an orchestrator restarts a crashed
			// container; the restarted poller has a name of its own, so
			// the dead one's leases still wait out their TTL.
			<-time.After(5 * time.Second)
			for _, p := range victims {
				p.start(t)
			}
			for _, p := range victims {
				p.ready(t, 60*time.Second)
			}
		})
	})
}
