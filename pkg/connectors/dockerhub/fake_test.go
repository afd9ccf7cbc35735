package dockerhub_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
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

	"github.com/golang-jwt/jwt/v5"

	"inthub.dev/pkg/connectors/oci"
	"inthub.dev/pkg/connectors/oci/ocitest"
)

type secrets = ocitest.Secrets

const (
	user   = "acme"
	pat    = "dckr_pat_Zm9vYmFyYmF6cXV4"
	patRef = "authref://vault/dockerhub#pat"
	// anon is how the auth front presents an anonymous token request to
	// ocitest, which takes only Basic credentials.
	anonUser, anonPass = "\x00anonymous", "\x00anonymous"
)

var manifest = []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{},"layers":[]}`)

// fakeHub is Docker Hub in three servers, as the real one is:
//
//   - the Hub API (hub.docker.com): POST /v2/auth/token trades a username
//     and PAT for a JWT; GET /v2/namespaces/{ns}/repositories pages with
//     page/page_size (at most 100), shows private repositories only to
//     their owner's token, refuses a bad token with 401 and a spent API
//     budget with 429 and x-ratelimit-*;
//   - the token service (auth.docker.io): Basic user/PAT, or nothing for
//     an anonymous token, which carries no access to private
//     repositories (the scope is dropped, as Docker Hub grants it empty);
//   - the registry (registry-1.docker.io, ocitest behind a proxy): every
//     manifest answer carries ratelimit-limit / ratelimit-remaining
//     (`N;w=21600`), a GET costs a pull of the caller's budget (anonymous
//     or the user's), a HEAD costs nothing, and a spent budget is 429
//     TOOMANYREQUESTS without Retry-After.
type fakeHub struct {
	api, auth, registry *httptest.Server
	reg                 *ocitest.Registry

	mu       sync.Mutex
	repos    map[string][]fakeRepo // namespace → sorted by name
	tokens   map[string]string     // registry token → "anon" or user
	budget   map[string]int        // "anon" / user → pulls left
	limit    map[string]int
	apiLeft  int    // Hub API calls left; <0 unlimited
	key      []byte // signs the Hub's JWTs
	apiCalls atomic.Int32
	logins   atomic.Int32
}

type fakeRepo struct {
	name    string
	private bool
}

const window = 21600

func newFakeHub(t testing.TB) *fakeHub {
	f := &fakeHub{
		repos: map[string][]fakeRepo{
			"acme":    {{"api", true}, {"web", false}, {"worker", false}},
			"library": {{"alpine", false}, {"nginx", false}},
		},
		tokens:  map[string]string{},
		budget:  map[string]int{"anon": 100, user: 200},
		limit:   map[string]int{"anon": 100, user: 200},
		apiLeft: -1,
		key:     []byte("fake-hub-signing-key"),
	}
	f.reg = ocitest.New(t)
	f.reg.Accept = func(u, p string) bool { return (u == user && p == pat) || (u == anonUser && p == anonPass) }
	for ns, repos := range f.repos {
		for _, r := range repos {
			f.reg.Add(ns+"/"+r.name, "latest", oci.MediaTypeOCIManifest, manifest)
		}
	}
	target, _ := url.Parse(f.reg.URL)
	tr := &http.Transport{}

	authProxy := httputil.NewSingleHostReverseProxy(target)
	authProxy.Transport = tr
	authProxy.ModifyResponse = f.recordToken
	f.auth = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { f.serveAuth(w, r, authProxy) }))

	regProxy := httputil.NewSingleHostReverseProxy(target)
	regProxy.Transport = tr
	f.registry = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { f.serveRegistry(w, r, regProxy) }))

	f.api = httptest.NewServer(http.HandlerFunc(f.serveAPI))
	t.Cleanup(func() {
		f.api.Close()
		f.registry.Close()
		f.auth.Close()
		tr.CloseIdleConnections()
	})
	f.reg.RealmHost = f.auth.Listener.Addr().String()
	return f
}

func (f *fakeHub) private(repo string) bool {
	ns, name, _ := strings.Cut(repo, "/")
	for _, r := range f.repos[ns] {
		if r.name == name {
			return r.private
		}
	}
	return false
}

// serveAuth is auth.docker.io: it checks who asks, drops the scopes that
// caller may not have, and lets ocitest mint the token.
func (f *fakeHub) serveAuth(w http.ResponseWriter, r *http.Request, next http.Handler) {
	u, p, basic := r.BasicAuth()
	who := "anon"
	if basic {
		if u != user || p != pat {
			ocitest.WriteError(w, http.StatusUnauthorized, "UNAUTHORIZED", "incorrect username or password")
			return
		}
		who = user
	}
	q := r.URL.Query()
	var keep []string
	for _, s := range q["scope"] {
		parts := strings.Split(s, ":")
		if len(parts) == 3 && parts[0] == "repository" {
			ns, _, _ := strings.Cut(parts[1], "/")
			if f.private(parts[1]) && ns != who {
				continue
			}
		}
		keep = append(keep, s)
	}
	q["scope"] = keep
	r2 := r.Clone(r.Context())
	r2.URL.RawQuery = q.Encode()
	r2.Header.Del("Authorization")
	if who == "anon" {
		r2.SetBasicAuth(anonUser, anonPass)
	} else {
		r2.SetBasicAuth(u, p)
	}
	r2 = r2.WithContext(context.WithValue(r.Context(), whoKey{}, who))
	next.ServeHTTP(w, r2)
}

type whoKey struct{}

// recordToken learns which account a minted token belongs to.
func (f *fakeHub) recordToken(resp *http.Response) error {
	if resp.StatusCode != http.StatusOK {
		return nil
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	resp.Body = io.NopCloser(bytes.NewReader(b))
	var doc struct {
		Token string `json:"token"`
	}
	if json.Unmarshal(b, &doc) == nil && doc.Token != "" {
		who, _ := resp.Request.Context().Value(whoKey{}).(string)
		f.mu.Lock()
		f.tokens[doc.Token] = who
		f.mu.Unlock()
	}
	return nil
}

func (f *fakeHub) serveRegistry(w http.ResponseWriter, r *http.Request, next http.Handler) {
	if !strings.Contains(r.URL.Path, "/manifests/") {
		next.ServeHTTP(w, r)
		return
	}
	tok, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	f.mu.Lock()
	who, known := f.tokens[tok]
	if !known {
		f.mu.Unlock()
		next.ServeHTTP(w, r) // the challenge
		return
	}
	left, limit := f.budget[who], f.limit[who]
	refused := r.Method == http.MethodGet && left == 0
	if r.Method == http.MethodGet && left > 0 {
		left--
		f.budget[who] = left
	}
	f.mu.Unlock()
	w.Header().Set("Ratelimit-Limit", fmt.Sprintf("%d;w=%d", limit, window))
	w.Header().Set("Ratelimit-Remaining", fmt.Sprintf("%d;w=%d", left, window))
	w.Header().Set("Docker-Ratelimit-Source", who)
	if refused {
		ocitest.WriteError(w, http.StatusTooManyRequests, "TOOMANYREQUESTS",
			"You have reached your pull rate limit. You may increase the limit by authenticating and upgrading: https://www.docker.com/increase-rate-limit")
		return
	}
	next.ServeHTTP(w, r)
}

func (f *fakeHub) setBudget(who string, limit, left int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.limit[who], f.budget[who] = limit, left
}

func hubErr(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	fmt.Fprintf(w, `{"message":%q,"errinfo":{}}`, msg)
}

// rotateKey changes the key the Hub's JWTs are signed with, which
// invalidates every token issued before (as a logout or a password change
// does).
func (f *fakeHub) rotateKey() {
	f.mu.Lock()
	f.key = append([]byte("rotated-"), f.key...)
	f.mu.Unlock()
}

func (f *fakeHub) signingKey() []byte {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.key
}

func (f *fakeHub) serveAPI(w http.ResponseWriter, r *http.Request) {
	f.apiCalls.Add(1)
	f.mu.Lock()
	if f.apiLeft == 0 {
		f.mu.Unlock()
		w.Header().Set("X-Ratelimit-Limit", "180")
		w.Header().Set("X-Ratelimit-Remaining", "0")
		w.Header().Set("X-Ratelimit-Reset", strconv.FormatInt(time.Now().Add(90*time.Second).Unix(), 10))
		hubErr(w, http.StatusTooManyRequests, "Rate limit exceeded")
		return
	}
	if f.apiLeft > 0 {
		f.apiLeft--
	}
	f.mu.Unlock()

	if r.URL.Path == "/v2/auth/token" {
		f.logins.Add(1)
		var body struct {
			Identifier string `json:"identifier"`
			Secret     string `json:"secret"`
		}
		if r.Method != http.MethodPost || !strings.HasPrefix(r.Header.Get("Content-Type"), "application/json") ||
			json.NewDecoder(r.Body).Decode(&body) != nil {
			hubErr(w, http.StatusBadRequest, "a JSON body with identifier and secret is required")
			return
		}
		if body.Identifier != user || body.Secret != pat {
			hubErr(w, http.StatusUnauthorized, "incorrect authentication credentials")
			return
		}
		tok, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
			"sub": body.Identifier, "exp": time.Now().Add(10 * time.Minute).Unix(),
		}).SignedString(f.signingKey())
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"access_token":%q}`, tok)
		return
	}

	who := ""
	if h := r.Header.Get("Authorization"); h != "" {
		raw, ok := strings.CutPrefix(h, "Bearer ")
		var claims jwt.RegisteredClaims
		if _, err := jwt.ParseWithClaims(raw, &claims, func(*jwt.Token) (any, error) { return f.signingKey(), nil },
			jwt.WithValidMethods([]string{"HS256"})); !ok || err != nil {
			hubErr(w, http.StatusUnauthorized, "authentication credentials are invalid or expired")
			return
		}
		who = claims.Subject
	}
	ns, ok := strings.CutSuffix(strings.TrimPrefix(r.URL.Path, "/v2/namespaces/"), "/repositories")
	if !ok || strings.Contains(ns, "/") || r.Method != http.MethodGet {
		hubErr(w, http.StatusNotFound, "not found")
		return
	}
	all, known := f.repos[ns]
	if !known {
		hubErr(w, http.StatusNotFound, "object not found")
		return
	}
	q := r.URL.Query()
	page, _ := strconv.Atoi(q.Get("page"))
	size, _ := strconv.Atoi(q.Get("page_size"))
	if page < 1 || size < 1 || size > 100 {
		hubErr(w, http.StatusBadRequest, "page must be at least 1 and page_size between 1 and 100")
		return
	}
	if o := strings.TrimPrefix(q.Get("ordering"), "-"); o != "" && o != "name" && o != "last_updated" && o != "pull_count" {
		hubErr(w, http.StatusBadRequest, "ordering must be name, last_updated or pull_count")
		return
	}
	var visible []map[string]any
	for _, repo := range all {
		if repo.private && who != ns {
			continue
		}
		visible = append(visible, map[string]any{"name": repo.name, "namespace": ns, "repository_type": "image",
			"is_private": repo.private, "status": 1, "pull_count": 42})
	}
	from := min((page-1)*size, len(visible))
	to := min(from+size, len(visible))
	var next any
	if to < len(visible) {
		next = fmt.Sprintf("http://%s%s?page=%d&page_size=%d", r.Host, r.URL.Path, page+1, size)
	}
	results := slices.Clone(visible[from:to])
	if results == nil {
		results = []map[string]any{}
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{"count": len(visible), "next": next, "previous": nil, "results": results})
}
