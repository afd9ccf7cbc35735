package correlate

import (
	"context"
	"embed"
	"fmt"
	"io/fs"
	"sort"
	"strings"

	"github.com/jackc/pgx/v5"
)

//go:embed migrations/*.sql
var migrationFiles embed.FS

// AppRole is the PostgreSQL role the service connects as: it owns nothing
// and cannot bypass row-level security.
const AppRole = "inthub_enrichment"

// lockKey serialises Migrate across replicas; it differs from the
// catalog's so the two never wait on each other.
const lockKey = 0x656e72696368 // "enrich"

// Migrate creates the enrichment schema and applies every migration it has
// not seen, each in its own transaction, returning the versions applied.
// It runs as the role that will own the tables, never as AppRole. The
// bookkeeping lives in enrichment.schema_migrations, apart from the
// catalog's.
func Migrate(ctx context.Context, conn *pgx.Conn) ([]string, error) {
	entries, err := fs.ReadDir(migrationFiles, "migrations")
	if err != nil {
		return nil, fmt.Errorf("correlate: migrations: %w", err)
	}
	names := make([]string, 0, len(entries))
	for _, e := range entries {
		names = append(names, e.Name())
	}
	sort.Strings(names)
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock($1)", int64(lockKey)); err != nil {
		return nil, fmt.Errorf("correlate: migrations lock: %w", err)
	}
	defer conn.Exec(context.WithoutCancel(ctx), "SELECT pg_advisory_unlock($1)", int64(lockKey)) //nolint:errcheck
	if _, err := conn.Exec(ctx, `CREATE SCHEMA IF NOT EXISTS enrichment;
		CREATE TABLE IF NOT EXISTS enrichment.schema_migrations (
			version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())`); err != nil {
		return nil, fmt.Errorf("correlate: migrations bookkeeping: %w", err)
	}
	rows, err := conn.Query(ctx, "SELECT version FROM enrichment.schema_migrations")
	if err != nil {
		return nil, fmt.Errorf("correlate: read applied migrations: %w", err)
	}
	done, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("correlate: read applied migrations: %w", err)
	}
	seen := map[string]bool{}
	for _, v := range done {
		seen[v] = true
	}
	var applied []string
	for _, name := range names {
		version := strings.TrimSuffix(name, ".sql")
		if seen[version] {
			continue
		}
		sql, err := fs.ReadFile(migrationFiles, "migrations/"+name)
		if err != nil {
			return applied, err
		}
		err = pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, string(sql)); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, "INSERT INTO enrichment.schema_migrations (version) VALUES ($1)", version)
			return err
		})
		if err != nil {
			return applied, fmt.Errorf("correlate: migration %s: %w", version, err)
		}
		applied = append(applied, version)
	}
	return applied, nil
}
