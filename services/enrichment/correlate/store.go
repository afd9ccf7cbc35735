// Package correlate is the enrichment service's correlation index and its
// scoring: canonical events indexed by their correlation keys and time in
// PostgreSQL (schema enrichment, row-level security per tenant), and
// enrichment.requested answered by matching keys and temporal proximity.
package correlate

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"inthub.dev/events"
	"inthub.dev/pkg/fault"
)

// Store is the correlation index. Every query runs in a transaction with
// the tenant set, so row-level security, not only the WHERE clause, keeps
// tenants apart.
type Store struct {
	pool *pgxpool.Pool
}

// NewStore uses pool, which must connect as AppRole.
func NewStore(pool *pgxpool.Pool) (*Store, error) {
	if pool == nil {
		return nil, errors.New("correlate: a pgx pool connected as " + AppRole + " is required")
	}
	return &Store{pool: pool}, nil
}

// Record is one indexed canonical event.
type Record struct {
	EventID           string
	TenantID          string
	Category          string
	Kind              string
	Provider          string
	Summary           string
	SourceIntegration string
	OccurredAt        time.Time
	Hints             []events.CorrelationHint
	Links             []events.EvidenceLink
}

// Key is the normalised form of a hint that the index matches on.
func Key(key, value string) string {
	return key + "=" + strings.ToLower(strings.TrimSpace(value))
}

// keysOf lists the matchable keys of hints: temporal hints say nothing to
// match on.
func keysOf(hints []events.CorrelationHint) []string {
	seen := map[string]bool{}
	var out []string
	for _, h := range hints {
		if h.Type == events.HintTemporal {
			continue
		}
		k := Key(h.Key, h.Value)
		if !seen[k] {
			seen[k] = true
			out = append(out, k)
		}
	}
	if out == nil {
		out = []string{}
	}
	return out
}

func (s *Store) inTenant(ctx context.Context, tenantID string, f func(pgx.Tx) error) error {
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SELECT set_config('app.tenant_id', $1, true)", tenantID); err != nil {
			return err
		}
		return f(tx)
	})
	return classify(err)
}

// classify: bad data is permanent, anything else (connection, server
// restart, serialization) transient.
func classify(err error) error {
	if err == nil {
		return nil
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		switch pe.Code[:2] {
		case "22", "23", "42":
			return fault.Permanent(fmt.Errorf("correlate: %w", err))
		}
	}
	if errors.Is(err, context.Canceled) {
		return err
	}
	return fault.Transient(fmt.Errorf("correlate: %w", err))
}

// Index stores a canonical event under its CloudEvents id. Indexing the
// same id again changes nothing (redeliveries, replays).
func (s *Store) Index(ctx context.Context, eventID string, c events.Canonical) error {
	hints, err := json.Marshal(orEmpty(c.Context.CorrelationHints))
	if err != nil {
		return fault.Permanent(err)
	}
	links, err := json.Marshal(orEmpty(c.Context.EvidenceLinks))
	if err != nil {
		return fault.Permanent(err)
	}
	return s.inTenant(ctx, c.TenantID, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `INSERT INTO enrichment.events
			(tenant_id, event_id, category, kind, provider, summary, source_integration, occurred_at, keys, hints, links)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
			ON CONFLICT (tenant_id, event_id) DO NOTHING`,
			c.TenantID, eventID, c.Category, c.Kind, c.Provider, c.Summary, c.Context.SourceIntegration,
			c.Context.OriginalTimestamp, keysOf(c.Context.CorrelationHints), hints, links)
		return err
	})
}

// Candidates returns up to limit events of tenantID that occurred in
// [from, to], other than exclude: those sharing a key with keys first, then
// the closest in time to at.
func (s *Store) Candidates(ctx context.Context, tenantID, exclude string, keys []string, at, from, to time.Time, limit int) ([]Record, error) {
	if keys == nil {
		keys = []string{}
	}
	var out []Record
	err := s.inTenant(ctx, tenantID, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `SELECT event_id, tenant_id, category, kind, provider, summary, source_integration,
				occurred_at, hints, links
			FROM enrichment.events
			WHERE tenant_id = $1 AND occurred_at BETWEEN $2 AND $3 AND event_id <> $4
			ORDER BY keys && $5 DESC, abs(extract(epoch FROM occurred_at - $6)), event_id
			LIMIT $7`, tenantID, from, to, exclude, keys, at, limit)
		if err != nil {
			return err
		}
		out, err = pgx.CollectRows(rows, func(row pgx.CollectableRow) (Record, error) {
			var r Record
			var hints, links []byte
			if err := row.Scan(&r.EventID, &r.TenantID, &r.Category, &r.Kind, &r.Provider, &r.Summary,
				&r.SourceIntegration, &r.OccurredAt, &hints, &links); err != nil {
				return r, err
			}
			r.OccurredAt = r.OccurredAt.UTC()
			if err := json.Unmarshal(hints, &r.Hints); err != nil {
				return r, err
			}
			return r, json.Unmarshal(links, &r.Links)
		})
		return err
	})
	return out, err
}

// Purge deletes what was indexed before before, in batches, and returns
// how many events it deleted.
func (s *Store) Purge(ctx context.Context, before time.Time) (int64, error) {
	const batch = 5000
	var total int64
	for {
		var n int64
		if err := s.pool.QueryRow(ctx, "SELECT enrichment.purge($1, $2)", before, batch).Scan(&n); err != nil {
			return total, classify(err)
		}
		total += n
		if n < batch {
			return total, nil
		}
	}
}

func orEmpty[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

// Ping checks that PostgreSQL answers, for /readyz.
func (s *Store) Ping(ctx context.Context) error { return s.pool.Ping(ctx) }
