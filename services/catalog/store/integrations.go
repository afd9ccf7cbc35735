package store

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"

	"inthub.dev/events"
)

// Integration is a tenant's connection to an external tool, as stored.
// Its JSON form is what audit rows record.
type Integration struct {
	ID              string          `json:"id"`
	TenantID        string          `json:"tenantId"`
	Type            string          `json:"type"`
	Name            string          `json:"name"`
	Config          json.RawMessage `json:"config"`
	AuthRef         string          `json:"authRef,omitempty"`
	Status          string          `json:"status"`
	HealthStatus    string          `json:"healthStatus"`
	LastHealthCheck *time.Time      `json:"lastHealthCheck,omitempty"`
	Version         int64           `json:"version"`
	CreatedAt       time.Time       `json:"createdAt"`
	UpdatedAt       time.Time       `json:"updatedAt"`
	CreatedBy       string          `json:"createdBy"`
	// DeletedAt is set only on the row DeleteIntegration returns.
	DeletedAt *time.Time `json:"deletedAt,omitempty"`
}

// IntegrationInput is what a caller may set. The config has been checked
// against the type's schema before it reaches the store (it holds AuthRef
// URIs, never secrets).
type IntegrationInput struct {
	Type    string
	Name    string
	Config  json.RawMessage
	AuthRef string
	Status  string // "" = active
}

// ListOptions selects a page of integrations.
type ListOptions struct {
	Type   string // only this type, if set
	Limit  int    // default 50, at most 500
	Cursor string // opaque, the next value of a previous page
}

const (
	defaultLimit = 50
	maxLimit     = 500
)

const integrationCols = `tenant_id, id, type, name, config, COALESCE(auth_ref, ''), status,
	health_status, last_health_check, version, created_at, updated_at, deleted_at, created_by`

func scanIntegration(row pgx.Row) (Integration, error) {
	var it Integration
	err := row.Scan(&it.TenantID, &it.ID, &it.Type, &it.Name, &it.Config, &it.AuthRef, &it.Status,
		&it.HealthStatus, &it.LastHealthCheck, &it.Version, &it.CreatedAt, &it.UpdatedAt, &it.DeletedAt, &it.CreatedBy)
	if err != nil {
		return Integration{}, err
	}
	it.CreatedAt = it.CreatedAt.UTC()
	it.UpdatedAt = it.UpdatedAt.UTC()
	it.LastHealthCheck = utcPtr(it.LastHealthCheck)
	it.DeletedAt = utcPtr(it.DeletedAt)
	return it, nil
}

func utcPtr(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	u := t.UTC()
	return &u
}

// event returns the integration as integration.created/updated carry it.
func (it Integration) event() events.Integration {
	return events.Integration{
		ID:           it.ID,
		TenantID:     it.TenantID,
		Type:         it.Type,
		Name:         it.Name,
		Config:       it.Config,
		AuthRef:      it.AuthRef,
		Status:       it.Status,
		HealthStatus: events.HealthStatus(it.HealthStatus),
		Version:      it.Version,
		CreatedAt:    it.CreatedAt,
		UpdatedAt:    it.UpdatedAt,
	}
}

var statuses = map[string]bool{"active": true, "disabled": true, "offline": true}

// normalize checks what the schema's constraints would refuse, so that the
// caller gets the field's name rather than a constraint's, and fills the
// defaults.
func (in IntegrationInput) normalize(create bool) (IntegrationInput, error) {
	if create && in.Type == "" {
		return in, &InvalidError{Field: "type", Reason: "required"}
	}
	if n := utf8.RuneCountInString(in.Name); n < 1 || n > 200 {
		return in, &InvalidError{Field: "name", Reason: "must be 1 to 200 characters"}
	}
	cfg, err := jsonObject(in.Config)
	if err != nil {
		return in, &InvalidError{Field: "config", Reason: err.Error()}
	}
	in.Config = cfg
	if in.AuthRef != "" && !isAuthRef(in.AuthRef) {
		return in, &InvalidError{Field: "authRef", Reason: "must be an AuthRef URI (authref://env/..., authref://file/..., authref://vault/...)"}
	}
	if in.Status == "" {
		in.Status = "active"
	}
	if !statuses[in.Status] {
		return in, &InvalidError{Field: "status", Reason: "must be active, disabled or offline"}
	}
	return in, nil
}

func isAuthRef(s string) bool {
	for _, p := range []string{"authref://env/", "authref://file/", "authref://vault/"} {
		if rest, ok := strings.CutPrefix(s, p); ok && rest != "" {
			return true
		}
	}
	return false
}

