package acr_test

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"inthub.dev/pkg/connectors/acr"
	"inthub.dev/pkg/connectors/oci"
	"inthub.dev/pkg/connectors/oci/ocitest"
)

type secrets = ocitest.Secrets

// clock is the time both the fakes and the connector read, so a test can
// move past a token's expiry without waiting for it.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func newClock() *clock { return &clock{now: time.Now()} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

const (
	tenant   = "72f988bf-86f1-41af-91ab-2d7cd011db47"
	clientID = "0b1f9a2e-5b1c-4c50-9a8f-3e2d1c0b9a87"
	secret   = "s3cr3t~value.of_the-client"
	secRef   = "authref://vault/azure/acr#clientSecret"
	adminPW  = "admin-pa55word-value"
	adminRef = "authref://vault/azure/acr#admin"
)

// fakeAAD enforces the Microsoft identity platform's client-credentials
// grant: POST /{tenant}/oauth2/v2.0/token, a form body, grant_type
// client_credentials, a known tenant and client, the client's secret, a
// scope of <resource>/.default. Failures answer with AAD's error document
// and its AADSTS codes.
type fakeAAD struct {
	srv   *httptest.Server
	clock *clock
	ttl   time.Duration

	calls  atomic.Int32
	mu     sync.Mutex
	tokens map[string]aadToken
}

type aadToken struct {
	tenant, scope string
	exp           time.Time
}

func newFakeAAD(t testing.TB, clk *clock) *fakeAAD {
	f := &fakeAAD{clock: clk, ttl: time.Hour, tokens: map[string]aadToken{}}
	f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.srv.Close)
	return f
}

func aadErr(w http.ResponseWriter, status int, code, desc string, num int) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{
		"error":             code,
		"error_description": fmt.Sprintf("AADSTS%d: %s\r\nTrace ID: 0f3a2b1c-0000-4000-8000-000000000000\r\nCorrelation ID: 5e6f7a8b-0000-4000-8000-000000000000\r\nTimestamp: 2026-01-01 00:00:00Z", num, desc),
		"error_codes":       []int{num},
		"trace_id":          "0f3a2b1c-0000-4000-8000-000000000000",
		"error_uri":         "https://login.microsoftonline.com/error?code=" + fmt.Sprint(num),
	})
}

func (f *fakeAAD) serve(w http.ResponseWriter, r *http.Request) {
	f.calls.Add(1)
	ten, ok := strings.CutSuffix(strings.TrimPrefix(r.URL.Path, "/"), "/oauth2/v2.0/token")
	if !ok || strings.Contains(ten, "/") {
		http.NotFound(w, r)
		return
	}
	if r.Method != http.MethodPost || !strings.HasPrefix(r.Header.Get("Content-Type"), "application/x-www-form-urlencoded") {
		aadErr(w, http.StatusBadRequest, "invalid_request", "The request body must contain the following parameter: 'grant_type'.", 900144)
		return
	}
	if err := r.ParseForm(); err != nil {
		aadErr(w, http.StatusBadRequest, "invalid_request", "malformed body", 900144)
		return
	}
	form := r.PostForm
	switch {
	case ten != tenant:
		aadErr(w, http.StatusBadRequest, "invalid_request", fmt.Sprintf("Tenant '%s' not found.", ten), 90002)
	case form.Get("grant_type") != "client_credentials":
		aadErr(w, http.StatusBadRequest, "unsupported_grant_type", "The provided value for the 'grant_type' is not valid.", 70003)
	case form.Get("client_id") != clientID:
		aadErr(w, http.StatusBadRequest, "unauthorized_client", fmt.Sprintf("Application with identifier '%s' was not found in the directory.", form.Get("client_id")), 700016)
	case form.Get("client_secret") != secret:
		aadErr(w, http.StatusUnauthorized, "invalid_client", "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '"+clientID+"'.", 7000215)
	case form.Get("scope") != acr.ScopeManagement && form.Get("scope") != acr.ScopeACR:
		aadErr(w, http.StatusBadRequest, "invalid_scope", "The provided value for the input parameter 'scope' is not valid.", 70011)
	default:
		tok := randHex()
		f.mu.Lock()
		f.tokens[tok] = aadToken{tenant: ten, scope: form.Get("scope"), exp: f.clock.Now().Add(f.ttl)}
		f.mu.Unlock()
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		_ = json.NewEncoder(w).Encode(map[string]any{"token_type": "Bearer", "expires_in": int(f.ttl.Seconds()),
			"ext_expires_in": int(f.ttl.Seconds()), "access_token": tok})
	}
}

