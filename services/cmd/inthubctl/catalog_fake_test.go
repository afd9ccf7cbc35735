package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeCatalog mimics the catalog API (services/catalog/api) closely enough
// for the CLI: the same paths, JSON field names, ETag/If-Match and
// Idempotency-Key rules, strict request bodies, and RFC 9457 problem
// documents on errors. The end-to-end test runs the same commands against
// the real API.
type fakeCatalog struct {
	t     *testing.T
	srv   *httptest.Server
	token string

	mu       sync.Mutex
	items    []*fakeIntegration // in creation order, the API's list order
	idem     map[string]string  // Idempotency-Key → integration id
	requests []fakeRequest
	nextID   int
	// beforeWrite runs before a PUT or DELETE is applied: a concurrent
	// edit by someone else.
	beforeWrite func(it *fakeIntegration)
}

type fakeRequest struct {
	method, path string
	query        string
	ifMatch      string
	idemKey      string
	body         string
}

// fakeIntegration has the API's JSON field names.
type fakeIntegration struct {
	ID              string          `json:"id"`
	TenantID        string          `json:"tenantId"`
	Type            string          `json:"type"`
	Name            string          `json:"name"`
	Config          json.RawMessage `json:"config"`
	AuthRef         string          `json:"authRef,omitempty"`
	Status          string          `json:"status"`
	HealthStatus    string          `json:"healthStatus"`
	LastHealthCheck *time.Time      `json:"lastHealthCheck,omitempty"`
	Version         int64           `json:"version"`
	CreatedAt       time.Time       `json:"createdAt"`
	UpdatedAt       time.Time       `json:"updatedAt"`
	CreatedBy       string          `json:"createdBy"`
}

const fakeTenant = "11111111-1111-4111-8111-111111111111"

var fakeEpoch = time.Date(2025, 6, 1, 10, 0, 0, 0, time.UTC)

var fakeTypes = []map[string]any{
	{
		"id": "scm.github", "displayName": "GitHub App", "description": "GitHub through a GitHub App installation",
		"provider": "github", "capabilities": []string{"repos", "status"}, "builtin": true,
		"configSchema": map[string]any{
			"type": "object", "required": []string{"appId", "privateKey"},
			"properties": map[string]any{
				"appId":          map[string]any{"type": "integer", "description": "The App's id."},
				"privateKey":     map[string]any{"type": "string", "x-secret": true, "description": "AuthRef of the App's private key."},
				"timeoutSeconds": map[string]any{"$ref": "#/$defs/timeoutSeconds"},
			},
			"$defs": map[string]any{"timeoutSeconds": map[string]any{"type": "integer", "default": 30, "description": "Timeout of one operation."}},
		},
	},
	{
		"id": "test.inmemory", "displayName": "In-memory (test double)", "description": "Deterministic double",
		"provider": "inmemory", "capabilities": []string{}, "builtin": true,
		"configSchema": map[string]any{"type": "object", "properties": map[string]any{"healthy": map[string]any{"type": "boolean", "default": true}}},
	},
}

func newFakeCatalog(t *testing.T) *fakeCatalog {
	t.Helper()
	f := &fakeCatalog{t: t, token: "test-token", idem: map[string]string{}}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/v1/integrations", f.list)
	mux.HandleFunc("POST /api/v1/integrations", f.create)
	mux.HandleFunc("GET /api/v1/integrations/{id}", f.get)
	mux.HandleFunc("PUT /api/v1/integrations/{id}", f.update)
	mux.HandleFunc("DELETE /api/v1/integrations/{id}", f.delete)
	mux.HandleFunc("GET /api/v1/integration-types", f.listTypes)
	mux.HandleFunc("GET /api/v1/integration-types/{id}", f.getType)
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			problem(w, http.StatusBadRequest, "unreadable body")
			return
		}
		f.mu.Lock()
		f.requests = append(f.requests, fakeRequest{method: r.Method, path: r.URL.EscapedPath(), query: r.URL.RawQuery,
			ifMatch: r.Header.Get("If-Match"), idemKey: r.Header.Get("Idempotency-Key"), body: string(body)})
		f.mu.Unlock()
		r.Body = io.NopCloser(bytes.NewReader(body))
		if r.Header.Get("Authorization") != "Bearer "+f.token {
			w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
			problem(w, http.StatusUnauthorized, "the token is not valid")
			return
		}
		mux.ServeHTTP(w, r)
	}))
	t.Cleanup(f.srv.Close)
	return f
}

