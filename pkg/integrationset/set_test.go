package integrationset_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	"inthub.dev/events"
	"inthub.dev/pkg/bus"
	"inthub.dev/pkg/integrationset"
	"inthub.dev/pkg/natstest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, natstest.LeakOptions()...)
}

var tenants = []string{
	"0b5a3bb0-6a43-4d7e-9a39-6f1f9d9a0001",
	"0b5a3bb0-6a43-4d7e-9a39-6f1f9d9a0002",
	"0b5a3bb0-6a43-4d7e-9a39-6f1f9d9a0003",
}

func integrationID(k int) string { return fmt.Sprintf("8f1d2c3e-0000-4000-8000-%012d", k) }

// integration k, of tenant k%3, at version v.
func integration(k int, v int64) events.Integration {
	t0 := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	return events.Integration{
		ID: integrationID(k), TenantID: tenants[k%len(tenants)], Type: "test.inmemory",
		Name:         fmt.Sprintf("integration-%04d", k),
		Config:       json.RawMessage(fmt.Sprintf(`{"interval":"%ds"}`, 60+k)),
		Status:       "active",
		HealthStatus: events.HealthUnknown,
		Version:      v,
		CreatedAt:    t0,
		UpdatedAt:    t0.Add(time.Duration(v) * time.Second),
	}
}

type env struct {
	t   testing.TB
	srv *natstest.Server
	js  jetstream.JetStream
	kv  jetstream.KeyValue
}

func newEnv(t testing.TB) *env {
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

// put writes in as the outbox forwarder does. It retries while the server
// is coming back, within a deadline.
func (e *env) put(in events.Integration) {
	e.t.Helper()
	b, err := json.Marshal(in)
	if err != nil {
		e.t.Fatal(err)
	}
	e.putRaw(bus.IntegrationKey(in.TenantID, in.ID), b)
}

func (e *env) putRaw(key string, value []byte) {
	e.t.Helper()
	e.retry("put "+key, func(ctx context.Context) error {
		_, err := e.kv.Put(ctx, key, value)
		return err
	})
}

func (e *env) del(in events.Integration) {
	e.t.Helper()
	e.retry("delete "+in.ID, func(ctx context.Context) error {
		return e.kv.Delete(ctx, bus.IntegrationKey(in.TenantID, in.ID))
	})
}

func (e *env) retry(what string, fn func(context.Context) error) {
	e.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		err := fn(ctx)
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("%s: %v", what, err)
		}
		<-tick.C
	}
}

// logBuffer collects the JSON log lines of a Set.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if os.Getenv("INTHUB_TEST_LOG") != "" {
		_, _ = os.Stderr.Write(p)
	}
	return l.buf.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// start runs a new Set until the test ends; Run must return nil, and
// every subscription must be closed after it.
func (e *env) start(opts ...integrationset.Option) (*integrationset.Set, *logBuffer) {
	e.t.Helper()
	logs := &logBuffer{}
	opts = append([]integrationset.Option{
		integrationset.WithLogger(slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))),
		integrationset.WithMaxBackoff(200 * time.Millisecond),
	}, opts...)
	s, err := integrationset.New(e.js, opts...)
	if err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	e.t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			e.t.Errorf("Run: %v", err)
		}
	})
	return s, logs
}

func waitReady(t testing.TB, s *integrationset.Set, within time.Duration) {
	t.Helper()
	select {
	case <-s.Ready():
	case <-time.After(within):
		t.Fatalf("not ready within %s: stats %+v", within, s.Stats())
	}
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t testing.TB, within time.Duration, what func() string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %s: %s", within, what())
		}
		<-tick.C
	}
}

// next reads the next change, or fails after a deadline.
func next(t testing.TB, sub *integrationset.Subscription) integrationset.Change {
	t.Helper()
	select {
	case c, ok := <-sub.C():
		if !ok {
			t.Fatal("subscription closed")
		}
		return c
	case <-time.After(10 * time.Second):
		t.Fatal("no change within 10s")
	}
	return integrationset.Change{}
}

