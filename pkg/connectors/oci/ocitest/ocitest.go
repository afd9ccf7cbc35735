// Package ocitest is a fake OCI distribution registry for connector tests:
// registry.oci and every provider that reuses it for the distribution API
// (ECR, GCR, ACR, Docker Hub, GHCR).
//
// The fake enforces what real registries enforce: every /v2/ call needs
// credentials; in the token flow (the default) a 401 challenge names the
// realm, the service and the scope, the token endpoint needs Basic
// credentials and hands out tokens for the scopes asked, and a repository
// call needs a token with pull on that repository; in Basic mode (ECR)
// every call carries the Basic credentials. Tags are paged with n/last and
// a Link header, and manifests are served only for an Accept that lists
// their media type. Accept decides which username/password pairs are good,
// so a provider's fake can accept only the token it just minted.
package ocitest

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/opencontainers/go-digest"
)

// Service is the service name the token challenge names and the token
// endpoint requires.
const Service = "fake-registry"

// Mode is how the registry asks for credentials.
type Mode int

const (
	// TokenAuth is the distribution token flow: Bearer challenge, Basic
	// credentials at the realm, bearer tokens scoped per repository.
	TokenAuth Mode = iota
	// BasicAuth asks for Basic credentials on /v2/ itself (ECR does).
	BasicAuth
)

// Registry is one fake registry on a loopback port. Set the exported
// fields before the first request.
type Registry struct {
	// URL is the registry root, http://127.0.0.1:port.
	URL string
	// Host is URL's host:port.
	Host string
	// Mode is TokenAuth unless set.
	Mode Mode
	// RealmHost is the host:port the token challenge names; the
	// registry's own by default. Point it elsewhere to test realm guards.
	RealmHost string
	// User and Password are the only pair accepted when Accept is nil.
	User, Password string
	// Accept decides whether a username/password pair is good (at the
	// token endpoint, or on every call in BasicAuth mode). It must be
	// safe for concurrent use.
	Accept func(username, password string) bool
	// OmitDigest makes manifest answers come without Docker-Content-Digest.
	OmitDigest bool
	// Corrupt serves other bytes than those the digest names.
	Corrupt atomic.Bool
	// TokenCalls counts requests to the token endpoint; BasicCalls counts
	// calls that presented Basic credentials on /v2/ (BasicAuth mode).
	TokenCalls atomic.Int32
	BasicCalls atomic.Int32
	// Refused counts credentials refused (token endpoint or Basic).
	Refused atomic.Int32

	srv       *httptest.Server
	mu        sync.Mutex
	tokens    map[string][]string // token → scopes
	tags      map[string][]string
	manifests map[string]manifest // "repo@ref"
}

type manifest struct {
	mediaType string
	body      []byte
}

// New starts a registry in TokenAuth mode that accepts robot / t0ken-pass;
// it stops at the test's cleanup.
func New(t testing.TB) *Registry {
	f := &Registry{User: "robot", Password: "t0ken-pass", tokens: map[string][]string{},
		tags: map[string][]string{}, manifests: map[string]manifest{}}
	f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.srv.Close)
	f.URL = f.srv.URL
	f.Host = f.srv.Listener.Addr().String()
	f.RealmHost = f.Host
	return f
}

// Add stores a manifest under its digest and a tag, and returns the digest.
func (f *Registry) Add(repo, tag, mediaType string, body []byte) digest.Digest {
	f.mu.Lock()
	defer f.mu.Unlock()
	d := digest.FromBytes(body)
	m := manifest{mediaType: mediaType, body: body}
	f.manifests[repo+"@"+tag] = m
	f.manifests[repo+"@"+d.String()] = m
	f.tags[repo] = append(f.tags[repo], tag)
	sort.Strings(f.tags[repo])
	return d
}

// WriteError writes a distribution error document.
func WriteError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	fmt.Fprintf(w, `{"errors":[{"code":%q,"message":%q}]}`, code, msg)
}

func (f *Registry) accepts(user, pass string) bool {
	if f.Accept != nil {
		return f.Accept(user, pass)
	}
	return user == f.User && pass == f.Password
}

func (f *Registry) challenge(w http.ResponseWriter, scope string) {
	if f.Mode == BasicAuth {
		w.Header().Set("WWW-Authenticate", fmt.Sprintf(`Basic realm="http://%s/",service=%q`, f.Host, Service))
		WriteError(w, http.StatusUnauthorized, "DENIED", "Not Authorized")
		return
	}
	v := fmt.Sprintf(`Bearer realm="http://%s/token",service=%q`, f.RealmHost, Service)
	if scope != "" {
		v += fmt.Sprintf(`,scope=%q`, scope)
	}
	w.Header().Set("WWW-Authenticate", v)
	WriteError(w, http.StatusUnauthorized, "UNAUTHORIZED", "authentication required")
}

