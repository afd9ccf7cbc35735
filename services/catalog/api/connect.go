package api

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/danielgtaylor/huma/v2"

	"inthub.dev/events"
	"inthub.dev/pkg/connectors"
	"inthub.dev/pkg/connectors/connect"
	"inthub.dev/pkg/fault"
	"inthub.dev/services/catalog/store"
)

// Connectors runs the operations that call an integration's provider
// (*connect.Builder in production). Provider failures are results or
// *connect.ProviderError values, never 5xx of the catalog.
type Connectors interface {
	Test(ctx context.Context, it events.Integration, fresh bool) (connect.TestOutcome, error)
	CheckHealth(ctx context.Context, it events.Integration) (connect.HealthOutcome, error)
	Resources(ctx context.Context, it events.Integration, q connect.ResourceQuery) (connect.ResourcePage, error)
}

var _ Connectors = (*connect.Builder)(nil)

// connectorView is the integration as the connector builder takes it (the
// same fields as integration.created and .updated carry).
func connectorView(it store.Integration) events.Integration {
	return events.Integration{
		ID:           it.ID,
		TenantID:     it.TenantID,
		Type:         it.Type,
		Name:         it.Name,
		Config:       it.Config,
		AuthRef:      it.AuthRef,
		Status:       it.Status,
		HealthStatus: events.HealthStatus(it.HealthStatus),
		Version:      it.Version,
		CreatedAt:    it.CreatedAt,
		UpdatedAt:    it.UpdatedAt,
	}
}

// healthSource is the CloudEvents source of the health checks the API
// runs: the catalog's own, as the outbox events it writes.
const healthSource = store.DefaultSource

// CapabilityCheck is the result of one capability of a test or a health
// check ("repos", "tags", "digest", "app", "rate_limit", ...).
type CapabilityCheck struct {
	Capability string `json:"capability"`
	OK         bool   `json:"ok"`
	Message    string `json:"message"`
	LatencyMs  int64  `json:"latencyMs" minimum:"0"`
	ErrorClass string `json:"errorClass,omitempty" enum:"transient,permanent,offline,unknown" doc:"Why the check failed; absent when it passed."`
}

// RateLimit is the provider's request budget as it last reported it.
type RateLimit struct {
	Limit     int        `json:"limit"`
	Remaining int        `json:"remaining"`
	Reset     *time.Time `json:"reset,omitempty"`
}

// ProbeResult is what a test connection and a health check have in common.
type ProbeResult struct {
	Status            string            `json:"status" enum:"healthy,degraded,unhealthy,unknown"`
	Message           string            `json:"message"`
	LatencyMs         int64             `json:"latencyMs" minimum:"0"`
	ErrorClass        string            `json:"errorClass,omitempty" enum:"transient,permanent,offline,unknown" doc:"Why it failed: transient (retry later), permanent (the configuration or the credentials must change), offline (nothing answers). Absent when every check passed."`
	RetryAfterSeconds int64             `json:"retryAfterSeconds,omitempty" minimum:"0" doc:"How long the provider asked to wait, when it said (rate limits)."`
	Checks            []CapabilityCheck `json:"checks" doc:"One result per capability the integration is used for."`
	Details           map[string]string `json:"details,omitempty"`
	CredentialExpiry  *time.Time        `json:"credentialExpiry,omitempty" doc:"When the credentials stop working, where the provider tells."`
	RateLimit         *RateLimit        `json:"rateLimit,omitempty"`
	Provider          string            `json:"provider"`
}

// TestResult is the outcome of a test connection. A failed test is a
// result (success false, with its error class), not an error of the API.
type TestResult struct {
	IntegrationID string `json:"integrationId" format:"uuid"`
	Success       bool   `json:"success" doc:"True only when every capability check passed."`
	ProbeResult
	Cached   bool      `json:"cached" doc:"The result of a test of the same version of the integration run less than two minutes ago; ask with ?fresh=true to run a new one."`
	TestedAt time.Time `json:"testedAt"`
}