func equal(a, b events.Integration) bool {
	return reflect.DeepEqual(normal(a), normal(b))
}

// normal makes two records comparable with DeepEqual (times by instant,
// JSON config by bytes).
func normal(in events.Integration) events.Integration {
	in.CreatedAt, in.UpdatedAt = in.CreatedAt.UTC(), in.UpdatedAt.UTC()
	return in
}

// The snapshot: 1,000 integrations put as the forwarder would, some
// updated and some deleted before the Set starts, are all there at Ready,
// in tenant-then-id order, each at its latest version, the deleted ones
// absent; and no change is delivered for the snapshot itself.
func TestSnapshotAtStart(t *testing.T) {
	e := newEnv(t)
	const n = 1000
	want := map[string]events.Integration{}
	for k := range n {
		in := integration(k, 1)
		e.put(in)
		want[in.ID] = in
	}
	for k := 0; k < n; k += 7 {
		in := integration(k, 2)
		e.put(in)
		want[in.ID] = in
	}
	for k := 3; k < n; k += 50 {
		e.del(want[integrationID(k)])
		delete(want, integrationID(k))
	}

	s, logs := e.start()
	sub := s.Subscribe(16)
	waitReady(t, s, 30*time.Second)
	all := s.All()
	if len(all) != len(want) || s.Len() != len(want) {
		t.Fatalf("All has %d, Len %d, want %d", len(all), s.Len(), len(want))
	}
	for i, in := range all {
		if !equal(in, want[in.ID]) {
			t.Fatalf("All[%d] = %+v, want %+v", i, in, want[in.ID])
		}
		if i > 0 {
			p := all[i-1]
			if p.TenantID > in.TenantID || (p.TenantID == in.TenantID && p.ID >= in.ID) {
				t.Fatalf("All not sorted by tenant, id at %d: %s/%s after %s/%s", i, in.TenantID, in.ID, p.TenantID, p.ID)
			}
		}
		if got, ok := s.Get(in.TenantID, in.ID); !ok || !equal(got, in) {
			t.Fatalf("Get(%s, %s) = %+v, %v", in.TenantID, in.ID, got, ok)
		}
	}
	for k := 3; k < n; k += 50 {
		if _, ok := s.Lookup(integrationID(k)); ok {
			t.Errorf("deleted integration %d is in the set", k)
		}
	}
	select {
	case c := <-sub.C():
		t.Errorf("change %v %s delivered for the snapshot", c.Kind, c.Integration.ID)
	default:
	}
	if st := s.Stats(); st.Malformed != 0 || st.Watches != 1 {
		t.Errorf("stats %+v, want 0 malformed and 1 watch; logs %s", st, logs)
	}
}

// Changes while running reach Get, All and the subscription, in the order
// they were made.
func TestFollowsChangesInOrder(t *testing.T) {
	e := newEnv(t)
	for k := range 10 {
		e.put(integration(k, 1))
	}
	s, _ := e.start()
	sub := s.Subscribe(0)
	waitReady(t, s, 10*time.Second)

	type step struct {
		do   func()
		kind integrationset.Kind
		in   events.Integration
	}
	steps := []step{
		{func() { e.put(integration(10, 1)) }, integrationset.Upsert, integration(10, 1)},
		{func() { e.put(integration(4, 2)) }, integrationset.Upsert, integration(4, 2)},
		{func() { e.del(integration(5, 1)) }, integrationset.Delete, integration(5, 1)},
		{func() { e.put(integration(4, 3)) }, integrationset.Upsert, integration(4, 3)},
		{func() { e.del(integration(10, 1)) }, integrationset.Delete, integration(10, 1)},
	}
	for _, st := range steps {
		st.do()
	}
	for i, st := range steps {
		c := next(t, sub)
		if c.Kind != st.kind || !equal(c.Integration, st.in) {
			t.Fatalf("change %d = %v %+v, want %v %+v", i, c.Kind, c.Integration, st.kind, st.in)
		}
	}
	// A delete of a key the set does not hold tells nobody anything.
	e.del(integration(99, 1))
	e.put(integration(11, 1))
	if c := next(t, sub); c.Kind != integrationset.Upsert || c.Integration.ID != integrationID(11) {
		t.Fatalf("after a delete of an unknown key: %v %s, want the upsert of 11", c.Kind, c.Integration.ID)
	}

	if got, ok := s.Get(tenants[4%3], integrationID(4)); !ok || got.Version != 3 {
		t.Errorf("Get 4 = v%d, %v; want v3", got.Version, ok)
	}
	for _, k := range []int{5, 10} {
		if _, ok := s.Lookup(integrationID(k)); ok {
			t.Errorf("integration %d still there after its delete", k)
		}
	}
	var ids []string
	for _, in := range s.All() {
		ids = append(ids, in.ID)
	}
	if len(ids) != 10 { // 0..11 without 5 and 10
		t.Errorf("All has %d: %v", len(ids), ids)
	}
}