// jsonObject returns b, or {} for none, if it is one JSON object.
func jsonObject(b json.RawMessage) (json.RawMessage, error) {
	t := bytes.TrimSpace(b)
	if len(t) == 0 {
		return json.RawMessage(`{}`), nil
	}
	if t[0] != '{' || !json.Valid(t) {
		return nil, errors.New("must be a JSON object")
	}
	return t, nil
}

// ListIntegrations returns a page of the tenant's live integrations in
// (created_at, id) order, and the cursor of the next page ("" on the last).
// Keyset pagination: a page starts after the previous page's last row, so
// rows inserted meanwhile cause neither duplicates nor gaps.
func (s *Store) ListIntegrations(ctx context.Context, tenantID string, o ListOptions) (items []Integration, next string, err error) {
	err = s.InTenant(ctx, tenantID, func(tx pgx.Tx) error {
		items, next, err = s.ListIntegrationsTx(ctx, tx, tenantID, o)
		return err
	})
	return items, next, err
}

// ListIntegrationsTx is ListIntegrations in the caller's tenant transaction.
func (s *Store) ListIntegrationsTx(ctx context.Context, tx pgx.Tx, tenantID string, o ListOptions) ([]Integration, string, error) {
	tid, err := parseTenant(tenantID)
	if err != nil {
		return nil, "", err
	}
	limit := clampLimit(o.Limit)
	args := []any{tid}
	q := `SELECT ` + integrationCols + ` FROM integrations WHERE tenant_id = $1 AND deleted_at IS NULL`
	if o.Type != "" {
		args = append(args, o.Type)
		q += fmt.Sprintf(" AND type = $%d", len(args))
	}
	if o.Cursor != "" {
		c, err := decodeCursor(o.Cursor, false)
		if err != nil {
			return nil, "", err
		}
		args = append(args, c.t, c.id)
		q += fmt.Sprintf(" AND (created_at, id) > ($%d, $%d)", len(args)-1, len(args))
	}
	args = append(args, limit+1)
	q += fmt.Sprintf(" ORDER BY created_at, id LIMIT $%d", len(args))
	rows, err := tx.Query(ctx, q, args...)
	if err != nil {
		return nil, "", fmt.Errorf("list integrations: %w", err)
	}
	items, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Integration, error) { return scanIntegration(r) })
	if err != nil {
		return nil, "", fmt.Errorf("list integrations: %w", err)
	}
	next := ""
	if len(items) > limit {
		items = items[:limit]
		last := items[limit-1]
		next = encodeCursor(last.CreatedAt, last.ID)
	}
	return items, next, nil
}

func clampLimit(n int) int {
	switch {
	case n <= 0:
		return defaultLimit
	case n > maxLimit:
		return maxLimit
	}
	return n
}

// GetIntegration returns a live integration of the tenant; anything else
// (deleted, another tenant's, a malformed id) is ErrNotFound.
func (s *Store) GetIntegration(ctx context.Context, tenantID, id string) (it Integration, err error) {
	err = s.InTenant(ctx, tenantID, func(tx pgx.Tx) error {
		it, err = s.GetIntegrationTx(ctx, tx, tenantID, id)
		return err
	})
	return it, err
}

// GetIntegrationTx is GetIntegration in the caller's tenant transaction.
func (s *Store) GetIntegrationTx(ctx context.Context, tx pgx.Tx, tenantID, id string) (Integration, error) {
	tid, err := parseTenant(tenantID)
	if err != nil {
		return Integration{}, err
	}
	return s.getIntegration(ctx, tx, tid, id, "")
}

func (s *Store) getIntegration(ctx context.Context, tx pgx.Tx, tenantID, id, lock string) (Integration, error) {
	cid, ok := parseID(id)
	if !ok {
		return Integration{}, fmt.Errorf("integration %q: %w", id, ErrNotFound)
	}
	it, err := scanIntegration(tx.QueryRow(ctx,
		`SELECT `+integrationCols+` FROM integrations WHERE tenant_id = $1 AND id = $2 AND deleted_at IS NULL `+lock,
		tenantID, cid))
	if errors.Is(err, pgx.ErrNoRows) {
		return Integration{}, fmt.Errorf("integration %s: %w", cid, ErrNotFound)
	}
	if err != nil {
		return Integration{}, fmt.Errorf("get integration %s: %w", cid, err)
	}
	return it, nil
}

