package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"inthub.dev/events"
	"inthub.dev/services/catalog/outbox"
)

// Plugin is a loaded out-of-process connector plugin as the catalog
// records it: its plugin_metadata row and its integration_types row.
type Plugin struct {
	ID           string          `json:"id"`
	Type         string          `json:"type"`
	Version      string          `json:"version"`
	Capabilities []string        `json:"capabilities"`
	Path         string          `json:"path"`
	Checksum     string          `json:"checksum"`
	DiscoveredAt time.Time       `json:"discoveredAt"`
	Provider     string          `json:"provider"`
	DisplayName  string          `json:"displayName"`
	Description  string          `json:"description"`
	ConfigSchema json.RawMessage `json:"configSchema"`
}

// PluginChanges is what SyncPlugins changed and announced.
type PluginChanges struct {
	Registered   []Plugin
	Unregistered []Plugin
}

// PluginTenant is the tenant_id of plugin events' outbox rows: plugin
// events are global (the envelope has no tenantid), and the outbox row
// needs a tenant; the nil UUID is never a tenant's.
const PluginTenant = "00000000-0000-0000-0000-000000000000"

// pluginNamespace derives a plugin's outbox aggregate id from its plugin
// id, so that one plugin's events keep their order (one partition).
var pluginNamespace = uuid.MustParse("4f1e8a52-3c1b-4d8e-9a51-6b3c2d1e0f7a")

// pluginLock serialises SyncPlugins across catalog replicas
// (pg_advisory_xact_lock(outbox.LockClass, pluginLock) never collides with
// the forwarder's partitions, 0..Partitions-1).
const pluginLock = 1 << 20

// ListPlugins returns the recorded plugins, by type.
func (s *Store) ListPlugins(ctx context.Context) ([]Plugin, error) {
	var ps []Plugin
	err := s.read(ctx, func() error {
		var err error
		ps, err = listPlugins(ctx, s.pool)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("list plugins: %w", err)
	}
	return ps, nil
}

type querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

func listPlugins(ctx context.Context, q querier) ([]Plugin, error) {
	rows, err := q.Query(ctx,
		`SELECT p.plugin_id, p.type, p.version, p.capabilities, p.path, p.checksum, p.discovered_at,
		        coalesce(t.provider, ''), coalesce(t.display_name, ''), coalesce(t.description, ''), coalesce(t.config_schema, '{}'::jsonb)
		   FROM plugin_metadata p LEFT JOIN integration_types t ON t.id = p.type AND NOT t.builtin
		  ORDER BY p.type, p.plugin_id`)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (Plugin, error) {
		var p Plugin
		err := r.Scan(&p.ID, &p.Type, &p.Version, &p.Capabilities, &p.Path, &p.Checksum, &p.DiscoveredAt,
			&p.Provider, &p.DisplayName, &p.Description, &p.ConfigSchema)
		p.DiscoveredAt = p.DiscoveredAt.UTC()
		if p.Capabilities == nil {
			p.Capabilities = []string{}
		}
		return p, err
	})
}

