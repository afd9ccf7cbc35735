package migrations_test

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"inthub.dev/migrations"
)

func adminURL() string {
	if u := os.Getenv("INTHUB_TEST_DATABASE_URL"); u != "" {
		return u
	}
	return "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"
}

// freshDB creates an empty database and drops it when the test ends.
func freshDB(t *testing.T) *pgx.Conn {
	t.Helper()
	ctx := context.Background()
	admin, err := pgx.Connect(ctx, adminURL())
	if err != nil {
		t.Fatalf("PostgreSQL: %v (set INTHUB_TEST_DATABASE_URL)", err)
	}
	name := fmt.Sprintf("inthub_mig_%d", time.Now().UnixNano())
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatal(err)
	}
	cfg, _ := pgx.ParseConfig(adminURL())
	cfg.Database = name
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		conn.Close(ctx)
		_, _ = admin.Exec(ctx, "DROP DATABASE "+name+" WITH (FORCE)")
		admin.Close(ctx)
	})
	return conn
}

func TestApplyIsIdempotent(t *testing.T) {
	conn := freshDB(t)
	ctx := context.Background()
	first, err := migrations.Apply(ctx, conn)
	if err != nil {
		t.Fatal(err)
	}
	all, _ := migrations.All()
	if len(first) != len(all) || len(all) == 0 {
		t.Fatalf("applied %v of %d", first, len(all))
	}
	again, err := migrations.Apply(ctx, conn)
	if err != nil || len(again) != 0 {
		t.Fatalf("second Apply: %v %v", again, err)
	}
}

// DESIGN §10: every tenant table has RLS enabled and forced, and the
// service's roles cannot bypass it.
func TestRowLevelSecurityIsOnEverywhere(t *testing.T) {
	conn := freshDB(t)
	ctx := context.Background()
	if _, err := migrations.Apply(ctx, conn); err != nil {
		t.Fatal(err)
	}
	rows, err := conn.Query(ctx, `SELECT c.relname, c.relrowsecurity, c.relforcerowsecurity
		FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'tenant_id' AND NOT a.attisdropped
		WHERE n.nspname = 'public' AND c.relkind = 'r'`)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for rows.Next() {
		var name string
		var enabled, forced bool
		if err := rows.Scan(&name, &enabled, &forced); err != nil {
			t.Fatal(err)
		}
		n++
		if !enabled || !forced {
			t.Errorf("%s: rowsecurity=%v force=%v", name, enabled, forced)
		}
	}
	if n < 7 {
		t.Fatalf("only %d tenant tables found", n)
	}
	for _, role := range []string{"inthub_app", "inthub_forwarder"} {
		var super, bypass, createrole bool
		var owns int
		err := conn.QueryRow(ctx, `SELECT r.rolsuper, r.rolbypassrls, r.rolcreaterole,
			(SELECT count(*) FROM pg_class c WHERE c.relowner = r.oid)
			FROM pg_roles r WHERE r.rolname = $1`, role).Scan(&super, &bypass, &createrole, &owns)
		if err != nil {
			t.Fatal(err)
		}
		if super || bypass || createrole || owns != 0 {
			t.Errorf("%s: super=%v bypassrls=%v createrole=%v owns %d relations", role, super, bypass, createrole, owns)
		}
	}
}
