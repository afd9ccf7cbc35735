package outbox_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"inthub.dev/events"
	"inthub.dev/pkg/bus"
	"inthub.dev/pkg/fault"
	"inthub.dev/pkg/pgtest"
	"inthub.dev/pkg/spool"
	"inthub.dev/services/catalog/outbox"
)

func TestPartition(t *testing.T) {
	tests := []struct {
		id   string
		want int
	}{
		// FNV-1a 32 of "" is its offset basis 0x811c9dc5.
		{"", 0x811c9dc5 % outbox.Partitions},
		// 0xe40c292c: FNV-1a 32 of "a" (the FNV reference vectors).
		{"a", 0xe40c292c % outbox.Partitions},
		{"foobar", 0xbf9cf968 % outbox.Partitions},
	}
	for _, tt := range tests {
		if got := outbox.Partition(tt.id); got != tt.want {
			t.Errorf("Partition(%q) = %d, want %d", tt.id, got, tt.want)
		}
	}
	// Integration ids spread over every partition.
	hits := make([]int, outbox.Partitions)
	for range 4000 {
		p := outbox.Partition(uuid.NewString())
		if p < 0 || p >= outbox.Partitions {
			t.Fatalf("partition %d out of range", p)
		}
		hits[p]++
	}
	for p, n := range hits {
		if n < 4000/outbox.Partitions/2 {
			t.Errorf("partition %d got %d of 4000 ids: %v", p, n, hits)
		}
	}
}

func TestNewRefusesMissingDependencies(t *testing.T) {
	pool, err := pgxpool.New(context.Background(), pgtest.AdminURL()) // connects lazily
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	tests := []struct {
		name string
		cfg  outbox.Config
		want string
	}{
		{"no pool", outbox.Config{Publisher: &countingPublisher{}}, "Pool is nil"},
		{"no publisher", outbox.Config{Pool: pool}, "Publisher is nil"},
		{"bad listen url", outbox.Config{Pool: pool, Publisher: &countingPublisher{}, ListenURL: "postgres://%zz"}, "ListenURL"},
	}
	if _, err := outbox.NewNotifier(nil, 0, nil); err == nil || !strings.Contains(err.Error(), "needs a pool") {
		t.Errorf("NewNotifier(nil): %v, want an error about the pool", err)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := outbox.New(tt.cfg)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("New: %v, want an error about %q", err, tt.want)
			}
		})
	}
}

