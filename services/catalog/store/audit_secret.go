package store

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// ActionSecretResolve is the audit action of an AuthRef resolution.
const ActionSecretResolve = "authref.resolve"

// SecretResolution is one AuthRef resolution done for an integration, as
// the audit log records it. It names the reference, never the secret.
type SecretResolution struct {
	TenantID      string
	IntegrationID string
	// Actor is who caused the resolution: the API caller's subject, or the
	// service itself.
	Actor string
	// Ref is the AuthRef URI in canonical form; "" when the string given to
	// the resolver was not an AuthRef (it may be a secret pasted in the
	// wrong place, so it is not recorded).
	Ref    string
	Scheme string
	// Cached says the secret came from the resolver's cache.
	Cached bool
	// Failed says the resolution failed; ErrorClass says how (transient,
	// permanent, offline). The error's text is not recorded.
	Failed     bool
	ErrorClass string
}

// secretAuditAfter is the "after" column of the audit row: the reference
// and the outcome, nothing else.
type secretAuditAfter struct {
	Ref        string `json:"ref"`
	Scheme     string `json:"scheme,omitempty"`
	Cached     bool   `json:"cached"`
	OK         bool   `json:"ok"`
	ErrorClass string `json:"errorClass,omitempty"`
}

// AuditSecretResolution writes the audit row of one secret resolution
// (action authref.resolve, entity type integration) in its own tenant
// transaction. The integration is not looked up: a resolution is audited
// even when the integration was deleted while the connector ran.
func (s *Store) AuditSecretResolution(ctx context.Context, r SecretResolution) error {
	tid, err := parseTenant(r.TenantID)
	if err != nil {
		return err
	}
	iid, ok := parseID(r.IntegrationID)
	if !ok {
		return &InvalidError{Field: "integrationId", Reason: "must be a UUID"}
	}
	actor := r.Actor
	if actor == "" {
		actor = s.source
	}
	after := secretAuditAfter{Ref: r.Ref, Scheme: r.Scheme, Cached: r.Cached, OK: !r.Failed}
	if r.Failed {
		after.ErrorClass = r.ErrorClass
	}
	err = s.InTenant(ctx, tid, func(tx pgx.Tx) error {
		return s.audit(ctx, tx, tid, actor, ActionSecretResolve, "integration", iid, nil, after, s.now())
	})
	if err != nil {
		return fmt.Errorf("catalog store: %w", err)
	}
	return nil
}
