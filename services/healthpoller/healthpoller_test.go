package healthpoller_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	"inthub.dev/events"
	"inthub.dev/pkg/bus"
	"inthub.dev/pkg/natstest"
	"inthub.dev/pkg/spool"
	"inthub.dev/services/healthpoller"
	"inthub.dev/services/healthpoller/schedule"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, natstest.LeakOptions(
		goleak.IgnoreTopFunction("net/http.(*persistConn).readLoop"),
		goleak.IgnoreTopFunction("net/http.(*persistConn).writeLoop"),
	)...)
}

var tenants = []string{
	"0b5a3bb0-6a43-4d7e-9a39-6f1f9d9a0001",
	"0b5a3bb0-6a43-4d7e-9a39-6f1f9d9a0002",
}

func integrationID(k int) string { return fmt.Sprintf("8f1d2c3e-0000-4000-8000-%012d", k) }

func integration(k int, config string) events.Integration {
	t0 := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	return events.Integration{
		ID: integrationID(k), TenantID: tenants[k%len(tenants)], Type: "test.inmemory",
		Name: fmt.Sprintf("integration-%04d", k), Config: json.RawMessage(config),
		Status: "active", HealthStatus: events.HealthUnknown, Version: 1, CreatedAt: t0, UpdatedAt: t0,
	}
}

type env struct {
	t   *testing.T
	srv *natstest.Server
	js  jetstream.JetStream
	kv  jetstream.KeyValue
}

func newEnv(t *testing.T) *env {
	t.Helper()
	srv := natstest.Start(t)
	js, _ := srv.JetStream()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := bus.Provision(ctx, js, bus.DefaultStreamSettings()); err != nil {
		t.Fatal(err)
	}
	kv, err := js.KeyValue(ctx, bus.BucketIntegrations)
	if err != nil {
		t.Fatal(err)
	}
	return &env{t: t, srv: srv, js: js, kv: kv}
}

// put writes the integration as the outbox forwarder does.
func (e *env) put(in events.Integration) {
	e.t.Helper()
	b, err := json.Marshal(in)
	if err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := e.kv.Put(ctx, bus.IntegrationKey(in.TenantID, in.ID), b); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) del(in events.Integration) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := e.kv.Delete(ctx, bus.IntegrationKey(in.TenantID, in.ID)); err != nil {
		e.t.Fatal(err)
	}
}

type checked struct {
	tenant string // the envelope's
	events.HealthChecked
}

// checks reads every integration.health_checked on the stream so far.
func (e *env) checks() []checked {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cons, err := e.js.OrderedConsumer(ctx, bus.StreamIntegrations, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{events.SubjectIntegrationHealthChecked},
	})
	if err != nil {
		e.t.Fatal(err)
	}
	var out []checked
	for {
		batch, err := cons.FetchNoWait(1000)
		if err != nil {
			e.t.Fatal(err)
		}
		n := 0
		for msg := range batch.Messages() {
			n++
			ev, err := events.Parse(msg.Data())
			if err != nil {
				e.t.Fatalf("health_checked does not parse: %v", err)
			}
			var p events.HealthChecked
			if err := ev.Decode(&p); err != nil {
				e.t.Fatal(err)
			}
			if ev.Source != healthpoller.Source {
				e.t.Errorf("source %q", ev.Source)
			}
			out = append(out, checked{tenant: ev.TenantID, HealthChecked: p})
		}
		if err := batch.Error(); err != nil {
			e.t.Fatal(err)
		}
		if n == 0 {
			return out
		}
	}
}

type running struct {
	svc    *healthpoller.Service
	nc     *nats.Conn
	cancel context.CancelFunc
	done   chan error
	// stopped is closed once stop has taken Run's result from done, so
	// the cleanup does not wait for a second one.
	stopped chan struct{}
}

