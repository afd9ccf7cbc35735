package store

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
)

// Profile is a named set of connection defaults for one integration type
// (the seed's connection-profiles: the wizard starts from the last used
// endpoint, auth mode and network settings; secrets are never reused).
type Profile struct {
	ID              string          `json:"id"`
	TenantID        string          `json:"tenantId"`
	Name            string          `json:"name"`
	IntegrationType string          `json:"integrationType"`
	DefaultConfig   json.RawMessage `json:"defaultConfig"`
	IsDefault       bool            `json:"isDefault"`
	LastUsedAt      *time.Time      `json:"lastUsedAt,omitempty"`
	Version         int64           `json:"version"`
	CreatedBy       string          `json:"createdBy"`
	CreatedAt       time.Time       `json:"createdAt"`
	UpdatedAt       time.Time       `json:"updatedAt"`
}

// ProfileInput is what a caller may set on a profile.
type ProfileInput struct {
	Name            string
	IntegrationType string
	DefaultConfig   json.RawMessage
	IsDefault       bool
}

// ProfileListOptions selects a page of profiles.
type ProfileListOptions struct {
	Type   string // only this integration type, if set
	Limit  int    // default 50, at most 500
	Cursor string
}

const profileCols = `tenant_id, id, name, integration_type, default_config, is_default, last_used_at,
	version, created_by, created_at, updated_at`

func scanProfile(row pgx.Row) (Profile, error) {
	var p Profile
	err := row.Scan(&p.TenantID, &p.ID, &p.Name, &p.IntegrationType, &p.DefaultConfig, &p.IsDefault,
		&p.LastUsedAt, &p.Version, &p.CreatedBy, &p.CreatedAt, &p.UpdatedAt)
	if err != nil {
		return Profile{}, err
	}
	p.LastUsedAt = utcPtr(p.LastUsedAt)
	p.CreatedAt = p.CreatedAt.UTC()
	p.UpdatedAt = p.UpdatedAt.UTC()
	return p, nil
}

func (in ProfileInput) normalize() (ProfileInput, error) {
	if n := utf8.RuneCountInString(in.Name); n < 1 || n > 200 {
		return in, &InvalidError{Field: "name", Reason: "must be 1 to 200 characters"}
	}
	if in.IntegrationType == "" {
		return in, &InvalidError{Field: "integrationType", Reason: "required"}
	}
	cfg, err := jsonObject(in.DefaultConfig)
	if err != nil {
		return in, &InvalidError{Field: "defaultConfig", Reason: err.Error()}
	}
	in.DefaultConfig = cfg
	return in, nil
}

// ListProfiles returns a page of the tenant's profiles in (created_at, id)
// order and the next page's cursor ("" on the last page).
func (s *Store) ListProfiles(ctx context.Context, tenantID string, o ProfileListOptions) (items []Profile, next string, err error) {
	err = s.InTenant(ctx, tenantID, func(tx pgx.Tx) error {
		tid, _ := parseTenant(tenantID)
		limit := clampLimit(o.Limit)
		args := []any{tid}
		q := `SELECT ` + profileCols + ` FROM connection_profiles WHERE tenant_id = $1`
		if o.Type != "" {
			args = append(args, o.Type)
			q += fmt.Sprintf(" AND integration_type = $%d", len(args))
		}
		if o.Cursor != "" {
			c, err := decodeCursor(o.Cursor, false)
			if err != nil {
				return err
			}
			args = append(args, c.t, c.id)
			q += fmt.Sprintf(" AND (created_at, id) > ($%d, $%d)", len(args)-1, len(args))
		}
		args = append(args, limit+1)
		q += fmt.Sprintf(" ORDER BY created_at, id LIMIT $%d", len(args))
		rows, err := tx.Query(ctx, q, args...)
		if err != nil {
			return fmt.Errorf("list profiles: %w", err)
		}
		items, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (Profile, error) { return scanProfile(r) })
		if err != nil {
			return fmt.Errorf("list profiles: %w", err)
		}
		if len(items) > limit {
			items = items[:limit]
			next = encodeCursor(items[limit-1].CreatedAt, items[limit-1].ID)
		}
		return nil
	})
	return items, next, err
}

