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
	"inthub.dev/services/catalog/outbox"
)

// BenchmarkOutbox measures what the outbox costs the catalog's writes and
// how fast events reach the bus. Each operation is one transaction as
// inthub_app (tenant set, one audit_logs row), committed by 8 producers:
//
//   - baseline-tx/s: those transactions alone;
//   - outbox-tx/s: the same plus an integration.updated event built and
//     written with outbox.Insert, while a forwarder publishes;
//   - events/s: events on the bus per second, first commit to last receipt
//     by a JetStream consumer;
//   - p50-ms, p99-ms: from a transaction's Commit returning to a consumer
//     receiving its event;
//   - ratio: outbox events/s over baseline tx/s.
//
// Run it without -race, with a fixed count so both phases do the same work:
//
//	go test -run '^$' -bench BenchmarkOutbox -benchtime 20000x -count 3 ./catalog/outbox/
func BenchmarkOutbox(b *testing.B) {
	// notify: the schema as migrated; the outbox_notify trigger's
	// pg_notify makes every producer's commit take PostgreSQL's global
	// notify-queue lock through its WAL flush, so commits stop grouping.
	b.Run("notify", func(b *testing.B) { benchOutbox(b, true, time.Second) })
	// poll-20ms: the trigger dropped in this database and the forwarder
	// polling every 20 ms instead, to show what the NOTIFY costs.
	b.Run("poll-20ms", func(b *testing.B) { benchOutbox(b, false, 20*time.Millisecond) })
}

func benchOutbox(b *testing.B, notify bool, pollEvery time.Duration) {
	const producers = 8
	e := newEnv(b)
	ctx := context.Background()
	if !notify {
		if _, err := e.owner.Exec(ctx, `DROP TRIGGER outbox_notify ON outbox`); err != nil {
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
		return evID, time.Now(), err
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
	f := e.forwarder(outbox.Config{PollEvery: pollEvery})
	fctx, stop := context.WithCancel(ctx)
	fdone := make(chan error, 1)
	go func() { fdone <- f.Run(fctx) }()
	defer func() {
		stop()
		if err := <-fdone; err != nil {
			b.Error(err)
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
	if testing.Verbose() {
		fmt.Printf("forwarder stats: %+v\n", f.Stats())
	}
}
