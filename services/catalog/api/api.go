// Package api is the catalog's HTTP API (/api/v1), built code-first on
// huma/v2 so that the OpenAPI 3.1 document served at /api/v1/openapi.json
// and the handlers are one thing.
//
// Three of huma's defaults are wrong for a service that takes credentials
// references and tenant data (DESIGN §10), and are changed here:
//   - field names are matched case-insensitively, so {"name":"a","NAME":"z"}
//     would validate and the handler would see "z": strict casing is turned
//     on (huma.ValidateStrictCasing) and every request schema refuses
//     unknown properties, so the upper-case twin is an error;
//   - error details echo the offending value (for a malformed body, the
//     whole body): a transformer drops every echoed value before a problem
//     document is written (see scrubProblem);
//   - an operation documents only a default error response: each operation
//     lists its error statuses so the document has them.
//
// The tenant comes from the authenticated principal only, never from the
// request; another tenant's id is answered like a missing one (404).
package api

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"sync"

	"github.com/danielgtaylor/huma/v2"
	"github.com/danielgtaylor/huma/v2/adapters/humago"
	"github.com/prometheus/client_golang/prometheus"

	"inthub.dev/services/catalog/auth"
	"inthub.dev/services/catalog/configcheck"
)

// Prefix is the path every API operation lives under.
const Prefix = "/api/v1"

// OpenAPIPath serves the OpenAPI document.
const OpenAPIPath = Prefix + "/openapi.json"

// Scopes a token must carry (admin implies write, write implies read).
const (
	ScopeRead  = auth.ScopeRead
	ScopeWrite = auth.ScopeWrite
	ScopeAdmin = auth.ScopeAdmin
)

// securityScheme names the bearer scheme in the document; an operation's
// security requirement is also what the scope check enforces, so the two
// cannot drift apart.
const securityScheme = "bearer"

// Readiness reports whether a dependency (PostgreSQL, NATS) can serve; a
// nil error means ready. /readyz runs every one.
type Readiness func(ctx context.Context) error

// Deps is what the API needs.
type Deps struct {
	// Store is the catalog's data layer (*store.Store in production).
	Store Store
	// Auth authenticates bearer tokens.
	Auth *auth.Authenticator
	// Checker validates an integration's config against its type's schema,
	// the secret rules and the egress policy.
	Checker *configcheck.Checker
	// Connectors runs the operations that call a provider (test,
	// health-check, resources): *connect.Builder. Nil answers them 500.
	Connectors Connectors
	// Ready are the readiness checks of /readyz (PostgreSQL ping, NATS).
	Ready []Readiness
	// Doctor runs and stores doctor reports (doctor.go); nil answers
	// POST /integrations/{id}/doctor with 501.
	Doctor Doctor
	// Plugins discovers and lists out-of-process connector plugins
	// (plugins.go); nil answers the plugin routes with 501.
	Plugins Plugins
	// Metrics receives the API's collectors and is served at /metrics;
	// nil uses a private registry.
	Metrics *prometheus.Registry
	// Logger; nil discards.
	Logger *slog.Logger
}

// strictCasing turns on huma's case-sensitive field matching once. It is a
// package variable of huma's (no per-API setting exists in v2.37), so it
// is set before the first API is built and never changed again: a write
// while another API validates a request would be a data race.
var strictCasing sync.Once

// server holds what the handlers share.
type server struct {
	store   Store
	checker *configcheck.Checker
	// connectors may be nil (see Deps.Connectors).
	connectors Connectors
	doctor     Doctor
	plugins    Plugins
	ready      []Readiness
	log        *slog.Logger
	metrics    *metrics
	api        huma.API
	// mux records every pattern it is given, so that a test can compare
	// the router with the document.
	mux *recordingMux
	// handler is the mux wrapped in metrics and authentication.
	handler http.Handler
}

// New builds the API: the returned handler serves /api/v1/..., the
// OpenAPI document, /healthz, /readyz and /metrics; the huma.API gives
// access to the document. The served document is rendered once, here:
// operations registered on the huma.API afterwards would be routed but not
// documented, so register none.
func New(d Deps) (http.Handler, huma.API, error) {
	s, err := newServer(d)
	if err != nil {
		return nil, nil, err
	}
	return s.handler, s.api, nil
}