func (f *Registry) serveToken(w http.ResponseWriter, r *http.Request) {
	f.TokenCalls.Add(1)
	u, p, ok := r.BasicAuth()
	if !ok || !f.accepts(u, p) {
		f.Refused.Add(1)
		WriteError(w, http.StatusUnauthorized, "UNAUTHORIZED", "bad credentials")
		return
	}
	if r.URL.Query().Get("service") != Service {
		WriteError(w, http.StatusBadRequest, "UNSUPPORTED", "unknown service")
		return
	}
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	tok := hex.EncodeToString(b)
	f.mu.Lock()
	f.tokens[tok] = r.URL.Query()["scope"]
	f.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	fmt.Fprintf(w, `{"token":%q,"expires_in":300}`, tok)
}

// authorized reports whether r may use scope ("" for /v2/ itself).
func (f *Registry) authorized(r *http.Request, scope string) bool {
	if f.Mode == BasicAuth {
		u, p, ok := r.BasicAuth()
		if !ok {
			return false
		}
		f.BasicCalls.Add(1)
		if !f.accepts(u, p) {
			f.Refused.Add(1)
			return false
		}
		return true
	}
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok {
		return false
	}
	f.mu.Lock()
	scopes, ok := f.tokens[tok]
	f.mu.Unlock()
	return ok && (scope == "" || slices.Contains(scopes, scope))
}

func (f *Registry) serve(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/token" && f.Mode == TokenAuth {
		f.serveToken(w, r)
		return
	}
	rest, ok := strings.CutPrefix(r.URL.Path, "/v2/")
	if !ok {
		http.NotFound(w, r)
		return
	}
	if rest == "" {
		if !f.authorized(r, "") {
			f.challenge(w, "")
			return
		}
		w.WriteHeader(http.StatusOK)
		return
	}
	if rest == "_catalog" {
		if !f.authorized(r, "registry:catalog:*") {
			f.challenge(w, "registry:catalog:*")
			return
		}
		f.mu.Lock()
		var repos []string
		for r := range f.tags {
			repos = append(repos, r)
		}
		f.mu.Unlock()
		sort.Strings(repos)
		page := pageOf(w, r, "/v2/_catalog", repos)
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"repositories": page})
		return
	}
	var repo, kind, ref string
	if i := strings.LastIndex(rest, "/tags/list"); i > 0 && i+len("/tags/list") == len(rest) {
		repo, kind = rest[:i], "tags"
	} else if i := strings.LastIndex(rest, "/manifests/"); i > 0 {
		repo, kind, ref = rest[:i], "manifests", rest[i+len("/manifests/"):]
	} else {
		WriteError(w, http.StatusNotFound, "NAME_UNKNOWN", "unknown path")
		return
	}
	scope := "repository:" + repo + ":pull"
	if !f.authorized(r, scope) {
		f.challenge(w, scope)
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	tags, known := f.tags[repo]
	if !known {
		WriteError(w, http.StatusNotFound, "NAME_UNKNOWN", "repository name not known to registry")
		return
	}
	switch kind {
	case "tags":
		page := pageOf(w, r, "/v2/"+repo+"/tags/list", tags)
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"name": repo, "tags": page})
	case "manifests":
		m, ok := f.manifests[repo+"@"+ref]
		if !ok || !strings.Contains(r.Header.Get("Accept"), m.mediaType) {
			WriteError(w, http.StatusNotFound, "MANIFEST_UNKNOWN", "manifest unknown")
			return
		}
		body := m.body
		if f.Corrupt.Load() {
			body = append(slices.Clone(body), ' ')
		}
		w.Header().Set("Content-Type", m.mediaType)
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		if !f.OmitDigest {
			w.Header().Set("Docker-Content-Digest", digest.FromBytes(m.body).String())
		}
		if r.Method != http.MethodHead {
			_, _ = w.Write(body)
		}
	}
}

// pageOf is the page of sorted names after ?last=, at most ?n= long, with
// a Link to the next page when there is one (the spec's only sign of it).
func pageOf(w http.ResponseWriter, r *http.Request, path string, names []string) []string {
	q := r.URL.Query()
	n, _ := strconv.Atoi(q.Get("n"))
	last := q.Get("last")
	page := []string{}
	for _, t := range names {
		if t > last {
			page = append(page, t)
		}
	}
	if n > 0 && len(page) > n {
		page = page[:n]
		next := url.Values{"n": {strconv.Itoa(n)}, "last": {page[n-1]}}
		w.Header().Set("Link", fmt.Sprintf(`<%s?%s>; rel="next"`, path, next.Encode()))
	}
	return page
}