// CreateIntegration stores a new integration with its audit row and its
// integration.created event, in one transaction. A live integration of the
// same name in the tenant is a *ConflictError{Field: "name"}; a type not in
// integration_types is ErrUnknownType.
func (s *Store) CreateIntegration(ctx context.Context, tenantID, actor string, in IntegrationInput) (it Integration, err error) {
	err = s.InTenant(ctx, tenantID, func(tx pgx.Tx) error {
		it, err = s.CreateIntegrationTx(ctx, tx, tenantID, actor, in)
		return err
	})
	return it, err
}

// CreateIntegrationTx is CreateIntegration in the caller's tenant
// transaction (from InTenant or Idempotent), for callers that write more in
// the same transaction. After an error the transaction is aborted.
func (s *Store) CreateIntegrationTx(ctx context.Context, tx pgx.Tx, tenantID, actor string, in IntegrationInput) (Integration, error) {
	tid, err := parseTenant(tenantID)
	if err != nil {
		return Integration{}, err
	}
	if actor == "" {
		return Integration{}, &InvalidError{Field: "actor", Reason: "required"}
	}
	in, err = in.normalize(true)
	if err != nil {
		return Integration{}, err
	}
	now := s.now()
	it, err := scanIntegration(tx.QueryRow(ctx,
		`INSERT INTO integrations (tenant_id, type, name, config, auth_ref, status, created_at, updated_at, created_by)
		 VALUES ($1, $2, $3, $4, NULLIF($5, ''), $6, $7, $7, $8)
		 RETURNING `+integrationCols,
		tid, in.Type, in.Name, in.Config, in.AuthRef, in.Status, now, actor))
	if err != nil {
		return Integration{}, fmt.Errorf("create integration: %w", mapPgError(err))
	}
	if err := s.audit(ctx, tx, tid, actor, "integration.create", "integration", it.ID, nil, it, now); err != nil {
		return Integration{}, err
	}
	if err := s.emit(ctx, tx, tid, it.ID, events.SubjectIntegrationCreated, events.IntegrationCreated{Integration: it.event()}); err != nil {
		return Integration{}, err
	}
	s.log.InfoContext(ctx, "integration created", slog.String("tenantId", tid), slog.String("integrationId", it.ID), slog.String("type", it.Type))
	return it, nil
}

// UpdateIntegration replaces the name, config, authRef and status of a live
// integration. The type cannot change (*ConflictError{Field: "type"}).
// ifVersion 0 updates whatever the version; otherwise a different current
// version is ErrVersionMismatch. The version grows by one.
func (s *Store) UpdateIntegration(ctx context.Context, tenantID, actor, id string, ifVersion int64, in IntegrationInput) (it Integration, err error) {
	err = s.InTenant(ctx, tenantID, func(tx pgx.Tx) error {
		it, err = s.UpdateIntegrationTx(ctx, tx, tenantID, actor, id, ifVersion, in)
		return err
	})
	return it, err
}

// UpdateIntegrationTx is UpdateIntegration in the caller's tenant transaction.
func (s *Store) UpdateIntegrationTx(ctx context.Context, tx pgx.Tx, tenantID, actor, id string, ifVersion int64, in IntegrationInput) (Integration, error) {
	tid, err := parseTenant(tenantID)
	if err != nil {
		return Integration{}, err
	}
	if actor == "" {
		return Integration{}, &InvalidError{Field: "actor", Reason: "required"}
	}
	in, err = in.normalize(false)
	if err != nil {
		return Integration{}, err
	}
	// Locked so that the version check and the change are one step.
	before, err := s.getIntegration(ctx, tx, tid, id, "FOR UPDATE")
	if err != nil {
		return Integration{}, err
	}
	if ifVersion != 0 && before.Version != ifVersion {
		return Integration{}, fmt.Errorf("integration %s is at version %d, not %d: %w", before.ID, before.Version, ifVersion, ErrVersionMismatch)
	}
	if in.Type != "" && in.Type != before.Type {
		return Integration{}, &ConflictError{Field: "type"}
	}
	now := s.now()
	it, err := scanIntegration(tx.QueryRow(ctx,
		`UPDATE integrations SET name = $3, config = $4, auth_ref = NULLIF($5, ''), status = $6,
		        version = version + 1, updated_at = $7
		 WHERE tenant_id = $1 AND id = $2
		 RETURNING `+integrationCols,
		tid, before.ID, in.Name, in.Config, in.AuthRef, in.Status, now))
	if err != nil {
		return Integration{}, fmt.Errorf("update integration %s: %w", before.ID, mapPgError(err))
	}
	if err := s.audit(ctx, tx, tid, actor, "integration.update", "integration", it.ID, before, it, now); err != nil {
		return Integration{}, err
	}
	if err := s.emit(ctx, tx, tid, it.ID, events.SubjectIntegrationUpdated, events.IntegrationUpdated{Integration: it.event()}); err != nil {
		return Integration{}, err
	}
	s.log.InfoContext(ctx, "integration updated", slog.String("tenantId", tid), slog.String("integrationId", it.ID), slog.Int64("version", it.Version))
	return it, nil
}

