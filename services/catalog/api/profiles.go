package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/danielgtaylor/huma/v2"
	"github.com/jackc/pgx/v5"

	"inthub.dev/schemas"
	"inthub.dev/services/catalog/configcheck"
	"inthub.dev/services/catalog/store"
)

// Profile is a named set of connection defaults for one integration type.
type Profile struct {
	ID              string     `json:"id" format:"uuid"`
	TenantID        string     `json:"tenantId" format:"uuid"`
	Name            string     `json:"name"`
	IntegrationType string     `json:"integrationType"`
	DefaultConfig   JSONObject `json:"defaultConfig" doc:"Settings a new integration of the type starts from; never secrets."`
	IsDefault       bool       `json:"isDefault" doc:"The type's default profile (at most one per type)."`
	LastUsedAt      *time.Time `json:"lastUsedAt,omitempty"`
	Version         int64      `json:"version" minimum:"1" doc:"Grows by one per change; the ETag is its quoted value."`
	CreatedBy       string     `json:"createdBy"`
	CreatedAt       time.Time  `json:"createdAt"`
	UpdatedAt       time.Time  `json:"updatedAt"`
}

// ProfileInput is the body of a profile create or update.
type ProfileInput struct {
	Name            string     `json:"name" minLength:"1" maxLength:"200" doc:"Unique among the tenant's profiles."`
	IntegrationType string     `json:"integrationType" minLength:"1" maxLength:"100"`
	DefaultConfig   JSONObject `json:"defaultConfig,omitempty" doc:"Partial config of the type; fields the type's schema marks x-secret may only hold AuthRef URIs, and are never handed out as defaults."`
	IsDefault       bool       `json:"isDefault,omitempty" doc:"Make this the type's default profile (the previous default stops being one)."`
}

// ProfileList is a page of profiles.
type ProfileList struct {
	Items      []Profile `json:"items"`
	NextCursor string    `json:"nextCursor,omitempty" doc:"Pass as ?cursor= for the next page; absent on the last page."`
}

// ProfileDefaults is the "last used" starting point for a new integration.
type ProfileDefaults struct {
	Type   string     `json:"type"`
	Config JSONObject `json:"config" doc:"From the type's default profile, else the most recently used profile, else the newest integration of the type; secret fields and AuthRefs removed."`
}

func profileView(p store.Profile) Profile {
	return Profile{
		ID:              p.ID,
		TenantID:        p.TenantID,
		Name:            p.Name,
		IntegrationType: p.IntegrationType,
		DefaultConfig:   JSONObject(p.DefaultConfig),
		IsDefault:       p.IsDefault,
		LastUsedAt:      p.LastUsedAt,
		Version:         p.Version,
		CreatedBy:       p.CreatedBy,
		CreatedAt:       p.CreatedAt,
		UpdatedAt:       p.UpdatedAt,
	}
}

func (in ProfileInput) store() store.ProfileInput {
	return store.ProfileInput{
		Name:            in.Name,
		IntegrationType: in.IntegrationType,
		DefaultConfig:   in.DefaultConfig.raw(),
		IsDefault:       in.IsDefault,
	}
}

func profileLocation(id string) string { return Prefix + "/connection-profiles/" + id }

type listProfilesInput struct {
	Type string `query:"type" maxLength:"100" doc:"Only profiles of this integration type."`
	Page
}

type profileListOutput struct {
	Body ProfileList
}

type profileIDInput struct {
	ID string `path:"id" doc:"Profile id (a UUID); another tenant's id answers 404."`
}

type profileOutput struct {
	ETag string `header:"ETag" doc:"The profile's version as a strong entity tag."`
	Body Profile
}

type createProfileInput struct {
	IdempotencyKey string `header:"Idempotency-Key" maxLength:"255" doc:"Repeats with the same key and body replay the first response; the same key with another body is refused (422)."`
	Body           ProfileInput
}

type createdProfileOutput struct {
	Status   int
	Location string `header:"Location" doc:"URL of the new resource."`
	ETag     string `header:"ETag" doc:"The version as a strong entity tag."`
	Replayed string `header:"Idempotency-Replayed" doc:"true when the response is the replay of an earlier request with the same Idempotency-Key."`
	Body     Profile
}

type updateProfileInput struct {
	ID      string `path:"id"`
	IfMatch string `header:"If-Match" doc:"The ETag last read; a stale one answers 412. Absent: unconditional."`
	Body    ProfileInput
}

type deleteProfileInput struct {
	ID      string `path:"id"`
	IfMatch string `header:"If-Match" doc:"The ETag last read; a stale one answers 412. Absent: unconditional."`
}

type defaultsInput struct {
	Type string `query:"type" required:"true" minLength:"1" maxLength:"100" doc:"Integration type id."`
}

type defaultsOutput struct {
	Body ProfileDefaults
}

