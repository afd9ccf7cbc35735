package outbox_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go/jetstream"

	"inthub.dev/events"
	"inthub.dev/pkg/bus"
	"inthub.dev/pkg/pgtest"
	"inthub.dev/services/catalog/outbox"
)

// BenchmarkOutbox measures what the outbox costs the catalog's writes and
// how fast events reach the bus. Each operation is one transaction as
// inthub_app (tenant set, one audit_logs row), committed by 8 producers.
// Every sub-benchmark first runs b.N of those transactions without an
// outbox row (the baseline), then b.N with an integration.updated event
// built by events.New and written by outbox.Insert while a forwarder
// publishes, and reports:
//
//   - baseline-tx/s: the baseline's commits per second;
//   - outbox-tx/s: the outbox phase's commits per second;
//   - events/s: events on the bus per second, first commit to last receipt
//     by a JetStream consumer;
//   - ratio: events/s over baseline-tx/s (the target is ≥ 0.9);
//     for writes-only and insert-only, which forward nothing,
//     outbox-tx/s over baseline-tx/s;
//   - p50-ms, p99-ms: from a transaction's Commit returning to a consumer
//     receiving its event (target p99 < 50 ms).
//
// Run it without -race, with a fixed count so both phases do the same work:
//
//	go test -run '^$' -bench BenchmarkOutbox -benchtime 20000x -count 3 ./catalog/outbox/
func BenchmarkOutbox(b *testing.B) {
	// trigger: the first design, recreated in this database: a statement
	// trigger runs pg_notify in every transaction that writes the outbox,
	// so every commit takes PostgreSQL's global notify lock through its WAL
	// flush and commits stop grouping. The forwarder polls every second
	// besides, as it did.
	b.Run("trigger", func(b *testing.B) { benchOutbox(b, wakeTrigger) })
	// debounced: the catalog's way since migration 0002: after each
	// commit, Poke this replica's forwarder and ask the Notifier for a
	// NOTIFY (at most one per 5 ms, in its own statement) for the others.
	b.Run("debounced", func(b *testing.B) { benchOutbox(b, wakeAfterCommit) })
	// Where the write path's cost goes, with no forwarder, NATS or
	// consumer competing for the CPUs. writes-only: the outbox phase's
	// transactions as above (events.New, which validates against the
	// schema, and outbox.Insert). insert-only: the event built once
	// before the run and only its id and tenant changed, so the
	// transaction pays for the outbox row alone.
	b.Run("writes-only", func(b *testing.B) { benchOutbox(b, writesOnly) })
	b.Run("insert-only", func(b *testing.B) { benchOutbox(b, insertOnly) })
}

type wake int

const (
	wakeTrigger wake = iota
	wakeAfterCommit
	writesOnly // no forwarder: the write path alone
	insertOnly // no forwarder, no events.New in the transaction
)