func TestInsert(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	tenant := tenants[0]
	agg := uuid.NewString()
	good := func(t *testing.T) events.Event {
		ev, err := events.New(events.SubjectIntegrationDeleted, "inthub/catalog", tenant, events.IntegrationDeleted{
			ID: agg, TenantID: tenant, Type: testType, Name: "x", DeletedAt: time.Now().UTC()})
		if err != nil {
			t.Fatal(err)
		}
		return ev
	}
	tests := []struct {
		name      string
		setTenant string // "" leaves app.tenant_id unset
		mutate    func(*events.Event)
		aggregate string
		want      string // "" = success
	}{
		{name: "written", setTenant: tenant, aggregate: agg},
		{name: "aggregate id upper case is canonicalised", setTenant: tenant, aggregate: strings.ToUpper(agg)},
		{name: "aggregate not a uuid", setTenant: tenant, aggregate: "integration-1", want: "aggregate id"},
		{name: "event without tenant", setTenant: tenant, aggregate: agg, mutate: func(ev *events.Event) { ev.TenantID = "" }, want: "tenant id"},
		{name: "event without type", setTenant: tenant, aggregate: agg, mutate: func(ev *events.Event) { ev.Type = "" }, want: "no type"},
		{name: "data not JSON", setTenant: tenant, aggregate: agg,
			mutate: func(ev *events.Event) { ev.Data = json.RawMessage(`{"id":`) }, want: "unexpected end of JSON"},
		// Insert trusts events.New's validation (its doc says so):
		// consumers validate again and dead-letter what breaks its schema.
		{name: "payload breaking its schema is written as given", setTenant: tenant, aggregate: agg,
			mutate: func(ev *events.Event) { ev.Data = json.RawMessage(`{"id":"nope"}`) }},
		{name: "tenant not set: row-level security refuses", aggregate: agg, want: "row-level security"},
		{name: "another tenant set: row-level security refuses", setTenant: tenants[1], aggregate: agg, want: "row-level security"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ev := good(t)
			if tt.mutate != nil {
				tt.mutate(&ev)
			}
			err := pgx.BeginFunc(ctx, e.app, func(tx pgx.Tx) error {
				if tt.setTenant != "" {
					if _, err := tx.Exec(ctx, `SELECT set_config('app.tenant_id', $1, true)`, tt.setTenant); err != nil {
						return err
					}
				}
				return outbox.Insert(ctx, tx, ev, tt.aggregate)
			})
			if tt.want != "" {
				if err == nil || !strings.Contains(err.Error(), tt.want) {
					t.Fatalf("Insert: %v, want an error about %q", err, tt.want)
				}
				return
			}
			if err != nil {
				t.Fatalf("Insert: %v", err)
			}
			var tenantID, aggregate, subject, eventID string
			var partition int
			var payload []byte
			if err := e.owner.QueryRow(ctx, `SELECT tenant_id::text, aggregate_id::text, partition, subject, event_id::text, payload
				FROM outbox WHERE event_id = $1`, ev.ID).Scan(&tenantID, &aggregate, &partition, &subject, &eventID, &payload); err != nil {
				t.Fatal(err)
			}
			body, _ := ev.Marshal()
			if tenantID != tenant || aggregate != agg || partition != outbox.Partition(agg) ||
				subject != ev.Type || eventID != ev.ID || string(payload) != string(body) {
				t.Errorf("row = %s %s %d %s %s %s", tenantID, aggregate, partition, subject, eventID, payload)
			}
		})
	}
}

// 500 events over 50 integrations, written by concurrent transactions, all
// on the bus exactly once and in commit order per integration.
func TestForwarderDeliversEveryEventOnceInOrder(t *testing.T) {
	e := newEnv(t)
	f := e.forwarder(outbox.Config{})
	e.afterCommit = f.Poke
	run(t, f)
	if err := e.workload(context.Background(), 50, 9, false); err != nil {
		t.Fatal(err)
	}
	if n := e.committed(); n != 500 {
		t.Fatalf("committed %d events, want 500", n)
	}
	e.waitDelivered(60 * time.Second)
	e.verify()
	if s := f.Stats(); s.Published != 500 || s.DeadLettered != 0 {
		t.Errorf("stats %+v, want 500 published", s)
	}
}

// NATS down while 200 creates, updates and deletes commit: they wait in the
// outbox (no spool), then all go out once NATS is back.
func TestForwarderSurvivesNATSOutage(t *testing.T) {
	e := newEnv(t)
	f := e.forwarder(outbox.Config{})
	e.afterCommit = f.Poke
	run(t, f)

	e.srv.Stop()
	if err := e.workload(context.Background(), 20, 8, true); err != nil {
		t.Fatal(err)
	}
	if n := e.committed(); n != 200 {
		t.Fatalf("committed %d events, want 200", n)
	}
	// The forwarder kept trying and failing, and kept every row.
	eventually(t, 10*time.Second, func() string { return fmt.Sprintf("stats %+v", f.Stats()) },
		func() bool { return f.Stats().Errors >= 2 })
	if n := e.outboxRows(); n != 200 {
		t.Fatalf("outbox holds %d rows while NATS is down, want 200", n)
	}
	if s := f.Stats(); s.Published != 0 {
		t.Fatalf("published %d events while NATS was down", s.Published)
	}
	// The backlog shows on /metrics.
	m := scrape(t, f.Collector())
	if m["catalog_outbox_pending_rows"] != 200 || m["catalog_outbox_oldest_pending_seconds"] <= 0 || m["catalog_outbox_errors_total"] < 2 {
		t.Errorf("metrics while NATS is down: %v", m)
	}

	if err := e.srv.Start(); err != nil {
		t.Fatal(err)
	}
	e.waitDelivered(60 * time.Second)
	e.verify()
	m = scrape(t, f.Collector())
	if m["catalog_outbox_pending_rows"] != 0 || m["catalog_outbox_oldest_pending_seconds"] != 0 || m["catalog_outbox_published_total"] != 200 {
		t.Errorf("metrics once delivered: %v", m)
	}
}