// run runs inthubctl in-process with the fake's address and token in the
// environment.
func (f *fakeCatalog) run(args ...string) result {
	f.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return runWith(ctx, map[string]string{"INTHUB_SERVER": f.srv.URL, "INTHUB_TOKEN": f.token}, args...)
}

func (f *fakeCatalog) reqs() []fakeRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.requests)
}

func (f *fakeCatalog) find(id string) (*fakeIntegration, int) {
	for i, it := range f.items {
		if it.ID == id {
			return it, i
		}
	}
	return nil, -1
}

// add stores an integration directly, as if created earlier.
func (f *fakeCatalog) add(typ, name string) *fakeIntegration {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.insert(fakeInput{Type: typ, Name: name})
}

func (f *fakeCatalog) insert(in fakeInput) *fakeIntegration {
	f.nextID++
	at := fakeEpoch.Add(time.Duration(f.nextID) * time.Minute)
	it := &fakeIntegration{
		ID:       fmt.Sprintf("00000000-0000-4000-8000-%012d", f.nextID),
		TenantID: fakeTenant, Type: in.Type, Name: in.Name, Config: in.Config, AuthRef: in.AuthRef,
		Status: in.Status, HealthStatus: "unknown", Version: 1, CreatedAt: at, UpdatedAt: at, CreatedBy: "tester",
	}
	if len(it.Config) == 0 {
		it.Config = json.RawMessage(`{}`)
	}
	if it.Status == "" {
		it.Status = "active"
	}
	f.items = append(f.items, it)
	return it
}

// fakeInput is the API's IntegrationInput; unknown fields are refused.
type fakeInput struct {
	Type    string          `json:"type"`
	Name    string          `json:"name"`
	Config  json.RawMessage `json:"config,omitempty"`
	AuthRef string          `json:"authRef,omitempty"`
	Status  string          `json:"status,omitempty"`
}

type fieldErr struct{ loc, msg string }

func problem(w http.ResponseWriter, status int, detail string, errs ...fieldErr) {
	type ed struct {
		Message  string `json:"message"`
		Location string `json:"location"`
	}
	p := struct {
		Title  string `json:"title"`
		Status int    `json:"status"`
		Detail string `json:"detail,omitempty"`
		Errors []ed   `json:"errors,omitempty"`
	}{Title: http.StatusText(status), Status: status, Detail: detail}
	for _, e := range errs {
		p.Errors = append(p.Errors, ed{Message: e.msg, Location: e.loc})
	}
	w.Header().Set("Content-Type", "application/problem+json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(p)
}

func reply(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func etagOf(it *fakeIntegration) string { return `"` + strconv.FormatInt(it.Version, 10) + `"` }

func decodeStrict(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		problem(w, http.StatusUnprocessableEntity, "validation failed", fieldErr{"body", "unexpected property or malformed body"})
		return false
	}
	return true
}

func (f *fakeCatalog) list(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	q := r.URL.Query()
	limit := 50
	if l := q.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 || n > 500 {
			problem(w, http.StatusUnprocessableEntity, "validation failed", fieldErr{"query.limit", "expected number between 1 and 500"})
			return
		}
		limit = n
	}
	start := 0
	if c := q.Get("cursor"); c != "" {
		n, err := strconv.Atoi(strings.TrimPrefix(c, "c"))
		if err != nil || !strings.HasPrefix(c, "c") {
			problem(w, http.StatusBadRequest, "bad cursor", fieldErr{"query.cursor", "not a cursor from a previous page"})
			return
		}
		start = n
	}
	var match []*fakeIntegration
	for _, it := range f.items {
		if t := q.Get("type"); t == "" || it.Type == t {
			match = append(match, it)
		}
	}
	page := struct {
		Items      []*fakeIntegration `json:"items"`
		NextCursor string             `json:"nextCursor,omitempty"`
	}{Items: []*fakeIntegration{}}
	for i := start; i < len(match) && len(page.Items) < limit; i++ {
		page.Items = append(page.Items, match[i])
	}
	if end := start + len(page.Items); end < len(match) {
		page.NextCursor = "c" + strconv.Itoa(end)
	}
	reply(w, http.StatusOK, page)
}