// valid reports whether an AAD token was issued here, for tenant, and
// has not expired.
func (f *fakeAAD) valid(tok, ten string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	t, ok := f.tokens[tok]
	return ok && t.tenant == ten && f.clock.Now().Before(t.exp)
}

// fakeACR is an ACR login server: /oauth2/exchange trades a valid AAD
// token for a refresh token (a JWT with exp), and the distribution API
// (ocitest, behind a proxy on the same host) accepts only the user
// 00000000-0000-0000-0000-000000000000 with an unexpired refresh token it
// issued, or the admin user.
type fakeACR struct {
	srv   *httptest.Server
	reg   *ocitest.Registry
	aad   *fakeAAD
	clock *clock
	ttl   time.Duration

	exchanges atomic.Int32
	mu        sync.Mutex
	refresh   map[string]time.Time
}

var manifest = []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{},"layers":[]}`)

func newFakeACR(t testing.TB, aad *fakeAAD, clk *clock) *fakeACR {
	f := newFakeACROne(t, aad, clk)
	f.reg.Add("base/alpine", "3.20", oci.MediaTypeOCIManifest, manifest)
	return f
}

// newFakeACROne holds one repository, apps/web:v1.
func newFakeACROne(t testing.TB, aad *fakeAAD, clk *clock) *fakeACR {
	f := &fakeACR{aad: aad, clock: clk, ttl: 3 * time.Hour, refresh: map[string]time.Time{}}
	f.reg = ocitest.New(t)
	f.reg.Accept = f.accept
	f.reg.Add("apps/web", "v1", oci.MediaTypeOCIManifest, manifest)
	target, _ := url.Parse(f.reg.URL)
	proxy := httputil.NewSingleHostReverseProxy(target)
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	proxy.Transport = tr
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/oauth2/exchange" {
			f.exchange(w, r)
			return
		}
		proxy.ServeHTTP(w, r)
	}))
	t.Cleanup(f.srv.Close)
	// The token realm is the login server itself, as on ACR.
	f.reg.RealmHost = f.srv.Listener.Addr().String()
	return f
}

func (f *fakeACR) host() string { return f.srv.Listener.Addr().String() }

func (f *fakeACR) accept(user, pass string) bool {
	if user == "myregistry" {
		return pass == adminPW
	}
	if user != acr.RefreshTokenUser {
		return false
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	exp, ok := f.refresh[pass]
	return ok && f.clock.Now().Before(exp)
}

func (f *fakeACR) exchange(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		ocitest.WriteError(w, http.StatusMethodNotAllowed, "UNSUPPORTED", "POST only")
		return
	}
	if err := r.ParseForm(); err != nil {
		ocitest.WriteError(w, http.StatusBadRequest, "UNSUPPORTED", "malformed form")
		return
	}
	form := r.PostForm
	switch {
	case form.Get("grant_type") != "access_token":
		ocitest.WriteError(w, http.StatusBadRequest, "UNSUPPORTED", "grant_type must be access_token")
		return
	case form.Get("service") != f.host():
		ocitest.WriteError(w, http.StatusBadRequest, "UNSUPPORTED", "service must be the login server")
		return
	case !f.aad.valid(form.Get("access_token"), form.Get("tenant")):
		ocitest.WriteError(w, http.StatusUnauthorized, "UNAUTHORIZED", "invalid access token or tenant")
		return
	}
	exp := f.clock.Now().Add(f.ttl)
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
		"jti": randHex(), "sub": clientID, "tenant": form.Get("tenant"), "grant_type": "refresh_token",
		"aud": f.host(), "exp": exp.Unix(), "iat": f.clock.Now().Unix(),
	}).SignedString([]byte("fake-acr-signing-key"))
	if err != nil {
		ocitest.WriteError(w, http.StatusInternalServerError, "UNKNOWN", err.Error())
		return
	}
	f.mu.Lock()
	f.refresh[tok] = exp
	f.mu.Unlock()
	f.exchanges.Add(1)
	w.Header().Set("Content-Type", "application/json")
	fmt.Fprintf(w, `{"refresh_token":%q}`, tok)
}

// revoke forgets every refresh token (as a role removal or key rotation
// does), while their exp still lies ahead.
func (f *fakeACR) revoke() {
	f.mu.Lock()
	clear(f.refresh)
	f.mu.Unlock()
}

func randHex() string {
	b := make([]byte, 12)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
