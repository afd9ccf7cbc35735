package api

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"time"

	"github.com/danielgtaylor/huma/v2"
	"github.com/jackc/pgx/v5"

	"inthub.dev/services/catalog/store"
)

// Integration is a tenant's connection to an external tool.
type Integration struct {
	ID              string     `json:"id" format:"uuid"`
	TenantID        string     `json:"tenantId" format:"uuid"`
	Type            string     `json:"type" doc:"Integration type id, e.g. scm.github."`
	Name            string     `json:"name"`
	Config          JSONObject `json:"config" doc:"Settings, valid for the type's config schema; secrets only as AuthRef URIs."`
	AuthRef         string     `json:"authRef,omitempty" doc:"AuthRef URI of the credentials."`
	Status          string     `json:"status" enum:"active,disabled,offline"`
	HealthStatus    string     `json:"healthStatus" enum:"healthy,degraded,unhealthy,unknown"`
	LastHealthCheck *time.Time `json:"lastHealthCheck,omitempty"`
	Version         int64      `json:"version" minimum:"1" doc:"Grows by one per change; the ETag is its quoted value."`
	CreatedAt       time.Time  `json:"createdAt"`
	UpdatedAt       time.Time  `json:"updatedAt"`
	CreatedBy       string     `json:"createdBy"`
}

// IntegrationInput is the body of a create or an update.
type IntegrationInput struct {
	Type    string     `json:"type" minLength:"1" maxLength:"100" doc:"Integration type id (GET /api/v1/integration-types); cannot change."`
	Name    string     `json:"name" minLength:"1" maxLength:"200" doc:"Unique among the tenant's live integrations."`
	Config  JSONObject `json:"config,omitempty" doc:"Settings, valid for the type's config schema; fields the schema marks x-secret hold AuthRef URIs."`
	AuthRef string     `json:"authRef,omitempty" maxLength:"2048" doc:"authref://vault/<path>#<field>, authref://env/<VAR> or authref://file/<path>."`
	Status  string     `json:"status,omitempty" enum:"active,disabled,offline" doc:"Default active."`
}

// IntegrationList is a page of integrations.
type IntegrationList struct {
	Items      []Integration `json:"items"`
	NextCursor string        `json:"nextCursor,omitempty" doc:"Pass as ?cursor= for the next page; absent on the last page."`
}

func integrationView(it store.Integration) Integration {
	return Integration{
		ID:              it.ID,
		TenantID:        it.TenantID,
		Type:            it.Type,
		Name:            it.Name,
		Config:          JSONObject(it.Config),
		AuthRef:         it.AuthRef,
		Status:          it.Status,
		HealthStatus:    it.HealthStatus,
		LastHealthCheck: it.LastHealthCheck,
		Version:         it.Version,
		CreatedAt:       it.CreatedAt,
		UpdatedAt:       it.UpdatedAt,
		CreatedBy:       it.CreatedBy,
	}
}

func (in IntegrationInput) store() store.IntegrationInput {
	return store.IntegrationInput{
		Type:    in.Type,
		Name:    in.Name,
		Config:  in.Config.raw(),
		AuthRef: in.AuthRef,
		Status:  in.Status,
	}
}

func integrationLocation(id string) string { return Prefix + "/integrations/" + id }

type listIntegrationsInput struct {
	Type string `query:"type" maxLength:"100" doc:"Only integrations of this type."`
	Page
}

type integrationListOutput struct {
	Body IntegrationList
}

type integrationIDInput struct {
	ID string `path:"id" doc:"Integration id (a UUID); another tenant's id answers 404."`
}

type integrationOutput struct {
	ETag string `header:"ETag" doc:"The integration's version as a strong entity tag."`
	Body Integration
}

type createIntegrationInput struct {
	IdempotencyKey string `header:"Idempotency-Key" maxLength:"255" doc:"Repeats with the same key and body replay the first response; the same key with another body is refused (422)."`
	Body           IntegrationInput
}

type createdIntegrationOutput struct {
	Status   int
	Location string `header:"Location" doc:"URL of the new resource."`
	ETag     string `header:"ETag" doc:"The version as a strong entity tag."`
	Replayed string `header:"Idempotency-Replayed" doc:"true when the response is the replay of an earlier request with the same Idempotency-Key."`
	Body     Integration
}

type updateIntegrationInput struct {
	ID      string `path:"id"`
	IfMatch string `header:"If-Match" doc:"The ETag last read; a stale one answers 412. Absent: unconditional."`
	Body    IntegrationInput
}

