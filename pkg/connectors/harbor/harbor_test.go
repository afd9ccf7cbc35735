package harbor_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/opencontainers/go-digest"
	"go.uber.org/goleak"

	"inthub.dev/pkg/connectors"
	"inthub.dev/pkg/connectors/harbor"
	"inthub.dev/pkg/connectors/oci/ocitest"
	"inthub.dev/pkg/fault"
)

type secrets = ocitest.Secrets

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const (
	robot  = "robot$ci+probe"
	secret = "robot-s3cret-value"
	ref    = "authref://vault/harbor#secret"
)

// fakeHarbor enforces Harbor's rules: the health document is public;
// every other /api/v2.0 call needs the robot's basic credentials (401 with
// Harbor's error document otherwise); listings page with page/page_size
// (at most 100) and X-Total-Count; /v2/ wants a bearer token from
// /service/token, which takes the same basic credentials.
type fakeHarbor struct {
	srv      *httptest.Server
	mu       sync.Mutex
	health   harbor.Health
	projects []string            // sorted
	repos    map[string][]string // project → full names, sorted
	tokens   map[string]bool
	apiCalls int
}

func newFakeHarbor(t testing.TB) *fakeHarbor {
	f := &fakeHarbor{
		health: harbor.Health{Status: "healthy", Components: []harbor.HealthComponent{
			{Name: "core", Status: "healthy"}, {Name: "database", Status: "healthy"},
			{Name: "registry", Status: "healthy"}, {Name: "jobservice", Status: "healthy"},
		}},
		projects: []string{"empty", "library", "team"},
		repos: map[string][]string{
			"empty":   nil,
			"library": {"library/alpine", "library/nginx", "library/redis"},
			"team":    {"team/api", "team/web"},
		},
		tokens: map[string]bool{},
	}
	f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.srv.Close)
	return f
}

func harborErr(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	fmt.Fprintf(w, `{"errors":[{"code":%q,"message":%q}]}`, code, msg)
}

func (f *fakeHarbor) serve(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	user, pass, basic := r.BasicAuth()
	authed := basic && user == robot && pass == secret
	switch {
	case r.URL.Path == "/api/v2.0/health":
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(f.health)
		return
	case r.URL.Path == "/service/token":
		if !authed {
			harborErr(w, http.StatusUnauthorized, "UNAUTHORIZED", "unauthorized")
			return
		}
		tok := strconv.Itoa(len(f.tokens) + 1)
		f.tokens[tok] = true
		fmt.Fprintf(w, `{"token":%q}`, tok)
		return
	case strings.HasPrefix(r.URL.Path, "/v2/"):
		if tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); !ok || !f.tokens[tok] {
			w.Header().Set("WWW-Authenticate", fmt.Sprintf(`Bearer realm="http://%s/service/token",service="harbor-registry"`, r.Host))
			harborErr(w, http.StatusUnauthorized, "UNAUTHORIZED", "unauthorized")
			return
		}
		f.serveRegistry(w, r)
		return
	case strings.HasPrefix(r.URL.Path, "/api/v2.0/"):
		f.apiCalls++
		if basic && !authed {
			// Harbor refuses wrong credentials outright, even where an
			// anonymous call would see public projects.
			harborErr(w, http.StatusUnauthorized, "UNAUTHORIZED", "unauthorized")
			return
		}
		if !authed {
			harborErr(w, http.StatusUnauthorized, "UNAUTHORIZED", "unauthorized")
			return
		}
	default:
		http.NotFound(w, r)
		return
	}
	q := r.URL.Query()
	page, _ := strconv.Atoi(q.Get("page"))
	size, _ := strconv.Atoi(q.Get("page_size"))
	if page < 1 || size < 1 || size > 100 {
		harborErr(w, http.StatusBadRequest, "BAD_REQUEST", "page and page_size (1..100) are required")
		return
	}
	var all []any
	if r.URL.Path == "/api/v2.0/projects" {
		for i, p := range f.projects {
			all = append(all, map[string]any{"project_id": i + 1, "name": p, "metadata": map[string]string{"public": "false"}, "repo_count": len(f.repos[p])})
		}
	} else if project, ok := strings.CutSuffix(strings.TrimPrefix(r.URL.Path, "/api/v2.0/projects/"), "/repositories"); ok && !strings.Contains(project, "/") {
		repos, known := f.repos[project]
		if !known {
			harborErr(w, http.StatusNotFound, "NOT_FOUND", "project "+project+" not found")
			return
		}
		for i, name := range repos {
			all = append(all, map[string]any{"id": i + 100, "name": name, "artifact_count": 1})
		}
	} else {
		harborErr(w, http.StatusNotFound, "NOT_FOUND", "not found")
		return
	}
	w.Header().Set("X-Total-Count", strconv.Itoa(len(all)))
	from := min((page-1)*size, len(all))
	to := min(from+size, len(all))
	w.Header().Set("Content-Type", "application/json")
	items := all[from:to]
	if items == nil {
		items = []any{}
	}
	_ = json.NewEncoder(w).Encode(items)
}

