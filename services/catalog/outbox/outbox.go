package outbox

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"go.opentelemetry.io/otel/propagation"

	"inthub.dev/events"
)

// Partitions is the number of outbox partitions, the unit of work a
// forwarder replica takes. Changing it re-homes pending rows' aggregates to
// other partitions, so drain the outbox (stop writers, let the forwarders
// empty it) before changing it.
const Partitions = 16

// LockClass is the first key of the forwarder's advisory locks,
// pg_try_advisory_xact_lock(LockClass, partition). Advisory locks are per
// database; nothing else in the catalog uses this class.
const LockClass int32 = 0x0b0c

// Partition returns the outbox partition of an aggregate: FNV-1a (32 bit)
// of the id string, modulo Partitions. Insert hashes the canonical
// lowercase form of the uuid.
func Partition(aggregateID string) int {
	h := fnv.New32a()
	_, _ = h.Write([]byte(aggregateID))
	return int(h.Sum32() % Partitions)
}

// Insert writes ev to the outbox in the caller's transaction, as the
// aggregate's next event: tenant from ev.TenantID, subject = ev.Type,
// event_id = ev.ID, payload = ev.Marshal(), its traceparent the span in
// ctx unless ev names one.
//
// The caller must hold the aggregate's row lock (the UPDATE of the change,
// or SELECT ... FOR UPDATE) before calling Insert, and the transaction must
// have app.tenant_id set to ev.TenantID (row-level security checks it):
// the lock is what makes outbox ids of one aggregate follow commit order.
//
// Insert trusts ev: pass an event built by events.New (which validated it
// against its schema) or checked with Event.Validate since its last change.
// It does not validate again, because validation is the costliest part of a
// write (~70 µs of CPU for an integration event) and the store builds every
// event with events.New in the same transaction. What Insert does check is
// cheap and is what the row needs: the ids are UUIDs, and the event encodes.
// A schema-breaking event that slips through is not lost and blocks
// nothing: every consumer validates on receipt and dead-letters poison.
func Insert(ctx context.Context, tx pgx.Tx, ev events.Event, aggregateID string) error {
	if tx == nil {
		return errors.New("outbox: Insert needs the caller's transaction")
	}
	agg, err := uuid.Parse(aggregateID)
	if err != nil {
		return fmt.Errorf("outbox: aggregate id %q: %w", aggregateID, err)
	}
	tenant, err := uuid.Parse(ev.TenantID)
	if err != nil {
		return fmt.Errorf("outbox: event %s: tenant id %q: %w", ev.ID, ev.TenantID, err)
	}
	id, err := uuid.Parse(ev.ID)
	if err != nil {
		return fmt.Errorf("outbox: event id %q: %w", ev.ID, err)
	}
	if ev.Type == "" {
		// The subject it would be published to: a row without one would
		// stall its partition instead of reaching a consumer.
		return fmt.Errorf("outbox: event %s has no type", ev.ID)
	}
	if ev.TraceParent == "" {
		// The writer's span (the API request, the health consumer's
		// delivery): the trace goes on through the outbox to the bus.
		c := propagation.MapCarrier{}
		propagation.TraceContext{}.Inject(ctx, c)
		ev.TraceParent = c["traceparent"]
	}
	body, err := ev.Marshal()
	if err != nil {
		return fmt.Errorf("outbox: event %s: %w", ev.ID, err)
	}
	a := agg.String()
	_, err = tx.Exec(ctx,
		`INSERT INTO outbox (tenant_id, aggregate_id, partition, subject, event_id, payload)
		 VALUES ($1, $2, $3, $4, $5, $6)`,
		tenant.String(), a, Partition(a), ev.Type, id.String(), body)
	if err != nil {
		return fmt.Errorf("outbox: insert event %s (%s): %w", ev.ID, ev.Type, err)
	}
	return nil
}
