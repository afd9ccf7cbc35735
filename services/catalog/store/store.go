// Package store is the catalog's data layer: integrations, integration
// types, connection profiles, health history and idempotency keys in
// PostgreSQL.
//
// Tenant isolation is the database's job as much as the queries': every
// tenant-scoped call runs in [Store.InTenant], a transaction that sets
// app.tenant_id with set_config(..., true), so the forced row-level
// security policies of migrations/0001_catalog.sql see only that tenant's
// rows, and the setting dies with the transaction instead of leaking to the
// next borrower of the pooled connection. Queries name tenant_id as well, so
// the indexes that start with it are used and a role that could bypass RLS
// still stays inside its tenant.
//
// Every change (create, update, delete of an integration or a profile) is
// written with its audit_logs row and, for integrations, its outbox event
// in the same transaction: they commit together or not at all.
package store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"strings"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"inthub.dev/events"
	"inthub.dev/services/catalog/outbox"
)

// DefaultSource is the CloudEvents source of the events the store writes
// to the outbox.
const DefaultSource = "inthub/catalog"

// maxAttempts bounds InTenant's retries of serialization failures and
// deadlocks.
const maxAttempts = 4

// Store is the catalog's data layer. It is safe for concurrent use.
type Store struct {
	pool   *pgxpool.Pool
	log    *slog.Logger
	clock  func() time.Time
	source string

	// insertOutbox writes one outbox row in the caller's transaction. It
	// is a field so that the shared outbox package can replace the local
	// helper without touching the callers.
	insertOutbox func(ctx context.Context, tx pgx.Tx, ev events.Event, aggregateID string) error

	// afterCommit runs after a committed InTenant transaction that may
	// have written outbox rows (see WithAfterCommit); outboxWrites counts
	// the rows written, which is how InTenant tells.
	afterCommit  func()
	outboxWrites atomic.Uint64
}

// Option configures a Store.
type Option func(*Store)

// WithLogger sets the logger; the default discards.
func WithLogger(l *slog.Logger) Option {
	return func(s *Store) {
		if l != nil {
			s.log = l
		}
	}
}

// WithClock sets the clock that stamps created_at, updated_at, deleted_at
// and audit times; tests use it to make timestamps collide.
func WithClock(now func() time.Time) Option {
	return func(s *Store) {
		if now != nil {
			s.clock = now
		}
	}
}

// WithSource sets the CloudEvents source of outbox events (default
// "inthub/catalog").
func WithSource(source string) Option {
	return func(s *Store) {
		if source != "" {
			s.source = source
		}
	}
}

// WithAfterCommit sets fn to run after every InTenant transaction that
// wrote an outbox event and committed; the catalog wakes the outbox
// forwarders there, so that no write's transaction has to notify. fn runs
// on the caller's goroutine, so it must be cheap and never block. It may
// also run after a transaction that wrote no event but overlapped one that
// did (InTenant compares a counter of outbox writes before and after), and
// it is skipped when the commit fails, even if the commit in fact landed:
// callers treat it as a hint, not as a record of commits.
func WithAfterCommit(fn func()) Option {
	return func(s *Store) { s.afterCommit = fn }
}

// New returns a Store on app, a pool that connects as inthub_app (a role
// that owns no table and cannot bypass row-level security).
func New(app *pgxpool.Pool, opts ...Option) *Store {
	s := &Store{
		pool:         app,
		log:          slog.New(slog.DiscardHandler),
		clock:        time.Now,
		source:       DefaultSource,
		insertOutbox: outbox.Insert,
	}
	for _, o := range opts {
		o(s)
	}
	insert := s.insertOutbox
	s.insertOutbox = func(ctx context.Context, tx pgx.Tx, ev events.Event, aggregateID string) error {
		s.outboxWrites.Add(1)
		return insert(ctx, tx, ev, aggregateID)
	}
	return s
}

// now is the store's time, in UTC and to the microsecond, so that a value
// returned to the caller equals what PostgreSQL stored.
func (s *Store) now() time.Time {
	return s.clock().UTC().Truncate(time.Microsecond)
}