func (r *running) stop(t *testing.T) {
	t.Helper()
	r.cancel()
	defer close(r.stopped)
	select {
	case err := <-r.done:
		if err != nil {
			t.Fatalf("Run = %v, want nil", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
}

func (e *env) start(dataDir string, opts ...func(*healthpoller.Config)) *running {
	e.t.Helper()
	cfg := healthpoller.Config{
		Listen:            "127.0.0.1:0",
		DataDir:           dataDir,
		IntervalOverride:  time.Second,
		Thresholds:        schedule.Thresholds{Failure: 1, Success: 1},
		PublishRetryEvery: 100 * time.Millisecond,
	}
	for _, o := range opts {
		o(&cfg)
	}
	nc := e.srv.Connect()
	svc, err := healthpoller.New(cfg, nc)
	if err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{svc: svc, nc: nc, cancel: cancel, done: make(chan error, 1), stopped: make(chan struct{})}
	go func() { r.done <- svc.Run(ctx) }()
	e.t.Cleanup(func() {
		cancel()
		select {
		case <-r.done:
		case <-r.stopped:
		case <-time.After(30 * time.Second):
		}
	})
	waitFor(e.t, 10*time.Second, "the service is ready", func() bool {
		select {
		case <-svc.Ready():
			return true
		default:
			return false
		}
	})
	return r
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		<-tick.C
	}
}

func byID(cs []checked) map[string][]checked {
	m := map[string][]checked{}
	for _, c := range cs {
		m[c.IntegrationID] = append(m[c.IntegrationID], c)
	}
	return m
}

func TestEveryIntegrationIsCheckedAndPublished(t *testing.T) {
	e := newEnv(t)
	var ins []events.Integration
	for k := range 6 {
		in := integration(k, `{"healthy":true}`)
		ins = append(ins, in)
		e.put(in)
	}
	// A disabled one is never checked.
	disabled := integration(99, `{}`)
	disabled.Status = "disabled"
	e.put(disabled)
	r := e.start(t.TempDir())

	waitFor(t, 15*time.Second, "three checks of each integration", func() bool {
		m := byID(e.checks())
		for _, in := range ins {
			if len(m[in.ID]) < 3 {
				return false
			}
		}
		return true
	})
	m := byID(e.checks())
	if n := len(m[disabled.ID]); n != 0 {
		t.Errorf("disabled integration checked %d times", n)
	}
	for _, in := range ins {
		for _, c := range m[in.ID] {
			if c.tenant != in.TenantID || c.TenantID != in.TenantID || c.Type != in.Type {
				t.Errorf("%s: event of tenant %q/%q type %q, want %q %q", in.ID, c.tenant, c.TenantID, c.Type, in.TenantID, in.Type)
			}
			if c.Status != events.HealthHealthy {
				t.Errorf("%s: status %q, want healthy (message %q)", in.ID, c.Status, c.Message)
			}
			if c.CheckedAt.Location() != time.UTC || c.CheckedAt.IsZero() {
				t.Errorf("%s: checkedAt %v not UTC", in.ID, c.CheckedAt)
			}
		}
	}

	// The HTTP endpoints.
	base := "http://" + r.svc.Addr().String()
	for path, want := range map[string]string{
		"/healthz": `"status":"ok"`,
		"/readyz":  `"partitions":"64 of 64 held, 1 replicas"`,
		"/metrics": `integrations_health_check_total{provider="inmemory",status="healthy"}`,
	} {
		body, code := get(t, base+path)
		if code != http.StatusOK || !strings.Contains(body, want) {
			t.Errorf("GET %s = %d, want 200 with %s:\n%s", path, code, want, body)
		}
	}
	body, _ := get(t, base+"/metrics")
	for _, want := range []string{"integration_health_latency_ms_bucket", "integration_health_scheduling_lag_seconds", "integration_health_spool_depth 0",
		"integration_health_partitions_owned 64", "integration_health_replicas 1",
		`integration_health_status{status="healthy",tenant="` + tenants[0] + `",type="test.inmemory"} 3`,
		`integration_health_status{status="healthy",tenant="` + tenants[1] + `",type="test.inmemory"} 3`,
		`integrations_health_check_total{provider="inmemory",status="healthy"}`,
		`integration_health_latency_ms_count{provider="inmemory"}`,
		`integration_health_scheduling_lag_seconds{quantile="0.99"}`} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	r.stop(t)
}

func get(t *testing.T, url string) (string, int) {
	t.Helper()
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b), resp.StatusCode
}

func TestPublishedStatusesFollowTheScript(t *testing.T) {
	e := newEnv(t)
	// The builder makes a connector per check, so the script advances
	// with the clock: step n at second n.
	in := integration(1, `{"script":["healthy","unhealthy"],"scriptStepSeconds":1}`)
	e.put(in)
	e.start(t.TempDir())
	waitFor(t, 20*time.Second, "both statuses", func() bool {
		seen := map[events.HealthStatus]int{}
		for _, c := range e.checks() {
			seen[c.Status]++
		}
		return seen[events.HealthHealthy] >= 2 && seen[events.HealthUnhealthy] >= 2
	})
	for _, c := range e.checks() {
		// The step is read a moment after checkedAt: either second fits.
		want := map[events.HealthStatus]bool{}
		for _, at := range []time.Time{c.CheckedAt, c.CheckedAt.Add(time.Duration(c.LatencyMs+50) * time.Millisecond)} {
			want[[]events.HealthStatus{events.HealthHealthy, events.HealthUnhealthy}[at.Unix()%2]] = true
		}
		if !want[c.Status] {
			t.Errorf("checked at %s: status %q, the script says %v", c.CheckedAt.Format(time.RFC3339Nano), c.Status, want)
		}
	}
}

func TestDeleteStopsChecks(t *testing.T) {
	e := newEnv(t)
	keep, gone := integration(1, `{}`), integration(2, `{}`)
	e.put(keep)
	e.put(gone)
	r := e.start(t.TempDir())
	waitFor(t, 10*time.Second, "both checked", func() bool {
		m := byID(e.checks())
		return len(m[keep.ID]) > 0 && len(m[gone.ID]) > 0
	})
	e.del(gone)
	waitFor(t, 10*time.Second, "the delete reaches the schedule", func() bool { return r.svc.Stats().Schedule.Targets == 1 })
	// A check of gone may have been reporting when the delete arrived;
	// after that one, nothing more.
	before := len(byID(e.checks())[gone.ID])
	k0 := len(byID(e.checks())[keep.ID])
	waitFor(t, 10*time.Second, "three more checks of the kept one", func() bool {
		return len(byID(e.checks())[keep.ID]) >= k0+3
	})
	if after := len(byID(e.checks())[gone.ID]); after > before+1 {
		t.Errorf("deleted integration checked %d more times", after-before)
	}
}

func TestNATSOutageLosesNoResult(t *testing.T) {
	e := newEnv(t)
	var ins []events.Integration
	for k := range 4 {
		in := integration(k, `{}`)
		ins = append(ins, in)
		e.put(in)
	}
	dataDir := t.TempDir()
	r := e.start(dataDir)
	waitFor(t, 10*time.Second, "first checks", func() bool { return len(e.checks()) >= 4 })

	// Down for at least 10 s: 4 integrations checked every second spool 44
	// results in 11 s.
	e.srv.Stop()
	down := time.Now()
	waitFor(t, 30*time.Second, "44 results spooled while NATS is down", func() bool { return r.svc.Stats().Spooled >= 44 })
	if err := e.srv.Start(); err != nil {
		t.Fatal(err)
	}
	up := time.Now()
	waitFor(t, 20*time.Second, "the spool drained", func() bool { return r.svc.Stats().Spooled == 0 })
	r.stop(t)
	st := r.svc.Stats()
	if st.PublishErrors != 0 {
		t.Errorf("%d results neither published nor spooled", st.PublishErrors)
	}
	sp, err := spool.Open(filepath.Join(dataDir, "spool.db"))
	if err != nil {
		t.Fatal(err)
	}
	if n := sp.Len(); n != 0 {
		t.Errorf("%d results left in the spool", n)
	}
	sp.Close()

	var cs []checked
	waitFor(t, 10*time.Second, fmt.Sprintf("%d results on the stream", st.Reported), func() bool {
		cs = e.checks()
		return uint64(len(cs)) >= st.Reported
	})
	seen := map[string]int{}
	during := 0
	for _, c := range cs {
		key := c.IntegrationID + "@" + c.CheckedAt.Format(time.RFC3339Nano)
		seen[key]++
		if seen[key] == 2 {
			t.Errorf("result %s delivered twice", key)
		}
		if c.CheckedAt.After(down) && c.CheckedAt.Before(up) {
			during++
		}
	}
	if uint64(len(seen)) != st.Reported {
		t.Errorf("%d distinct results on the stream, %d reported", len(seen), st.Reported)
	}
	if during < 40 || up.Sub(down) < 10*time.Second {
		t.Errorf("%d results checked in the %v NATS was down, want >= 40 in at least 10 s", during, up.Sub(down))
	}
	m := byID(cs)
	for _, in := range ins {
		if len(m[in.ID]) == 0 {
			t.Errorf("%s never checked", in.ID)
		}
	}
}

func TestNewRequiresDataDir(t *testing.T) {
	srv := natstest.Start(t)
	if _, err := healthpoller.New(healthpoller.Config{}, srv.Connect()); err == nil {
		t.Fatal("New without DataDir succeeded")
	}
	if _, err := healthpoller.New(healthpoller.Config{DataDir: os.TempDir()}, nil); err == nil {
		t.Fatal("New without NATS succeeded")
	}
}

// TestCreateUpdateDelete at the service: a new integration is checked
// within one interval; an update of its interval moves it to the new
// cadence (the next slot of the new interval, nothing between); a delete
// stops its checks.
func TestCreateUpdateDelete(t *testing.T) {
	const (
		short = time.Second
		long  = 30 * time.Second
	)
	e := newEnv(t)
	// 30 integrations whose phases in a 30 s interval fall one in each
	// second, so whenever the update happens, one of them has its next
	// slot 3 to 4 s later.
	bySecond := map[int]int{}
	for k := 0; len(bySecond) < 30; k++ {
		sec := int(schedule.Phase(integrationID(k), long) / time.Second)
		if _, ok := bySecond[sec]; !ok {
			bySecond[sec] = k
		}
	}
	r := e.start(t.TempDir(), func(c *healthpoller.Config) {
		c.IntervalOverride = 0
		c.DefaultInterval = short
	})
	col := e.collect()
	created := time.Now()
	for _, k := range bySecond {
		e.put(integration(k, `{}`))
	}
	waitFor(t, 10*time.Second, "every new integration checked", func() bool {
		cs, _ := col.snapshot()
		return len(firstAfter(cs, created)) == 30
	})
	cs, _ := col.snapshot()
	for id, at := range firstAfter(cs, created) {
		if d := at.Sub(created); d > short+time.Second {
			t.Errorf("%s first checked %v after it was created, want within the interval (%v) and the time to learn of it", id, d, short)
		}
	}

	updated := time.Now()
	k := bySecond[int(time.Duration(updated.Add(3*time.Second).UnixNano()%int64(long))/time.Second)]
	in := integration(k, `{"healthIntervalSeconds": 30}`)
	in.Version = 2
	e.put(in)
	slot := time.Unix(0, updated.UnixNano()-updated.UnixNano()%int64(long)+int64(schedule.Phase(in.ID, long)))
	for !slot.After(updated) {
		slot = slot.Add(long)
	}
	waitFor(t, 15*time.Second, "the check at the new interval's slot", func() bool {
		cs, _ := col.snapshot()
		for _, c := range cs {
			if c.IntegrationID == in.ID && !c.CheckedAt.Before(slot) {
				return true
			}
		}
		return false
	})
	cs, _ = col.snapshot()
	var after []time.Duration
	for _, c := range cs {
		if c.IntegrationID == in.ID && c.CheckedAt.After(updated) {
			after = append(after, c.CheckedAt.Sub(updated))
		}
	}
	// At most one more check on the old cadence while the update travels;
	// then the slot of the new one.
	due := slot.Sub(updated)
	if len(after) == 0 || len(after) > 2 || after[len(after)-1] < due || after[len(after)-1] > due+time.Second ||
		(len(after) == 2 && after[0] > time.Second) {
		t.Errorf("checks after the update at %v, want at most one within a second, then one at %v", after, due)
	}

	e.del(in)
	deleted := time.Now()
	waitFor(t, 10*time.Second, "the delete to reach the schedule", func() bool { return r.svc.Stats().Schedule.Targets == 29 })
	keep := integrationID(bySecond[(int(deleted.Unix()%30)+15)%30])
	waitFor(t, 10*time.Second, "three more checks of another", func() bool {
		cs, _ := col.snapshot()
		n := 0
		for _, c := range cs {
			if c.IntegrationID == keep && c.CheckedAt.After(deleted) {
				n++
			}
		}
		return n >= 3
	})
	cs, _ = col.snapshot()
	for _, c := range cs {
		if c.IntegrationID == in.ID && c.CheckedAt.After(deleted) {
			t.Errorf("deleted integration checked %v after the delete", c.CheckedAt.Sub(deleted))
		}
	}
}
