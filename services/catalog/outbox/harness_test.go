package outbox_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	"inthub.dev/events"
	"inthub.dev/pkg/bus"
	"inthub.dev/pkg/natstest"
	"inthub.dev/pkg/pgtest"
	"inthub.dev/services/catalog/outbox"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, natstest.LeakOptions()...)
}

const testType = "test.inmemory"

var tenants = []string{
	"0b5a3bb0-6a43-4d7e-9a39-6f1f9d9a0001",
	"0b5a3bb0-6a43-4d7e-9a39-6f1f9d9a0002",
	"0b5a3bb0-6a43-4d7e-9a39-6f1f9d9a0003",
}

// env is one test's database, bus and catalog-side writers.
type env struct {
	t     testing.TB
	db    *pgtest.DB
	srv   *natstest.Server
	js    jetstream.JetStream
	app   *pgxpool.Pool // inthub_app: what the catalog's requests use
	owner *pgxpool.Pool

	// afterCommit, if set, runs after each committed transaction, as the
	// store's WithAfterCommit callback does in the catalog. Set it before
	// the first write.
	afterCommit func()

	mu     sync.Mutex
	ledger map[string]entry // event id → what was committed
}

// entry is a committed event as the test expects to see it on the bus.
type entry struct {
	tenant, aggregate string
	key               int64 // order within the aggregate: version, MaxInt64 for delete
}

func newEnv(t testing.TB) *env {
	t.Helper()
	db := pgtest.New(t)
	srv := natstest.Start(t)
	js, _ := srv.JetStream()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := bus.Provision(ctx, js, bus.DefaultStreamSettings()); err != nil {
		t.Fatal(err)
	}
	owner := pgtest.Pool(t, db.OwnerURL)
	if _, err := owner.Exec(ctx, `INSERT INTO integration_types (id, display_name, provider, config_schema)
		VALUES ($1, 'In-memory test double', 'test', '{}')`, testType); err != nil {
		t.Fatal(err)
	}
	return &env{t: t, db: db, srv: srv, js: js, app: pgtest.Pool(t, db.AppURL), owner: owner,
		ledger: map[string]entry{}}
}

func testLogger() *slog.Logger {
	if os.Getenv("INTHUB_TEST_LOG") != "" {
		return slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// publisher is a bus.Publisher without a spool on its own connection.
func (e *env) publisher() *bus.Publisher {
	e.t.Helper()
	p, err := bus.NewPublisher(e.srv.Connect(), bus.PublisherConfig{Timeout: 2 * time.Second, Logger: testLogger()})
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { _ = p.Close() })
	return p
}

// forwarder builds a forwarder with test-friendly defaults: its own pool
// as inthub_forwarder and its own publisher unless cfg names them.
func (e *env) forwarder(cfg outbox.Config) *outbox.Forwarder {
	e.t.Helper()
	if cfg.Pool == nil {
		cfg.Pool = pgtest.Pool(e.t, e.db.ForwarderURL)
	}
	if cfg.Publisher == nil {
		cfg.Publisher = e.publisher()
	}
	if cfg.PollEvery == 0 {
		cfg.PollEvery = 200 * time.Millisecond
	}
	if cfg.MaxBackoff == 0 {
		cfg.MaxBackoff = 200 * time.Millisecond
	}
	if cfg.Logger == nil {
		cfg.Logger = testLogger()
	}
	f, err := outbox.New(cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	return f
}

// run runs f until the test ends; Run must return nil when stopped.
func run(t testing.TB, f interface{ Run(context.Context) error }) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("%T Run: %v", f, err)
		}
	})
}

