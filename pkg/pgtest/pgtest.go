// Package pgtest gives each test a fresh PostgreSQL database with inthub's
// migrations applied, and connection URLs for each of the roles the
// services use, so tests exercise the same row-level security as
// production. The server comes from INTHUB_TEST_DATABASE_URL (an admin
// URL), default postgres://postgres@127.0.0.1:5432/postgres.
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/url"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"inthub.dev/migrations"
)

// EnvURL names the environment variable with the admin URL.
const EnvURL = "INTHUB_TEST_DATABASE_URL"

// DefaultURL is the local server every machine of this project has.
const DefaultURL = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"

// DB is a migrated database that lives as long as the test.
type DB struct {
	Name string
	// OwnerURL connects as the owner of the tables (migrations, seeding).
	OwnerURL string
	// AppURL connects as inthub_app: what the catalog's requests use.
	AppURL string
	// ForwarderURL connects as inthub_forwarder: the outbox forwarder.
	ForwarderURL string
}

// AdminURL is the server's admin URL.
func AdminURL() string {
	if u := os.Getenv(EnvURL); u != "" {
		return u
	}
	return DefaultURL
}

// New creates a database, applies the migrations and drops it (forcing
// connections closed) at cleanup.
func New(tb testing.TB) *DB {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	admin, err := pgx.Connect(ctx, AdminURL())
	if err != nil {
		tb.Fatalf("pgtest: PostgreSQL at %s: %v (set %s)", redact(AdminURL()), err, EnvURL)
	}
	defer admin.Close(ctx)
	var b [6]byte
	_, _ = rand.Read(b[:])
	name := "inthub_test_" + hex.EncodeToString(b[:])
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		tb.Fatalf("pgtest: create database: %v", err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		admin, err := pgx.Connect(ctx, AdminURL())
		if err != nil {
			tb.Errorf("pgtest: drop %s: %v", name, err)
			return
		}
		defer admin.Close(ctx)
		if _, err := admin.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
			tb.Errorf("pgtest: drop %s: %v", name, err)
		}
	})
	db := &DB{Name: name, OwnerURL: withDB(AdminURL(), name, "")}
	db.AppURL = withDB(AdminURL(), name, "inthub_app")
	db.ForwarderURL = withDB(AdminURL(), name, "inthub_forwarder")
	conn, err := pgx.Connect(ctx, db.OwnerURL)
	if err != nil {
		tb.Fatalf("pgtest: %v", err)
	}
	defer conn.Close(ctx)
	if _, err := migrations.Apply(ctx, conn); err != nil {
		tb.Fatalf("pgtest: migrate: %v", err)
	}
	return db
}

// Pool opens a pool on url, closed at cleanup.
func Pool(tb testing.TB, url string) *pgxpool.Pool {
	tb.Helper()
	p, err := pgxpool.New(context.Background(), url)
	if err != nil {
		tb.Fatalf("pgtest: pool: %v", err)
	}
	tb.Cleanup(p.Close)
	return p
}

// withDB returns u with its database, and user if given, replaced.
func withDB(u, db, user string) string {
	p, err := url.Parse(u)
	if err != nil {
		return u
	}
	p.Path = "/" + db
	if user != "" {
		p.User = url.User(user)
	}
	return p.String()
}

func redact(u string) string {
	p, err := url.Parse(u)
	if err != nil {
		return "(unparseable URL)"
	}
	return p.Redacted()
}
