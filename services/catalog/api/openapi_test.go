package api

import (
	"bytes"
	"encoding/json"
	"flag"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/danielgtaylor/huma/v2"
	"github.com/google/uuid"
	"github.com/santhosh-tekuri/jsonschema/v6"
)

var update = flag.Bool("update", false, "rewrite testdata/openapi.json from the served document")

const snapshotPath = "testdata/openapi.json"

// infraRoutes are served outside the document on purpose: the document
// itself and the Prometheus exposition (text format, not JSON).
var infraRoutes = []string{"GET " + OpenAPIPath, "GET /metrics"}

func operations(item *huma.PathItem) map[string]*huma.Operation {
	all := map[string]*huma.Operation{
		http.MethodGet: item.Get, http.MethodPut: item.Put, http.MethodPost: item.Post,
		http.MethodDelete: item.Delete, http.MethodPatch: item.Patch, http.MethodHead: item.Head,
		http.MethodOptions: item.Options, http.MethodTrace: item.Trace,
	}
	for m, op := range all {
		if op == nil {
			delete(all, m)
		}
	}
	return all
}

// TestOpenAPIRoutesMatchDocument: every route in the mux is in the document
// and every operation of the document is a route that the server answers.
func TestOpenAPIRoutesMatchDocument(t *testing.T) {
	e := newEnv(t)
	documented := map[string]bool{}
	for path, item := range e.srv.api.OpenAPI().Paths {
		for method := range operations(item) {
			documented[method+" "+path] = true
		}
	}
	routed := map[string]bool{}
	for _, p := range e.srv.mux.Patterns() {
		if routed[p] {
			t.Errorf("pattern %q registered twice", p)
		}
		routed[p] = true
	}
	for p := range routed {
		if !documented[p] && !slices.Contains(infraRoutes, p) {
			t.Errorf("route %q is not in the OpenAPI document", p)
		}
	}
	for p := range documented {
		if !routed[p] {
			t.Errorf("operation %q is in the document but not routed", p)
		}
	}
	if len(documented) < 17 {
		t.Errorf("only %d operations documented: %v", len(documented), documented)
	}

	// Each documented operation is answered by its handler (JSON), not by
	// the mux's plain-text 404 or 405.
	c := e.newCaller(ScopeRead, ScopeWrite)
	for p := range documented {
		method, path, _ := strings.Cut(p, " ")
		path = strings.NewReplacer("{id}", uuid.NewString(), "{type}", typeMem).Replace(path)
		var body any
		if method == http.MethodPost || method == http.MethodPut {
			body = "{}"
		}
		r := e.do(c, method, path, body)
		ct := r.Header.Get("Content-Type")
		if r.Status == http.StatusMethodNotAllowed || (r.Status != http.StatusNoContent && !strings.Contains(ct, "json")) {
			t.Errorf("%s %s: %d %q %s: not answered by the operation", method, path, r.Status, ct, r.Body)
		}
	}
}

