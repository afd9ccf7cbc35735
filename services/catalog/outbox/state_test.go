package outbox_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"sort"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"inthub.dev/events"
	"inthub.dev/pkg/bus"
	"inthub.dev/services/catalog/outbox"
)

// bucket is the integrations bucket bus.Provision created.
func (e *env) bucket() jetstream.KeyValue {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	kv, err := e.js.KeyValue(ctx, bus.BucketIntegrations)
	if err != nil {
		e.t.Fatal(err)
	}
	return kv
}

// lastEvents returns, per integration, its last lifecycle event on the
// INTEGRATIONS stream (stream order is commit order per integration; verify
// checks it), and every event by id.
func (e *env) lastEvents() (last map[string]events.Event, byID map[string]events.Event) {
	e.t.Helper()
	last, byID = map[string]events.Event{}, map[string]events.Event{}
	for _, m := range e.readAll(bus.StreamIntegrations) {
		ev, err := events.Parse(m.Data())
		if err != nil {
			e.t.Fatal(err)
		}
		byID[ev.ID] = ev
		switch ev.Type {
		case events.SubjectIntegrationCreated, events.SubjectIntegrationUpdated, events.SubjectIntegrationDeleted:
			last[m.Headers().Get(bus.HeaderIntegrationID)] = ev
		}
	}
	return last, byID
}

// bucketContents reads every live key of the bucket.
func (e *env) bucketContents(kv jetstream.KeyValue) map[string]events.Integration {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	keys, err := kv.ListKeys(ctx)
	if err != nil {
		e.t.Fatal(err)
	}
	out := map[string]events.Integration{}
	for key := range keys.Keys() {
		v, err := kv.Get(ctx, key)
		if err != nil {
			e.t.Fatalf("get %s: %v", key, err)
		}
		var in events.Integration
		if err := json.Unmarshal(v.Value(), &in); err != nil {
			e.t.Fatalf("%s: %v", key, err)
		}
		out[key] = in
	}
	return out
}

// checkState compares the bucket with the stream: the latest record of
// every live integration, nothing of a deleted one. It returns the number
// of live integrations.
func (e *env) checkState(kv jetstream.KeyValue) int {
	t := e.t
	t.Helper()
	last, _ := e.lastEvents()
	got := e.bucketContents(kv)
	want := map[string]events.Integration{}
	for agg, ev := range last {
		if ev.Type == events.SubjectIntegrationDeleted {
			continue
		}
		var p events.IntegrationUpdated // created has the same shape
		if err := json.Unmarshal(ev.Data, &p); err != nil {
			t.Fatal(err)
		}
		want[bus.IntegrationKey(ev.TenantID, agg)] = p.Integration
	}
	if len(got) != len(want) {
		t.Errorf("bucket holds %d integrations, %d are live", len(got), len(want))
	}
	for key, w := range want {
		g, ok := got[key]
		if !ok {
			t.Errorf("live integration %s missing from the bucket", key)
			continue
		}
		if !reflect.DeepEqual(g, w) {
			t.Errorf("%s: bucket holds %+v, the last event says %+v", key, g, w)
		}
	}
	for key := range got {
		if _, ok := want[key]; !ok {
			t.Errorf("bucket holds %s, which is deleted or was never created", key)
		}
	}
	return len(want)
}

// removeEvery deletes every k-th integration of ins.
func (e *env) removeEvery(ctx context.Context, ins []integ, k int) error {
	for i := 0; i < len(ins); i += k {
		if err := e.remove(ctx, ins[i]); err != nil {
			return err
		}
	}
	return nil
}

func (e *env) createMany(ctx context.Context, n, updates int) ([]integ, error) {
	ins := make([]integ, n)
	for i := range n {
		in, err := e.create(ctx, tenants[i%len(tenants)], fmt.Sprintf("integration-%03d", i))
		if err != nil {
			return nil, err
		}
		ins[i] = in
	}
	return ins, parallel(8, n*updates, func(i int) error { return e.update(ctx, ins[i%n]) })
}

