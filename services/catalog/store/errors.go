package store

import (
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5/pgconn"
)

// Sentinel errors. Callers test them with errors.Is; the store wraps them
// with context. They are append-only: the API maps each to a status.
var (
	// ErrNotFound: no such row in the caller's tenant (also for another
	// tenant's row, a deleted integration, or a malformed id: none of
	// these may be told apart from outside).
	ErrNotFound = errors.New("not found")
	// ErrConflict: the change collides with another row; a *ConflictError
	// names the field.
	ErrConflict = errors.New("conflict")
	// ErrVersionMismatch: the row's version is not the If-Match version.
	ErrVersionMismatch = errors.New("version mismatch")
	// ErrUnknownType: the integration type is not in integration_types.
	ErrUnknownType = errors.New("unknown integration type")
	// ErrIdempotencyMismatch: the Idempotency-Key was used before with a
	// different request.
	ErrIdempotencyMismatch = errors.New("idempotency key reused with a different request")
	// ErrBadCursor: the pagination cursor was not made by this store.
	ErrBadCursor = errors.New("bad cursor")
	// ErrInvalid: an input the database would refuse; an *InvalidError
	// names the field.
	ErrInvalid = errors.New("invalid input")
	// ErrDeleted: the integration existed in the caller's tenant and is
	// deleted. It wraps ErrNotFound, so the API answers it as one; only
	// the bus consumers, which know the tenant from a trusted event, look
	// at the difference (a late health result is dropped, not
	// dead-lettered).
	ErrDeleted = fmt.Errorf("deleted: %w", ErrNotFound)
)

// ConflictError names the field whose value collides, e.g. "name" for a
// duplicate live integration name. It wraps ErrConflict.
type ConflictError struct {
	Field string
}

func (e *ConflictError) Error() string { return fmt.Sprintf("conflict on %s", e.Field) }
func (e *ConflictError) Unwrap() error { return ErrConflict }

// InvalidError names an input field the store refuses. It wraps ErrInvalid.
type InvalidError struct {
	Field  string
	Reason string
}

func (e *InvalidError) Error() string { return e.Field + ": " + e.Reason }
func (e *InvalidError) Unwrap() error { return ErrInvalid }

// mapPgError turns the constraint violations the schema is relied on for
// into the store's errors; the unique indexes, not pre-checks, decide
// duplicates, since a pre-check races with a concurrent insert.
func mapPgError(err error) error {
	var pe *pgconn.PgError
	if !errors.As(err, &pe) {
		return err
	}
	switch pe.Code {
	case "23505": // unique_violation
		switch pe.ConstraintName {
		case "integrations_live_name", "connection_profiles_tenant_id_name_key":
			return &ConflictError{Field: "name"}
		case "connection_profiles_one_default":
			return &ConflictError{Field: "isDefault"}
		}
		return fmt.Errorf("%w: %s", ErrConflict, pe.ConstraintName)
	case "23503": // foreign_key_violation
		switch pe.ConstraintName {
		case "integrations_type_fkey", "connection_profiles_integration_type_fkey":
			return fmt.Errorf("%w", ErrUnknownType)
		case "health_checks_tenant_id_integration_id_fkey":
			return fmt.Errorf("integration: %w", ErrNotFound)
		}
	case "23514": // check_violation
		return &InvalidError{Field: checkField(pe.ConstraintName), Reason: "refused by the database (" + pe.ConstraintName + ")"}
	case "22P02": // invalid_text_representation (a malformed uuid)
		return &InvalidError{Field: pe.ColumnName, Reason: "malformed value"}
	}
	return err
}

func checkField(constraint string) string {
	switch constraint {
	case "integrations_name_check", "connection_profiles_name_check":
		return "name"
	case "integrations_config_check":
		return "config"
	case "connection_profiles_default_config_check":
		return "defaultConfig"
	case "integrations_auth_ref_check":
		return "authRef"
	case "integrations_status_check":
		return "status"
	case "idempotency_keys_key_check":
		return "key"
	}
	return constraint
}
