package api

import (
	"context"
	"net/http"

	"github.com/danielgtaylor/huma/v2"

	"inthub.dev/services/catalog/store"
)

// IntegrationType is a kind of integration the installation offers.
type IntegrationType struct {
	ID           string     `json:"id" doc:"e.g. scm.github"`
	DisplayName  string     `json:"displayName"`
	Description  string     `json:"description"`
	Provider     string     `json:"provider"`
	ConfigSchema JSONObject `json:"configSchema" doc:"JSON Schema (draft 2020-12) of the config; fields with x-secret: true hold AuthRef URIs."`
	Capabilities []string   `json:"capabilities"`
	Builtin      bool       `json:"builtin"`
}

// IntegrationTypeList is every integration type, ordered by id.
type IntegrationTypeList struct {
	Items []IntegrationType `json:"items"`
}

func typeView(t store.IntegrationType) IntegrationType {
	caps := t.Capabilities
	if caps == nil {
		caps = []string{}
	}
	return IntegrationType{
		ID:           t.ID,
		DisplayName:  t.DisplayName,
		Description:  t.Description,
		Provider:     t.Provider,
		ConfigSchema: JSONObject(t.ConfigSchema),
		Capabilities: caps,
		Builtin:      t.Builtin,
	}
}

type typeListOutput struct {
	Body IntegrationTypeList
}

type typeIDInput struct {
	ID string `path:"id" doc:"Integration type id."`
}

type typeOutput struct {
	Body IntegrationType
}

func (s *server) registerTypes() {
	huma.Register(s.api, operation("list-integration-types", http.MethodGet, "/integration-types",
		"List integration types", ScopeRead), s.listTypes)
	huma.Register(s.api, operation("get-integration-type", http.MethodGet, "/integration-types/{id}",
		"Get an integration type and its config schema", ScopeRead, http.StatusNotFound), s.getType)
}

func (s *server) listTypes(ctx context.Context, _ *struct{}) (*typeListOutput, error) {
	ts, err := s.store.ListTypes(ctx)
	if err != nil {
		return nil, s.fail(ctx, err)
	}
	out := &typeListOutput{Body: IntegrationTypeList{Items: make([]IntegrationType, 0, len(ts))}}
	for _, t := range ts {
		out.Body.Items = append(out.Body.Items, typeView(t))
	}
	return out, nil
}

func (s *server) getType(ctx context.Context, in *typeIDInput) (*typeOutput, error) {
	t, err := s.store.GetType(ctx, in.ID)
	if err != nil {
		return nil, s.fail(ctx, err)
	}
	return &typeOutput{Body: typeView(t)}, nil
}