// DeleteIntegration soft-deletes a live integration (deleted_at is set, the
// version grows by one) and returns it as it was deleted. The name is free
// again at once: the unique index covers live rows only.
func (s *Store) DeleteIntegration(ctx context.Context, tenantID, actor, id string, ifVersion int64) (it Integration, err error) {
	err = s.InTenant(ctx, tenantID, func(tx pgx.Tx) error {
		it, err = s.DeleteIntegrationTx(ctx, tx, tenantID, actor, id, ifVersion)
		return err
	})
	return it, err
}

// DeleteIntegrationTx is DeleteIntegration in the caller's tenant transaction.
func (s *Store) DeleteIntegrationTx(ctx context.Context, tx pgx.Tx, tenantID, actor, id string, ifVersion int64) (Integration, error) {
	tid, err := parseTenant(tenantID)
	if err != nil {
		return Integration{}, err
	}
	if actor == "" {
		return Integration{}, &InvalidError{Field: "actor", Reason: "required"}
	}
	before, err := s.getIntegration(ctx, tx, tid, id, "FOR UPDATE")
	if err != nil {
		return Integration{}, err
	}
	if ifVersion != 0 && before.Version != ifVersion {
		return Integration{}, fmt.Errorf("integration %s is at version %d, not %d: %w", before.ID, before.Version, ifVersion, ErrVersionMismatch)
	}
	now := s.now()
	it, err := scanIntegration(tx.QueryRow(ctx,
		`UPDATE integrations SET deleted_at = $3, updated_at = $3, version = version + 1
		 WHERE tenant_id = $1 AND id = $2
		 RETURNING `+integrationCols,
		tid, before.ID, now))
	if err != nil {
		return Integration{}, fmt.Errorf("delete integration %s: %w", before.ID, mapPgError(err))
	}
	if err := s.audit(ctx, tx, tid, actor, "integration.delete", "integration", it.ID, before, it, now); err != nil {
		return Integration{}, err
	}
	if err := s.emit(ctx, tx, tid, it.ID, events.SubjectIntegrationDeleted, events.IntegrationDeleted{
		ID: it.ID, TenantID: it.TenantID, Type: it.Type, Name: it.Name, DeletedAt: *it.DeletedAt,
	}); err != nil {
		return Integration{}, err
	}
	s.log.InfoContext(ctx, "integration deleted", slog.String("tenantId", tid), slog.String("integrationId", it.ID))
	return it, nil
}

// audit writes one audit_logs row; before and after are encoded as JSON,
// nil for none.
func (s *Store) audit(ctx context.Context, tx pgx.Tx, tenantID, actor, action, entityType, entityID string, before, after any, at time.Time) error {
	b, err := jsonOrNil(before)
	if err != nil {
		return fmt.Errorf("audit %s: %w", action, err)
	}
	a, err := jsonOrNil(after)
	if err != nil {
		return fmt.Errorf("audit %s: %w", action, err)
	}
	if _, err := tx.Exec(ctx,
		`INSERT INTO audit_logs (tenant_id, actor, action, entity_type, entity_id, before, after, at)
		 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`,
		tenantID, actor, action, entityType, entityID, b, a, at); err != nil {
		return fmt.Errorf("audit %s: %w", action, err)
	}
	return nil
}

func jsonOrNil(v any) (any, error) {
	if v == nil {
		return nil, nil
	}
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	return json.RawMessage(b), nil
}

// emit builds an event of the catalog and writes it to the outbox in tx.
func (s *Store) emit(ctx context.Context, tx pgx.Tx, tenantID, aggregateID, subject string, payload any) error {
	ev, err := events.New(subject, s.source, tenantID, payload)
	if err != nil {
		return fmt.Errorf("build %s: %w", subject, err)
	}
	return s.insertOutbox(ctx, tx, ev, aggregateID)
}