// HealthCheckResult is the outcome of an on-demand health check, recorded
// in the health history as a scheduled check would be.
type HealthCheckResult struct {
	IntegrationID string `json:"integrationId" format:"uuid"`
	ProbeResult
	PreviousStatus string    `json:"previousStatus" enum:"healthy,degraded,unhealthy,unknown" doc:"The integration's health before this check."`
	Changed        bool      `json:"changed" doc:"The check changed the integration's health (an integration.health_changed event was written)."`
	CheckedAt      time.Time `json:"checkedAt"`
	EventID        string    `json:"eventId" format:"uuid" doc:"Id of the integration.health_checked event this result was recorded as."`
}

// Resource is one discovered resource.
type Resource struct {
	Name          string            `json:"name" doc:"A repository's full name (acme/api, group/sub/project, library/nginx); a branch's or a tag's name; a workflow's or run's name, a pipeline's #iid, a KV mount's path."`
	ID            string            `json:"id,omitempty" doc:"The provider's id of the resource, where it has one."`
	DefaultBranch string            `json:"defaultBranch,omitempty"`
	Private       bool              `json:"private,omitempty"`
	CommitSHA     string            `json:"commitSha,omitempty" doc:"The commit a branch points at."`
	Digest        string            `json:"digest,omitempty" doc:"The manifest digest a tag points at, where the listing tells."`
	URL           string            `json:"url,omitempty" doc:"Where people see the resource, where the provider tells."`
	Attributes    map[string]string `json:"attributes,omitempty" doc:"What the kind reports beyond the name: a run's status and conclusion, a pipeline's ref and sha, a KV mount's version."`
}

// ResourceList is a page of discovered resources.
type ResourceList struct {
	IntegrationID string     `json:"integrationId" format:"uuid"`
	Kind          string     `json:"kind" doc:"repos, branches, tags, or a kind of the integration's type (its capabilities name them)."`
	Repo          string     `json:"repo,omitempty" doc:"The repository the page was listed within; absent for a kind listed without one."`
	Items         []Resource `json:"items"`
	NextCursor    string     `json:"nextCursor,omitempty" doc:"Pass as ?cursor= for the next page; absent on the last page."`
	Provider      string     `json:"provider"`
	Cached        bool       `json:"cached" doc:"Served from the discovery cache (up to ten minutes old); ask with ?fresh=true to list again."`
}

// ProviderProblem is the problem document of a provider that failed a
// discovery call (502): RFC 9457 with the provider and the error class as
// extension members. Its detail is the provider's failure as users may
// read it (no secret, no address refused by the egress policy).
type ProviderProblem struct {
	huma.ErrorModel
	Provider          string `json:"provider" doc:"The provider that failed, e.g. github."`
	ErrorClass        string `json:"errorClass" enum:"transient,permanent,offline,unknown" doc:"transient: retry later (after Retry-After when given); permanent: the configuration, the credentials or the request must change; offline: nothing answers at the endpoint."`
	RetryAfterSeconds int64  `json:"retryAfterSeconds,omitempty" minimum:"0"`
}

type testInput struct {
	ID    string `path:"id" doc:"Integration id; another tenant's id answers 404."`
	Fresh bool   `query:"fresh" doc:"Run a new test even if one of this version ran less than two minutes ago."`
}

type testOutput struct {
	Body TestResult
}

type healthCheckInput struct {
	ID string `path:"id" doc:"Integration id; another tenant's id answers 404."`
}

type healthCheckOutput struct {
	Body HealthCheckResult
}

type resourcesInput struct {
	ID     string `path:"id" doc:"Integration id; another tenant's id answers 404."`
	Kind   string `query:"kind" maxLength:"32" doc:"What to list: repos, branches, tags, or a kind of the integration's type such as workflows, runs, pipelines or kv_mounts (its capabilities name them; a 400 lists those it supports)."`
	Repo   string `query:"repo" maxLength:"512" doc:"The repository (a GitLab project) to list within, required for the kinds listed within one (branches, tags, workflows, runs, pipelines), as listed by kind=repos; ignored for the others."`
	Limit  int    `query:"limit" minimum:"1" maximum:"100" default:"50" doc:"Page size."`
	Cursor string `query:"cursor" maxLength:"2048" doc:"The nextCursor of the previous page; absent for the first page."`
	Fresh  bool   `query:"fresh" doc:"List from the provider even if the page is cached."`
}

