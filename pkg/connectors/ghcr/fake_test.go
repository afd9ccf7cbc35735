package ghcr_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"inthub.dev/pkg/connectors/oci"
	"inthub.dev/pkg/connectors/oci/ocitest"
)

type secrets = ocitest.Secrets

const (
	user      = "octocat"
	pat       = "ghp_R3adPackagesT0kenValue0123456789ab"
	patRef    = "authref://vault/github#ghcr"
	noScope   = "ghp_RepoOnlyT0kenValue000000000000000"
	noScopeRf = "authref://vault/github#repo-only"
)

var manifest = []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{},"layers":[]}`)

// fakeGitHub is GitHub's packages API and ghcr.io, enforcing what GitHub
// enforces:
//
//   - the API takes the PAT as a bearer token (401 "Bad credentials"
//     otherwise), names its scopes in X-OAuth-Scopes, and lists a user's
//     or organization's packages only with package_type and for a token
//     with read:packages (403 with X-Accepted-OAuth-Scopes otherwise),
//     paged by page/per_page (at most 100) with a Link header, private
//     packages only to their owner or the organization's members, and an
//     x-ratelimit-* budget (403 with remaining 0 when spent);
//   - the registry's token endpoint (ghcr.io/token, in front of ocitest)
//     takes the username and PAT as Basic credentials: an unknown PAT is
//     401, a PAT without read:packages 403 DENIED.
type fakeGitHub struct {
	api, registry *httptest.Server
	reg           *ocitest.Registry

	mu       sync.Mutex
	tokens   map[string]ghToken
	packages map[string][]ghPkg // owner → sorted by name
	orgs     map[string][]string
	apiLeft  int
	apiCalls atomic.Int32
}

type ghToken struct {
	login  string
	scopes []string
}

type ghPkg struct {
	name    string
	private bool
}

func newFakeGitHub(t testing.TB) *fakeGitHub {
	f := &fakeGitHub{
		tokens: map[string]ghToken{
			pat:     {user, []string{"read:packages", "repo"}},
			noScope: {user, []string{"repo", "workflow"}},
		},
		packages: map[string][]ghPkg{
			"Acme":    {{"api", true}, {"tools/cli", false}, {"web", false}},
			"octocat": {{"dotfiles", true}},
			"hubot":   {{"secret", true}, {"site", false}},
		},
		orgs:    map[string][]string{"Acme": {user}},
		apiLeft: 5000,
	}
	f.reg = ocitest.New(t)
	f.reg.Accept = func(u, p string) bool {
		f.mu.Lock()
		defer f.mu.Unlock()
		tok, ok := f.tokens[p]
		return ok && u != "" && slices.Contains(tok.scopes, "read:packages")
	}
	for owner, pkgs := range f.packages {
		for _, p := range pkgs {
			f.reg.Add(strings.ToLower(owner)+"/"+p.name, "v1", oci.MediaTypeOCIManifest, manifest)
		}
	}
	target, _ := url.Parse(f.reg.URL)
	tr := &http.Transport{}
	proxy := httputil.NewSingleHostReverseProxy(target)
	proxy.Transport = tr
	f.registry = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/token" {
			u, p, ok := r.BasicAuth()
			f.mu.Lock()
			tok, known := f.tokens[p]
			f.mu.Unlock()
			switch {
			case !ok || u == "" || !known:
				ocitest.WriteError(w, http.StatusUnauthorized, "UNAUTHORIZED", "authentication required")
				return
			case !slices.Contains(tok.scopes, "read:packages"):
				ocitest.WriteError(w, http.StatusForbidden, "DENIED", "permission_denied: The token provided does not match expected scopes.")
				return
			}
		}
		proxy.ServeHTTP(w, r)
	}))
	f.api = httptest.NewServer(http.HandlerFunc(f.serveAPI))
	t.Cleanup(func() {
		f.api.Close()
		f.registry.Close()
		tr.CloseIdleConnections()
	})
	f.reg.RealmHost = f.registry.Listener.Addr().String()
	return f
}

func ghErr(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	fmt.Fprintf(w, `{"message":%q,"documentation_url":"https://docs.github.com/rest/packages/packages","status":"%d"}`, msg, status)
}

func (f *fakeGitHub) serveAPI(w http.ResponseWriter, r *http.Request) {
	f.apiCalls.Add(1)
	f.mu.Lock()
	left := f.apiLeft
	if left > 0 {
		f.apiLeft--
	}
	f.mu.Unlock()
	w.Header().Set("X-Ratelimit-Limit", "5000")
	w.Header().Set("X-Ratelimit-Remaining", strconv.Itoa(max(left-1, 0)))
	w.Header().Set("X-Ratelimit-Reset", strconv.FormatInt(time.Now().Add(30*time.Minute).Unix(), 10))
	if left <= 0 {
		w.Header().Set("X-Ratelimit-Remaining", "0")
		ghErr(w, http.StatusForbidden, "API rate limit exceeded for user ID 1.")
		return
	}
	raw, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok {
		raw, ok = strings.CutPrefix(r.Header.Get("Authorization"), "token ")
	}
	f.mu.Lock()
	tok, known := f.tokens[raw]
	f.mu.Unlock()
	if !ok || !known {
		ghErr(w, http.StatusUnauthorized, "Bad credentials")
		return
	}
	w.Header().Set("X-Oauth-Scopes", strings.Join(tok.scopes, ", "))
	if r.URL.Path == "/user" {
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		fmt.Fprintf(w, `{"login":%q,"id":1,"type":"User"}`, tok.login)
		return
	}
	var owner string
	var isOrg bool
	if o, ok := strings.CutSuffix(strings.TrimPrefix(r.URL.Path, "/users/"), "/packages"); ok && strings.HasPrefix(r.URL.Path, "/users/") {
		owner = o
	} else if o, ok := strings.CutSuffix(strings.TrimPrefix(r.URL.Path, "/orgs/"), "/packages"); ok && strings.HasPrefix(r.URL.Path, "/orgs/") {
		owner, isOrg = o, true
	} else {
		ghErr(w, http.StatusNotFound, "Not Found")
		return
	}
	w.Header().Set("X-Accepted-Oauth-Scopes", "read:packages")
	if !slices.Contains(tok.scopes, "read:packages") {
		ghErr(w, http.StatusForbidden, "You need at least read:packages scope to list packages.")
		return
	}
	// GitHub's owner names are case-insensitive.
	var name string
	for o := range f.packages {
		if strings.EqualFold(o, owner) {
			name = o
		}
	}
	_, knownOrg := f.orgs[name]
	if name == "" || isOrg != knownOrg {
		ghErr(w, http.StatusNotFound, "Not Found")
		return
	}
	q := r.URL.Query()
	if q.Get("package_type") != "container" {
		ghErr(w, http.StatusBadRequest, "package_type is required")
		return
	}
	page, size := 1, 30
	if v := q.Get("page"); v != "" {
		page, _ = strconv.Atoi(v)
	}
	if v := q.Get("per_page"); v != "" {
		size, _ = strconv.Atoi(v)
	}
	if page < 1 || size < 1 || size > 100 {
		ghErr(w, http.StatusUnprocessableEntity, "Validation Failed")
		return
	}
	member := strings.EqualFold(tok.login, name) || slices.Contains(f.orgs[name], tok.login)
	var visible []map[string]any
	for i, p := range f.packages[name] {
		if p.private && !member {
			continue
		}
		vis := "public"
		if p.private {
			vis = "private"
		}
		visible = append(visible, map[string]any{"id": 1000 + i, "name": p.name, "package_type": "container",
			"visibility": vis, "owner": map[string]any{"login": name}})
	}
	from := min((page-1)*size, len(visible))
	to := min(from+size, len(visible))
	if to < len(visible) {
		w.Header().Set("Link", fmt.Sprintf(`<http://%s%s?package_type=container&page=%d&per_page=%d>; rel="next"`, r.Host, r.URL.Path, page+1, size))
	}
	items := visible[from:to]
	if items == nil {
		items = []map[string]any{}
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	_ = json.NewEncoder(w).Encode(items)
}