type deleteIntegrationInput struct {
	ID      string `path:"id"`
	IfMatch string `header:"If-Match" doc:"The ETag last read; a stale one answers 412. Absent: unconditional."`
}

type byTypeInput struct {
	Type string `path:"type" doc:"Integration type id."`
	Page
}

func (s *server) registerIntegrations() {
	huma.Register(s.api, operation("list-integrations", http.MethodGet, "/integrations",
		"List integrations", ScopeRead, http.StatusBadRequest), s.listIntegrations)
	huma.Register(s.api, operation("list-integrations-by-type", http.MethodGet, "/integrations/by-type/{type}",
		"List integrations of one type", ScopeRead, http.StatusBadRequest, http.StatusNotFound), s.listByType)
	create := operation("create-integration", http.MethodPost, "/integrations",
		"Register an integration", ScopeWrite, http.StatusBadRequest, http.StatusConflict)
	create.DefaultStatus = http.StatusCreated
	huma.Register(s.api, create, s.createIntegration)
	huma.Register(s.api, operation("get-integration", http.MethodGet, "/integrations/{id}",
		"Get an integration", ScopeRead, http.StatusNotFound), s.getIntegration)
	huma.Register(s.api, operation("update-integration", http.MethodPut, "/integrations/{id}",
		"Replace an integration's settings", ScopeWrite,
		http.StatusBadRequest, http.StatusNotFound, http.StatusConflict, http.StatusPreconditionFailed), s.updateIntegration)
	del := operation("delete-integration", http.MethodDelete, "/integrations/{id}",
		"Delete an integration", ScopeWrite, http.StatusBadRequest, http.StatusNotFound, http.StatusPreconditionFailed)
	del.DefaultStatus = http.StatusNoContent
	huma.Register(s.api, del, s.deleteIntegration)
}

func (s *server) listIntegrations(ctx context.Context, in *listIntegrationsInput) (*integrationListOutput, error) {
	p, err := principal(ctx)
	if err != nil {
		return nil, err
	}
	if in.Type != "" {
		if _, err := s.store.GetType(ctx, in.Type); errors.Is(err, store.ErrNotFound) {
			return nil, problem(http.StatusUnprocessableEntity, "unknown integration type", "query.type",
				"no such integration type; see GET /api/v1/integration-types")
		} else if err != nil {
			return nil, s.fail(ctx, err)
		}
	}
	return s.list(ctx, p.TenantID, in.Type, in.Page)
}

func (s *server) listByType(ctx context.Context, in *byTypeInput) (*integrationListOutput, error) {
	p, err := principal(ctx)
	if err != nil {
		return nil, err
	}
	if _, err := s.store.GetType(ctx, in.Type); errors.Is(err, store.ErrNotFound) {
		return nil, problem(http.StatusNotFound, "unknown integration type", "path.type",
			"no such integration type; see GET /api/v1/integration-types")
	} else if err != nil {
		return nil, s.fail(ctx, err)
	}
	return s.list(ctx, p.TenantID, in.Type, in.Page)
}

func (s *server) list(ctx context.Context, tenantID, typ string, pg Page) (*integrationListOutput, error) {
	items, next, err := s.store.ListIntegrations(ctx, tenantID, store.ListOptions{Type: typ, Limit: pg.Limit, Cursor: pg.Cursor})
	if err != nil {
		return nil, s.fail(ctx, err, slog.String("tenantId", tenantID))
	}
	out := &integrationListOutput{Body: IntegrationList{Items: make([]Integration, 0, len(items)), NextCursor: next}}
	for _, it := range items {
		out.Body.Items = append(out.Body.Items, integrationView(it))
	}
	s.metrics.crud.WithLabelValues("list").Inc()
	return out, nil
}

func (s *server) getIntegration(ctx context.Context, in *integrationIDInput) (*integrationOutput, error) {
	p, err := principal(ctx)
	if err != nil {
		return nil, err
	}
	it, err := s.store.GetIntegration(ctx, p.TenantID, in.ID)
	if err != nil {
		return nil, s.fail(ctx, err, slog.String("tenantId", p.TenantID), slog.String("integrationId", in.ID))
	}
	s.metrics.crud.WithLabelValues("get").Inc()
	return &integrationOutput{ETag: etag(it.Version), Body: integrationView(it)}, nil
}