// scrape gathers c's metrics (none has labels) by name.
func scrape(t *testing.T, c prometheus.Collector) map[string]float64 {
	t.Helper()
	reg := prometheus.NewRegistry()
	reg.MustRegister(c)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			out[mf.GetName()] = m.GetGauge().GetValue() + m.GetCounter().GetValue()
		}
	}
	return out
}

// With a spooling publisher the outbox drains into the local spool while
// NATS is down; the events still arrive once and in order when it is back.
// (Works, but the package doc explains why the catalog should not do it.)
func TestForwarderWithSpoolingPublisher(t *testing.T) {
	e := newEnv(t)
	sp, err := spool.Open(filepath.Join(t.TempDir(), "spool.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sp.Close() })
	pub, err := bus.NewPublisher(e.srv.Connect(), bus.PublisherConfig{Spool: sp, Timeout: 2 * time.Second, RetryEvery: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pub.Close() })
	f := e.forwarder(outbox.Config{Publisher: pub})
	run(t, f)

	e.srv.Stop()
	if err := e.workload(context.Background(), 10, 4, true); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, func() string { return fmt.Sprintf("outbox %d rows, spool %d", e.outboxRows(), pub.Spooled()) },
		func() bool { return e.outboxRows() == 0 && pub.Spooled() == e.committed() })
	if err := e.srv.Start(); err != nil {
		t.Fatal(err)
	}
	e.waitDelivered(60 * time.Second)
	e.verify()
}

// Two forwarders (two catalog replicas) on one database: each event is
// handed to a publisher exactly once in all, so the duplicate window is not
// what keeps the stream clean; order per integration holds.
func TestTwoForwardersPublishNothingTwice(t *testing.T) {
	e := newEnv(t)
	calls := newTally()
	var fs []*outbox.Forwarder
	for range 2 {
		f := e.forwarder(outbox.Config{
			Publisher: &countingPublisher{next: e.publisher(), tally: calls},
			Batch:     5, // many small transactions: many chances to collide
		})
		run(t, f)
		fs = append(fs, f)
	}
	// Both replicas woken by every commit: the most chances to collide.
	e.afterCommit = func() { fs[0].Poke(); fs[1].Poke() }
	if err := e.workload(context.Background(), 50, 9, true); err != nil {
		t.Fatal(err)
	}
	e.waitDelivered(60 * time.Second)
	e.verify()
	calls.mu.Lock()
	defer calls.mu.Unlock()
	if len(calls.calls) != e.committed() {
		t.Errorf("%d distinct events published, %d committed", len(calls.calls), e.committed())
	}
	for id, n := range calls.calls {
		if n != 1 {
			t.Errorf("event %s handed to a publisher %d times", id, n)
		}
	}
	a, b := fs[0].Stats(), fs[1].Stats()
	if a.Published+b.Published != uint64(e.committed()) {
		t.Errorf("forwarders published %d + %d, want %d in all", a.Published, b.Published, e.committed())
	}
	t.Logf("forwarder A published %d, B %d", a.Published, b.Published)
}

// The forwarder's database connections are killed mid-run, several times;
// it reconnects on its own (pool and LISTEN connection) and delivers
// everything once. PollEvery is an hour and nothing pokes it in process:
// the writes reach it only as another replica's would, through a
// Notifier's NOTIFY, so the LISTEN connection has to come back too.
func TestForwarderRecoversFromDatabaseOutage(t *testing.T) {
	e := newEnv(t)
	f := e.forwarder(outbox.Config{PollEvery: time.Hour, Batch: 10})
	n := notifier(t, e.app)
	e.afterCommit = n.Notify
	run(t, f)
	run(t, n)
	ctx := context.Background()

	done := make(chan error, 1)
	go func() { done <- e.workload(ctx, 30, 9, true) }()

	killed := 0
	for round := 1; round <= 3; round++ {
		// Wait for progress, then cut every connection of the forwarder.
		target := uint64(round * 60)
		eventually(t, 60*time.Second, func() string { return fmt.Sprintf("stats %+v", f.Stats()) },
			func() bool { return f.Stats().Published >= target })
		killed += e.terminateForwarder()
	}
	if killed == 0 {
		t.Fatal("no forwarder connection was terminated: the test proves nothing")
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	e.waitDelivered(60 * time.Second)
	e.verify()
	t.Logf("terminated %d connections; stats %+v", killed, f.Stats())
}

// terminateForwarder kills every connection of inthub_forwarder to this
// test's database (never the server: other packages share it).
func (e *env) terminateForwarder() int {
	e.t.Helper()
	var n int
	err := e.owner.QueryRow(context.Background(), `SELECT count(*) FROM (
		SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND usename = 'inthub_forwarder') AS t`,
		e.db.Name).Scan(&n)
	if err != nil {
		e.t.Fatal(err)
	}
	return n
}

// With the poll set to an hour, a row committed by another replica is
// published within seconds of that replica's Notifier sending NOTIFY: the
// LISTEN connection wakes the forwarder.
func TestListenWakesForwarder(t *testing.T) {
	e := newEnv(t)
	f := e.forwarder(outbox.Config{PollEvery: time.Hour})
	run(t, f)
	// Wait until the forwarder listens, then until its start-up passes
	// (Run's first, and the one after LISTEN) are over: passes hold still.
	eventually(t, 10*time.Second, func() string { return "no LISTEN connection" }, func() bool {
		var n int
		err := e.owner.QueryRow(context.Background(), `SELECT count(*) FROM pg_stat_activity
			WHERE datname = $1 AND usename = 'inthub_forwarder' AND query = 'LISTEN `+outbox.Channel+`'`, e.db.Name).Scan(&n)
		return err == nil && n == 1
	})
	passes := f.Stats().Passes
	still := time.Now()
	eventually(t, 10*time.Second, func() string { return fmt.Sprintf("passes keep coming: %+v", f.Stats()) }, func() bool {
		if p := f.Stats().Passes; p != passes {
			passes, still = p, time.Now()
		}
		return time.Since(still) >= 300*time.Millisecond
	})

	// The other replica: its commit (no Poke reaches this forwarder)...
	if _, err := e.create(context.Background(), tenants[0], "woken"); err != nil {
		t.Fatal(err)
	}
	if n := e.outboxRows(); n != 1 {
		t.Fatalf("outbox holds %d rows before any notification, want 1 (was the forwarder woken otherwise?)", n)
	}
	// ...and its notifier.
	n := notifier(t, pgtest.Pool(t, e.db.AppURL))
	run(t, n)
	n.Notify()
	e.waitDelivered(5 * time.Second)
	e.verify()
	if s := f.Stats(); s.Passes <= passes {
		t.Errorf("published without a new pass? stats %+v", s)
	}
	if s := n.Stats(); s.Sent != 1 || s.Failed != 0 {
		t.Errorf("notifier stats %+v, want 1 sent", s)
	}
}

// A row JetStream refuses for good does not block its partition: it goes
// to the DLQ with the failure in headers, and later events of the same
// integration follow.
func TestPermanentRefusalIsDeadLettered(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	in, err := e.create(ctx, tenants[0], "poison")
	if err != nil {
		t.Fatal(err)
	}
	poison := e.idOf(in.id, 1)
	for range 3 {
		if err := e.update(ctx, in); err != nil {
			t.Fatal(err)
		}
	}
	refuse := func(m *nats.Msg) error {
		if m.Subject == events.SubjectIntegrationCreated && m.Header.Get(bus.HeaderMsgID) == poison {
			return fault.Permanent(errors.New("nats: API error: code=400 err_code=10054 description=message size exceeds maximum allowed"))
		}
		return nil
	}
	f := e.forwarder(outbox.Config{Publisher: &countingPublisher{next: e.publisher(), tally: newTally(), refuse: refuse}})
	run(t, f)

	eventually(t, 30*time.Second, func() string { return fmt.Sprintf("stats %+v, outbox %d", f.Stats(), e.outboxRows()) },
		func() bool { return e.outboxRows() == 0 && e.streamMsgs(bus.StreamIntegrations) == 3 })
	if s := f.Stats(); s.DeadLettered != 1 || s.Published != 3 {
		t.Errorf("stats %+v, want 1 dead-lettered and 3 published", s)
	}
	dl := e.readAll(bus.StreamDLQ)
	if len(dl) != 1 {
		t.Fatalf("DLQ holds %d messages, want 1", len(dl))
	}
	h := dl[0].Headers()
	ev, err := events.Parse(dl[0].Data())
	if err != nil {
		t.Fatal(err)
	}
	if dl[0].Subject() != bus.DLQSubject(events.SubjectIntegrationCreated) || ev.ID != poison ||
		h.Get(bus.HeaderOriginalSubject) != events.SubjectIntegrationCreated ||
		h.Get(bus.HeaderOriginalMsgID) != poison ||
		h.Get(bus.HeaderErrorClass) != "permanent" ||
		!strings.Contains(h.Get(bus.HeaderLastError), "size exceeds") ||
		h.Get(bus.HeaderIntegrationID) != in.id || h.Get(bus.HeaderTenantID) != in.tenant {
		t.Errorf("dead letter on %s: headers %v", dl[0].Subject(), h)
	}
}

// A publish that fails transiently leaves the row, and the rows after it in
// the partition, for the next pass: nothing overtakes it.
func TestTransientFailureKeepsOrder(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	in, err := e.create(ctx, tenants[0], "flaky")
	if err != nil {
		t.Fatal(err)
	}
	for range 5 {
		if err := e.update(ctx, in); err != nil {
			t.Fatal(err)
		}
	}
	tl := newTally()
	refuse := func(m *nats.Msg) error {
		tl.mu.Lock()
		defer tl.mu.Unlock()
		// The third event fails on its first three attempts.
		if m.Header.Get(bus.HeaderMsgID) == e.idOf(in.id, 3) && tl.calls[m.Header.Get(bus.HeaderMsgID)] <= 3 {
			return fault.Transient(errors.New("injected: no ack in time"))
		}
		return nil
	}
	f := e.forwarder(outbox.Config{Publisher: &countingPublisher{next: e.publisher(), tally: tl, refuse: refuse}})
	run(t, f)
	e.waitDelivered(30 * time.Second)
	e.verify()
	if s := f.Stats(); s.Errors < 3 {
		t.Errorf("stats %+v, want at least 3 failed attempts", s)
	}
}

// idOf is the id of the event with order key key of aggregate agg.
func (e *env) idOf(agg string, key int64) string {
	e.mu.Lock()
	defer e.mu.Unlock()
	for id, en := range e.ledger {
		if en.aggregate == agg && en.key == key {
			return id
		}
	}
	e.t.Fatalf("no event %d of %s", key, agg)
	return ""
}

func TestRunTwiceIsRefused(t *testing.T) {
	e := newEnv(t)
	f := e.forwarder(outbox.Config{})
	run(t, f)
	// Run's flag is set before it starts; poll until the first Run holds it.
	eventually(t, 5*time.Second, func() string { return "first Run never made a pass" },
		func() bool { return f.Stats().Passes > 0 })
	if err := f.Run(context.Background()); err == nil {
		t.Fatal("second concurrent Run returned nil")
	}
}
