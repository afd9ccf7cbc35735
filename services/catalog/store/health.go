package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"

	"inthub.dev/events"
)

// HealthCheck is one stored result of an integration.health_checked event.
type HealthCheck struct {
	ID            int64     `json:"id"`
	IntegrationID string    `json:"integrationId"`
	EventID       string    `json:"eventId"`
	Status        string    `json:"status"`
	Message       string    `json:"message"`
	LatencyMs     int64     `json:"latencyMs"`
	CheckedAt     time.Time `json:"checkedAt"`
}

const healthCols = `id, integration_id, event_id, status, message, latency_ms, checked_at`

func scanHealth(row pgx.Row) (HealthCheck, error) {
	var h HealthCheck
	err := row.Scan(&h.ID, &h.IntegrationID, &h.EventID, &h.Status, &h.Message, &h.LatencyMs, &h.CheckedAt)
	h.CheckedAt = h.CheckedAt.UTC()
	return h, err
}

// RecordHealth stores an integration.health_checked event in the health
// history of its tenant (the payload's) and, if it is the newest check of
// the integration, sets the integration's health_status and
// last_health_check. A transition writes integration.health_changed to the
// outbox in the same transaction and returns changed = true.
//
// A redelivered event (same event id) is a no-op: (false, nil). An event
// for an unknown or deleted integration is an error wrapping ErrNotFound,
// which no redelivery can fix. A check older than the last one recorded
// goes to the history only: results may arrive out of order.
//
// Health is not configuration: the integration's version and updated_at
// stay as they are, so an ETag held by an admin stays valid and consumers
// that drop integration.updated events by version are not confused.
func (s *Store) RecordHealth(ctx context.Context, ev events.Event) (changed bool, err error) {
	if ev.Type != events.SubjectIntegrationHealthChecked {
		return false, &InvalidError{Field: "type", Reason: fmt.Sprintf("is %q, want %s", ev.Type, events.SubjectIntegrationHealthChecked)}
	}
	var hc events.HealthChecked
	if err := ev.Decode(&hc); err != nil {
		return false, fmt.Errorf("record health: %w", err)
	}
	eventID, ok := parseID(ev.ID)
	if !ok {
		return false, &InvalidError{Field: "id", Reason: "must be a UUID"}
	}
	integrationID, ok := parseID(hc.IntegrationID)
	if !ok {
		return false, fmt.Errorf("integration %q: %w", hc.IntegrationID, ErrNotFound)
	}
	checkedAt := hc.CheckedAt.UTC().Truncate(time.Microsecond)
	err = s.InTenant(ctx, hc.TenantID, func(tx pgx.Tx) error {
		changed = false
		tid, _ := parseTenant(hc.TenantID)
		var (
			typ, prev string
			last      *time.Time
			deleted   bool
		)
		// Locked: concurrent results for one integration must compare
		// against each other's last_health_check, not a stale one.
		err := tx.QueryRow(ctx,
			`SELECT type, health_status, last_health_check, deleted_at IS NOT NULL
			 FROM integrations WHERE tenant_id = $1 AND id = $2 FOR UPDATE`,
			tid, integrationID).Scan(&typ, &prev, &last, &deleted)
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("integration %s: %w", integrationID, ErrNotFound)
		}
		if err != nil {
			return fmt.Errorf("record health: %w", err)
		}
		tag, err := tx.Exec(ctx,
			`INSERT INTO health_checks (tenant_id, integration_id, event_id, status, latency_ms, message, checked_at)
			 VALUES ($1, $2, $3, $4, $5, $6, $7)
			 ON CONFLICT (tenant_id, event_id) DO NOTHING`,
			tid, integrationID, eventID, string(hc.Status), hc.LatencyMs, hc.Message, checkedAt)
		if err != nil {
			return fmt.Errorf("record health: %w", mapPgError(err))
		}
		if tag.RowsAffected() == 0 {
			return nil // a redelivery: recorded the first time
		}
		if deleted {
			return fmt.Errorf("integration %s: %w", integrationID, ErrDeleted)
		}
		if last != nil && !checkedAt.After(*last) {
			return nil
		}
		if _, err := tx.Exec(ctx,
			`UPDATE integrations SET health_status = $3, last_health_check = $4 WHERE tenant_id = $1 AND id = $2`,
			tid, integrationID, string(hc.Status), checkedAt); err != nil {
			return fmt.Errorf("record health: %w", err)
		}
		if prev == string(hc.Status) {
			return nil
		}
		if err := s.emit(ctx, tx, tid, integrationID, events.SubjectIntegrationHealthChanged, events.HealthChanged{
			IntegrationID:  integrationID,
			TenantID:       tid,
			Type:           typ,
			Status:         hc.Status,
			PreviousStatus: events.HealthStatus(prev),
			LatencyMs:      hc.LatencyMs,
			Message:        hc.Message,
			CheckedAt:      checkedAt,
		}); err != nil {
			return err
		}
		changed = true
		s.log.InfoContext(ctx, "integration health changed", slog.String("tenantId", tid),
			slog.String("integrationId", integrationID), slog.String("from", prev), slog.String("to", string(hc.Status)))
		return nil
	})
	if err != nil {
		return false, err
	}
	return changed, nil
}