func (f *fakeCatalog) create(w http.ResponseWriter, r *http.Request) {
	var in fakeInput
	if !decodeStrict(w, r, &in) {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	key := r.Header.Get("Idempotency-Key")
	if id, ok := f.idem[key]; ok && key != "" {
		it, _ := f.find(id)
		w.Header().Set("Idempotency-Replayed", "true")
		w.Header().Set("ETag", etagOf(it))
		reply(w, http.StatusCreated, it)
		return
	}
	if !slices.ContainsFunc(fakeTypes, func(t map[string]any) bool { return t["id"] == in.Type }) {
		problem(w, http.StatusUnprocessableEntity, "unknown integration type", fieldErr{"body.type", "no such integration type; see GET /api/v1/integration-types"})
		return
	}
	var cfg map[string]any
	_ = json.Unmarshal(in.Config, &cfg)
	if _, ok := cfg["password"]; ok {
		problem(w, http.StatusUnprocessableEntity, "the request is not valid: see errors", fieldErr{"body.config.password", "looks like a secret in clear: use an AuthRef URI"})
		return
	}
	for _, it := range f.items {
		if it.Name == in.Name {
			problem(w, http.StatusConflict, "the value is already taken", fieldErr{"body.name", "already used by another live entry of this tenant"})
			return
		}
	}
	it := f.insert(in)
	if key != "" {
		f.idem[key] = it.ID
	}
	w.Header().Set("Location", "/api/v1/integrations/"+it.ID)
	w.Header().Set("ETag", etagOf(it))
	reply(w, http.StatusCreated, it)
}

func (f *fakeCatalog) get(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	it, _ := f.find(r.PathValue("id"))
	if it == nil {
		problem(w, http.StatusNotFound, "not found")
		return
	}
	w.Header().Set("ETag", etagOf(it))
	reply(w, http.StatusOK, it)
}

// ifMatch answers 412 when the header is given and is not the current tag.
func ifMatch(w http.ResponseWriter, r *http.Request, it *fakeIntegration) bool {
	if h := r.Header.Get("If-Match"); h != "" && h != "*" && h != etagOf(it) {
		problem(w, http.StatusPreconditionFailed, "the resource has changed since it was read",
			fieldErr{"header.If-Match", "does not match the current version; read it again and retry"})
		return false
	}
	return true
}

func (f *fakeCatalog) update(w http.ResponseWriter, r *http.Request) {
	var in fakeInput
	if !decodeStrict(w, r, &in) {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	it, _ := f.find(r.PathValue("id"))
	if it == nil {
		problem(w, http.StatusNotFound, "not found")
		return
	}
	if f.beforeWrite != nil {
		f.beforeWrite(it)
	}
	if !ifMatch(w, r, it) {
		return
	}
	if in.Type != it.Type {
		problem(w, http.StatusConflict, "an integration's type cannot change", fieldErr{"body.type", "differs from the integration's type"})
		return
	}
	it.Name, it.Config, it.AuthRef, it.Status = in.Name, in.Config, in.AuthRef, in.Status
	if len(it.Config) == 0 {
		it.Config = json.RawMessage(`{}`)
	}
	if it.Status == "" {
		it.Status = "active"
	}
	it.Version++
	it.UpdatedAt = it.UpdatedAt.Add(time.Hour)
	w.Header().Set("ETag", etagOf(it))
	reply(w, http.StatusOK, it)
}

func (f *fakeCatalog) delete(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	it, i := f.find(r.PathValue("id"))
	if it == nil {
		problem(w, http.StatusNotFound, "not found")
		return
	}
	if f.beforeWrite != nil {
		f.beforeWrite(it)
	}
	if !ifMatch(w, r, it) {
		return
	}
	f.items = slices.Delete(f.items, i, i+1)
	w.WriteHeader(http.StatusNoContent)
}

func (f *fakeCatalog) listTypes(w http.ResponseWriter, _ *http.Request) {
	reply(w, http.StatusOK, map[string]any{"items": fakeTypes})
}

func (f *fakeCatalog) getType(w http.ResponseWriter, r *http.Request) {
	for _, t := range fakeTypes {
		if t["id"] == r.PathValue("id") {
			reply(w, http.StatusOK, t)
			return
		}
	}
	problem(w, http.StatusNotFound, "not found")
}