// checkConfig refuses a config its type's schema, the secret rules or the
// egress policy would refuse, before anything is written.
func (s *server) checkConfig(ctx context.Context, in IntegrationInput) error {
	t, err := s.store.GetType(ctx, in.Type)
	if errors.Is(err, store.ErrNotFound) {
		return problem(http.StatusUnprocessableEntity, "unknown integration type", "body.type",
			"no such integration type; see GET /api/v1/integration-types")
	}
	if err != nil {
		return s.fail(ctx, err)
	}
	cfg := in.Config.raw()
	if len(cfg) == 0 {
		cfg = json.RawMessage(`{}`)
	}
	if err := s.checker.Check(ctx, t.ID, t.ConfigSchema, cfg, in.AuthRef); err != nil {
		return s.fail(ctx, err)
	}
	return nil
}

func (s *server) createIntegration(ctx context.Context, in *createIntegrationInput) (*createdIntegrationOutput, error) {
	p, err := principal(ctx)
	if err != nil {
		return nil, err
	}
	// Checked before the idempotency key is claimed: a refused request
	// does not use the key up, and the check (which may resolve an
	// endpoint's host) holds no transaction open.
	if err := s.checkConfig(ctx, in.Body); err != nil {
		return nil, err
	}
	if in.IdempotencyKey == "" {
		it, err := s.store.CreateIntegration(ctx, p.TenantID, p.Subject, in.Body.store())
		if err != nil {
			return nil, s.fail(ctx, err, slog.String("tenantId", p.TenantID))
		}
		s.metrics.crud.WithLabelValues("create").Inc()
		return &createdIntegrationOutput{
			Status:   http.StatusCreated,
			Location: integrationLocation(it.ID),
			ETag:     etag(it.Version),
			Body:     integrationView(it),
		}, nil
	}

	hash, err := requestHash("create-integration", in.Body)
	if err != nil {
		return nil, s.fail(ctx, err)
	}
	resp, replayed, err := s.store.Idempotent(ctx, p.TenantID, in.IdempotencyKey, hash, func(tx pgx.Tx) (store.IdempotentResponse, error) {
		it, err := s.store.CreateIntegrationTx(ctx, tx, p.TenantID, p.Subject, in.Body.store())
		if err != nil {
			return store.IdempotentResponse{}, err
		}
		body, err := json.Marshal(integrationView(it))
		if err != nil {
			return store.IdempotentResponse{}, err
		}
		return store.IdempotentResponse{
			Status:  http.StatusCreated,
			Body:    body,
			Headers: map[string]string{"Location": integrationLocation(it.ID), "ETag": etag(it.Version)},
		}, nil
	})
	if err != nil {
		return nil, s.fail(ctx, err, slog.String("tenantId", p.TenantID))
	}
	out := &createdIntegrationOutput{
		Status:   resp.Status,
		Location: resp.Headers["Location"],
		ETag:     resp.Headers["ETag"],
	}
	if err := json.Unmarshal(resp.Body, &out.Body); err != nil {
		return nil, s.fail(ctx, err, slog.String("tenantId", p.TenantID))
	}
	if replayed {
		out.Replayed = "true"
	} else {
		s.metrics.crud.WithLabelValues("create").Inc()
	}
	return out, nil
}

func (s *server) updateIntegration(ctx context.Context, in *updateIntegrationInput) (*integrationOutput, error) {
	p, err := principal(ctx)
	if err != nil {
		return nil, err
	}
	version, err := parseIfMatch(in.IfMatch)
	if err != nil {
		return nil, err
	}
	if err := s.checkConfig(ctx, in.Body); err != nil {
		return nil, err
	}
	it, err := s.store.UpdateIntegration(ctx, p.TenantID, p.Subject, in.ID, version, in.Body.store())
	if err != nil {
		return nil, s.fail(ctx, err, slog.String("tenantId", p.TenantID), slog.String("integrationId", in.ID))
	}
	s.metrics.crud.WithLabelValues("update").Inc()
	return &integrationOutput{ETag: etag(it.Version), Body: integrationView(it)}, nil
}

func (s *server) deleteIntegration(ctx context.Context, in *deleteIntegrationInput) (*struct{}, error) {
	p, err := principal(ctx)
	if err != nil {
		return nil, err
	}
	version, err := parseIfMatch(in.IfMatch)
	if err != nil {
		return nil, err
	}
	if _, err := s.store.DeleteIntegration(ctx, p.TenantID, p.Subject, in.ID, version); err != nil {
		return nil, s.fail(ctx, err, slog.String("tenantId", p.TenantID), slog.String("integrationId", in.ID))
	}
	s.metrics.crud.WithLabelValues("delete").Inc()
	return &struct{}{}, nil
}
