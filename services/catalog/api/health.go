package api

import (
	"context"
	"log/slog"
	"net/http"
	"reflect"
	"sync"
	"time"

	"github.com/danielgtaylor/huma/v2"

	"inthub.dev/services/catalog/store"
)

// HealthCheck is one result of a health check of an integration.
type HealthCheck struct {
	ID        int64     `json:"id"`
	Status    string    `json:"status" enum:"healthy,degraded,unhealthy,unknown"`
	Message   string    `json:"message"`
	LatencyMs int64     `json:"latencyMs" minimum:"0"`
	CheckedAt time.Time `json:"checkedAt"`
	EventID   string    `json:"eventId" format:"uuid" doc:"The integration.health_checked event this result came from."`
}

// HealthHistory is an integration's latest check and a page of its history,
// newest first.
type HealthHistory struct {
	IntegrationID string        `json:"integrationId" format:"uuid"`
	Latest        *HealthCheck  `json:"latest,omitempty" doc:"Absent until the first check."`
	History       []HealthCheck `json:"history"`
	NextCursor    string        `json:"nextCursor,omitempty" doc:"Pass as ?cursor= for the next page; absent on the last page."`
}

func healthView(h store.HealthCheck) HealthCheck {
	return HealthCheck{ID: h.ID, Status: h.Status, Message: h.Message, LatencyMs: h.LatencyMs, CheckedAt: h.CheckedAt, EventID: h.EventID}
}

type healthInput struct {
	ID string `path:"id" doc:"Integration id."`
	Page
}

type healthOutput struct {
	Body HealthHistory
}

func (s *server) registerHealth() {
	huma.Register(s.api, operation("get-integration-health", http.MethodGet, "/integrations/{id}/health",
		"Latest health and health history of an integration", ScopeRead, http.StatusBadRequest, http.StatusNotFound),
		s.health)
}

func (s *server) health(ctx context.Context, in *healthInput) (*healthOutput, error) {
	p, err := principal(ctx)
	if err != nil {
		return nil, err
	}
	latest, history, next, err := s.store.HealthHistory(ctx, p.TenantID, in.ID, in.Limit, in.Cursor)
	if err != nil {
		return nil, s.fail(ctx, err, slog.String("tenantId", p.TenantID), slog.String("integrationId", in.ID))
	}
	out := &healthOutput{Body: HealthHistory{IntegrationID: in.ID, History: make([]HealthCheck, 0, len(history)), NextCursor: next}}
	if latest != nil {
		l := healthView(*latest)
		out.Body.Latest = &l
		// The store answered for the canonical form of the id.
		out.Body.IntegrationID = latest.IntegrationID
	}
	for _, h := range history {
		out.Body.History = append(out.Body.History, healthView(h))
	}
	return out, nil
}

// Probe is the body of /healthz and /readyz.
type Probe struct {
	Status string `json:"status" enum:"ok,unavailable"`
}

type probeOutput struct {
	Status int
	Body   Probe
}

// readyTimeout bounds each readiness check: a probe that hangs is a failed
// probe, and the orchestrator's own timeout is a few seconds.
const readyTimeout = 2 * time.Second

// registerProbes documents the two probes; they need no token (the auth
// middleware lets them through, and they carry no security requirement).
func (s *server) registerProbes() {
	huma.Register(s.api, huma.Operation{
		OperationID: "healthz",
		Method:      http.MethodGet,
		Path:        "/healthz",
		Summary:     "Liveness: 200 while the process runs",
		Security:    []map[string][]string{},
		Tags:        []string{"probes"},
	}, func(context.Context, *struct{}) (*probeOutput, error) {
		return &probeOutput{Status: http.StatusOK, Body: Probe{Status: "ok"}}, nil
	})
	op := huma.Operation{
		OperationID: "readyz",
		Method:      http.MethodGet,
		Path:        "/readyz",
		Summary:     "Readiness: 200 when PostgreSQL and NATS answer, else 503",
		Security:    []map[string][]string{},
		Tags:        []string{"probes"},
		Responses: map[string]*huma.Response{
			"503": {
				Description: "A dependency does not answer",
				Content:     map[string]*huma.MediaType{"application/json": {Schema: s.api.OpenAPI().Components.Schemas.Schema(reflect.TypeFor[Probe](), true, "Probe")}},
			},
		},
	}
	huma.Register(s.api, op, s.readyz)
}

// readyz runs every readiness check at once. Which one failed and why goes
// to the log, not to the anonymous caller.
func (s *server) readyz(ctx context.Context, _ *struct{}) (*probeOutput, error) {
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	var (
		wg     sync.WaitGroup
		mu     sync.Mutex
		failed bool
	)
	for i, check := range s.ready {
		wg.Go(func() {
			if err := check(ctx); err != nil {
				s.log.WarnContext(ctx, "catalog api: not ready", slog.Int("check", i), slog.String("error", err.Error()))
				mu.Lock()
				failed = true
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if failed {
		return &probeOutput{Status: http.StatusServiceUnavailable, Body: Probe{Status: "unavailable"}}, nil
	}
	return &probeOutput{Status: http.StatusOK, Body: Probe{Status: "ok"}}, nil
}