// TestOpenAPISnapshot compares the served document with the committed
// copy; run with -update after an intended change of the API.
func TestOpenAPISnapshot(t *testing.T) {
	e := newEnv(t)
	r := e.do(e.newCaller(ScopeRead), http.MethodGet, OpenAPIPath, nil)
	want(t, r, http.StatusOK)
	var got bytes.Buffer
	if err := json.Indent(&got, r.Body, "", "  "); err != nil {
		t.Fatal(err)
	}
	got.WriteByte('\n')
	var doc map[string]any
	r.decode(t, &doc)
	if doc["openapi"] != "3.1.0" {
		t.Errorf("openapi = %v, want 3.1.0", doc["openapi"])
	}
	if *update {
		if err := os.MkdirAll(filepath.Dir(snapshotPath), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(snapshotPath, got.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("wrote %s", snapshotPath)
		return
	}
	committed, err := os.ReadFile(snapshotPath)
	if err != nil {
		t.Fatalf("%v (run go test -run TestOpenAPISnapshot -update to create it)", err)
	}
	if !bytes.Equal(committed, got.Bytes()) {
		gl, cl := strings.Split(got.String(), "\n"), strings.Split(string(committed), "\n")
		for i := 0; i < len(gl) || i < len(cl); i++ {
			var g, c string
			if i < len(gl) {
				g = gl[i]
			}
			if i < len(cl) {
				c = cl[i]
			}
			if g != c {
				t.Fatalf("served document differs from %s at line %d:\n served:    %s\n committed: %s\n(run with -update if the change is intended)", snapshotPath, i+1, g, c)
			}
		}
	}
}

// TestOpenAPIDocumentsErrors: every secured operation lists 401, 403 and
// 500 with a problem schema; writes list 409/412 where they can happen.
func TestOpenAPIDocumentsErrors(t *testing.T) {
	e := newEnv(t)
	for path, item := range e.srv.api.OpenAPI().Paths {
		for method, op := range operations(item) {
			if len(op.Security) == 0 {
				continue // probes
			}
			statuses := []string{"401", "403", "500"}
			if method == http.MethodPut {
				statuses = append(statuses, "404", "409", "412", "422")
			}
			if method == http.MethodDelete {
				statuses = append(statuses, "404", "412")
			}
			if method == http.MethodPost {
				statuses = append(statuses, "409", "422")
			}
			if method == http.MethodPost || method == http.MethodPut {
				statuses = append(statuses, "413", "415")
			}
			for _, s := range statuses {
				resp := op.Responses[s]
				if resp == nil || resp.Content["application/problem+json"] == nil {
					t.Errorf("%s %s: response %s not documented as a problem", method, path, s)
				}
			}
		}
	}
}

// schemaValidator validates bodies against the served document.
type schemaValidator struct {
	t   *testing.T
	c   *jsonschema.Compiler
	doc map[string]any
}

const docURL = "https://inthub.test/openapi.json"

func newSchemaValidator(t *testing.T, raw []byte) *schemaValidator {
	t.Helper()
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	c.AssertFormat()
	if err := c.AddResource(docURL, inst); err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	return &schemaValidator{t: t, c: c, doc: doc}
}

func pointerEscape(s string) string {
	return strings.NewReplacer("~", "~0", "/", "~1").Replace(s)
}

// check validates r against the schema the document gives for the
// operation's response with r's status and content type.
func (v *schemaValidator) check(method, path string, r response) {
	v.t.Helper()
	ct := r.Header.Get("Content-Type")
	loc := docURL + "#/paths/" + pointerEscape(path) + "/" + strings.ToLower(method) + "/responses/" +
		strconv.Itoa(r.Status) + "/content/" + pointerEscape(ct) + "/schema"
	sch, err := v.c.Compile(loc)
	if err != nil {
		v.t.Fatalf("%s %s: no schema for %d %s in the document: %v", method, path, r.Status, ct, err)
	}
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(r.Body))
	if err != nil {
		v.t.Fatalf("%s %s: body is not JSON: %v", method, path, err)
	}
	if err := sch.Validate(inst); err != nil {
		v.t.Errorf("%s %s %d: body does not match the document: %v\nbody: %s", method, path, r.Status, err, r.Body)
	}
}

// TestResponsesMatchDocument validates real responses, successes and
// problems, against the response schemas of the served document.
func TestResponsesMatchDocument(t *testing.T) {
	e := newEnv(t)
	c := e.newCaller(ScopeRead, ScopeWrite)
	raw := e.do(c, http.MethodGet, OpenAPIPath, nil)
	want(t, raw, http.StatusOK)
	v := newSchemaValidator(t, raw.Body)

	r := e.do(c, http.MethodPost, "/api/v1/integrations", harborInput("harbor-1"))
	want(t, r, http.StatusCreated)
	v.check(http.MethodPost, "/api/v1/integrations", r)
	var it Integration
	r.decode(t, &it)

	r = e.do(c, http.MethodGet, "/api/v1/integrations/"+it.ID, nil)
	want(t, r, http.StatusOK)
	v.check(http.MethodGet, "/api/v1/integrations/{id}", r)

	r = e.do(c, http.MethodPut, "/api/v1/integrations/"+it.ID, harborInput("harbor-1b"), "If-Match", r.Header.Get("ETag"))
	want(t, r, http.StatusOK)
	v.check(http.MethodPut, "/api/v1/integrations/{id}", r)

	e.create(c, memInput("mem-1"))
	r = e.do(c, http.MethodGet, "/api/v1/integrations?limit=1", nil)
	want(t, r, http.StatusOK)
	v.check(http.MethodGet, "/api/v1/integrations", r)

	r = e.do(c, http.MethodGet, "/api/v1/integrations/by-type/"+typeHarbor, nil)
	want(t, r, http.StatusOK)
	v.check(http.MethodGet, "/api/v1/integrations/by-type/{type}", r)

	recordHealth(t, e, c.tenant, it.ID, typeHarbor, "healthy")
	r = e.do(c, http.MethodGet, "/api/v1/integrations/"+it.ID+"/health", nil)
	want(t, r, http.StatusOK)
	v.check(http.MethodGet, "/api/v1/integrations/{id}/health", r)

	r = e.do(c, http.MethodGet, "/api/v1/integration-types", nil)
	want(t, r, http.StatusOK)
	v.check(http.MethodGet, "/api/v1/integration-types", r)
	r = e.do(c, http.MethodGet, "/api/v1/integration-types/"+typeHarbor, nil)
	want(t, r, http.StatusOK)
	v.check(http.MethodGet, "/api/v1/integration-types/{id}", r)

	r = e.do(c, http.MethodPost, "/api/v1/connection-profiles", map[string]any{
		"name": "harbor-defaults", "integrationType": typeHarbor, "isDefault": true,
		"defaultConfig": map[string]any{"endpoint": "https://harbor.example.com", "username": "robot$ci"}})
	want(t, r, http.StatusCreated)
	v.check(http.MethodPost, "/api/v1/connection-profiles", r)
	r = e.do(c, http.MethodGet, "/api/v1/connection-profiles", nil)
	want(t, r, http.StatusOK)
	v.check(http.MethodGet, "/api/v1/connection-profiles", r)
	r = e.do(c, http.MethodGet, "/api/v1/connection-profiles/defaults?type="+typeHarbor, nil)
	want(t, r, http.StatusOK)
	v.check(http.MethodGet, "/api/v1/connection-profiles/defaults", r)

	// Problems.
	r = e.do(c, http.MethodGet, "/api/v1/integrations/"+uuid.NewString(), nil)
	want(t, r, http.StatusNotFound)
	v.check(http.MethodGet, "/api/v1/integrations/{id}", r)
	r = e.do(c, http.MethodPost, "/api/v1/integrations", map[string]any{"type": "nope.nope", "name": "x"})
	want(t, r, http.StatusUnprocessableEntity)
	v.check(http.MethodPost, "/api/v1/integrations", r)
	r = e.do(c, http.MethodPost, "/api/v1/integrations", harborInput("harbor-1b"))
	want(t, r, http.StatusConflict)
	v.check(http.MethodPost, "/api/v1/integrations", r)
	r = e.do(e.newCaller(ScopeRead), http.MethodPost, "/api/v1/integrations", memInput("x"))
	want(t, r, http.StatusForbidden)
	v.check(http.MethodPost, "/api/v1/integrations", r)

	r = e.do(caller{}, http.MethodGet, "/api/v1/integrations", nil)
	want(t, r, http.StatusUnauthorized)
	v.check(http.MethodGet, "/api/v1/integrations", r)

	r = e.do(caller{}, http.MethodGet, "/healthz", nil)
	want(t, r, http.StatusOK)
	v.check(http.MethodGet, "/healthz", r)
	r = e.do(caller{}, http.MethodGet, "/readyz", nil)
	want(t, r, http.StatusOK)
	v.check(http.MethodGet, "/readyz", r)
}
