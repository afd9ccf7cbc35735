// Package integrationset keeps, in memory, every live integration of the
// catalog, for the services that must know them all without calling the
// catalog (health-poller: what to check; annotation worker: where to post).
//
// It watches the JetStream KV bucket bus.BucketIntegrations, which the
// catalog's outbox forwarder keeps as a materialized view: one key per
// integration (<tenantId>.<integrationId>), its value the latest
// events.Integration, a delete marker once it is deleted. One KV watch
// (WatchAll, latest value per key) gives the snapshot at start and then
// every change, in the bucket's order.
//
// Why the bucket and not a replay of integration.created|updated|deleted
// from the INTEGRATIONS stream: that stream keeps 7 days (MaxAge), so an
// integration created earlier and untouched since would be missing after a
// cold start, and so would it from any projection a service built from the
// stream itself.
//
// Use:
//
//	set, _ := integrationset.New(js, integrationset.WithLogger(log))
//	sub := set.Subscribe(1024)          // before Run or at least before All
//	go set.Run(ctx)
//	<-set.Ready()                       // the snapshot is in
//	for _, in := range set.All() { ... }
//	for c := range sub.C() {            // then the changes
//		switch c.Kind {
//		case integrationset.Upsert, integrationset.Delete: ...
//		case integrationset.Resync: ... set.All() again
//		}
//	}
package integrationset

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"inthub.dev/events"
	"inthub.dev/pkg/bus"
)

// Option configures a Set.
type Option func(*Set)

// WithLogger sets the logger (default: discard).
func WithLogger(l *slog.Logger) Option {
	return func(s *Set) {
		if l != nil {
			s.log = l
		}
	}
}

// WithBucket names the bucket to watch (default bus.BucketIntegrations).
func WithBucket(name string) Option {
	return func(s *Set) {
		if name != "" {
			s.bucket = name
		}
	}
}

// WithMaxBackoff caps the wait between attempts to (re)start the watch
// (default 5s).
func WithMaxBackoff(d time.Duration) Option {
	return func(s *Set) {
		if d > 0 {
			s.maxBackoff = d
		}
	}
}

// Stats are counters since New.
type Stats struct {
	Integrations int    // held now
	Malformed    uint64 // bucket entries skipped because they did not decode or did not match their key
	Watches      uint64 // watches started: 1, plus one per recovery
	Resyncs      uint64 // Resync markers queued for subscribers that fell behind
	Revision     uint64 // bucket revision of the last entry applied
}

// Set is the in-memory view of the bucket. Its methods are safe for
// concurrent use; Run must run for it to fill and follow.
type Set struct {
	js         jetstream.JetStream
	bucket     string
	log        *slog.Logger
	maxBackoff time.Duration

	ready     chan struct{}
	readyOnce sync.Once
	running   atomic.Bool

	mu sync.RWMutex
	// byID: integration id → its record. Ids are uuids, so one id has one
	// tenant; the slice holds more than one only if two tenants' records
	// share an id (the catalog's key is (tenant, id)), and then Lookup by
	// id alone answers "unknown" rather than pick one.
	byID   map[string][]events.Integration
	count  int
	subs   map[*Subscription]struct{}
	closed bool // Run returned: subscriptions are closed

	malformed atomic.Uint64
	watches   atomic.Uint64
	resyncs   atomic.Uint64
	revision  atomic.Uint64
}

// New returns a Set that watches the bucket once Run runs.
func New(js jetstream.JetStream, opts ...Option) (*Set, error) {
	if js == nil {
		return nil, errors.New("integrationset: a JetStream context is required (jetstream.New(nc))")
	}
	s := &Set{
		js:         js,
		bucket:     bus.BucketIntegrations,
		log:        slog.New(slog.DiscardHandler),
		maxBackoff: 5 * time.Second,
		ready:      make(chan struct{}),
		byID:       map[string][]events.Integration{},
		subs:       map[*Subscription]struct{}{},
	}
	for _, o := range opts {
		o(s)
	}
	return s, nil
}

// Ready is closed once the first snapshot of the bucket is in: from then
// on Get, Lookup and All answer for every integration that existed when
// the watch started, and changes follow.
func (s *Set) Ready() <-chan struct{} { return s.ready }

// Get returns the integration id of tenant tenantID. An integration of
// another tenant is reported as unknown, as a deleted one is. Treat the
// returned Config as read-only: it is shared with the Set.
func (s *Set) Get(tenantID, id string) (events.Integration, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	for _, in := range s.byID[id] {
		if in.TenantID == tenantID {
			return in, true
		}
	}
	return events.Integration{}, false
}

// Lookup returns the integration id whatever its tenant, for callers that
// have no tenant to check. A caller that has one must use Get.
func (s *Set) Lookup(id string) (events.Integration, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if ins := s.byID[id]; len(ins) == 1 {
		return ins[0], true
	}
	return events.Integration{}, false
}