// HealthHistory returns the latest check of a live integration (nil if it
// has none) and a page of its history, newest first, with the next page's
// cursor ("" on the last). limit defaults to 50, at most 500.
func (s *Store) HealthHistory(ctx context.Context, tenantID, integrationID string, limit int, cursorStr string) (latest *HealthCheck, history []HealthCheck, next string, err error) {
	var c *cursor
	if cursorStr != "" {
		cc, err := decodeCursor(cursorStr, true)
		if err != nil {
			return nil, nil, "", err
		}
		c = &cc
	}
	limit = clampLimit(limit)
	err = s.InTenant(ctx, tenantID, func(tx pgx.Tx) error {
		latest, history, next = nil, nil, ""
		tid, _ := parseTenant(tenantID)
		it, err := s.getIntegration(ctx, tx, tid, integrationID, "")
		if err != nil {
			return err
		}
		h, err := scanHealth(tx.QueryRow(ctx,
			`SELECT `+healthCols+` FROM health_checks WHERE tenant_id = $1 AND integration_id = $2
			 ORDER BY checked_at DESC, id DESC LIMIT 1`, tid, it.ID))
		switch {
		case errors.Is(err, pgx.ErrNoRows):
			return nil // no checks yet, so no history either
		case err != nil:
			return fmt.Errorf("health history: %w", err)
		}
		latest = &h
		args := []any{tid, it.ID}
		q := `SELECT ` + healthCols + ` FROM health_checks WHERE tenant_id = $1 AND integration_id = $2`
		if c != nil {
			id, _ := strconv.ParseInt(c.id, 10, 64)
			args = append(args, c.t, id)
			q += ` AND (checked_at, id) < ($3, $4)`
		}
		args = append(args, limit+1)
		q += fmt.Sprintf(` ORDER BY checked_at DESC, id DESC LIMIT $%d`, len(args))
		rows, err := tx.Query(ctx, q, args...)
		if err != nil {
			return fmt.Errorf("health history: %w", err)
		}
		history, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (HealthCheck, error) { return scanHealth(r) })
		if err != nil {
			return fmt.Errorf("health history: %w", err)
		}
		if len(history) > limit {
			history = history[:limit]
			last := history[limit-1]
			next = encodeCursor(last.CheckedAt, strconv.FormatInt(last.ID, 10))
		}
		return nil
	})
	if err != nil {
		return nil, nil, "", err
	}
	return latest, history, next, nil
}

// HealthSweep is what one SweepStaleHealth did.
type HealthSweep struct {
	// Marked is the number of integrations recorded unknown.
	Marked int
	// Next is how long until the next live integration turns stale as
	// things stand; 0 when none can (none has a known status), and a
	// nanosecond when the sweep stopped with more perhaps still due.
	Next time.Duration
}

// sweepBatch bounds the integrations one sweep transaction locks.
const sweepBatch = 500

// SweepStaleHealth records `unknown` for every live integration whose
// status is known but whose last health check is older than twice its
// interval (healthIntervalSeconds in its config, else defaultInterval), so
// that no reader takes a stale `healthy` for a current one.
//
// Each is recorded as a transition is: a row in the health history (status
// unknown, checked at the moment it turned stale, a message naming the last
// check), health_status and last_health_check set to that, and
// integration.health_changed in the outbox, in one transaction. A result
// checked later than that moment still updates the status when it arrives
// (see RecordHealth); an older one goes to the history only.
//
// Safe to run from every catalog replica at once: rows are locked (SKIP
// LOCKED) and the condition is checked again under the lock, so each
// transition is recorded once.
func (s *Store) SweepStaleHealth(ctx context.Context, defaultInterval time.Duration) (HealthSweep, error) {
	defSecs := max(int(defaultInterval/time.Second), 1)
	var out HealthSweep
	// Until a look finds nothing due: then its earliest deadline is Next.
	// A few rounds at most; more means integrations turn stale as fast as
	// they are swept, and the caller comes back soon anyway.
	for range 4 {
		due, next, err := s.staleTenants(ctx, defSecs)
		if err != nil {
			return out, err
		}
		out.Next = next
		if len(due) == 0 {
			return out, nil
		}
		out.Next = 0
		for _, tid := range due {
			for {
				n, err := s.sweepTenant(ctx, tid, defSecs)
				out.Marked += n
				if err != nil {
					return out, err
				}
				if n < sweepBatch {
					break
				}
			}
		}
	}
	out.Next = time.Nanosecond // stopped with some perhaps still due
	return out, nil
}