type resourcesOutput struct {
	Body ResourceList
}

// Locations of the fields the connector operations' problems name.
const (
	locKind = "query.kind"
	locRepo = "query.repo"
)

func (s *server) registerConnect() {
	test := operation("test-integration", http.MethodPost, "/integrations/{id}/test",
		"Test an integration's connection now", ScopeWrite, http.StatusNotFound, http.StatusConflict)
	test.Description = "Runs the operations the integration is used for against its provider, one check per capability, " +
		"and answers synchronously. A failed test is answered 200 with success false and its error class. " +
		"The result of a test of the same version of the integration is reused for two minutes unless ?fresh=true. " +
		"409: the integration's type has no connector in this catalog."
	test.DefaultStatus = http.StatusOK
	huma.Register(s.api, test, s.testIntegration)

	hc := operation("check-integration-health", http.MethodPost, "/integrations/{id}/health-check",
		"Run a health check of an integration now", ScopeWrite, http.StatusNotFound, http.StatusConflict)
	hc.Description = "Runs one health check now and records it in the health history exactly as a scheduled check " +
		"(a transition writes integration.health_changed). 409: the integration is disabled, or its type has no connector."
	hc.DefaultStatus = http.StatusOK
	huma.Register(s.api, hc, s.checkIntegrationHealth)

	res := operation("list-integration-resources", http.MethodGet, "/integrations/{id}/resources",
		"Discover an integration's resources (repositories, branches, tags, and its type's own kinds)", ScopeRead,
		http.StatusBadRequest, http.StatusNotFound, http.StatusConflict)
	res.Description = "Lists one page of what the provider holds, cached ten minutes per version of the integration. " +
		"Besides repos, branches and tags, a type lists the kinds its connector declares (ci.github_actions: workflows and runs; " +
		"ci.gitlab_ci: pipelines; vault.hashicorp: kv_mounts). " +
		"400: no kind, a kind the integration's type cannot list (the problem lists those it can), or no repo for a kind listed within one. " +
		"409: the integration's type has no connector. 502: the provider failed; the problem names the error class, " +
		"with Retry-After when the provider said how long to wait."
	res.Responses = map[string]*huma.Response{
		strconv.Itoa(http.StatusBadGateway): {
			Description: "The provider failed",
			Headers: map[string]*huma.Param{
				"Retry-After": {Description: "Seconds to wait before retrying, when the provider said (transient failures only).",
					Schema: &huma.Schema{Type: huma.TypeInteger, Minimum: new(float64)}},
			},
			Content: map[string]*huma.MediaType{"application/problem+json": {
				Schema: s.api.OpenAPI().Components.Schemas.Schema(reflect.TypeFor[ProviderProblem](), true, "ProviderProblem"),
			}},
		},
	}
	huma.Register(s.api, res, s.listResources)
}

// integrationFor loads the caller's integration (404 for a missing one,
// another tenant's included) and checks that connectors are configured.
func (s *server) integrationFor(ctx context.Context, id string) (context.Context, store.Integration, error) {
	p, err := principal(ctx)
	if err != nil {
		return ctx, store.Integration{}, err
	}
	it, err := s.store.GetIntegration(ctx, p.TenantID, id)
	if err != nil {
		return ctx, store.Integration{}, s.fail(ctx, err, slog.String("tenantId", p.TenantID), slog.String("integrationId", id))
	}
	if s.connectors == nil {
		return ctx, store.Integration{}, s.fail(ctx, errors.New("catalog api: Deps.Connectors is nil: connector operations are not configured"),
			slog.String("tenantId", p.TenantID), slog.String("integrationId", id))
	}
	return connect.WithActor(ctx, p.Subject), it, nil
}