// All returns every integration, sorted by tenant, then id.
func (s *Set) All() []events.Integration {
	s.mu.RLock()
	out := make([]events.Integration, 0, s.count)
	for _, ins := range s.byID {
		out = append(out, ins...)
	}
	s.mu.RUnlock()
	slices.SortFunc(out, func(a, b events.Integration) int {
		return cmp.Or(cmp.Compare(a.TenantID, b.TenantID), cmp.Compare(a.ID, b.ID))
	})
	return out
}

// Len is the number of integrations held.
func (s *Set) Len() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.count
}

// Stats returns the counters.
func (s *Set) Stats() Stats {
	return Stats{
		Integrations: s.Len(),
		Malformed:    s.malformed.Load(),
		Watches:      s.watches.Load(),
		Resyncs:      s.resyncs.Load(),
		Revision:     s.revision.Load(),
	}
}

// errReconnected ends a watch after the connection came back: the ordered
// consumer behind a KV watch usually recovers by itself, but only after it
// misses heartbeats, and a fresh watch (snapshot, then a diff against what
// the Set holds) is cheap and certain.
var errReconnected = errors.New("NATS connection re-established")

// Run watches the bucket until ctx ends, then returns nil. It outlives
// NATS outages and a bucket that does not exist yet (the catalog, or any
// service's bus.Provision, creates it): each failed or interrupted watch is
// started again with backoff, and the new snapshot is reconciled with what
// the Set holds, changes going to subscribers as if they had just happened.
// When Run returns, every subscription's channel is closed.
func (s *Set) Run(ctx context.Context) error {
	if !s.running.CompareAndSwap(false, true) {
		return errors.New("integrationset: Run is already running on this Set")
	}
	defer s.closeSubs()

	var status chan nats.Status
	if nc := s.js.Conn(); nc != nil {
		status = nc.StatusChanged(nats.CONNECTED)
		defer nc.RemoveStatusListener(status)
	}
	bo := backoff.NewExponentialBackOff()
	bo.InitialInterval = 50 * time.Millisecond
	bo.MaxInterval = s.maxBackoff
	bo.MaxElapsedTime = 0
	bo.Reset()
	for {
		err := s.watch(ctx, status, bo)
		if ctx.Err() != nil {
			return nil
		}
		d := bo.NextBackOff()
		if errors.Is(err, errReconnected) {
			d = 0
			s.log.Info("integrationset: NATS reconnected, watching the bucket again", "bucket", s.bucket)
		} else {
			s.log.Warn("integrationset: watch failed, retrying", "bucket", s.bucket, "error", err, "retryIn", d.String())
		}
		if !sleep(ctx, d) {
			return nil
		}
	}
}

func sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// watch runs one KV watch: the snapshot into a fresh map, swapped in at
// the end-of-snapshot marker, then changes applied one by one.
func (s *Set) watch(ctx context.Context, status <-chan nats.Status, bo backoff.BackOff) error {
	kv, err := s.js.KeyValue(ctx, s.bucket)
	if err != nil {
		if errors.Is(err, jetstream.ErrBucketNotFound) {
			return fmt.Errorf("bucket %s does not exist yet (bus.Provision creates it): %w", s.bucket, err)
		}
		return fmt.Errorf("open bucket %s: %w", s.bucket, err)
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	w, err := kv.WatchAll(wctx)
	if err != nil {
		return fmt.Errorf("watch bucket %s: %w", s.bucket, err)
	}
	defer stop(w)
	s.watches.Add(1)

	snapshot := map[string][]events.Integration{} // nil once swapped in
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-status:
			return errReconnected
		case e, ok := <-w.Updates():
			if !ok {
				return errors.New("watch ended by the server or the connection")
			}
			if e == nil {
				if snapshot != nil {
					s.swap(snapshot)
					snapshot = nil
					bo.Reset()
					s.readyOnce.Do(func() { close(s.ready) })
				}
				continue
			}
			s.revision.Store(e.Revision())
			if snapshot != nil {
				s.stage(snapshot, e)
			} else {
				s.apply(e)
			}
		}
	}
}

// stop ends a watch and drains its channel: the watch's callback blocks on
// a full channel while it holds the watcher's lock, and only returns (and
// lets the subscription close the channel) once someone reads.
func stop(w jetstream.KeyWatcher) {
	_ = w.Stop()
	t := time.NewTimer(5 * time.Second)
	defer t.Stop()
	for {
		select {
		case _, ok := <-w.Updates():
			if !ok {
				return
			}
		case <-t.C:
			return
		}
	}
}

// decode turns a bucket entry into its record; a delete marker yields
// deleted = true with the key's tenant and id.
func (s *Set) decode(e jetstream.KeyValueEntry) (in events.Integration, deleted bool, ok bool) {
	tenant, id, ok := bus.ParseIntegrationKey(e.Key())
	if !ok {
		s.skip(e, "", "", errors.New("key is not <tenantId>.<integrationId>"))
		return in, false, false
	}
	if op := e.Operation(); op == jetstream.KeyValueDelete || op == jetstream.KeyValuePurge {
		return events.Integration{ID: id, TenantID: tenant}, true, true
	}
	if err := json.Unmarshal(e.Value(), &in); err != nil {
		s.skip(e, tenant, id, fmt.Errorf("value does not decode: %w", err))
		return events.Integration{ID: id, TenantID: tenant}, false, false
	}
	if in.ID != id || in.TenantID != tenant {
		s.skip(e, tenant, id, fmt.Errorf("value names integration %q of tenant %q", in.ID, in.TenantID))
		return events.Integration{ID: id, TenantID: tenant}, false, false
	}
	return in, false, true
}

