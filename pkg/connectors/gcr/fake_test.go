package gcr_test

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"inthub.dev/pkg/connectors/gcr"
	"inthub.dev/pkg/connectors/oci"
	"inthub.dev/pkg/connectors/oci/ocitest"
)

// clock is the test's time for token expiry, shared by the connector and
// the fakes. JWT dates use real time, as oauth2 signs with it.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

const (
	email = "probe@proj-1.iam.gserviceaccount.com"
	keyID = "0123456789abcdef0123456789abcdef01234567"
	repo  = "proj-1/app"
)

// keys are generated once per test binary: RSA generation is slow under
// -race.
var keys = sync.OnceValue(func() [2]*rsa.PrivateKey {
	var out [2]*rsa.PrivateKey
	for i := range out {
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			panic(err)
		}
		out[i] = k
	}
	return out
})

// keyJSON is a service-account key file as the console downloads it.
func keyJSON(k *rsa.PrivateKey, tokenURI string) string {
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		panic(err)
	}
	b, _ := json.Marshal(map[string]string{
		"type": "service_account", "project_id": "proj-1", "private_key_id": keyID,
		"private_key":  string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})),
		"client_email": email, "client_id": "104242424242424242424",
		"auth_uri": "https://accounts.google.com/o/oauth2/auth", "token_uri": tokenURI,
	})
	return string(b)
}

// fakeGoogle is Google's OAuth2 token endpoint for the JWT bearer grant:
// it verifies the assertion's RS256 signature with the service account's
// public key (by kid), its issuer, audience (the token URL), lifetime and
// scope, and hands out access tokens that its registry (ocitest in the
// token flow, as gcr.io and Artifact Registry) takes as the password of
// oauth2accesstoken, until they expire on the test clock.
type fakeGoogle struct {
	srv      *httptest.Server
	reg      *ocitest.Registry
	clock    *clock
	lifetime time.Duration
	public   *rsa.PublicKey

	mu     sync.Mutex
	tokens map[string]time.Time

	throttle, fail atomic.Bool
	calls          atomic.Int32
}

func newFakeGoogle(t testing.TB) *fakeGoogle {
	f := &fakeGoogle{clock: &clock{t: time.Now()}, lifetime: time.Hour, public: &keys()[0].PublicKey, tokens: map[string]time.Time{}}
	f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.srv.Close)
	f.reg = ocitest.New(t)
	f.reg.Accept = f.accept
	f.reg.Add(repo, "v1", oci.MediaTypeOCIManifest, []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{},"layers":[]}`))
	f.reg.Add(repo, "v2", oci.MediaTypeDockerManifestList, []byte(`{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.list.v2+json","manifests":[]}`))
	f.reg.Add("proj-1/web", "latest", oci.MediaTypeOCIManifest, []byte(`{"schemaVersion":2,"n":3}`))
	return f
}

func (f *fakeGoogle) tokenURL() string { return f.srv.URL + "/token" }

func (f *fakeGoogle) accept(user, pass string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	exp, ok := f.tokens[pass]
	return user == gcr.User && ok && f.clock.now().Before(exp)
}

func oauthError(w http.ResponseWriter, status int, code, desc string) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": code, "error_description": desc})
}

func (f *fakeGoogle) serve(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/token" || r.Method != http.MethodPost {
		http.NotFound(w, r)
		return
	}
	f.calls.Add(1)
	if f.throttle.Load() {
		w.Header().Set("Retry-After", "4")
		oauthError(w, http.StatusTooManyRequests, "rate_limit_exceeded", "Rate Limit Exceeded")
		return
	}
	if f.fail.Load() {
		oauthError(w, http.StatusInternalServerError, "internal_failure", "Backend Error")
		return
	}
	if err := r.ParseForm(); err != nil || r.PostForm.Get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer" {
		oauthError(w, http.StatusBadRequest, "unsupported_grant_type", "Invalid grant_type")
		return
	}
	var claims struct {
		jwt.RegisteredClaims
		Scope string `json:"scope"`
	}
	_, err := jwt.ParseWithClaims(r.PostForm.Get("assertion"), &claims, func(tk *jwt.Token) (any, error) {
		if tk.Header["kid"] != keyID {
			return nil, fmt.Errorf("unknown key id")
		}
		return f.public, nil
	}, jwt.WithValidMethods([]string{"RS256"}), jwt.WithIssuer(email), jwt.WithAudience(f.tokenURL()),
		jwt.WithExpirationRequired(), jwt.WithIssuedAt(), jwt.WithLeeway(time.Minute))
	switch {
	case err != nil && strings.Contains(err.Error(), "signature"):
		oauthError(w, http.StatusBadRequest, "invalid_grant", "Invalid JWT Signature.")
		return
	case err != nil:
		oauthError(w, http.StatusBadRequest, "invalid_grant", "Invalid grant: account not found")
		return
	case claims.ExpiresAt.Sub(claims.IssuedAt.Time) > time.Hour+time.Minute:
		oauthError(w, http.StatusBadRequest, "invalid_grant", "Invalid JWT: Token must be a short-lived token (60 minutes)")
		return
	case claims.Scope != gcr.Scope:
		oauthError(w, http.StatusBadRequest, "invalid_scope", "Invalid OAuth scope or ID token audience provided.")
		return
	}
	b := make([]byte, 24)
	_, _ = rand.Read(b)
	tok := "ya29." + hex.EncodeToString(b)
	f.mu.Lock()
	f.tokens[tok] = f.clock.now().Add(f.lifetime)
	f.mu.Unlock()
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	_ = json.NewEncoder(w).Encode(map[string]any{"access_token": tok, "expires_in": int(f.lifetime.Seconds()), "token_type": "Bearer"})
}

func (f *fakeGoogle) config(extra map[string]any) map[string]any {
	conf := map[string]any{"endpoint": f.reg.URL, "insecure": true, "serviceAccountKey": "authref://vault/gcp#key",
		"probeRepository": repo, "timeoutSeconds": 5}
	return ocitest.Merge(conf, extra)
}

func (f *fakeGoogle) secrets() secrets {
	return secrets{"authref://vault/gcp#key": keyJSON(keys()[0], f.tokenURL())}
}