// connectFail answers the errors of a connector operation that are not
// provider failures.
func (s *server) connectFail(ctx context.Context, it store.Integration, err error) error {
	var ue *connect.UnsupportedError
	var re *connect.RepoRequiredError
	switch {
	case errors.Is(err, connect.ErrNoConnector):
		return problem(http.StatusConflict, "the integration's type has no connector in this catalog", "path.id",
			"integrations of type "+it.Type+" cannot be called from this catalog (is its plugin loaded?)")
	case errors.As(err, &ue):
		return problem(http.StatusBadRequest, "unsupported resource kind", locKind, ue.Error())
	case errors.As(err, &re):
		return problem(http.StatusBadRequest, "a repository is required", locRepo, re.Error())
	}
	return s.fail(ctx, err, slog.String("tenantId", it.TenantID), slog.String("integrationId", it.ID))
}

func (s *server) testIntegration(ctx context.Context, in *testInput) (*testOutput, error) {
	ctx, it, err := s.integrationFor(ctx, in.ID)
	if err != nil {
		return nil, err
	}
	out, err := s.connectors.Test(ctx, connectorView(it), in.Fresh)
	if err != nil {
		return nil, s.connectFail(ctx, it, err)
	}
	r := out.Result
	return &testOutput{Body: TestResult{
		IntegrationID: it.ID,
		Success:       r.Status == connectors.StatusHealthy,
		ProbeResult:   probeView(r, out.Provider),
		Cached:        out.Cached,
		TestedAt:      out.TestedAt,
	}}, nil
}

func (s *server) checkIntegrationHealth(ctx context.Context, in *healthCheckInput) (*healthCheckOutput, error) {
	ctx, it, err := s.integrationFor(ctx, in.ID)
	if err != nil {
		return nil, err
	}
	if it.Status == "disabled" {
		return nil, problem(http.StatusConflict, "the integration is disabled", "path.id",
			"a disabled integration is not health-checked; enable it first, or use POST .../test")
	}
	out, err := s.connectors.CheckHealth(ctx, connectorView(it))
	if err != nil {
		return nil, s.connectFail(ctx, it, err)
	}
	r := out.Result
	// Recorded as the poller's result is: the same event, the same store
	// call, so the history and integration.health_changed cannot differ
	// between a scheduled and an on-demand check.
	ev, err := events.New(events.SubjectIntegrationHealthChecked, healthSource, it.TenantID, events.HealthChecked{
		IntegrationID: it.ID,
		TenantID:      it.TenantID,
		Type:          it.Type,
		Status:        events.HealthStatus(r.Status),
		LatencyMs:     max(r.Latency.Milliseconds(), 0),
		Message:       r.Message,
		CheckedAt:     out.CheckedAt,
	})
	if err != nil {
		return nil, s.fail(ctx, err, slog.String("tenantId", it.TenantID), slog.String("integrationId", it.ID))
	}
	// The check ran; its record must not be lost to a client that hung up.
	changed, err := s.store.RecordHealth(context.WithoutCancel(ctx), ev)
	if err != nil {
		return nil, s.fail(ctx, err, slog.String("tenantId", it.TenantID), slog.String("integrationId", it.ID))
	}
	return &healthCheckOutput{Body: HealthCheckResult{
		IntegrationID:  it.ID,
		ProbeResult:    probeView(r, out.Provider),
		PreviousStatus: it.HealthStatus,
		Changed:        changed,
		CheckedAt:      out.CheckedAt,
		EventID:        ev.ID,
	}}, nil
}

