package pgtest_test

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"

	"inthub.dev/pkg/pgtest"
)

func TestRolesCanWorkWithinTheirTenant(t *testing.T) {
	db := pgtest.New(t)
	ctx := context.Background()
	owner := pgtest.Pool(t, db.OwnerURL)
	if _, err := owner.Exec(ctx, `INSERT INTO integration_types (id, display_name, provider, config_schema) VALUES ('test.inmemory', 'In-memory', 'inmemory', '{}')`); err != nil {
		t.Fatal(err)
	}
	app := pgtest.Pool(t, db.AppURL)
	const tenant = "11111111-1111-4111-8111-111111111111"
	err := pgx.BeginFunc(ctx, app, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SELECT set_config('app.tenant_id', $1, true)", tenant); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `INSERT INTO integrations (tenant_id, type, name, created_by) VALUES ($1, 'test.inmemory', 'one', 't')`, tenant); err != nil {
			return err
		}
		var id uuid
		if err := tx.QueryRow(ctx, `SELECT id FROM integrations WHERE name = 'one'`).Scan(&id); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `INSERT INTO health_checks (tenant_id, integration_id, event_id, status, checked_at) VALUES ($1, $2, gen_random_uuid(), 'healthy', now())`, tenant, id); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `INSERT INTO outbox (tenant_id, aggregate_id, partition, subject, event_id, payload) VALUES ($1, $2, 0, 'integration.created', gen_random_uuid(), '\x00')`, tenant, id)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	// Without a tenant the app sees nothing.
	var n int
	if err := app.QueryRow(ctx, "SELECT count(*) FROM integrations").Scan(&n); err != nil || n != 0 {
		t.Fatalf("no tenant set: %d rows, %v", n, err)
	}
	// The forwarder sees the outbox across tenants, and nothing else.
	fwd := pgtest.Pool(t, db.ForwarderURL)
	if err := fwd.QueryRow(ctx, "SELECT count(*) FROM outbox").Scan(&n); err != nil || n != 1 {
		t.Fatalf("forwarder: %d outbox rows, %v", n, err)
	}
	if err := fwd.QueryRow(ctx, "SELECT count(*) FROM integrations").Scan(&n); err == nil {
		t.Fatal("forwarder can read integrations")
	}
}

type uuid = [16]byte