func (s *server) registerProfiles() {
	huma.Register(s.api, operation("list-connection-profiles", http.MethodGet, "/connection-profiles",
		"List connection profiles", ScopeRead, http.StatusBadRequest), s.listProfiles)
	create := operation("create-connection-profile", http.MethodPost, "/connection-profiles",
		"Create a connection profile", ScopeWrite, http.StatusBadRequest, http.StatusConflict)
	create.DefaultStatus = http.StatusCreated
	huma.Register(s.api, create, s.createProfile)
	huma.Register(s.api, operation("get-connection-profile-defaults", http.MethodGet, "/connection-profiles/defaults",
		"Last-used defaults for a new integration of a type (never secrets)", ScopeRead), s.profileDefaults)
	huma.Register(s.api, operation("get-connection-profile", http.MethodGet, "/connection-profiles/{id}",
		"Get a connection profile", ScopeRead, http.StatusNotFound), s.getProfile)
	huma.Register(s.api, operation("update-connection-profile", http.MethodPut, "/connection-profiles/{id}",
		"Replace a connection profile", ScopeWrite,
		http.StatusBadRequest, http.StatusNotFound, http.StatusConflict, http.StatusPreconditionFailed), s.updateProfile)
	del := operation("delete-connection-profile", http.MethodDelete, "/connection-profiles/{id}",
		"Delete a connection profile", ScopeWrite, http.StatusBadRequest, http.StatusNotFound, http.StatusPreconditionFailed)
	del.DefaultStatus = http.StatusNoContent
	huma.Register(s.api, del, s.deleteProfile)
}

// knownType answers 422 at location for a type that does not exist, and
// returns the type otherwise.
func (s *server) knownType(ctx context.Context, id, location string) (store.IntegrationType, error) {
	t, err := s.store.GetType(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return t, problem(http.StatusUnprocessableEntity, "unknown integration type", location,
			"no such integration type; see GET /api/v1/integration-types")
	}
	if err != nil {
		return t, s.fail(ctx, err)
	}
	return t, nil
}

func (s *server) listProfiles(ctx context.Context, in *listProfilesInput) (*profileListOutput, error) {
	p, err := principal(ctx)
	if err != nil {
		return nil, err
	}
	if in.Type != "" {
		if _, err := s.knownType(ctx, in.Type, "query.type"); err != nil {
			return nil, err
		}
	}
	items, next, err := s.store.ListProfiles(ctx, p.TenantID, store.ProfileListOptions{Type: in.Type, Limit: in.Limit, Cursor: in.Cursor})
	if err != nil {
		return nil, s.fail(ctx, err, slog.String("tenantId", p.TenantID))
	}
	out := &profileListOutput{Body: ProfileList{Items: make([]Profile, 0, len(items)), NextCursor: next}}
	for _, it := range items {
		out.Body.Items = append(out.Body.Items, profileView(it))
	}
	s.metrics.crud.WithLabelValues("profile_list").Inc()
	return out, nil
}

func (s *server) getProfile(ctx context.Context, in *profileIDInput) (*profileOutput, error) {
	p, err := principal(ctx)
	if err != nil {
		return nil, err
	}
	pr, err := s.store.GetProfile(ctx, p.TenantID, in.ID)
	if err != nil {
		return nil, s.fail(ctx, err, slog.String("tenantId", p.TenantID))
	}
	s.metrics.crud.WithLabelValues("profile_get").Inc()
	return &profileOutput{ETag: etag(pr.Version), Body: profileView(pr)}, nil
}

// checkProfile refuses a profile of an unknown type or one whose defaults
// hold a secret in clear.
func (s *server) checkProfile(ctx context.Context, in ProfileInput) error {
	t, err := s.knownType(ctx, in.IntegrationType, "body.integrationType")
	if err != nil {
		return err
	}
	cfg := in.DefaultConfig.raw()
	if len(cfg) == 0 {
		cfg = json.RawMessage(`{}`)
	}
	partial, err := partialSchema(t.ConfigSchema)
	if err != nil {
		return s.fail(ctx, err)
	}
	err = s.checker.Check(ctx, t.ID, partial, cfg, "")
	var fes configcheck.FieldErrors
	if errors.As(err, &fes) {
		// The checker names config fields "config..."; here they sit
		// under defaultConfig.
		renamed := make(configcheck.FieldErrors, 0, len(fes))
		for _, fe := range fes {
			field := fe.Field
			if rest, ok := strings.CutPrefix(field, "config"); ok {
				field = "defaultConfig" + rest
			}
			renamed = append(renamed, &configcheck.FieldError{Field: field, Reason: fe.Reason})
		}
		return fieldProblem(renamed, "body.")
	}
	if err != nil {
		return s.fail(ctx, err)
	}
	return nil
}

// partialSchema is a config schema without its "required" keywords: a
// profile holds some of a config's fields, but those it holds obey the
// type's rules, x-secret included.
func partialSchema(schema json.RawMessage) (json.RawMessage, error) {
	dec := json.NewDecoder(bytes.NewReader(schema))
	dec.UseNumber() // bounds such as maximum stay exact
	var doc any
	if err := dec.Decode(&doc); err != nil {
		return nil, fmt.Errorf("config schema: %w", err)
	}
	var strip func(v any)
	strip = func(v any) {
		switch x := v.(type) {
		case map[string]any:
			// Only the keyword (an array): a property named "required"
			// is an object under "properties".
			if _, ok := x["required"].([]any); ok {
				delete(x, "required")
			}
			for _, c := range x {
				strip(c)
			}
		case []any:
			for _, c := range x {
				strip(c)
			}
		}
	}
	strip(doc)
	return json.Marshal(doc)
}

