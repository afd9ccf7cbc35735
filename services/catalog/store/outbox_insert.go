package store

import (
	"context"
	"fmt"
	"hash/fnv"

	"github.com/jackc/pgx/v5"

	"inthub.dev/events"
)

// outboxPartitions is the number of outbox partitions; a forwarder holds one
// partition's advisory lock while it publishes.
const outboxPartitions = 16

// insertOutbox writes ev to the outbox in the caller's transaction, the
// same way as the catalog's outbox package (outbox.Insert), which replaces
// it once merged: partition = fnv32a(aggregateID) % 16, so one
// integration's events stay in one partition and keep their commit order;
// the row's tenant is the event's.
func insertOutbox(ctx context.Context, tx pgx.Tx, ev events.Event, aggregateID string) error {
	payload, err := ev.Marshal()
	if err != nil {
		return fmt.Errorf("outbox: encode %s: %w", ev.Type, err)
	}
	h := fnv.New32a()
	_, _ = h.Write([]byte(aggregateID))
	partition := int32(h.Sum32() % outboxPartitions)
	if _, err := tx.Exec(ctx,
		`INSERT INTO outbox (tenant_id, aggregate_id, partition, subject, event_id, payload)
		 VALUES ($1, $2, $3, $4, $5, $6)`,
		ev.TenantID, aggregateID, partition, ev.Type, ev.ID, payload); err != nil {
		return fmt.Errorf("outbox: insert %s: %w", ev.Type, err)
	}
	return nil
}