// Another tenant's id is unknown to Get; Lookup, which has no tenant,
// finds it.
func TestTenantMustMatch(t *testing.T) {
	e := newEnv(t)
	in := integration(1, 1)
	e.put(in)
	s, _ := e.start()
	waitReady(t, s, 10*time.Second)
	if _, ok := s.Get(in.TenantID, in.ID); !ok {
		t.Fatal("own tenant: not found")
	}
	for _, other := range []string{tenants[0], tenants[2], "", strings.ToUpper(in.TenantID)} {
		if _, ok := s.Get(other, in.ID); ok {
			t.Errorf("Get with tenant %q found tenant %s's integration", other, in.TenantID)
		}
	}
	if got, ok := s.Lookup(in.ID); !ok || got.TenantID != in.TenantID {
		t.Errorf("Lookup = %+v, %v", got, ok)
	}

	// The catalog's key is (tenant, id): should two tenants ever hold the
	// same id, each sees its own, and Lookup by id alone refuses to choose.
	twin := in
	twin.TenantID, twin.Name = tenants[2], "twin"
	e.put(twin)
	eventually(t, 10*time.Second, func() string { return "twin not seen" }, func() bool {
		_, ok := s.Get(twin.TenantID, twin.ID)
		return ok
	})
	if got, _ := s.Get(in.TenantID, in.ID); got.Name != in.Name {
		t.Errorf("tenant %s sees %q", in.TenantID, got.Name)
	}
	if _, ok := s.Lookup(in.ID); ok {
		t.Error("Lookup chose one of two tenants' records")
	}
	if n := s.Len(); n != 2 {
		t.Errorf("Len %d, want 2", n)
	}
	e.del(twin)
	eventually(t, 10*time.Second, func() string { return "twin still there" }, func() bool {
		_, ok := s.Lookup(in.ID)
		return ok
	})
}

// NATS restarts while the Set runs: it keeps answering from what it held,
// then sees the changes made after the restart, and tells subscribers.
func TestRecoversFromNATSRestart(t *testing.T) {
	e := newEnv(t)
	for k := range 20 {
		e.put(integration(k, 1))
	}
	s, _ := e.start()
	sub := s.Subscribe(0)
	waitReady(t, s, 10*time.Second)

	e.srv.Restart()
	if n := s.Len(); n != 20 {
		t.Fatalf("after the restart the set holds %d, want the 20 it had", n)
	}
	e.put(integration(20, 1)) // retries until the server takes it
	e.put(integration(3, 2))
	e.del(integration(7, 1))
	eventually(t, 30*time.Second, func() string { return fmt.Sprintf("stats %+v", s.Stats()) }, func() bool {
		_, has20 := s.Lookup(integrationID(20))
		_, has7 := s.Lookup(integrationID(7))
		in3, _ := s.Lookup(integrationID(3))
		return has20 && !has7 && in3.Version == 2
	})

	// Whether the old watch resumed or a new one diffed its snapshot,
	// the subscriber hears of each change; repeats are allowed.
	seen := map[string]integrationset.Kind{}
	for len(seen) < 3 {
		c := next(t, sub)
		if c.Kind == integrationset.Resync {
			t.Fatal("resync with room in the buffer")
		}
		id := c.Integration.ID
		if id == integrationID(3) && c.Integration.Version != 2 {
			continue
		}
		seen[id] = c.Kind
	}
	want := map[string]integrationset.Kind{
		integrationID(20): integrationset.Upsert, integrationID(3): integrationset.Upsert, integrationID(7): integrationset.Delete}
	if !reflect.DeepEqual(seen, want) {
		t.Errorf("changes %v, want %v", seen, want)
	}
	if n := s.Len(); n != 20 {
		t.Errorf("Len %d, want 20", n)
	}
	t.Logf("stats after the restart: %+v", s.Stats())
}

