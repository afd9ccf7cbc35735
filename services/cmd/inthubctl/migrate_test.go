package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"net"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"inthub.dev/migrations"
	"inthub.dev/pkg/pgtest"
)

// emptyDB creates a database with nothing in it (pgtest.New would migrate
// it) and drops it at cleanup; it returns the owner's URL.
func emptyDB(t *testing.T) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	admin, err := pgx.Connect(ctx, pgtest.AdminURL())
	if err != nil {
		t.Fatalf("PostgreSQL: %v (set %s)", err, pgtest.EnvURL)
	}
	defer admin.Close(ctx)
	var b [6]byte
	_, _ = rand.Read(b[:])
	name := "inthubctl_migrate_" + hex.EncodeToString(b[:])
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		admin, err := pgx.Connect(ctx, pgtest.AdminURL())
		if err != nil {
			t.Errorf("drop %s: %v", name, err)
			return
		}
		defer admin.Close(ctx)
		if _, err := admin.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
			t.Errorf("drop %s: %v", name, err)
		}
	})
	u, err := url.Parse(pgtest.AdminURL())
	if err != nil {
		t.Fatal(err)
	}
	u.Path = "/" + name
	return u.String()
}

func TestMigrate(t *testing.T) {
	dbURL := emptyDB(t)
	all, err := migrations.All()
	if err != nil || len(all) == 0 {
		t.Fatalf("migrations: %v, %d", err, len(all))
	}
	var want []string
	for _, m := range all {
		want = append(want, "applied "+m.Version)
	}
	latest := all[len(all)-1].Version

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	r := runWith(ctx, nil, "migrate", "--database-url", dbURL)
	if r.code != exitOK {
		t.Fatalf("first run: exit %d: %s", r.code, r.stderr)
	}
	if got := strings.Split(strings.TrimRight(r.stdout, "\n"), "\n"); !slices.Equal(got, want) {
		t.Errorf("first run printed %q, want %q", got, want)
	}
	// The schema is really there: the tables, and the bookkeeping.
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var n int
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM schema_migrations").Scan(&n); err != nil || n != len(all) {
		t.Errorf("schema_migrations has %d rows (%v), want %d", n, err, len(all))
	}
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM integrations").Scan(&n); err != nil {
		t.Errorf("no integrations table after migrate: %v", err)
	}

	// Second run, the URL from DATABASE_URL this time.
	r = runWith(ctx, map[string]string{"DATABASE_URL": dbURL}, "migrate")
	if r.code != exitOK || r.stdout != "up to date (latest migration: "+latest+")\n" {
		t.Errorf("second run: exit %d, %q, %s", r.code, r.stdout, r.stderr)
	}
	r = runWith(ctx, map[string]string{"DATABASE_URL": dbURL}, "migrate", "-o", "json")
	var got migrateJSON
	if err := json.Unmarshal([]byte(r.stdout), &got); err != nil || r.code != exitOK || got.Applied == nil || len(got.Applied) != 0 || got.Latest != latest {
		t.Errorf("-o json: exit %d, %v, %q", r.code, err, r.stdout)
	}
}

func TestMigrateConnectError(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	r := runWith(context.Background(), map[string]string{"DATABASE_URL": "postgres://owner:s3cret-pw@" + addr + "/inthub?sslmode=disable"}, "migrate")
	if r.code != exitError || !strings.Contains(r.stderr, addr) || !strings.Contains(r.stderr, "DATABASE_URL") {
		t.Errorf("exit %d, %q; want 1 naming the server and DATABASE_URL", r.code, r.stderr)
	}
	if strings.Contains(r.stderr, "s3cret-pw") {
		t.Errorf("the password is printed: %q", r.stderr)
	}
	r = runWith(context.Background(), nil, "migrate", "--database-url", "postgres://owner:s3cret-pw@host:notaport/db")
	if r.code != exitUsage || strings.Contains(r.stderr, "s3cret-pw") {
		t.Errorf("unparseable URL: exit %d, %q", r.code, r.stderr)
	}
}
