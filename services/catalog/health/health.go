// Package health is the catalog's consumer of integration.health_checked:
// it records every check in the health history and lets the store announce
// integration.health_changed (through the outbox) on a transition.
package health

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/nats-io/nats.go/jetstream"

	"inthub.dev/events"
	"inthub.dev/pkg/bus"
	"inthub.dev/pkg/fault"
	"inthub.dev/services/catalog/store"
)

// Recorder stores one health check; duplicates are no-ops.
type Recorder interface {
	RecordHealth(ctx context.Context, ev events.Event) (changed bool, err error)
}

// Durable is the consumer's name; replicas of the catalog share it.
const Durable = "catalog-health"

// NewConsumer returns a worker that feeds health checks to rec. Run it with
// Run(ctx).
func NewConsumer(js jetstream.JetStream, rec Recorder, log *slog.Logger, tune func(*bus.WorkerConfig)) (*bus.Worker, error) {
	if rec == nil {
		return nil, errors.New("health: NewConsumer needs a Recorder (the catalog store)")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	cfg := bus.WorkerConfig{Service: "catalog", Durable: Durable, Stream: bus.StreamIntegrations, Logger: log}
	if tune != nil {
		tune(&cfg)
	}
	w, err := bus.NewWorker(js, cfg)
	if err != nil {
		return nil, err
	}
	w.Handle(events.SubjectIntegrationHealthChecked, func(ctx context.Context, ev events.Event) error {
		changed, err := rec.RecordHealth(ctx, ev)
		switch {
		case errors.Is(err, store.ErrNotFound):
			// A check for an integration deleted meanwhile, or never ours:
			// retrying will not make it exist.
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
	return w, nil
}