// Creates, updates and deletes through the outbox: the bucket ends with
// the latest version of each live integration and nothing of the deleted
// ones, one write per event.
func TestStateFollowsLifecycle(t *testing.T) {
	e := newEnv(t)
	kv := e.bucket()
	f := e.forwarder(outbox.Config{State: kv})
	e.afterCommit = f.Poke
	run(t, f)
	ctx := context.Background()
	ins, err := e.createMany(ctx, 30, 4)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.removeEvery(ctx, ins, 3); err != nil {
		t.Fatal(err)
	}
	e.waitDelivered(60 * time.Second)
	e.verify()
	if live := e.checkState(kv); live != 20 {
		t.Errorf("%d live integrations, want 20", live)
	}
	if s := f.Stats(); s.StateWrites != uint64(e.committed()) || s.StateSkipped != 0 {
		t.Errorf("stats %+v, want one bucket write per event (%d)", s, e.committed())
	}
	// The deleted ones are delete markers, which is what keeps a replay
	// from bringing them back.
	hist, err := kv.History(ctx, bus.IntegrationKey(ins[0].tenant, ins[0].id))
	if err != nil || len(hist) != 1 || hist[0].Operation() != jetstream.KeyValueDelete {
		t.Errorf("deleted integration's key: %v, %v; want one delete marker", hist, err)
	}
}

// reinsert writes an already published event to the outbox again, as a
// pass whose DELETE was lost would publish it again.
func (e *env) reinsert(ctx context.Context, ev events.Event, aggregate string) {
	e.t.Helper()
	if err := e.inTenant(ctx, ev.TenantID, func(tx pgx.Tx) error {
		return outbox.Insert(ctx, tx, ev, aggregate)
	}); err != nil {
		e.t.Fatal(err)
	}
}

// A replayed older event does not roll the record back, and a replayed
// create or update of a deleted integration does not bring it back.
func TestStateNotRolledBackByReplay(t *testing.T) {
	e := newEnv(t)
	kv := e.bucket()
	f := e.forwarder(outbox.Config{State: kv})
	e.afterCommit = f.Poke
	run(t, f)
	ctx := context.Background()
	a, err := e.create(ctx, tenants[0], "kept")
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if err := e.update(ctx, a); err != nil {
			t.Fatal(err)
		}
	}
	b, err := e.create(ctx, tenants[1], "gone")
	if err != nil {
		t.Fatal(err)
	}
	if err := e.update(ctx, b); err != nil {
		t.Fatal(err)
	}
	if err := e.remove(ctx, b); err != nil {
		t.Fatal(err)
	}
	e.waitDelivered(30 * time.Second)
	e.checkState(kv)
	writes := f.Stats().StateWrites

	_, byID := e.lastEvents()
	replays := []struct {
		key int64
		in  integ
	}{{4, a}, {3, a}, {1, b}, {2, b}, {1, a}} // the oldest last: a rollback would stick
	for _, r := range replays {
		e.reinsert(ctx, byID[e.idOf(r.in.id, r.key)], r.in.id)
	}
	f.Poke()
	eventually(t, 30*time.Second, func() string { return fmt.Sprintf("outbox %d rows", e.outboxRows()) },
		func() bool { return e.outboxRows() == 0 })
	e.verify() // the repeats were dropped by the duplicate window
	if live := e.checkState(kv); live != 1 {
		t.Errorf("%d live integrations, want 1", live)
	}
	got, err := kv.Get(ctx, bus.IntegrationKey(a.tenant, a.id))
	if err != nil {
		t.Fatal(err)
	}
	var in events.Integration
	_ = json.Unmarshal(got.Value(), &in)
	if in.Version != 4 {
		t.Errorf("record of %s at version %d after replays, want 4", a.id, in.Version)
	}
	if w := f.Stats().StateWrites; w != writes {
		t.Errorf("replays wrote %d times to the bucket", w-writes)
	}
}

// Two forwarders (two catalog replicas) end with the bucket that the
// events describe, as one does.
func TestTwoForwardersSameState(t *testing.T) {
	e := newEnv(t)
	kv := e.bucket()
	var fs []*outbox.Forwarder
	for range 2 {
		f := e.forwarder(outbox.Config{State: e.bucket(), Batch: 5})
		run(t, f)
		fs = append(fs, f)
	}
	e.afterCommit = func() { fs[0].Poke(); fs[1].Poke() }
	ctx := context.Background()
	ins, err := e.createMany(ctx, 40, 6)
	if err != nil {
		t.Fatal(err)
	}
	if err := parallel(8, len(ins)/4, func(i int) error { return e.remove(ctx, ins[4*i]) }); err != nil {
		t.Fatal(err)
	}
	e.waitDelivered(60 * time.Second)
	e.verify()
	if live := e.checkState(kv); live != 30 {
		t.Errorf("%d live integrations, want 30", live)
	}
	a, b := fs[0].Stats(), fs[1].Stats()
	if a.StateWrites+b.StateWrites != uint64(e.committed()) {
		t.Errorf("bucket writes %d + %d, want %d", a.StateWrites, b.StateWrites, e.committed())
	}
	t.Logf("forwarder A wrote %d, B %d", a.StateWrites, b.StateWrites)
}