// Malformed entries (not JSON, a value naming another integration, a key
// that is not tenant.id), in the snapshot and while following, are logged,
// counted and skipped; the Set goes on.
func TestMalformedEntriesSkipped(t *testing.T) {
	e := newEnv(t)
	good := integration(1, 1)
	e.put(good)
	e.putRaw(bus.IntegrationKey(tenants[0], integrationID(2)), []byte(`{"id":`))
	s, logs := e.start()
	waitReady(t, s, 10*time.Second)
	if n, m := s.Len(), s.Stats().Malformed; n != 1 || m != 1 {
		t.Fatalf("after the snapshot: %d held, %d malformed; want 1, 1", n, m)
	}

	// A known integration whose value turns bad is dropped, not kept stale.
	known := integration(3, 1)
	e.put(known)
	eventually(t, 10*time.Second, func() string { return "3 not seen" }, func() bool {
		_, ok := s.Lookup(known.ID)
		return ok
	})
	mismatched, _ := json.Marshal(integration(4, 1))
	e.putRaw(bus.IntegrationKey(known.TenantID, known.ID), mismatched)
	e.putRaw("not-a-tenant-dot-id", []byte(`{}`))
	e.putRaw(bus.IntegrationKey(tenants[1], integrationID(5)), []byte(`[1,2]`))
	e.put(integration(6, 1))
	eventually(t, 10*time.Second, func() string { return fmt.Sprintf("stats %+v", s.Stats()) }, func() bool {
		_, ok := s.Lookup(integrationID(6))
		return ok
	})
	if _, ok := s.Lookup(known.ID); ok {
		t.Error("integration whose value turned malformed is still served")
	}
	if _, ok := s.Lookup(integrationID(4)); ok {
		t.Error("a value under another key was taken for its own id")
	}
	if st := s.Stats(); st.Malformed != 4 || st.Integrations != 2 {
		t.Errorf("stats %+v, want 4 malformed, 2 held", st)
	}
	out := logs.String()
	for _, want := range []string{"malformed bucket entry skipped", `"integrationId":"` + integrationID(2), "not-a-tenant-dot-id", "does not decode"} {
		if !strings.Contains(out, want) {
			t.Errorf("logs lack %q:\n%s", want, out)
		}
	}
}