// secretFields lists the config fields a type's schema marks x-secret.
func secretFields(schema json.RawMessage) ([]string, error) {
	return schemas.SecretFields(schema)
}

func (s *server) createProfile(ctx context.Context, in *createProfileInput) (*createdProfileOutput, error) {
	p, err := principal(ctx)
	if err != nil {
		return nil, err
	}
	if err := s.checkProfile(ctx, in.Body); err != nil {
		return nil, err
	}
	if in.IdempotencyKey == "" {
		pr, err := s.store.CreateProfile(ctx, p.TenantID, p.Subject, in.Body.store())
		if err != nil {
			return nil, s.fail(ctx, err, slog.String("tenantId", p.TenantID))
		}
		s.metrics.crud.WithLabelValues("profile_create").Inc()
		return &createdProfileOutput{
			Status:   http.StatusCreated,
			Location: profileLocation(pr.ID),
			ETag:     etag(pr.Version),
			Body:     profileView(pr),
		}, nil
	}
	hash, err := requestHash("create-connection-profile", in.Body)
	if err != nil {
		return nil, s.fail(ctx, err)
	}
	resp, replayed, err := s.store.Idempotent(ctx, p.TenantID, in.IdempotencyKey, hash, func(tx pgx.Tx) (store.IdempotentResponse, error) {
		pr, err := s.store.CreateProfileTx(ctx, tx, p.TenantID, p.Subject, in.Body.store())
		if err != nil {
			return store.IdempotentResponse{}, err
		}
		body, err := json.Marshal(profileView(pr))
		if err != nil {
			return store.IdempotentResponse{}, err
		}
		return store.IdempotentResponse{
			Status:  http.StatusCreated,
			Body:    body,
			Headers: map[string]string{"Location": profileLocation(pr.ID), "ETag": etag(pr.Version)},
		}, nil
	})
	if err != nil {
		return nil, s.fail(ctx, err, slog.String("tenantId", p.TenantID))
	}
	out := &createdProfileOutput{Status: resp.Status, Location: resp.Headers["Location"], ETag: resp.Headers["ETag"]}
	if err := json.Unmarshal(resp.Body, &out.Body); err != nil {
		return nil, s.fail(ctx, err, slog.String("tenantId", p.TenantID))
	}
	if replayed {
		out.Replayed = "true"
	} else {
		s.metrics.crud.WithLabelValues("profile_create").Inc()
	}
	return out, nil
}

func (s *server) updateProfile(ctx context.Context, in *updateProfileInput) (*profileOutput, error) {
	p, err := principal(ctx)
	if err != nil {
		return nil, err
	}
	version, err := parseIfMatch(in.IfMatch)
	if err != nil {
		return nil, err
	}
	if err := s.checkProfile(ctx, in.Body); err != nil {
		return nil, err
	}
	pr, err := s.store.UpdateProfile(ctx, p.TenantID, p.Subject, in.ID, version, in.Body.store())
	if err != nil {
		return nil, s.fail(ctx, err, slog.String("tenantId", p.TenantID))
	}
	s.metrics.crud.WithLabelValues("profile_update").Inc()
	return &profileOutput{ETag: etag(pr.Version), Body: profileView(pr)}, nil
}

func (s *server) deleteProfile(ctx context.Context, in *deleteProfileInput) (*struct{}, error) {
	p, err := principal(ctx)
	if err != nil {
		return nil, err
	}
	version, err := parseIfMatch(in.IfMatch)
	if err != nil {
		return nil, err
	}
	if _, err := s.store.DeleteProfile(ctx, p.TenantID, p.Subject, in.ID, version); err != nil {
		return nil, s.fail(ctx, err, slog.String("tenantId", p.TenantID))
	}
	s.metrics.crud.WithLabelValues("profile_delete").Inc()
	return &struct{}{}, nil
}

func (s *server) profileDefaults(ctx context.Context, in *defaultsInput) (*defaultsOutput, error) {
	p, err := principal(ctx)
	if err != nil {
		return nil, err
	}
	t, err := s.knownType(ctx, in.Type, "query.type")
	if err != nil {
		return nil, err
	}
	secrets, err := secretFields(t.ConfigSchema)
	if err != nil {
		return nil, s.fail(ctx, err)
	}
	cfg, err := s.store.Defaults(ctx, p.TenantID, t.ID, secrets)
	if err != nil {
		return nil, s.fail(ctx, err, slog.String("tenantId", p.TenantID))
	}
	return &defaultsOutput{Body: ProfileDefaults{Type: t.ID, Config: JSONObject(cfg)}}, nil
}