// SyncPlugins makes plugin_metadata and the plugins' integration_types
// rows match current (the plugins loaded now), as the table owner
// (inthub_app may only read both tables), and writes plugin.registered
// for each plugin that is new or whose binary changed and
// plugin.unregistered for each that is gone (or changed), to the outbox in
// the same transaction. Comparing with the table rather than with the
// previous scan means a restart of the catalog announces nothing that did
// not change, and replicas that scan the same directories agree.
//
// A removed plugin's type row stays while integrations of the type exist
// (their foreign key needs it); they fail "no connector" until the plugin
// is back.
//
// The outbox rows carry tenant PluginTenant. Under the outbox's forced
// row-level security the owner can write them only if it bypasses RLS
// (a superuser, as in the default setup, or BYPASSRLS).
func SyncPlugins(ctx context.Context, owner *pgxpool.Pool, current []Plugin, source string, now time.Time) (PluginChanges, error) {
	now = now.UTC().Truncate(time.Microsecond)
	if source == "" {
		source = DefaultSource
	}
	var ch PluginChanges
	err := pgx.BeginFunc(ctx, owner, func(tx pgx.Tx) error {
		ch = PluginChanges{}
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1, $2)`, outbox.LockClass, pluginLock); err != nil {
			return err
		}
		recorded, err := listPlugins(ctx, tx)
		if err != nil {
			return err
		}
		byID := map[string]Plugin{}
		for _, p := range recorded {
			byID[p.ID] = p
		}
		keep := map[string]bool{}
		for _, p := range current {
			keep[p.ID] = true
			old, ok := byID[p.ID]
			if ok && old.Checksum == p.Checksum && old.Type == p.Type {
				continue
			}
			if ok {
				ch.Unregistered = append(ch.Unregistered, old)
			}
			p.DiscoveredAt = now
			ch.Registered = append(ch.Registered, p)
		}
		for _, p := range recorded {
			if !keep[p.ID] {
				ch.Unregistered = append(ch.Unregistered, p)
			}
		}
		for _, p := range ch.Unregistered {
			if err := unrecordPlugin(ctx, tx, p, slices.ContainsFunc(ch.Registered, func(r Plugin) bool { return r.Type == p.Type })); err != nil {
				return err
			}
			if err := emitPlugin(ctx, tx, p.ID, source, events.PluginUnregistered{PluginID: p.ID, Type: p.Type,
				Version: p.Version, Checksum: p.Checksum, UnregisteredAt: now}); err != nil {
				return err
			}
		}
		for _, p := range ch.Registered {
			if err := recordPlugin(ctx, tx, p); err != nil {
				return err
			}
			caps := p.Capabilities
			if caps == nil {
				caps = []string{}
			}
			if err := emitPlugin(ctx, tx, p.ID, source, events.PluginRegistered{PluginID: p.ID, Type: p.Type,
				Version: p.Version, Capabilities: caps, Checksum: p.Checksum, RegisteredAt: now}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return PluginChanges{}, fmt.Errorf("sync plugins: %w", err)
	}
	return ch, nil
}

func unrecordPlugin(ctx context.Context, tx pgx.Tx, p Plugin, typeReused bool) error {
	if _, err := tx.Exec(ctx, `DELETE FROM plugin_metadata WHERE plugin_id = $1`, p.ID); err != nil {
		return fmt.Errorf("plugin %s: %w", p.ID, err)
	}
	if typeReused {
		return nil
	}
	// In a savepoint: integrations of the type (even deleted ones) keep
	// the row through their foreign key.
	err := pgx.BeginFunc(ctx, tx, func(sp pgx.Tx) error {
		_, err := sp.Exec(ctx, `DELETE FROM integration_types WHERE id = $1 AND NOT builtin`, p.Type)
		return err
	})
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "23503" {
		return nil
	}
	if err != nil {
		return fmt.Errorf("plugin %s: type %s: %w", p.ID, p.Type, err)
	}
	return nil
}

func recordPlugin(ctx context.Context, tx pgx.Tx, p Plugin) error {
	caps := p.Capabilities
	if caps == nil {
		caps = []string{}
	}
	schema, err := jsonObject(p.ConfigSchema)
	if err != nil {
		return fmt.Errorf("plugin %s: config schema: %w", p.ID, err)
	}
	display := p.DisplayName
	if strings.TrimSpace(display) == "" {
		display = p.Type
	}
	if _, err := tx.Exec(ctx,
		`INSERT INTO plugin_metadata (plugin_id, type, version, capabilities, path, checksum, discovered_at)
		 VALUES ($1, $2, $3, $4, $5, $6, $7)
		 ON CONFLICT (plugin_id) DO UPDATE SET type = EXCLUDED.type, version = EXCLUDED.version,
		   capabilities = EXCLUDED.capabilities, path = EXCLUDED.path, checksum = EXCLUDED.checksum,
		   discovered_at = EXCLUDED.discovered_at`,
		p.ID, p.Type, p.Version, caps, p.Path, p.Checksum, p.DiscoveredAt); err != nil {
		return fmt.Errorf("plugin %s: %w", p.ID, err)
	}
	tag, err := tx.Exec(ctx,
		`INSERT INTO integration_types AS it (id, display_name, description, provider, config_schema, capabilities, builtin, created_at, updated_at)
		 VALUES ($1, $2, $3, $4, $5, $6, false, $7, $7)
		 ON CONFLICT (id) DO UPDATE SET
		   display_name = EXCLUDED.display_name, description = EXCLUDED.description,
		   provider = EXCLUDED.provider, config_schema = EXCLUDED.config_schema,
		   capabilities = EXCLUDED.capabilities, updated_at = EXCLUDED.updated_at
		 WHERE NOT it.builtin`,
		p.Type, display, p.Description, p.Provider, schema, caps, p.DiscoveredAt)
	if err != nil {
		return fmt.Errorf("plugin %s: type %s: %w", p.ID, p.Type, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("plugin %s: type %s is a built-in type", p.ID, p.Type)
	}
	return nil
}

func emitPlugin(ctx context.Context, tx pgx.Tx, pluginID, source string, payload events.Payload) error {
	ev, err := events.New(payload.Subject(), source, "", payload)
	if err != nil {
		return fmt.Errorf("build %s: %w", payload.Subject(), err)
	}
	body, err := ev.Marshal()
	if err != nil {
		return err
	}
	// Not outbox.Insert, which takes the row's tenant from the envelope:
	// the row gets PluginTenant, the published envelope stays without one.
	agg := uuid.NewSHA1(pluginNamespace, []byte(pluginID)).String()
	_, err = tx.Exec(ctx,
		`INSERT INTO outbox (tenant_id, aggregate_id, partition, subject, event_id, payload)
		 VALUES ($1, $2, $3, $4, $5, $6)`,
		PluginTenant, agg, outbox.Partition(agg), ev.Type, ev.ID, body)
	if err != nil {
		return fmt.Errorf("outbox: insert event %s (%s): %w", ev.ID, ev.Type, err)
	}
	return nil
}