// A subscriber that does not read loses changes, never blocks the Set,
// and finds a Resync after the last change it got; All then holds
// everything it missed.
func TestSlowSubscriberGetsResync(t *testing.T) {
	e := newEnv(t)
	s, _ := e.start()
	slow := s.Subscribe(4)
	fast := s.Subscribe(0)
	waitReady(t, s, 10*time.Second)
	const n = 50
	for k := range n {
		e.put(integration(k, 1))
	}
	// The fast subscriber sees all 50 in order: the Set was not held up.
	for k := range n {
		if c := next(t, fast); c.Kind != integrationset.Upsert || c.Integration.ID != integrationID(k) {
			t.Fatalf("fast subscriber: change %d = %v %s", k, c.Kind, c.Integration.ID)
		}
	}
	var got []integrationset.Change
	for range 4 {
		got = append(got, next(t, slow))
	}
	for i, c := range got[:3] {
		if c.Kind != integrationset.Upsert || c.Integration.ID != integrationID(i) {
			t.Errorf("slow subscriber: change %d = %v %s", i, c.Kind, c.Integration.ID)
		}
	}
	if got[3].Kind != integrationset.Resync {
		t.Fatalf("slow subscriber's last change is %v, want resync", got[3].Kind)
	}
	if len(s.All()) != n {
		t.Errorf("All after the resync has %d, want %d", len(s.All()), n)
	}
	if r := s.Stats().Resyncs; r != 1 {
		t.Errorf("%d resyncs counted, want 1", r)
	}
	// Room again: changes flow.
	e.put(integration(n, 1))
	if c := next(t, slow); c.Kind != integrationset.Upsert || c.Integration.ID != integrationID(n) {
		t.Errorf("after the resync: %v %s", c.Kind, c.Integration.ID)
	}
	slow.Close()
	slow.Close()
	if _, ok := <-slow.C(); ok {
		t.Error("closed subscription still delivers")
	}
}

// A Set started before any service provisioned the bucket waits for it.
func TestWaitsForBucket(t *testing.T) {
	srv := natstest.Start(t)
	js, _ := srv.JetStream()
	s, err := integrationset.New(js, integrationset.WithMaxBackoff(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	select {
	case <-s.Ready():
		t.Fatal("ready without a bucket")
	case <-time.After(300 * time.Millisecond):
	}
	pctx, pcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer pcancel()
	if err := bus.ProvisionKV(pctx, js, bus.DefaultStreamSettings()); err != nil {
		t.Fatal(err)
	}
	waitReady(t, s, 10*time.Second)
	if s.Len() != 0 {
		t.Errorf("empty bucket, %d held", s.Len())
	}
}

// Run once at a time; when it returns, subscriptions are closed, and
// Subscribe afterwards gives a closed one.
func TestRunLifecycle(t *testing.T) {
	if _, err := integrationset.New(nil); err == nil {
		t.Error("New(nil) succeeded")
	}
	e := newEnv(t)
	s, err := integrationset.New(e.js, integrationset.WithBucket(bus.BucketIntegrations))
	if err != nil {
		t.Fatal(err)
	}
	sub := s.Subscribe(8)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	waitReady(t, s, 10*time.Second)
	if err := s.Run(context.Background()); err == nil {
		t.Error("second concurrent Run returned nil")
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	if _, ok := <-sub.C(); ok {
		t.Error("subscription open after Run returned")
	}
	if _, ok := <-s.Subscribe(8).C(); ok {
		t.Error("Subscribe after Run returned gave an open channel")
	}
}

// A live change whose value carries the catalog's traceparent hands it
// on; a value without one, and the snapshot, carry none.
func TestChangeCarriesTraceParent(t *testing.T) {
	e := newEnv(t)
	s, _ := e.start()
	sub := s.Subscribe(0)
	waitReady(t, s, 10*time.Second)

	const tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	withTrace := func(in events.Integration, traceparent string) []byte {
		b, err := json.Marshal(in)
		if err != nil {
			t.Fatal(err)
		}
		var m map[string]json.RawMessage
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatal(err)
		}
		m["traceparent"], _ = json.Marshal(traceparent)
		b, _ = json.Marshal(m)
		return b
	}
	in := integration(1, 1)
	e.putRaw(bus.IntegrationKey(in.TenantID, in.ID), withTrace(in, tp))
	if c := next(t, sub); c.Kind != integrationset.Upsert || c.TraceParent != tp || !equal(c.Integration, in) {
		t.Fatalf("change %v %q %+v, want upsert with traceparent %q and the record", c.Kind, c.TraceParent, c.Integration, tp)
	}
	in.HealthStatus = events.HealthHealthy
	e.put(in)
	if c := next(t, sub); c.Kind != integrationset.Upsert || c.TraceParent != "" {
		t.Fatalf("change %v with traceparent %q, want an upsert without one", c.Kind, c.TraceParent)
	}
}