// notifier builds a Notifier on pool with the default window.
func notifier(t testing.TB, pool *pgxpool.Pool) *outbox.Notifier {
	t.Helper()
	n, err := outbox.NewNotifier(pool, 0, testLogger())
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// inTenant runs fn in a transaction of the catalog's role with the tenant
// set for this transaction only, as the catalog does.
func (e *env) inTenant(ctx context.Context, tenant string, fn func(pgx.Tx) error) error {
	err := pgx.BeginFunc(ctx, e.app, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT set_config('app.tenant_id', $1, true)`, tenant); err != nil {
			return err
		}
		return fn(tx)
	})
	if err == nil && e.afterCommit != nil {
		e.afterCommit()
	}
	return err
}

func (e *env) record(ev events.Event, tenant, aggregate string, key int64) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.ledger[ev.ID] = entry{tenant: tenant, aggregate: aggregate, key: key}
}

func (e *env) committed() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.ledger)
}

type integ struct{ tenant, id string }

func integrationOf(tenant, id, name string, version int64, created, updated time.Time) events.Integration {
	return events.Integration{
		ID: id, TenantID: tenant, Type: testType, Name: name, Config: json.RawMessage(`{}`),
		Status: "active", HealthStatus: events.HealthUnknown, Version: version,
		CreatedAt: created.UTC(), UpdatedAt: updated.UTC(),
	}
}

// create inserts an integration and its integration.created event in one
// transaction, as the catalog's create does.
func (e *env) create(ctx context.Context, tenant, name string) (integ, error) {
	var in integ
	var ev events.Event
	err := e.inTenant(ctx, tenant, func(tx pgx.Tx) error {
		var id string
		var version int64
		var created, updated time.Time
		if err := tx.QueryRow(ctx, `INSERT INTO integrations (tenant_id, type, name, created_by)
			VALUES ($1, $2, $3, 'test') RETURNING id::text, version, created_at, updated_at`,
			tenant, testType, name).Scan(&id, &version, &created, &updated); err != nil {
			return err
		}
		var err error
		ev, err = events.New(events.SubjectIntegrationCreated, "inthub/catalog", tenant,
			events.IntegrationCreated{Integration: integrationOf(tenant, id, name, version, created, updated)})
		if err != nil {
			return err
		}
		in = integ{tenant: tenant, id: id}
		return outbox.Insert(ctx, tx, ev, id)
	})
	if err != nil {
		return integ{}, fmt.Errorf("create: %w", err)
	}
	e.record(ev, tenant, in.id, 1)
	return in, nil
}

// update bumps the version under the row lock the UPDATE takes, then
// writes integration.updated: the pattern outbox.Insert's doc asks for.
func (e *env) update(ctx context.Context, in integ) error {
	var ev events.Event
	var version int64
	err := e.inTenant(ctx, in.tenant, func(tx pgx.Tx) error {
		var name string
		var created, updated time.Time
		if err := tx.QueryRow(ctx, `UPDATE integrations SET version = version + 1, updated_at = clock_timestamp()
			WHERE id = $1 AND deleted_at IS NULL RETURNING name, version, created_at, updated_at`,
			in.id).Scan(&name, &version, &created, &updated); err != nil {
			return err
		}
		var err error
		ev, err = events.New(events.SubjectIntegrationUpdated, "inthub/catalog", in.tenant,
			events.IntegrationUpdated{Integration: integrationOf(in.tenant, in.id, name, version, created, updated)})
		if err != nil {
			return err
		}
		return outbox.Insert(ctx, tx, ev, in.id)
	})
	if err != nil {
		return fmt.Errorf("update %s: %w", in.id, err)
	}
	e.record(ev, in.tenant, in.id, version)
	return nil
}

// remove soft-deletes and writes integration.deleted.
func (e *env) remove(ctx context.Context, in integ) error {
	var ev events.Event
	err := e.inTenant(ctx, in.tenant, func(tx pgx.Tx) error {
		var name string
		var deleted time.Time
		if err := tx.QueryRow(ctx, `UPDATE integrations SET deleted_at = clock_timestamp(), version = version + 1
			WHERE id = $1 AND deleted_at IS NULL RETURNING name, deleted_at`, in.id).Scan(&name, &deleted); err != nil {
			return err
		}
		var err error
		ev, err = events.New(events.SubjectIntegrationDeleted, "inthub/catalog", in.tenant, events.IntegrationDeleted{
			ID: in.id, TenantID: in.tenant, Type: testType, Name: name, DeletedAt: deleted.UTC()})
		if err != nil {
			return err
		}
		return outbox.Insert(ctx, tx, ev, in.id)
	})
	if err != nil {
		return fmt.Errorf("delete %s: %w", in.id, err)
	}
	e.record(ev, in.tenant, in.id, math.MaxInt64)
	return nil
}

// workload commits, for each of n integrations spread over the tenants, a
// create, updates updates and (if del) a delete. Updates run concurrently,
// several on the same integration at once, so the order on the bus is the
// order the row locks gave.
func (e *env) workload(ctx context.Context, n, updates int, del bool) error {
	const workers = 12
	ins := make([]integ, n)
	if err := parallel(workers, n, func(i int) error {
		in, err := e.create(ctx, tenants[i%len(tenants)], fmt.Sprintf("integration-%03d", i))
		ins[i] = in
		return err
	}); err != nil {
		return err
	}
	// Round-robin over integrations, so concurrent workers collide on rows.
	if err := parallel(workers, n*updates, func(i int) error {
		return e.update(ctx, ins[i%n])
	}); err != nil {
		return err
	}
	if !del {
		return nil
	}
	return parallel(workers, n, func(i int) error { return e.remove(ctx, ins[i]) })
}

// parallel runs fn(0..n-1) on workers goroutines and returns the first error.
func parallel(workers, n int, fn func(i int) error) error {
	jobs := make(chan int)
	errs := make(chan error, workers)
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				if err := fn(i); err != nil {
					errs <- err
					for range jobs {
					}
					return
				}
			}
		}()
	}
	for i := range n {
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	close(errs)
	return <-errs
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

func (e *env) outboxRows() int {
	e.t.Helper()
	var n int
	if err := e.owner.QueryRow(context.Background(), `SELECT count(*) FROM outbox`).Scan(&n); err != nil {
		e.t.Fatal(err)
	}
	return n
}

func (e *env) streamMsgs(name string) uint64 {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := e.js.Stream(ctx, name)
	if err != nil {
		e.t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		e.t.Fatal(err)
	}
	return info.State.Msgs
}

// waitDelivered waits until the outbox is empty and the stream holds at
// least every committed event.
func (e *env) waitDelivered(within time.Duration) {
	e.t.Helper()
	want := uint64(e.committed())
	eventually(e.t, within, func() string {
		return fmt.Sprintf("stream has %d of %d events, outbox has %d rows", e.streamMsgs(bus.StreamIntegrations), want, e.outboxRows())
	}, func() bool {
		return e.streamMsgs(bus.StreamIntegrations) >= want && e.outboxRows() == 0
	})
}

// readAll returns every message of stream in stream order.
func (e *env) readAll(stream string) []jetstream.Msg {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	n := int(e.streamMsgs(stream))
	if n == 0 {
		return nil
	}
	c, err := e.js.OrderedConsumer(ctx, stream, jetstream.OrderedConsumerConfig{})
	if err != nil {
		e.t.Fatal(err)
	}
	var out []jetstream.Msg
	for len(out) < n {
		batch, err := c.Fetch(n-len(out), jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			e.t.Fatal(err)
		}
		for m := range batch.Messages() {
			out = append(out, m)
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) {
			e.t.Fatal(err)
		}
		if ctx.Err() != nil {
			e.t.Fatalf("read %d of %d messages of %s", len(out), n, stream)
		}
	}
	return out
}

// verify checks the INTEGRATIONS stream against the ledger: every
// committed event exactly once (by Nats-Msg-Id and by CloudEvents id),
// nothing else, the headers right, and each integration's events in commit
// order.
func (e *env) verify() {
	t := e.t
	t.Helper()
	msgs := e.readAll(bus.StreamIntegrations)
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(msgs) != len(e.ledger) {
		t.Errorf("stream holds %d messages, %d events were committed", len(msgs), len(e.ledger))
	}
	byMsgID := map[string]int{}
	byEventID := map[string]int{}
	last := map[string]int64{}
	for _, m := range msgs {
		msgID := m.Headers().Get(bus.HeaderMsgID)
		byMsgID[msgID]++
		ev, err := events.Parse(m.Data())
		if err != nil {
			t.Errorf("message %s: %v", msgID, err)
			continue
		}
		byEventID[ev.ID]++
		want, ok := e.ledger[ev.ID]
		if !ok {
			t.Errorf("event %s on the bus was never committed", ev.ID)
			continue
		}
		if msgID != ev.ID || ev.Type != m.Subject() {
			t.Errorf("event %s: Nats-Msg-Id %q, subject %q, type %q", ev.ID, msgID, m.Subject(), ev.Type)
		}
		if h := m.Headers(); h.Get(bus.HeaderTenantID) != want.tenant || h.Get(bus.HeaderIntegrationID) != want.aggregate {
			t.Errorf("event %s: tenant header %q, integration header %q, want %q, %q", ev.ID,
				h.Get(bus.HeaderTenantID), h.Get(bus.HeaderIntegrationID), want.tenant, want.aggregate)
		}
		if prev, seen := last[want.aggregate]; seen && want.key <= prev {
			t.Errorf("integration %s: event with order key %d arrived after %d", want.aggregate, want.key, prev)
		}
		last[want.aggregate] = want.key
	}
	for id := range e.ledger {
		if byMsgID[id] != 1 || byEventID[id] != 1 {
			t.Errorf("event %s: %d messages by Nats-Msg-Id, %d by CloudEvents id, want 1", id, byMsgID[id], byEventID[id])
		}
	}
}

// countingPublisher counts publishes per Nats-Msg-Id across every
// forwarder that shares its tally, and can refuse chosen messages.
type countingPublisher struct {
	next  outbox.Publisher
	tally *tally
	// refuse, if set, returns the error to answer instead of publishing.
	refuse func(*nats.Msg) error
}

type tally struct {
	mu    sync.Mutex
	calls map[string]int
}

func newTally() *tally { return &tally{calls: map[string]int{}} }

func (c *countingPublisher) PublishMsg(ctx context.Context, msg *nats.Msg) error {
	c.tally.mu.Lock()
	c.tally.calls[msg.Header.Get(bus.HeaderMsgID)]++
	c.tally.mu.Unlock()
	if c.refuse != nil {
		if err := c.refuse(msg); err != nil {
			return err
		}
	}
	return c.next.PublishMsg(ctx, msg)
}