// flakyKV fails writes while failing is set, as a bucket on a NATS server
// that stopped answering would.
type flakyKV struct {
	jetstream.KeyValue
	failing atomic.Bool
	refused atomic.Int64
}

func (k *flakyKV) fail() error {
	if k.failing.Load() {
		k.refused.Add(1)
		return fmt.Errorf("injected: %w", nats.ErrTimeout)
	}
	return nil
}

func (k *flakyKV) Update(ctx context.Context, key string, value []byte, rev uint64) (uint64, error) {
	if err := k.fail(); err != nil {
		return 0, err
	}
	return k.KeyValue.Update(ctx, key, value, rev)
}

func (k *flakyKV) Delete(ctx context.Context, key string, opts ...jetstream.KVDeleteOpt) error {
	if err := k.fail(); err != nil {
		return err
	}
	return k.KeyValue.Delete(ctx, key, opts...)
}

// A bucket write that fails is a failed publish: the row stays in the
// outbox and is forwarded again, the repeated publish is dropped, and the
// bucket ends right.
func TestStateWriteFailureRetried(t *testing.T) {
	e := newEnv(t)
	kv := &flakyKV{KeyValue: e.bucket()}
	kv.failing.Store(true)
	f := e.forwarder(outbox.Config{State: kv})
	e.afterCommit = f.Poke
	run(t, f)
	ctx := context.Background()
	ins, err := e.createMany(ctx, 6, 2)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.remove(ctx, ins[0]); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, func() string { return fmt.Sprintf("stats %+v", f.Stats()) },
		func() bool { return kv.refused.Load() >= 3 })
	if n := e.outboxRows(); n == 0 {
		t.Fatal("rows left the outbox while the bucket refused every write")
	}
	kv.failing.Store(false)
	e.waitDelivered(30 * time.Second)
	e.verify() // each event once on the stream despite the repeated publishes
	e.checkState(kv)
	if s := f.Stats(); s.Errors < 3 || s.StateWrites != uint64(e.committed()) {
		t.Errorf("stats %+v, want ≥ 3 errors and %d bucket writes", s, e.committed())
	}
}

// integration.health_changed sets healthStatus in the stored record,
// version unchanged; for a deleted integration it writes nothing.
func TestHealthChangedUpdatesState(t *testing.T) {
	e := newEnv(t)
	kv := e.bucket()
	f := e.forwarder(outbox.Config{State: kv})
	e.afterCommit = f.Poke
	run(t, f)
	ctx := context.Background()
	live, err := e.create(ctx, tenants[0], "watched")
	if err != nil {
		t.Fatal(err)
	}
	gone, err := e.create(ctx, tenants[0], "gone")
	if err != nil {
		t.Fatal(err)
	}
	if err := e.remove(ctx, gone); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		in       integ
		from, to events.HealthStatus
	}{{live, events.HealthUnknown, events.HealthUnhealthy}, {gone, events.HealthUnknown, events.HealthHealthy},
		{live, events.HealthUnhealthy, events.HealthHealthy}} {
		ev, err := events.New(events.SubjectIntegrationHealthChanged, "inthub/catalog", c.in.tenant, events.HealthChanged{
			IntegrationID: c.in.id, TenantID: c.in.tenant, Type: testType, Status: c.to, PreviousStatus: c.from,
			LatencyMs: 5, Message: "test", CheckedAt: time.Now().UTC()})
		if err != nil {
			t.Fatal(err)
		}
		if err := e.inTenant(ctx, c.in.tenant, func(tx pgx.Tx) error { return outbox.Insert(ctx, tx, ev, c.in.id) }); err != nil {
			t.Fatal(err)
		}
		e.record(ev, c.in.tenant, c.in.id, time.Now().UnixNano())
	}
	e.waitDelivered(30 * time.Second)
	got := e.bucketContents(kv)
	keys := make([]string, 0, len(got))
	for k := range got {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	if want := []string{bus.IntegrationKey(live.tenant, live.id)}; !reflect.DeepEqual(keys, want) {
		t.Fatalf("bucket keys %v, want %v", keys, want)
	}
	if in := got[keys[0]]; in.HealthStatus != events.HealthHealthy || in.Version != 1 || in.Name != "watched" {
		t.Errorf("record %+v, want healthy at version 1", in)
	}
	// created, 2 health changes; the delete: 1 (the other create: 1)
	if s := f.Stats(); s.StateWrites != 5 {
		t.Errorf("stats %+v, want 5 bucket writes", s)
	}
	if _, err := kv.Get(ctx, bus.IntegrationKey(gone.tenant, gone.id)); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Errorf("deleted integration: %v, want not found", err)
	}
}