func newServer(d Deps) (*server, error) {
	var missing []error
	if d.Store == nil {
		missing = append(missing, errors.New("Deps.Store is nil: pass store.New(appPool)"))
	}
	if d.Auth == nil {
		missing = append(missing, errors.New("Deps.Auth is nil: pass auth.New(ctx, auth.Config{...})"))
	}
	if d.Checker == nil {
		missing = append(missing, errors.New("Deps.Checker is nil: pass configcheck.New(policy, resolver)"))
	}
	if len(missing) > 0 {
		return nil, errors.Join(append([]error{errors.New("catalog api: missing dependencies")}, missing...)...)
	}
	strictCasing.Do(func() { huma.ValidateStrictCasing = true })

	logger := d.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	reg := d.Metrics
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	m, err := newMetrics(reg)
	if err != nil {
		return nil, err
	}
	s := &server{
		store:      d.Store,
		doctor:     d.Doctor,
		plugins:    d.Plugins,
		checker:    d.Checker,
		connectors: d.Connectors,
		ready:      d.Ready,
		log:        logger,
		metrics:    m,
		mux:        newRecordingMux(),
	}

	s.api = humago.New(s.mux, s.config())
	s.api.UseMiddleware(s.authorize)

	s.registerIntegrations()
	s.registerHealth()
	s.registerConnect()
	s.registerTypes()
	s.registerProfiles()
	s.registerProbes()
	s.registerDoctor()
	s.registerPlugins()

	// Error details never carry the request's value (scrubProblem), so
	// the document does not offer the field either.
	if ed := s.api.OpenAPI().Components.Schemas.Map()["ErrorDetail"]; ed != nil {
		delete(ed.Properties, "value")
		ed.PrecomputeMessages()
	}
	doc, err := s.api.OpenAPI().MarshalJSON()
	if err != nil {
		return nil, err
	}
	// The document is fixed once every operation is registered: served
	// from bytes rather than re-marshalled per request.
	s.mux.HandleFunc("GET "+OpenAPIPath, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/openapi+json")
		_, _ = w.Write(doc)
	})
	s.mux.Handle("GET /metrics", m.handler(reg))

	authn := auth.Middleware(d.Auth, "/healthz", "/readyz", "/metrics")
	s.handler = m.instrument(authn(captureRoute(s.mux)))
	return s, nil
}

// config is huma's default configuration without what this API does not
// serve (docs UI, /schemas, YAML and 3.0 documents: routes the document
// would not list) and without the link transformer that adds "$schema" to
// every response body.
func (s *server) config() huma.Config {
	c := huma.DefaultConfig("inthub catalog", "1.0.0")
	c.CreateHooks = nil
	c.OpenAPIPath = ""
	c.DocsPath = ""
	c.SchemasPath = ""
	c.Info.Description = "The catalog of a tenant's integrations with external tools: " +
		"integrations, integration types, connection profiles and health history."
	c.Components.SecuritySchemes = map[string]*huma.SecurityScheme{
		securityScheme: {
			Type:         "http",
			Scheme:       "bearer",
			BearerFormat: "JWT",
			Description:  "A JWT from the platform's Authority; the tenant is taken from its tenant claim.",
		},
	}
	c.Transformers = []huma.Transformer{scrubProblem}
	return c
}

// authorize enforces the scope that the operation's security requirement
// names. Authentication itself (401) is done by auth.Middleware before
// the request reaches huma.
func (s *server) authorize(ctx huma.Context, next func(huma.Context)) {
	scope, secured := requiredScope(ctx.Operation())
	if !secured {
		next(ctx)
		return
	}
	if scope == "" {
		// Any authenticated caller; auth.Middleware has refused the rest.
		next(ctx)
		return
	}
	if err := auth.RequireScope(ctx.Context(), scope); err != nil {
		var ae *auth.Error
		if !errors.As(err, &ae) {
			_ = huma.WriteErr(s.api, ctx, http.StatusUnauthorized, "a bearer token is required")
			return
		}
		for k, vs := range ae.GetHeaders() {
			for _, v := range vs {
				ctx.AppendHeader(k, v)
			}
		}
		_ = huma.WriteErr(s.api, ctx, ae.GetStatus(), ae.Reason)
		return
	}
	next(ctx)
}

