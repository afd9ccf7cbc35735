// Package health is the catalog's side of health: it consumes
// integration.health_checked, records every check in the health history
// and lets the store announce integration.health_changed (through the
// outbox) on a transition; and it sweeps for integrations whose last check
// is older than twice their interval, which it records as `unknown` the
// same way, so that no stale `healthy` is ever read as current.
package health

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sync/errgroup"

	"inthub.dev/events"
	"inthub.dev/pkg/bus"
	"inthub.dev/pkg/fault"
	"inthub.dev/services/catalog/store"
)

// Recorder is the store's side: it stores one health check (duplicates
// are no-ops) and records stale integrations as unknown.
type Recorder interface {
	RecordHealth(ctx context.Context, ev events.Event) (changed bool, err error)
	SweepStaleHealth(ctx context.Context, defaultInterval time.Duration) (store.HealthSweep, error)
}

// Durable is the consumer's name; replicas of the catalog share it.
const Durable = "catalog-health"

// Consumer records the health checks from the bus and sweeps for stale
// ones. Make it with NewConsumer and run it with Run.
type Consumer struct {
	w     *bus.Worker
	rec   Recorder
	sweep SweepConfig
	log   *slog.Logger
}

// SweepConfig tunes the staleness sweep. Zero values take the defaults.
type SweepConfig struct {
	// DefaultInterval is the interval of an integration whose config sets
	// no healthIntervalSeconds: the poller's default, 5m.
	DefaultInterval time.Duration
	// MinPause is the least time between two sweeps (1s): an integration
	// reads healthy at most this long past its deadline.
	MinPause time.Duration
	// MaxPause is the longest sleep (15s). A deadline set after a sweep
	// (a first check, a shortened interval) is seen at the next one, so it
	// must stay well below twice the shortest interval (the schemas allow
	// 30s, so 60s); it is also how soon a failed sweep is tried again.
	MaxPause time.Duration
	// Off turns the sweep off (a catalog replica that must not write).
	Off bool
}

// Option configures a Consumer.
type Option func(*Consumer)

// WithSweep sets the staleness sweep's configuration.
func WithSweep(c SweepConfig) Option { return func(k *Consumer) { k.sweep = c } }

// NewConsumer returns a Consumer that feeds health checks to rec and
// sweeps for stale ones through it. tune may adjust the worker.
func NewConsumer(js jetstream.JetStream, rec Recorder, log *slog.Logger, tune func(*bus.WorkerConfig), opts ...Option) (*Consumer, error) {
	if rec == nil {
		return nil, errors.New("health: NewConsumer needs a Recorder (the catalog store)")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	k := &Consumer{rec: rec, log: log}
	for _, o := range opts {
		o(k)
	}
	if k.sweep.DefaultInterval <= 0 {
		k.sweep.DefaultInterval = 5 * time.Minute
	}
	if k.sweep.MinPause <= 0 {
		k.sweep.MinPause = time.Second
	}
	if k.sweep.MaxPause <= 0 {
		k.sweep.MaxPause = 15 * time.Second
	}
	if k.sweep.MaxPause < k.sweep.MinPause {
		return nil, fmt.Errorf("health: sweep MaxPause %v is below MinPause %v", k.sweep.MaxPause, k.sweep.MinPause)
	}
	cfg := bus.WorkerConfig{Service: "catalog", Durable: Durable, Stream: bus.StreamIntegrations, Logger: log}
	if tune != nil {
		tune(&cfg)
	}
	w, err := bus.NewWorker(js, cfg)
	if err != nil {
		return nil, err
	}
	k.w = w
	w.Handle(events.SubjectIntegrationHealthChecked, func(ctx context.Context, ev events.Event) error {
		changed, err := rec.RecordHealth(ctx, ev)
		switch {
		case errors.Is(err, store.ErrDeleted):
			// A check that was running when the integration was deleted:
			// expected, nothing to do, and no operator should have to
			// purge it from the DLQ.
			log.InfoContext(ctx, "health result for a deleted integration dropped",
				"integrationId", ev.IntegrationID(), "tenantId", ev.TenantID)
			return nil
		case errors.Is(err, store.ErrNotFound):
			// A check for an integration that was never ours: retrying
			// will not make it exist, and someone should look.
			return fault.Permanent(fmt.Errorf("record health check: %w", err))
		case errors.Is(err, store.ErrInvalid), errors.As(err, new(*events.ValidationError)):
			return fault.Permanent(fmt.Errorf("record health check: %w", err))
		case err != nil:
			return fault.Transient(fmt.Errorf("record health check: %w", err))
		}
		if changed {
			log.InfoContext(ctx, "health changed", "integrationId", ev.IntegrationID(), "tenantId", ev.TenantID)
		}
		return nil
	})
	return k, nil
}

// Run consumes and sweeps until ctx ends.
func (k *Consumer) Run(ctx context.Context) error {
	if k.sweep.Off {
		return k.w.Run(ctx)
	}
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return k.w.Run(gctx) })
	g.Go(func() error { k.sweepLoop(gctx); return nil })
	return g.Wait()
}

// sweepLoop sweeps, then sleeps until the next integration is due to turn
// stale (within MinPause and MaxPause), so an integration reads healthy at
// most about MinPause past its deadline, and a quiet catalog sweeps every
// MaxPause at most.
func (k *Consumer) sweepLoop(ctx context.Context) {
	failing := false
	for {
		pause := k.sweep.MaxPause
		res, err := k.rec.SweepStaleHealth(ctx, k.sweep.DefaultInterval)
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			if !failing {
				k.log.WarnContext(ctx, "health sweep failed; retrying", "error", err.Error(), "retryIn", pause.String())
			}
			failing = true
		default:
			if failing {
				k.log.InfoContext(ctx, "health sweep works again")
			}
			failing = false
			if res.Marked > 0 {
				k.log.InfoContext(ctx, "stale health recorded as unknown", "integrations", res.Marked)
			}
			if res.Next > 0 {
				pause = min(max(res.Next, k.sweep.MinPause), k.sweep.MaxPause)
			}
		}
		t := time.NewTimer(pause)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}
