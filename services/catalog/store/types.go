package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// IntegrationType is a kind of integration the installation offers (the
// same for every tenant), with the JSON Schema of its config.
type IntegrationType struct {
	ID           string          `json:"id"`
	DisplayName  string          `json:"displayName"`
	Description  string          `json:"description"`
	Provider     string          `json:"provider"`
	ConfigSchema json.RawMessage `json:"configSchema"`
	Capabilities []string        `json:"capabilities"`
	Builtin      bool            `json:"builtin"`
}

const typeCols = `id, display_name, description, provider, config_schema, capabilities, builtin`

func scanType(row pgx.Row) (IntegrationType, error) {
	var t IntegrationType
	err := row.Scan(&t.ID, &t.DisplayName, &t.Description, &t.Provider, &t.ConfigSchema, &t.Capabilities, &t.Builtin)
	if t.Capabilities == nil {
		t.Capabilities = []string{}
	}
	return t, err
}

// ListTypes returns every integration type, ordered by id. The table is
// global (no tenant), so this needs no tenant transaction.
func (s *Store) ListTypes(ctx context.Context) ([]IntegrationType, error) {
	var ts []IntegrationType
	err := s.read(ctx, func() error {
		rows, err := s.pool.Query(ctx, `SELECT `+typeCols+` FROM integration_types ORDER BY id`)
		if err != nil {
			return err
		}
		ts, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (IntegrationType, error) { return scanType(r) })
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("list types: %w", err)
	}
	return ts, nil
}

// GetType returns one integration type, or ErrNotFound.
func (s *Store) GetType(ctx context.Context, id string) (IntegrationType, error) {
	var t IntegrationType
	err := s.read(ctx, func() (err error) {
		t, err = scanType(s.pool.QueryRow(ctx, `SELECT `+typeCols+` FROM integration_types WHERE id = $1`, id))
		return err
	})
	if errors.Is(err, pgx.ErrNoRows) {
		return IntegrationType{}, fmt.Errorf("integration type %q: %w", id, ErrNotFound)
	}
	if err != nil {
		return IntegrationType{}, fmt.Errorf("get type %q: %w", id, err)
	}
	return t, nil
}

// SeedTypes upserts types as the table owner (inthub_app may only read
// integration_types), in one transaction; the catalog calls it at start
// with its built-in types, so a new release's schemas and capabilities
// replace the old ones. A row that exists as non-builtin (registered by a
// plugin) is left alone: seeding does not take over a plugin's type.
func SeedTypes(ctx context.Context, owner *pgxpool.Pool, types []IntegrationType) error {
	now := time.Now().UTC()
	return pgx.BeginFunc(ctx, owner, func(tx pgx.Tx) error {
		for _, t := range types {
			schema, err := jsonObject(t.ConfigSchema)
			if err != nil {
				return fmt.Errorf("seed type %q: config schema: %w", t.ID, err)
			}
			caps := t.Capabilities
			if caps == nil {
				caps = []string{}
			}
			if _, err := tx.Exec(ctx,
				`INSERT INTO integration_types AS it (id, display_name, description, provider, config_schema, capabilities, builtin, created_at, updated_at)
				 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8)
				 ON CONFLICT (id) DO UPDATE SET
				   display_name = EXCLUDED.display_name, description = EXCLUDED.description,
				   provider = EXCLUDED.provider, config_schema = EXCLUDED.config_schema,
				   capabilities = EXCLUDED.capabilities, updated_at = EXCLUDED.updated_at
				 WHERE it.builtin`,
				t.ID, t.DisplayName, t.Description, t.Provider, schema, caps, t.Builtin, now); err != nil {
				return fmt.Errorf("seed type %q: %w", t.ID, err)
			}
		}
		return nil
	})
}
