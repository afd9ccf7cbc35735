package store

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"inthub.dev/events"
)

// StateRecord is one integration as the integrations bucket must hold it:
// its last announced form, or Deleted.
type StateRecord struct {
	TenantID, ID string
	Deleted      bool
	Integration  events.Integration // when not Deleted
}

// StateSnapshot calls fn for every integration of every tenant, deleted
// ones included, tenant by tenant (each in one read-only transaction under
// row-level security). It is what rebuilds the integrations bucket when
// the bus lost it; fn must not block for long.
func (s *Store) StateSnapshot(ctx context.Context, fn func(StateRecord) error) error {
	var tenants []string
	err := s.read(ctx, func() error {
		rows, err := s.pool.Query(ctx, `SELECT tenant_id::text FROM integration_tenants()`)
		if err != nil {
			return err
		}
		tenants, err = pgx.CollectRows(rows, pgx.RowTo[string])
		return err
	})
	if err != nil {
		return fmt.Errorf("store: tenants of the state snapshot: %w", err)
	}
	for _, tid := range tenants {
		var recs []StateRecord
		err := s.InTenant(ctx, tid, func(tx pgx.Tx) error {
			recs = recs[:0]
			rows, err := tx.Query(ctx, `SELECT `+integrationCols+` FROM integrations ORDER BY created_at, id`)
			if err != nil {
				return err
			}
			defer rows.Close()
			for rows.Next() {
				it, err := scanIntegration(rows)
				if err != nil {
					return err
				}
				recs = append(recs, StateRecord{TenantID: it.TenantID, ID: it.ID, Deleted: it.DeletedAt != nil, Integration: it.event()})
			}
			return rows.Err()
		})
		if err != nil {
			return fmt.Errorf("store: state snapshot of tenant %s: %w", tid, err)
		}
		for _, r := range recs {
			if err := fn(r); err != nil {
				return err
			}
		}
	}
	return nil
}
