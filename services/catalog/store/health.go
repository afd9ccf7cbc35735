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
			return fmt.Errorf("integration %s is deleted: %w", integrationID, ErrNotFound)
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
