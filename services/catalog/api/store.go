package api

import (
	"context"
	"encoding/json"

	"github.com/danielgtaylor/huma/v2"
	"github.com/jackc/pgx/v5"

	"inthub.dev/events"
	"inthub.dev/services/catalog/store"
)

// Store is the part of *store.Store the API uses. It is an interface so
// that the API states its needs; the tests run the real store on
// PostgreSQL.
type Store interface {
	ListIntegrations(ctx context.Context, tenantID string, o store.ListOptions) ([]store.Integration, string, error)
	GetIntegration(ctx context.Context, tenantID, id string) (store.Integration, error)
	CreateIntegration(ctx context.Context, tenantID, actor string, in store.IntegrationInput) (store.Integration, error)
	CreateIntegrationTx(ctx context.Context, tx pgx.Tx, tenantID, actor string, in store.IntegrationInput) (store.Integration, error)
	UpdateIntegration(ctx context.Context, tenantID, actor, id string, ifVersion int64, in store.IntegrationInput) (store.Integration, error)
	DeleteIntegration(ctx context.Context, tenantID, actor, id string, ifVersion int64) (store.Integration, error)
	HealthHistory(ctx context.Context, tenantID, integrationID string, limit int, cursor string) (*store.HealthCheck, []store.HealthCheck, string, error)
	RecordHealth(ctx context.Context, ev events.Event) (changed bool, err error)

	Idempotent(ctx context.Context, tenantID, key, requestHash string, do func(tx pgx.Tx) (store.IdempotentResponse, error)) (store.IdempotentResponse, bool, error)

	ListTypes(ctx context.Context) ([]store.IntegrationType, error)
	GetType(ctx context.Context, id string) (store.IntegrationType, error)

	ListProfiles(ctx context.Context, tenantID string, o store.ProfileListOptions) ([]store.Profile, string, error)
	GetProfile(ctx context.Context, tenantID, id string) (store.Profile, error)
	CreateProfile(ctx context.Context, tenantID, actor string, in store.ProfileInput) (store.Profile, error)
	CreateProfileTx(ctx context.Context, tx pgx.Tx, tenantID, actor string, in store.ProfileInput) (store.Profile, error)
	UpdateProfile(ctx context.Context, tenantID, actor, id string, ifVersion int64, in store.ProfileInput) (store.Profile, error)
	DeleteProfile(ctx context.Context, tenantID, actor, id string, ifVersion int64) (store.Profile, error)
	Defaults(ctx context.Context, tenantID, integrationType string, secretFields []string) (json.RawMessage, error)
}

var _ Store = (*store.Store)(nil)

// JSONObject is a JSON object passed through untouched (an integration's
// config, a type's config schema). Its document schema is "object"; a
// json.RawMessage would be documented as any value.
type JSONObject json.RawMessage

// MarshalJSON writes the object, or {} for none.
func (o JSONObject) MarshalJSON() ([]byte, error) {
	if len(o) == 0 {
		return []byte(`{}`), nil
	}
	return o, nil
}

// UnmarshalJSON keeps the raw bytes.
func (o *JSONObject) UnmarshalJSON(b []byte) error {
	*o = append((*o)[:0], b...)
	return nil
}

// Schema documents a JSON object with any properties.
func (JSONObject) Schema(huma.Registry) *huma.Schema {
	return &huma.Schema{Type: huma.TypeObject, AdditionalProperties: true}
}

// raw returns the object, treating JSON null like an absent value.
func (o JSONObject) raw() json.RawMessage {
	if string(o) == "null" {
		return nil
	}
	return json.RawMessage(o)
}
