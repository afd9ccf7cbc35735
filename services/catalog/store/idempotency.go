package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// IdempotencyTTL is how long a stored response is replayed; an older key
// is treated as unused (and PurgeIdempotencyKeys deletes it).
const IdempotencyTTL = 24 * time.Hour

// IdempotentResponse is the response first given to a request with an
// Idempotency-Key, replayed to its repeats.
type IdempotentResponse struct {
	Status  int               `json:"status"`
	Body    json.RawMessage   `json:"body"`
	Headers map[string]string `json:"headers,omitempty"`
}

// Idempotent runs do at most once per (tenant, key) within
// IdempotencyTTL, in one transaction with the key's row, so the response is
// stored if and only if do's writes commit.
//
// The key is claimed first with INSERT ... ON CONFLICT DO NOTHING. A
// concurrent request with the same key blocks on the unique index until the
// claiming transaction ends: after a commit it finds the stored response
// and replays it (replayed = true) or, if requestHash differs, gets
// ErrIdempotencyMismatch; after a rollback its own insert succeeds and it
// runs do itself. So of N concurrent identical requests exactly one runs do.
//
// If do returns an error nothing is stored and the transaction rolls back:
// a retry with the same key runs again. A response that do returns without
// error is stored, whatever its status.
func (s *Store) Idempotent(ctx context.Context, tenantID, key, requestHash string, do func(tx pgx.Tx) (IdempotentResponse, error)) (resp IdempotentResponse, replayed bool, err error) {
	if n := len(key); n < 1 || n > 255 {
		return IdempotentResponse{}, false, &InvalidError{Field: "Idempotency-Key", Reason: "must be 1 to 255 characters"}
	}
	err = s.InTenant(ctx, tenantID, func(tx pgx.Tx) error {
		resp, replayed, err = s.idempotentTx(ctx, tx, key, requestHash, do)
		return err
	})
	if err != nil {
		return IdempotentResponse{}, false, err
	}
	return resp, replayed, nil
}

func (s *Store) idempotentTx(ctx context.Context, tx pgx.Tx, key, requestHash string, do func(tx pgx.Tx) (IdempotentResponse, error)) (IdempotentResponse, bool, error) {
	tenant := "current_setting('app.tenant_id')::uuid"
	now := s.now()
	// An expired key is free again even if no purge has run.
	if _, err := tx.Exec(ctx,
		`DELETE FROM idempotency_keys WHERE tenant_id = `+tenant+` AND key = $1 AND created_at < $2`,
		key, now.Add(-IdempotencyTTL)); err != nil {
		return IdempotentResponse{}, false, fmt.Errorf("idempotency: expire key: %w", err)
	}
	// The claim: status 0 marks a row whose response is not known yet. Only
	// its own transaction ever sees it (it is replaced before commit).
	tag, err := tx.Exec(ctx,
		`INSERT INTO idempotency_keys (tenant_id, key, request_hash, status, response, created_at)
		 VALUES (`+tenant+`, $1, $2, 0, 'null', $3)
		 ON CONFLICT (tenant_id, key) DO NOTHING`,
		key, requestHash, now)
	if err != nil {
		return IdempotentResponse{}, false, fmt.Errorf("idempotency: claim key: %w", mapPgError(err))
	}
	if tag.RowsAffected() == 0 {
		return s.replay(ctx, tx, key, requestHash)
	}
	resp, err := do(tx)
	if err != nil {
		return IdempotentResponse{}, false, err
	}
	if resp.Status == 0 {
		return IdempotentResponse{}, false, errors.New("idempotency: the handler returned no status")
	}
	body, err := jsonObjectOrValue(resp.Body)
	if err != nil {
		return IdempotentResponse{}, false, fmt.Errorf("idempotency: response body: %w", err)
	}
	headers := resp.Headers
	if headers == nil {
		headers = map[string]string{}
	}
	// inthub_app may not UPDATE idempotency_keys (migrations/0001 grants
	// SELECT, INSERT, DELETE), so the claim is replaced by delete and
	// insert; in one transaction, nobody else ever sees the gap.
	if _, err := tx.Exec(ctx,
		`DELETE FROM idempotency_keys WHERE tenant_id = `+tenant+` AND key = $1`, key); err != nil {
		return IdempotentResponse{}, false, fmt.Errorf("idempotency: release claim: %w", err)
	}
	if _, err := tx.Exec(ctx,
		`INSERT INTO idempotency_keys (tenant_id, key, request_hash, status, response, headers, created_at)
		 VALUES (`+tenant+`, $1, $2, $3, $4, $5, $6)`,
		key, requestHash, resp.Status, body, headers, now); err != nil {
		return IdempotentResponse{}, false, fmt.Errorf("idempotency: store response: %w", err)
	}
	resp.Body = body
	resp.Headers = headers
	return resp, false, nil
}

func (s *Store) replay(ctx context.Context, tx pgx.Tx, key, requestHash string) (IdempotentResponse, bool, error) {
	var (
		hash string
		resp IdempotentResponse
	)
	// A new statement, so in READ COMMITTED it sees the row committed by
	// the transaction whose claim the insert waited for.
	err := tx.QueryRow(ctx,
		`SELECT request_hash, status, response, headers FROM idempotency_keys
		 WHERE tenant_id = current_setting('app.tenant_id')::uuid AND key = $1`, key).
		Scan(&hash, &resp.Status, &resp.Body, &resp.Headers)
	if errors.Is(err, pgx.ErrNoRows) {
		// The row was purged between the insert and this read: rare
		// enough that the caller's retry is the answer.
		return IdempotentResponse{}, false, fmt.Errorf("idempotency: key vanished while replaying: %w", ErrConflict)
	}
	if err != nil {
		return IdempotentResponse{}, false, fmt.Errorf("idempotency: read key: %w", err)
	}
	if hash != requestHash {
		return IdempotentResponse{}, false, fmt.Errorf("idempotency key %q: %w", key, ErrIdempotencyMismatch)
	}
	if resp.Status == 0 {
		// Cannot happen (a claim is replaced before its commit), but a
		// claim must never be replayed as a response.
		return IdempotentResponse{}, false, fmt.Errorf("idempotency key %q: still in progress: %w", key, ErrConflict)
	}
	return resp, true, nil
}

// jsonObjectOrValue returns b, or JSON null for an empty body.
func jsonObjectOrValue(b json.RawMessage) (json.RawMessage, error) {
	if len(b) == 0 {
		return json.RawMessage("null"), nil
	}
	if !json.Valid(b) {
		return nil, errors.New("not valid JSON")
	}
	return b, nil
}

// PurgeIdempotencyKeys deletes the tenant's keys created before before
// (normally now - IdempotencyTTL) and returns how many it deleted.
//
// It is per tenant by design: row-level security hides other tenants' keys
// from inthub_app, and that role enumerates no tenants. A cross-tenant
// sweep would need a role with its own policy on idempotency_keys (as the
// forwarder has on outbox). Correctness does not depend on purging:
// Idempotent treats an expired key as unused, and callers purge a tenant's
// old keys when convenient (say, after a POST of that tenant).
func (s *Store) PurgeIdempotencyKeys(ctx context.Context, tenantID string, before time.Time) (n int64, err error) {
	err = s.InTenant(ctx, tenantID, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx,
			`DELETE FROM idempotency_keys WHERE tenant_id = current_setting('app.tenant_id')::uuid AND created_at < $1`, before)
		if err != nil {
			return fmt.Errorf("purge idempotency keys: %w", err)
		}
		n = tag.RowsAffected()
		return nil
	})
	return n, err
}