// manifest is the body every repository's "latest" tag points at.
var manifest = []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{},"layers":[]}`)

func (f *fakeHarbor) serveRegistry(w http.ResponseWriter, r *http.Request) {
	rest := strings.TrimPrefix(r.URL.Path, "/v2/")
	if rest == "" {
		return
	}
	known := func(repo string) bool {
		for _, rs := range f.repos {
			if slices.Contains(rs, repo) {
				return true
			}
		}
		return false
	}
	if repo, ok := strings.CutSuffix(rest, "/tags/list"); ok && known(repo) {
		fmt.Fprintf(w, `{"name":%q,"tags":["latest"]}`, repo)
		return
	}
	if i := strings.Index(rest, "/manifests/"); i > 0 && known(rest[:i]) {
		d := digest.FromBytes(manifest)
		if ref := rest[i+len("/manifests/"):]; ref != "latest" && ref != d.String() {
			harborErr(w, http.StatusNotFound, "MANIFEST_UNKNOWN", "manifest unknown")
			return
		}
		w.Header().Set("Content-Type", "application/vnd.oci.image.manifest.v1+json")
		w.Header().Set("Docker-Content-Digest", d.String())
		w.Header().Set("Content-Length", strconv.Itoa(len(manifest)))
		if r.Method == http.MethodGet {
			_, _ = w.Write(manifest)
		}
		return
	}
	harborErr(w, http.StatusNotFound, "NAME_UNKNOWN", "repository not found")
}

func newConnector(t testing.TB, f *fakeHarbor, extra map[string]any, sec secrets) *harbor.Connector {
	t.Helper()
	conf := map[string]any{"endpoint": f.srv.URL, "insecure": true, "username": robot, "password": ref, "timeoutSeconds": 5}
	for k, v := range extra {
		conf[k] = v
	}
	c, err := harbor.New(ocitest.Config(t, harbor.Type, conf, sec, &logSink))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	return c
}

// logSink collects every connector's log, to search it for the secret.
var logSink ocitest.Buffer

func TestConnection(t *testing.T) {
	ctx := context.Background()
	good := secrets{ref: secret}
	tests := []struct {
		name    string
		setup   func(*fakeHarbor)
		extra   map[string]any
		sec     secrets
		status  connectors.Status
		class   fault.Class
		checks  []string
		message string
	}{
		{name: "healthy, probe found", sec: good, status: connectors.StatusHealthy,
			checks: []string{"+health", "+auth", "+repos", "+ping", "+tags", "+digest"}},
		{name: "healthy, configured project and probe", sec: good, extra: map[string]any{"project": "team", "probeRepository": "team/web", "probeTag": "latest"},
			status: connectors.StatusHealthy, checks: []string{"+health", "+auth", "+repos", "+ping", "+tags", "+digest"}},
		{name: "component down", sec: good, setup: func(f *fakeHarbor) {
			f.health.Status = "unhealthy"
			f.health.Components[3] = harbor.HealthComponent{Name: "jobservice", Status: "unhealthy", Error: "dial tcp: refused"}
		}, status: connectors.StatusDegraded, checks: []string{"-health", "+auth", "+repos", "+ping", "+tags", "+digest"}, message: "jobservice"},
		{name: "wrong robot secret", sec: secrets{ref: "wrong"}, status: connectors.StatusUnhealthy, class: fault.ClassPermanent,
			checks: []string{"+health", "-auth"}, message: "401"},
		{name: "unknown project", sec: good, extra: map[string]any{"project": "nope"}, status: connectors.StatusUnhealthy, class: fault.ClassPermanent,
			checks: []string{"+health", "+auth", "-repos"}, message: "404"},
		{name: "unknown probe repository", sec: good, extra: map[string]any{"probeRepository": "team/gone"}, status: connectors.StatusUnhealthy, class: fault.ClassPermanent,
			checks: []string{"+health", "+auth", "+repos", "+ping", "-tags"}, message: "NAME_UNKNOWN"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeHarbor(t)
			if tt.setup != nil {
				tt.setup(f)
			}
			c := newConnector(t, f, tt.extra, tt.sec)
			res := c.TestConnection(ctx)
			if res.Status != tt.status || res.Class != tt.class || !slices.Equal(ocitest.CheckNames(res), tt.checks) || !strings.Contains(res.Message, tt.message) {
				t.Errorf("TestConnection = %s %s %q %q, want %s %s %q …%s…", res.Status, res.Class, ocitest.CheckNames(res), res.Message, tt.status, tt.class, tt.checks, tt.message)
			}
			if tt.status == connectors.StatusHealthy && res.Details["digest"] != digest.FromBytes(manifest).String() {
				t.Errorf("details = %v", res.Details)
			}
			if tt.status == connectors.StatusHealthy && tt.extra == nil && res.Details["repository"] != "library/alpine" {
				t.Errorf("probe repository = %q, want the first listed, library/alpine", res.Details["repository"])
			}
			h := c.CheckHealth(ctx)
			if tt.class == 0 && (h.Status != tt.status || !h.OK()) {
				t.Errorf("CheckHealth = %s %q %s", h.Status, ocitest.CheckNames(h), h.Message)
			}
		})
	}
	if strings.Contains(logSink.String(), secret) {
		t.Error("the robot secret appears in the log")
	}
}

func TestHealthFailures(t *testing.T) {
	ctx := context.Background()
	for _, tt := range []struct {
		status int
		class  fault.Class
	}{{http.StatusServiceUnavailable, fault.ClassTransient}, {http.StatusNotFound, fault.ClassPermanent}} {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			harborErr(w, tt.status, "X", "x")
		}))
		f := &fakeHarbor{srv: srv}
		c := newConnector(t, f, nil, secrets{ref: secret})
		res := c.CheckHealth(ctx)
		srv.Close()
		if res.Status != connectors.StatusUnhealthy || res.Class != tt.class || !slices.Equal(ocitest.CheckNames(res), []string{"-health"}) {
			t.Errorf("%d: CheckHealth = %s %s %q %s", tt.status, res.Status, res.Class, ocitest.CheckNames(res), res.Message)
		}
	}
}

func TestDiscovery(t *testing.T) {
	ctx := context.Background()
	f := newFakeHarbor(t)
	c := newConnector(t, f, nil, secrets{ref: secret})

	collect := func(list func(o connectors.ListOptions) ([]string, string, error)) ([]string, int) {
		t.Helper()
		var all []string
		cursor, pages := "", 0
		for range 200 {
			items, next, err := list(connectors.ListOptions{Limit: 2, Cursor: cursor})
			if err != nil {
				t.Fatal(err)
			}
			pages++
			if len(items) > 2 {
				t.Fatalf("page of %d, limit 2", len(items))
			}
			all = append(all, items...)
			if next == "" {
				return all, pages
			}
			cursor = next
		}
		t.Fatal("pagination does not end")
		return nil, 0
	}
	repos := func(c *harbor.Connector) func(o connectors.ListOptions) ([]string, string, error) {
		return func(o connectors.ListOptions) ([]string, string, error) {
			p, err := c.ListRepositories(ctx, o)
			var out []string
			for _, r := range p.Items {
				out = append(out, r.FullName)
			}
			return out, p.Next, err
		}
	}
	all, pages := collect(repos(c))
	want := []string{"library/alpine", "library/nginx", "library/redis", "team/api", "team/web"}
	if !slices.Equal(all, want) || pages != 3 {
		t.Errorf("all repositories = %q in %d pages, want %q in 3", all, pages, want)
	}

	projects, _ := collect(func(o connectors.ListOptions) ([]string, string, error) {
		p, err := c.ListProjects(ctx, o)
		var out []string
		for _, pr := range p.Items {
			out = append(out, pr.Name)
		}
		return out, p.Next, err
	})
	if !slices.Equal(projects, f.projects) {
		t.Errorf("projects = %q", projects)
	}

	one := newConnector(t, f, map[string]any{"project": "library"}, secrets{ref: secret})
	lib, pages := collect(repos(one))
	if !slices.Equal(lib, want[:3]) || pages != 2 {
		t.Errorf("library repositories = %q in %d pages", lib, pages)
	}

	// Many projects, Harbor's page_size cap: every repository once.
	f.mu.Lock()
	for i := range 120 {
		p := fmt.Sprintf("p%03d", i)
		f.projects = append(f.projects, p)
		f.repos[p] = []string{p + "/app"}
	}
	sort.Strings(f.projects)
	f.mu.Unlock()
	all, _ = collect(repos(c))
	if len(all) != 125 || !sort.StringsAreSorted(all) {
		t.Errorf("%d repositories over 123 projects, want 125 in order", len(all))
	}

	// Registry operations go through the distribution API.
	d, err := c.ResolveTag(ctx, "team/web", "latest")
	if err != nil || d != digest.FromBytes(manifest).String() {
		t.Errorf("ResolveTag = %s, %v", d, err)
	}
	if err := c.VerifyDigest(ctx, "team/web", d); err != nil {
		t.Errorf("VerifyDigest = %v", err)
	}
	if _, err := c.ListBranches(ctx, "team/web", connectors.ListOptions{}); !errors.Is(err, errors.ErrUnsupported) {
		t.Errorf("ListBranches = %v", err)
	}
	if _, err := c.ListRepositories(ctx, connectors.ListOptions{Cursor: "%%%"}); fault.ClassOf(err) != fault.ClassPermanent {
		t.Errorf("bad cursor: %v", err)
	}
}

func TestValidateAndRegister(t *testing.T) {
	for cfg, field := range map[string]string{
		`{"endpoint": "https://h.example.com", "password": "authref://env/P"}`:                                    "username",
		`{"endpoint": "http://h.example.com", "username": "u", "password": "authref://env/P"}`:                    "endpoint",
		`{"endpoint": "https://h.example.com", "username": "u", "password": "Harbor12345"}`:                       "password",
		`{"endpoint": "https://h.example.com", "username": "u", "password": "authref://env/P", "project": "a/b"}`: "project",
	} {
		c, err := harbor.New(connectors.Config{Type: harbor.Type, Config: json.RawMessage(cfg)})
		if err != nil {
			t.Fatal(err)
		}
		err = c.Validate()
		if err == nil || !strings.Contains(err.Error(), field) || strings.Contains(err.Error(), "Harbor12345") {
			t.Errorf("Validate(%s) = %v, want an error on %s", cfg, err, field)
		}
	}
	info, ok := connectors.Default().Lookup(harbor.Type)
	if !ok || info.Provider != "harbor" || len(info.ConfigSchema) == 0 {
		t.Errorf("Lookup = %+v, %v", info, ok)
	}
}