// staleTenants returns the tenants that have an integration due to read
// unknown, and how long until the first of the others does (0: none).
func (s *Store) staleTenants(ctx context.Context, defSecs int) (due []string, next time.Duration, err error) {
	err = s.read(ctx, func() error {
		due, next = nil, 0
		rows, err := s.pool.Query(ctx,
			`SELECT tenant_id::text, EXTRACT(EPOCH FROM stale_at - now())::float8 FROM health_stale_tenants($1)`, defSecs)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var tid string
			var wait float64
			if err := rows.Scan(&tid, &wait); err != nil {
				return err
			}
			if wait <= 0 {
				due = append(due, tid)
				continue
			}
			if w := time.Duration(wait * float64(time.Second)); next == 0 || w < next {
				next = w
			}
		}
		return rows.Err()
	})
	if err != nil {
		return nil, 0, fmt.Errorf("health sweep: %w", err)
	}
	return due, next, nil
}

// sweepTenant records unknown for up to sweepBatch stale integrations of
// one tenant.
func (s *Store) sweepTenant(ctx context.Context, tenantID string, defSecs int) (marked int, err error) {
	err = s.InTenant(ctx, tenantID, func(tx pgx.Tx) error {
		marked = 0
		rows, err := tx.Query(ctx,
			`SELECT id::text, type, health_status, last_health_check,
			        health_interval_seconds(config, $2),
			        last_health_check + make_interval(secs => 2 * health_interval_seconds(config, $2))
			 FROM integrations
			 WHERE tenant_id = $1 AND deleted_at IS NULL AND health_status <> 'unknown' AND last_health_check IS NOT NULL
			   AND last_health_check + make_interval(secs => 2 * health_interval_seconds(config, $2)) <= now()
			 ORDER BY last_health_check
			 LIMIT $3
			 FOR UPDATE SKIP LOCKED`, tenantID, defSecs, sweepBatch)
		if err != nil {
			return fmt.Errorf("health sweep: %w", err)
		}
		type stale struct {
			id, typ, prev   string
			last, staleAt   time.Time
			intervalSeconds int
		}
		found, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (stale, error) {
			var x stale
			return x, r.Scan(&x.id, &x.typ, &x.prev, &x.last, &x.intervalSeconds, &x.staleAt)
		})
		if err != nil {
			return fmt.Errorf("health sweep: %w", err)
		}
		for _, x := range found {
			staleAt := x.staleAt.UTC()
			msg := fmt.Sprintf("no health check result since %s: more than twice the %s interval",
				x.last.UTC().Format(time.RFC3339), time.Duration(x.intervalSeconds)*time.Second)
			ev, err := events.New(events.SubjectIntegrationHealthChanged, s.source, tenantID, events.HealthChanged{
				IntegrationID:  x.id,
				TenantID:       tenantID,
				Type:           x.typ,
				Status:         events.HealthUnknown,
				PreviousStatus: events.HealthStatus(x.prev),
				Message:        msg,
				CheckedAt:      staleAt,
			})
			if err != nil {
				return fmt.Errorf("build %s: %w", events.SubjectIntegrationHealthChanged, err)
			}
			// The history row carries the health_changed event's id: there
			// is no health_checked event behind it.
			if _, err := tx.Exec(ctx,
				`INSERT INTO health_checks (tenant_id, integration_id, event_id, status, latency_ms, message, checked_at)
				 VALUES ($1, $2, $3, 'unknown', 0, $4, $5)`,
				tenantID, x.id, ev.ID, msg, staleAt); err != nil {
				return fmt.Errorf("health sweep: %w", mapPgError(err))
			}
			if _, err := tx.Exec(ctx,
				`UPDATE integrations SET health_status = 'unknown', last_health_check = $3 WHERE tenant_id = $1 AND id = $2`,
				tenantID, x.id, staleAt); err != nil {
				return fmt.Errorf("health sweep: %w", err)
			}
			if err := s.insertOutbox(ctx, tx, ev, x.id); err != nil {
				return err
			}
			marked++
			s.log.InfoContext(ctx, "integration health changed", slog.String("tenantId", tenantID),
				slog.String("integrationId", x.id), slog.String("from", x.prev), slog.String("to", string(events.HealthUnknown)),
				slog.String("reason", "stale"))
		}
		return nil
	})
	return marked, err
}