func benchOutbox(b *testing.B, how wake) {
	const producers = 8
	e := newEnv(b)
	ctx := context.Background()
	if how == wakeTrigger {
		// The function and trigger of migrations/0001_catalog.sql.
		if _, err := e.owner.Exec(ctx, `
			CREATE FUNCTION outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
			BEGIN
			  PERFORM pg_notify('inthub_outbox', '');
			  RETURN NULL;
			END
			$$;
			CREATE TRIGGER outbox_notify AFTER INSERT ON outbox FOR EACH STATEMENT EXECUTE FUNCTION outbox_notify();`); err != nil {
			b.Fatal(err)
		}
	}
	cfg, err := pgxpool.ParseConfig(e.db.AppURL)
	if err != nil {
		b.Fatal(err)
	}
	cfg.MaxConns = producers
	app, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(app.Close)

	aggregates := make([]string, 1000)
	for i := range aggregates {
		aggregates[i] = uuid.NewString()
	}
	now := time.Now().UTC()
	prebuilt, err := events.New(events.SubjectIntegrationUpdated, "inthub/catalog", tenants[0], events.IntegrationUpdated{
		Integration: events.Integration{ID: aggregates[0], TenantID: tenants[0], Type: testType, Name: "bench",
			Config: json.RawMessage(`{"endpoint":"https://registry.example.com"}`), Status: "active",
			HealthStatus: events.HealthHealthy, Version: 1, CreatedAt: now, UpdatedAt: now}})
	if err != nil {
		b.Fatal(err)
	}

	// afterCommit is the store's WithAfterCommit callback, set before the
	// outbox phase starts.
	var afterCommit func()

	// write commits transaction i; with the outbox it returns the event
	// and the time Commit returned.
	write := func(i int, withOutbox bool) (string, time.Time, error) {
		tenant := tenants[i%len(tenants)]
		agg := aggregates[i%len(aggregates)]
		var evID string
		err := pgx.BeginFunc(ctx, app, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, `SELECT set_config('app.tenant_id', $1, true)`, tenant); err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, `INSERT INTO audit_logs (tenant_id, actor, action, entity_type, entity_id, after)
				VALUES ($1, 'bench', 'integration.update', 'integration', $2, '{"name":"bench"}')`, tenant, agg); err != nil {
				return err
			}
			if !withOutbox {
				return nil
			}
			if how == insertOnly {
				ev := prebuilt
				ev.ID, ev.TenantID = uuid.Must(uuid.NewV7()).String(), tenant
				evID = ev.ID
				return outbox.Insert(ctx, tx, ev, agg)
			}
			ev, err := events.New(events.SubjectIntegrationUpdated, "inthub/catalog", tenant, events.IntegrationUpdated{
				Integration: events.Integration{ID: agg, TenantID: tenant, Type: testType, Name: "bench",
					Config: json.RawMessage(`{"endpoint":"https://registry.example.com"}`), Status: "active",
					HealthStatus: events.HealthHealthy, Version: int64(i + 1), CreatedAt: now, UpdatedAt: now}})
			if err != nil {
				return err
			}
			evID = ev.ID
			return outbox.Insert(ctx, tx, ev, agg)
		})
		at := time.Now()
		if err == nil && withOutbox && afterCommit != nil {
			afterCommit()
		}
		return evID, at, err
	}
	// produce runs b.N transactions over the producers.
	produce := func(withOutbox bool, committed func(id string, at time.Time)) time.Duration {
		start := time.Now()
		if err := parallel(producers, b.N, func(i int) error {
			id, at, err := write(i, withOutbox)
			if err == nil && committed != nil {
				committed(id, at)
			}
			return err
		}); err != nil {
			b.Fatal(err)
		}
		return time.Since(start)
	}

	// Warm the pool and the statement caches.
	for i := range producers {
		if _, _, err := write(i, false); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()

	baseline := produce(false, nil)
	if how == writesOnly || how == insertOnly {
		with := produce(true, nil)
		b.StopTimer()
		baseTPS := float64(b.N) / baseline.Seconds()
		b.ReportMetric(baseTPS, "baseline-tx/s")
		b.ReportMetric(float64(b.N)/with.Seconds(), "outbox-tx/s")
		b.ReportMetric(float64(b.N)/with.Seconds()/baseTPS, "ratio")
		return
	}

	// The forwarder and a consumer standing for Scheduler and Signals.
	var mu sync.Mutex
	commits := make(map[string]time.Time, b.N)
	received := make(map[string]time.Time, b.N)
	allIn := make(chan struct{})
	c, err := e.js.OrderedConsumer(ctx, bus.StreamIntegrations, jetstream.OrderedConsumerConfig{
		DeliverPolicy: jetstream.DeliverNewPolicy})
	if err != nil {
		b.Fatal(err)
	}
	cc, err := c.Consume(func(m jetstream.Msg) {
		at := time.Now()
		mu.Lock()
		defer mu.Unlock()
		received[m.Headers().Get(bus.HeaderMsgID)] = at
		if len(received) == b.N {
			close(allIn)
		}
	})
	if err != nil {
		b.Fatal(err)
	}
	defer cc.Stop()
	fwdPool := pgtest.Pool(b, e.db.ForwarderURL)
	f := e.forwarder(outbox.Config{Pool: fwdPool, PollEvery: time.Second})
	fctx, stop := context.WithCancel(ctx)
	runs := []interface{ Run(context.Context) error }{f}
	var n *outbox.Notifier
	if how == wakeAfterCommit {
		// On the forwarder's pool, as the catalog does.
		n = notifier(b, fwdPool)
		runs = append(runs, n)
		afterCommit = func() { f.Poke(); n.Notify() }
	}
	done := make(chan error, len(runs))
	for _, r := range runs {
		go func() { done <- r.Run(fctx) }()
	}
	defer func() {
		stop()
		for range runs {
			if err := <-done; err != nil {
				b.Error(err)
			}
		}
	}()

	start := time.Now()
	withOutbox := produce(true, func(id string, at time.Time) {
		mu.Lock()
		commits[id] = at
		mu.Unlock()
	})
	select {
	case <-allIn:
	case <-time.After(2 * time.Minute):
		mu.Lock()
		n := len(received)
		mu.Unlock()
		b.Fatalf("%d of %d events on the bus after 2 minutes; forwarder %+v", n, b.N, f.Stats())
	}
	delivered := time.Since(start)
	b.StopTimer()

	mu.Lock()
	lat := make([]float64, 0, len(commits))
	for id, at := range commits {
		r, ok := received[id]
		if !ok {
			b.Fatalf("event %s committed, never received", id)
		}
		lat = append(lat, float64(r.Sub(at))/float64(time.Millisecond))
	}
	mu.Unlock()
	slices.Sort(lat)
	pct := func(p float64) float64 { return lat[min(len(lat)-1, int(p*float64(len(lat))))] }

	baseTPS := float64(b.N) / baseline.Seconds()
	evPS := float64(b.N) / delivered.Seconds()
	b.ReportMetric(baseTPS, "baseline-tx/s")
	b.ReportMetric(float64(b.N)/withOutbox.Seconds(), "outbox-tx/s")
	b.ReportMetric(evPS, "events/s")
	b.ReportMetric(evPS/baseTPS, "ratio")
	b.ReportMetric(pct(0.50), "p50-ms")
	b.ReportMetric(pct(0.99), "p99-ms")
	if n != nil {
		b.ReportMetric(float64(n.Stats().Sent)/delivered.Seconds(), "notify/s")
	}
	if testing.Verbose() {
		fmt.Printf("forwarder stats: %+v\n", f.Stats())
	}
}