// GetProfile returns one of the tenant's profiles, or ErrNotFound.
func (s *Store) GetProfile(ctx context.Context, tenantID, id string) (p Profile, err error) {
	err = s.InTenant(ctx, tenantID, func(tx pgx.Tx) error {
		tid, _ := parseTenant(tenantID)
		p, err = s.getProfile(ctx, tx, tid, id, "")
		return err
	})
	return p, err
}

func (s *Store) getProfile(ctx context.Context, tx pgx.Tx, tenantID, id, lock string) (Profile, error) {
	cid, ok := parseID(id)
	if !ok {
		return Profile{}, fmt.Errorf("profile %q: %w", id, ErrNotFound)
	}
	p, err := scanProfile(tx.QueryRow(ctx,
		`SELECT `+profileCols+` FROM connection_profiles WHERE tenant_id = $1 AND id = $2 `+lock, tenantID, cid))
	if errors.Is(err, pgx.ErrNoRows) {
		return Profile{}, fmt.Errorf("profile %s: %w", cid, ErrNotFound)
	}
	if err != nil {
		return Profile{}, fmt.Errorf("get profile %s: %w", cid, err)
	}
	return p, nil
}

// CreateProfile stores a profile, audited as profile.create. A duplicate
// name in the tenant is a *ConflictError{Field: "name"}. With IsDefault,
// the type's previous default stops being one in the same transaction.
func (s *Store) CreateProfile(ctx context.Context, tenantID, actor string, in ProfileInput) (p Profile, err error) {
	err = s.InTenant(ctx, tenantID, func(tx pgx.Tx) error {
		p, err = s.CreateProfileTx(ctx, tx, tenantID, actor, in)
		return err
	})
	return p, err
}

// CreateProfileTx is CreateProfile in the caller's tenant transaction.
func (s *Store) CreateProfileTx(ctx context.Context, tx pgx.Tx, tenantID, actor string, in ProfileInput) (Profile, error) {
	tid, err := parseTenant(tenantID)
	if err != nil {
		return Profile{}, err
	}
	if actor == "" {
		return Profile{}, &InvalidError{Field: "actor", Reason: "required"}
	}
	in, err = in.normalize()
	if err != nil {
		return Profile{}, err
	}
	now := s.now()
	if in.IsDefault {
		if err := s.clearDefault(ctx, tx, tid, actor, in.IntegrationType, "", now); err != nil {
			return Profile{}, err
		}
	}
	p, err := scanProfile(tx.QueryRow(ctx,
		`INSERT INTO connection_profiles (tenant_id, name, integration_type, default_config, is_default, created_by, created_at, updated_at)
		 VALUES ($1, $2, $3, $4, $5, $6, $7, $7)
		 RETURNING `+profileCols,
		tid, in.Name, in.IntegrationType, in.DefaultConfig, in.IsDefault, actor, now))
	if err != nil {
		return Profile{}, fmt.Errorf("create profile: %w", mapPgError(err))
	}
	if err := s.audit(ctx, tx, tid, actor, "profile.create", "profile", p.ID, nil, p, now); err != nil {
		return Profile{}, err
	}
	return p, nil
}