// skip logs and counts a malformed entry. The value is not logged: it is
// no secret, but it may be large, and the key says where to look.
func (s *Set) skip(e jetstream.KeyValueEntry, tenant, id string, err error) {
	s.malformed.Add(1)
	s.log.Error("integrationset: malformed bucket entry skipped",
		"bucket", s.bucket, "key", e.Key(), "revision", e.Revision(),
		"tenantId", tenant, "integrationId", id, "error", err)
}

// stage adds a snapshot entry to m. A malformed one is left out.
func (s *Set) stage(m map[string][]events.Integration, e jetstream.KeyValueEntry) {
	in, deleted, ok := s.decode(e)
	if !ok || deleted {
		// A key seen twice in one snapshot (it changed while the
		// snapshot was read) keeps its latest state.
		if in.ID != "" {
			m[in.ID] = without(m[in.ID], in.TenantID)
		}
		return
	}
	m[in.ID] = with(m[in.ID], in)
}

// apply applies one change after the snapshot. A malformed value removes
// the integration: the bucket no longer holds what the Set knew, and
// serving the old record would be serving one the catalog has replaced.
func (s *Set) apply(e jetstream.KeyValueEntry) {
	in, deleted, ok := s.decode(e)
	if in.ID == "" {
		return // the key itself is malformed: nothing to remove
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if !ok || deleted {
		if old, had := s.remove(in.TenantID, in.ID); had {
			s.notify(Change{Kind: Delete, Integration: old})
		}
		return
	}
	s.put(in)
	s.notify(Change{Kind: Upsert, Integration: in, TraceParent: traceParent(e.Value())})
}

// traceParent reads the trace context the catalog's forwarder stores
// beside a record's fields. A second decode, but only of live changes,
// which are rare next to reads.
func traceParent(value []byte) string {
	var v struct {
		TraceParent string `json:"traceparent"`
	}
	_ = json.Unmarshal(value, &v)
	return v.TraceParent
}

// swap replaces the held records with a snapshot and tells subscribers
// what differs. On the first snapshot nobody is told: Ready is the signal
// to read All.
func (s *Set) swap(m map[string][]events.Integration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	first := !isClosed(s.ready)
	old := s.byID
	s.byID = m
	s.count = 0
	for _, ins := range m {
		s.count += len(ins)
	}
	if first {
		return
	}
	for id, ins := range old {
		for _, o := range ins {
			if _, ok := find(m[id], o.TenantID); !ok {
				s.notify(Change{Kind: Delete, Integration: o})
			}
		}
	}
	for id, ins := range m {
		for _, n := range ins {
			if o, ok := find(old[id], n.TenantID); !ok || !same(o, n) {
				s.notify(Change{Kind: Upsert, Integration: n})
			}
		}
	}
}

func isClosed(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// put and remove change the held records; s.mu must be held for writing.
func (s *Set) put(in events.Integration) {
	ins := s.byID[in.ID]
	if _, ok := find(ins, in.TenantID); !ok {
		s.count++
	}
	s.byID[in.ID] = with(ins, in)
}

func (s *Set) remove(tenant, id string) (events.Integration, bool) {
	ins := s.byID[id]
	old, ok := find(ins, tenant)
	if !ok {
		return old, false
	}
	s.count--
	if rest := without(ins, tenant); len(rest) > 0 {
		s.byID[id] = rest
	} else {
		delete(s.byID, id)
	}
	return old, true
}

func find(ins []events.Integration, tenant string) (events.Integration, bool) {
	for _, in := range ins {
		if in.TenantID == tenant {
			return in, true
		}
	}
	return events.Integration{}, false
}

// with returns ins with in added or replacing its tenant's record. It
// never writes into ins' backing array: slices handed out are not shared,
// but the old slice may still be in a map being diffed.
func with(ins []events.Integration, in events.Integration) []events.Integration {
	out := make([]events.Integration, 0, len(ins)+1)
	for _, o := range ins {
		if o.TenantID != in.TenantID {
			out = append(out, o)
		}
	}
	return append(out, in)
}

func without(ins []events.Integration, tenant string) []events.Integration {
	var out []events.Integration
	for _, o := range ins {
		if o.TenantID != tenant {
			out = append(out, o)
		}
	}
	return out
}

func same(a, b events.Integration) bool {
	return a.ID == b.ID && a.TenantID == b.TenantID && a.Type == b.Type && a.Name == b.Name &&
		bytes.Equal(a.Config, b.Config) && a.AuthRef == b.AuthRef && a.Status == b.Status &&
		a.HealthStatus == b.HealthStatus && a.Version == b.Version &&
		a.CreatedAt.Equal(b.CreatedAt) && a.UpdatedAt.Equal(b.UpdatedAt)
}