func (s *server) listResources(ctx context.Context, in *resourcesInput) (*resourcesOutput, error) {
	// A missing kind, and branches or tags without a repository, are 400
	// before anything is read, whatever the id. Whether the type lists the
	// kind is its connector's to say, once the integration is read.
	if in.Kind == "" {
		return nil, problem(http.StatusBadRequest, "a resource kind is required", locKind,
			"name what to list: "+strings.Join(connect.Kinds, ", ")+", or a kind of the integration's type")
	}
	if (in.Kind == connect.KindBranches || in.Kind == connect.KindTags) && strings.TrimSpace(in.Repo) == "" {
		return nil, problem(http.StatusBadRequest, "a repository is required", locRepo,
			"required for kind="+in.Kind+": a repository as listed by kind=repos")
	}
	ctx, it, err := s.integrationFor(ctx, in.ID)
	if err != nil {
		return nil, err
	}
	page, err := s.connectors.Resources(ctx, connectorView(it), connect.ResourceQuery{
		Kind: in.Kind, Repo: in.Repo, Limit: in.Limit, Cursor: in.Cursor, Fresh: in.Fresh,
	})
	var pe *connect.ProviderError
	if errors.As(err, &pe) {
		return nil, providerProblem(pe)
	}
	if err != nil {
		return nil, s.connectFail(ctx, it, err)
	}
	out := &resourcesOutput{Body: ResourceList{
		IntegrationID: it.ID, Kind: in.Kind, Repo: page.Repo, Items: make([]Resource, 0, len(page.Items)),
		NextCursor: page.Next, Provider: page.Provider, Cached: page.Cached,
	}}
	for _, r := range page.Items {
		out.Body.Items = append(out.Body.Items, Resource(r))
	}
	return out, nil
}

// providerProblem is the 502 of a failed discovery call. The problem is
// not a *huma.ErrorModel, so scrubProblem leaves its detail (written for
// users by the connector) as it is.
func providerProblem(pe *connect.ProviderError) error {
	class := pe.Class()
	p := &ProviderProblem{
		ErrorModel: huma.ErrorModel{
			Title:  http.StatusText(http.StatusBadGateway),
			Status: http.StatusBadGateway,
			Detail: "the provider failed (" + class.String() + "): " + pe.Err.Error(),
		},
		Provider:   pe.Provider,
		ErrorClass: class.String(),
	}
	if d := fault.RetryAfterOf(pe.Err); d > 0 && class == fault.ClassTransient {
		secs := int64((d + time.Second - 1) / time.Second)
		p.RetryAfterSeconds = secs
		return huma.ErrorWithHeaders(p, http.Header{"Retry-After": {strconv.FormatInt(secs, 10)}})
	}
	return p
}

func probeView(r connectors.Result, provider string) ProbeResult {
	v := ProbeResult{
		Status:           string(r.Status),
		Message:          r.Message,
		LatencyMs:        max(r.Latency.Milliseconds(), 0),
		Checks:           make([]CapabilityCheck, 0, len(r.Checks)),
		Details:          r.Details,
		CredentialExpiry: utcPtr(r.CredentialExpiry),
		Provider:         provider,
	}
	if v.Status == "" {
		v.Status = string(connectors.StatusUnknown)
	}
	if r.Status != connectors.StatusHealthy {
		v.ErrorClass = classOf(r.Class)
		if d := fault.RetryAfterOf(r.Err); d > 0 {
			v.RetryAfterSeconds = int64((d + time.Second - 1) / time.Second)
		}
	}
	for _, c := range r.Checks {
		cc := CapabilityCheck{Capability: c.Capability, OK: c.OK, Message: c.Message, LatencyMs: max(c.Latency.Milliseconds(), 0)}
		if !c.OK {
			cc.ErrorClass = classOf(c.Class)
		}
		v.Checks = append(v.Checks, cc)
	}
	if rl := r.RateLimit; rl != nil {
		v.RateLimit = &RateLimit{Limit: rl.Limit, Remaining: rl.Remaining}
		if !rl.Reset.IsZero() {
			v.RateLimit.Reset = utcPtr(&rl.Reset)
		}
	}
	return v
}

// classOf names a failure's class; an unclassified failure is transient
// to the worker frame, so it is called that here too.
func classOf(c fault.Class) string {
	if c == fault.ClassUnknown {
		return fault.ClassTransient.String()
	}
	return c.String()
}

func utcPtr(t *time.Time) *time.Time {
	if t == nil || t.IsZero() {
		return nil
	}
	u := t.UTC()
	return &u
}