// UpdateProfile replaces a profile's name, type, default config and
// default flag; ifVersion as for UpdateIntegration. Audited as
// profile.update.
func (s *Store) UpdateProfile(ctx context.Context, tenantID, actor, id string, ifVersion int64, in ProfileInput) (p Profile, err error) {
	err = s.InTenant(ctx, tenantID, func(tx pgx.Tx) error {
		tid, _ := parseTenant(tenantID)
		if actor == "" {
			return &InvalidError{Field: "actor", Reason: "required"}
		}
		if in, err = in.normalize(); err != nil {
			return err
		}
		before, err := s.getProfile(ctx, tx, tid, id, "FOR UPDATE")
		if err != nil {
			return err
		}
		if ifVersion != 0 && before.Version != ifVersion {
			return fmt.Errorf("profile %s is at version %d, not %d: %w", before.ID, before.Version, ifVersion, ErrVersionMismatch)
		}
		now := s.now()
		if in.IsDefault {
			if err := s.clearDefault(ctx, tx, tid, actor, in.IntegrationType, before.ID, now); err != nil {
				return err
			}
		}
		p, err = scanProfile(tx.QueryRow(ctx,
			`UPDATE connection_profiles SET name = $3, integration_type = $4, default_config = $5, is_default = $6,
			        version = version + 1, updated_at = $7
			 WHERE tenant_id = $1 AND id = $2
			 RETURNING `+profileCols,
			tid, before.ID, in.Name, in.IntegrationType, in.DefaultConfig, in.IsDefault, now))
		if err != nil {
			return fmt.Errorf("update profile %s: %w", before.ID, mapPgError(err))
		}
		return s.audit(ctx, tx, tid, actor, "profile.update", "profile", p.ID, before, p, now)
	})
	return p, err
}

// DeleteProfile removes a profile for good (profiles have no history
// worth keeping beyond the audit row) and returns it as it was.
func (s *Store) DeleteProfile(ctx context.Context, tenantID, actor, id string, ifVersion int64) (p Profile, err error) {
	err = s.InTenant(ctx, tenantID, func(tx pgx.Tx) error {
		tid, _ := parseTenant(tenantID)
		if actor == "" {
			return &InvalidError{Field: "actor", Reason: "required"}
		}
		before, err := s.getProfile(ctx, tx, tid, id, "FOR UPDATE")
		if err != nil {
			return err
		}
		if ifVersion != 0 && before.Version != ifVersion {
			return fmt.Errorf("profile %s is at version %d, not %d: %w", before.ID, before.Version, ifVersion, ErrVersionMismatch)
		}
		if _, err := tx.Exec(ctx, `DELETE FROM connection_profiles WHERE tenant_id = $1 AND id = $2`, tid, before.ID); err != nil {
			return fmt.Errorf("delete profile %s: %w", before.ID, err)
		}
		p = before
		return s.audit(ctx, tx, tid, actor, "profile.delete", "profile", before.ID, before, nil, s.now())
	})
	return p, err
}