// InTenant runs fn in a transaction whose row-level security tenant is
// tenantID (a UUID): BEGIN; SELECT set_config('app.tenant_id', $1, true);
// fn; COMMIT. The setting is transaction-local, so it never outlives the
// transaction on the pooled connection.
//
// A serialization failure (40001) or deadlock (40P01) rolls back and runs
// fn again, up to a few times, so fn must not have effects outside tx that
// cannot be repeated. Any other error from fn rolls back and is returned.
func (s *Store) InTenant(ctx context.Context, tenantID string, fn func(pgx.Tx) error) error {
	tid, err := parseTenant(tenantID)
	if err != nil {
		return err
	}
	writes := s.outboxWrites.Load()
	for attempt := 1; ; attempt++ {
		err = s.inTenantOnce(ctx, tid, fn)
		if err == nil && s.afterCommit != nil && s.outboxWrites.Load() != writes {
			s.afterCommit()
		}
		if errors.As(err, new(lostBeforeWork)) {
			s.pool.Reset() // see read
		}
		if err == nil || !retryable(err) || attempt >= maxAttempts {
			return err
		}
		s.log.WarnContext(ctx, "catalog store: retrying transaction",
			slog.String("tenantId", tid), slog.Int("attempt", attempt), slog.String("error", err.Error()))
		// Jittered so that the transactions that collided do not collide
		// again in lockstep.
		d := time.Duration(attempt)*10*time.Millisecond + rand.N(10*time.Millisecond)
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("catalog store: %w (after %v)", ctx.Err(), err)
		case <-t.C:
		}
	}
}

func (s *Store) inTenantOnce(ctx context.Context, tenantID string, fn func(pgx.Tx) error) (err error) {
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("catalog store: begin: %w", startErr(err))
	}
	defer func() {
		if err != nil {
			// Without cancellation: a rollback that the caller's dead
			// context aborts would leave pgx to close the connection.
			_ = tx.Rollback(context.WithoutCancel(ctx))
		}
	}()
	if _, err := tx.Exec(ctx, "SELECT set_config('app.tenant_id', $1, true)", tenantID); err != nil {
		return fmt.Errorf("catalog store: set tenant: %w", startErr(err))
	}
	if err := fn(tx); err != nil {
		return err
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("catalog store: commit: %w", err)
	}
	return nil
}

// parseTenant returns the tenant id in the canonical lowercase form that
// PostgreSQL returns and the event schemas require.
func parseTenant(tenantID string) (string, error) {
	u, err := uuid.Parse(tenantID)
	if err != nil || u == uuid.Nil || len(tenantID) != 36 {
		return "", &InvalidError{Field: "tenantId", Reason: "must be a non-nil UUID"}
	}
	return u.String(), nil
}

// parseID returns id in canonical form, or false if it is not a UUID; a
// malformed id names no row, so callers answer ErrNotFound.
func parseID(id string) (string, bool) {
	u, err := uuid.Parse(id)
	if err != nil || len(id) != 36 {
		return "", false
	}
	return u.String(), true
}

func retryable(err error) bool {
	if errors.As(err, new(lostBeforeWork)) {
		return true
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code == "40001" || pe.Code == "40P01"
	}
	return false
}

// read runs a read-only query outside a tenant transaction, once more on a
// fresh connection if the pooled one turns out dead: a read is safe to
// repeat.
func (s *Store) read(ctx context.Context, fn func() error) error {
	err := fn()
	if err != nil && errors.As(startErr(err), new(lostBeforeWork)) && ctx.Err() == nil {
		// One dead connection usually means the server restarted and
		// every idle one is dead too: drop them all, then try once more.
		s.pool.Reset()
		err = fn()
	}
	return err
}

// lostBeforeWork marks a connection that failed before the transaction did
// anything: a pooled connection whose server went away (PostgreSQL
// restarted, the backend was terminated). Nothing was written, so the
// transaction is tried again on a fresh connection instead of failing the
// request. A failure at or after the first statement of fn is not retried
// here: at COMMIT the outcome would be unknown.
type lostBeforeWork struct{ error }

func (e lostBeforeWork) Unwrap() error { return e.error }

func startErr(err error) error {
	var pe *pgconn.PgError
	switch {
	case pgconn.SafeToRetry(err):
		return lostBeforeWork{err}
	case errors.As(err, &pe) && (strings.HasPrefix(pe.Code, "08") || strings.HasPrefix(pe.Code, "57P")):
		// connection exception, admin/crash shutdown
		return lostBeforeWork{err}
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, net.ErrClosed):
		return lostBeforeWork{err}
	}
	var ne net.Error
	if errors.As(err, &ne) {
		return lostBeforeWork{err}
	}
	return err
}
