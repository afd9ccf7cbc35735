package main

import (
	"context"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"inthub.dev/migrations"
)

// defaultDatabaseURL is the local PostgreSQL of `make run`, as the owner.
const defaultDatabaseURL = "postgres://postgres@127.0.0.1:5432/inthub?sslmode=disable"

// connectTimeout applies when the URL sets none: an unreachable host
// should fail in seconds, not after the operating system's TCP timeout.
const connectTimeout = 10 * time.Second

type migrateJSON struct {
	Applied []string `json:"applied"`
	// Latest is the newest migration this build carries, which the
	// database is now at.
	Latest string `json:"latest"`
}

func (a *app) migrate(o *opts, pos []string) error {
	const c = "inthubctl migrate"
	if err := noArgs(c, pos); err != nil {
		return err
	}
	cfg, err := pgx.ParseConfig(o.cat.databaseURL)
	if err != nil {
		// pgx's parse error can quote the URL, password included.
		return usagef(c, "--database-url: %s does not parse as a PostgreSQL URL or DSN", redactDatabaseURL(o.cat.databaseURL))
	}
	if cfg.ConnectTimeout == 0 {
		cfg.ConnectTimeout = connectTimeout
	}
	conn, err := pgx.ConnectConfig(a.ctx, cfg)
	if err != nil {
		return fmt.Errorf("connect to PostgreSQL at %s: %w (set --database-url or DATABASE_URL; migrations run as the owner of the tables)", redactDatabaseURL(o.cat.databaseURL), err)
	}
	defer conn.Close(context.WithoutCancel(a.ctx))
	all, err := migrations.All()
	if err != nil {
		return err
	}
	latest := ""
	if len(all) > 0 {
		latest = all[len(all)-1].Version
	}
	applied, err := migrations.Apply(a.ctx, conn)
	// What was applied is printed even when a later migration failed:
	// each one commits on its own.
	var werr error
	if o.output == "json" {
		if applied == nil {
			applied = []string{}
		}
		werr = writeJSON(a.stdout, migrateJSON{Applied: applied, Latest: latest})
	} else {
		werr = writeMigrate(a, applied, latest, err == nil)
	}
	if err != nil {
		return err
	}
	return werr
}

func writeMigrate(a *app, applied []string, latest string, ok bool) error {
	for _, v := range applied {
		if _, err := fmt.Fprintf(a.stdout, "applied %s\n", v); err != nil {
			return err
		}
	}
	if ok && len(applied) == 0 {
		_, err := fmt.Fprintf(a.stdout, "up to date (latest migration: %s)\n", latest)
		return err
	}
	return nil
}

// redactDatabaseURL hides the password of a URL; a key/value DSN is not
// repeated at all, since it may hold password=... anywhere.
func redactDatabaseURL(raw string) string {
	if u, err := url.Parse(raw); err == nil && (u.Scheme == "postgres" || u.Scheme == "postgresql") {
		return u.Redacted()
	}
	if strings.Contains(raw, "=") {
		return "(the key/value DSN given)"
	}
	return "(an unparseable URL)"
}