// clearDefault makes the type's current default profile (other than
// except) an ordinary one, audited as a profile.update of that profile.
// A transaction-scoped advisory lock per (tenant, type) serialises the
// writers of a default: without it, two transactions that each find no
// default would both insert one and the second would fail on the
// one-default index instead of taking over.
func (s *Store) clearDefault(ctx context.Context, tx pgx.Tx, tenantID, actor, typ, except string, now time.Time) error {
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtextextended($1, 0))`,
		"inthub.connection_profiles.default:"+tenantID+":"+typ); err != nil {
		return fmt.Errorf("lock default profile: %w", err)
	}
	prev, err := scanProfile(tx.QueryRow(ctx,
		`SELECT `+profileCols+` FROM connection_profiles
		 WHERE tenant_id = $1 AND integration_type = $2 AND is_default AND id::text <> $3 FOR UPDATE`,
		tenantID, typ, except))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("find default profile: %w", err)
	}
	after, err := scanProfile(tx.QueryRow(ctx,
		`UPDATE connection_profiles SET is_default = false, version = version + 1, updated_at = $3
		 WHERE tenant_id = $1 AND id = $2 RETURNING `+profileCols,
		tenantID, prev.ID, now))
	if err != nil {
		return fmt.Errorf("clear default profile %s: %w", prev.ID, err)
	}
	return s.audit(ctx, tx, tenantID, actor, "profile.update", "profile", prev.ID, prev, after, now)
}

// MarkProfileUsed records that a profile was just used to fill in a new
// integration. Use is not a change of the profile, so it bumps neither the
// version (the ETag) nor writes an audit row.
func (s *Store) MarkProfileUsed(ctx context.Context, tenantID, id string) error {
	return s.InTenant(ctx, tenantID, func(tx pgx.Tx) error {
		tid, _ := parseTenant(tenantID)
		cid, ok := parseID(id)
		if !ok {
			return fmt.Errorf("profile %q: %w", id, ErrNotFound)
		}
		tag, err := tx.Exec(ctx, `UPDATE connection_profiles SET last_used_at = $3 WHERE tenant_id = $1 AND id = $2`,
			tid, cid, s.now())
		if err != nil {
			return fmt.Errorf("mark profile %s used: %w", cid, err)
		}
		if tag.RowsAffected() == 0 {
			return fmt.Errorf("profile %s: %w", cid, ErrNotFound)
		}
		return nil
	})
}

// Defaults returns the "last used" settings for a new integration of the
// type: the type's default profile, else the most recently used profile,
// else the config of the most recently created live integration, else {}.
//
// Secrets are never reused: every field named in secretFields (top-level
// keys, or dotted paths into nested objects), every "authRef" key, and
// every value that is an AuthRef URI is removed. The last rule also
// catches secret fields that the caller's list misses: in a stored config
// a secret field can only hold an AuthRef URI.
func (s *Store) Defaults(ctx context.Context, tenantID, integrationType string, secretFields []string) (json.RawMessage, error) {
	var raw []byte
	err := s.InTenant(ctx, tenantID, func(tx pgx.Tx) error {
		tid, _ := parseTenant(tenantID)
		queries := []string{
			`SELECT default_config FROM connection_profiles
			 WHERE tenant_id = $1 AND integration_type = $2 AND is_default`,
			`SELECT default_config FROM connection_profiles
			 WHERE tenant_id = $1 AND integration_type = $2 AND last_used_at IS NOT NULL
			 ORDER BY last_used_at DESC, id DESC LIMIT 1`,
			`SELECT config FROM integrations
			 WHERE tenant_id = $1 AND type = $2 AND deleted_at IS NULL
			 ORDER BY created_at DESC, id DESC LIMIT 1`,
		}
		for _, q := range queries {
			err := tx.QueryRow(ctx, q, tid, integrationType).Scan(&raw)
			if errors.Is(err, pgx.ErrNoRows) {
				continue
			}
			if err != nil {
				return fmt.Errorf("defaults: %w", err)
			}
			return nil
		}
		raw = []byte(`{}`)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return stripSecrets(raw, secretFields)
}

// stripSecrets removes the fields Defaults must never hand out.
func stripSecrets(raw []byte, secretFields []string) (json.RawMessage, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber() // numbers come back as they were stored
	var doc map[string]any
	if err := dec.Decode(&doc); err != nil {
		return nil, fmt.Errorf("defaults: stored config is not an object: %w", err)
	}
	for _, f := range secretFields {
		removePath(doc, strings.Split(f, "."))
	}
	scrub(doc)
	b, err := json.Marshal(doc)
	if err != nil {
		return nil, fmt.Errorf("defaults: %w", err)
	}
	return b, nil
}

func removePath(m map[string]any, path []string) {
	if len(path) == 0 || m == nil {
		return
	}
	if len(path) == 1 {
		delete(m, path[0])
		return
	}
	if next, ok := m[path[0]].(map[string]any); ok {
		removePath(next, path[1:])
	}
}

// scrub removes authRef keys and AuthRef URI values at any depth.
func scrub(v any) any {
	switch x := v.(type) {
	case map[string]any:
		for k, val := range x {
			if strings.EqualFold(k, "authRef") || isAuthRefValue(val) {
				delete(x, k)
				continue
			}
			x[k] = scrub(val)
		}
		return x
	case []any:
		out := x[:0]
		for _, val := range x {
			if isAuthRefValue(val) {
				continue
			}
			out = append(out, scrub(val))
		}
		return out
	}
	return v
}

func isAuthRefValue(v any) bool {
	s, ok := v.(string)
	return ok && strings.HasPrefix(strings.ToLower(strings.TrimSpace(s)), "authref://")
}
