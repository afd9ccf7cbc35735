package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

const postgresHint = "start PostgreSQL (e.g. `pg_ctlcluster <version> main start`, or `docker compose up -d postgres`) or point --database-url / DATABASE_URL at a server that is running"

// ensureDatabase creates the database named in rawURL if it does not exist
// yet, by way of the server's `postgres` database, and checks that it then
// accepts connections. It returns a description of the database without the
// password, fit for logs.
func ensureDatabase(ctx context.Context, rawURL string) (string, error) {
	cfg, err := pgx.ParseConfig(rawURL)
	if err != nil {
		return "", fmt.Errorf("database url: %w", err)
	}
	name := cfg.Database
	if name == "" {
		name = cfg.User // libpq's rule when no database is named
	}
	desc := fmt.Sprintf("%s@%s/%s", cfg.User, net.JoinHostPort(cfg.Host, strconv.Itoa(int(cfg.Port))), name)

	admin := cfg.Copy()
	admin.Database = "postgres"
	conn, err := pgx.ConnectConfig(ctx, admin)
	if err != nil {
		return desc, fmt.Errorf("connect to PostgreSQL at %s: %w", net.JoinHostPort(cfg.Host, strconv.Itoa(int(cfg.Port))), err)
	}
	defer conn.Close(context.WithoutCancel(ctx))

	var exists bool
	if err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", name).Scan(&exists); err != nil {
		return desc, fmt.Errorf("look up database %q: %w", name, err)
	}
	if !exists {
		// CREATE DATABASE takes no bind parameters; the name is quoted as an
		// identifier instead.
		_, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize())
		var pgErr *pgconn.PgError
		if err != nil && !(errors.As(err, &pgErr) && pgErr.Code == "42P04") { // 42P04: created meanwhile by someone else
			return desc, fmt.Errorf("create database %q: %w", name, err)
		}
	}

	target, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return desc, fmt.Errorf("connect to database %q: %w", name, err)
	}
	return desc, target.Close(ctx)
}