func requiredScope(op *huma.Operation) (scope string, secured bool) {
	for _, req := range op.Security {
		if scopes, ok := req[securityScheme]; ok {
			if len(scopes) > 0 {
				return scopes[0], true
			}
			return "", true
		}
	}
	return "", false
}

// principal returns the caller; the authorize middleware has made sure
// there is one for every secured operation.
func principal(ctx context.Context) (auth.Principal, error) {
	p, ok := auth.PrincipalFrom(ctx)
	if !ok {
		return auth.Principal{}, huma.Error401Unauthorized("a bearer token is required")
	}
	return p, nil
}

// recordingMux is a ServeMux that remembers its patterns.
//
// It also works around one limit of ServeMux: DESIGN §6 asks for both
// GET /integrations/by-type/{type} and GET /integrations/{id}/health (and
// GET /integrations/{id}/doctor), and ServeMux refuses such a pair (each
// matches a path the other does not, and both match
// /integrations/by-type/health). They are served by one pattern,
// /integrations/{id}/{sub}, whose handler picks the operation: "by-type"
// is never an id (ids are UUIDs) and "health" or "doctor" is never a type
// (type ids contain a dot), so the choice is never ambiguous in practice.
type recordingMux struct {
	*http.ServeMux
	mu       sync.Mutex
	patterns []string
	sub      *subDispatch
}

const (
	patternByType = "GET " + Prefix + "/integrations/by-type/{type}"
	patternHealth = "GET " + Prefix + "/integrations/{id}/health"
	patternDoctor = "GET " + Prefix + "/integrations/{id}/doctor"
	patternSub    = "GET " + Prefix + "/integrations/{id}/{sub}"
)

// subPatterns are the GET /integrations/{id}/<sub> patterns that
// subDispatch serves, by their last segment.
var subPatterns = map[string]string{"health": patternHealth, "doctor": patternDoctor}

func newRecordingMux() *recordingMux {
	return &recordingMux{ServeMux: http.NewServeMux()}
}

func (m *recordingMux) HandleFunc(pattern string, h func(http.ResponseWriter, *http.Request)) {
	m.Handle(pattern, http.HandlerFunc(h))
}

func (m *recordingMux) Handle(pattern string, h http.Handler) {
	m.mu.Lock()
	m.patterns = append(m.patterns, pattern)
	m.mu.Unlock()
	sub, isSub := "", false
	for seg, p := range subPatterns {
		if p == pattern {
			sub, isSub = seg, true
		}
	}
	if pattern != patternByType && !isSub {
		m.ServeMux.Handle(pattern, h)
		return
	}
	if m.sub == nil {
		m.sub = &subDispatch{subs: map[string]http.Handler{}}
		m.ServeMux.Handle(patternSub, m.sub)
	}
	if pattern == patternByType {
		m.sub.byType = h
	} else {
		m.sub.subs[sub] = h
	}
}

// Patterns returns the patterns registered so far, as registered (those
// that share one ServeMux pattern are listed as themselves).
func (m *recordingMux) Patterns() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]string(nil), m.patterns...)
}

// subDispatch serves /integrations/{id}/{sub}; see recordingMux.
type subDispatch struct {
	byType http.Handler
	subs   map[string]http.Handler // by the last segment
}

func (d *subDispatch) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	id, sub := r.PathValue("id"), r.PathValue("sub")
	if id == "by-type" && d.byType != nil {
		r.SetPathValue("type", sub)
		r.Pattern = patternByType
		d.byType.ServeHTTP(w, r)
		return
	}
	if h := d.subs[sub]; h != nil {
		r.Pattern = subPatterns[sub]
		h.ServeHTTP(w, r)
		return
	}
	http.NotFound(w, r)
}
