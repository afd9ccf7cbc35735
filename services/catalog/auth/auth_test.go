package auth

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/MicahParks/jwkset"
	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const (
	testIssuer   = "https://authority.test"
	testAudience = "inthub-catalog"
	testTenant   = "7f1c9a52-3b7e-4d2a-9c61-0e5f4b8a2d13"
)

// keys are generated per test: RSA generation is slow enough under -race to matter, so
// each test asks only for what it uses.
type keys struct {
	rsa   *rsa.PrivateKey
	other *rsa.PrivateKey // same shape, not in any key set: forged signatures
	ec    *ecdsa.PrivateKey
	ed    ed25519.PrivateKey
}

func newKeys(tb testing.TB) keys {
	tb.Helper()
	var k keys
	var err error
	if k.rsa, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
		tb.Fatal(err)
	}
	if k.other, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
		tb.Fatal(err)
	}
	if k.ec, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
		tb.Fatal(err)
	}
	if _, k.ed, err = ed25519.GenerateKey(rand.Reader); err != nil {
		tb.Fatal(err)
	}
	return k
}

// jwksServer serves a JWK Set that a test can change, and counts requests.
type jwksServer struct {
	*httptest.Server
	hits   atomic.Int64
	status atomic.Int32 // non-zero: answer with this status instead of the set

	mu    sync.Mutex
	keys  []jwkset.JWKMarshal
	extra []json.RawMessage
}

func newJWKSServer(tb testing.TB) *jwksServer {
	tb.Helper()
	s := &jwksServer{}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.hits.Add(1)
		if st := s.status.Load(); st != 0 {
			http.Error(w, "unavailable", int(st))
			return
		}
		s.mu.Lock()
		doc := struct {
			Keys []any `json:"keys"`
		}{Keys: []any{}}
		for _, k := range s.keys {
			doc.Keys = append(doc.Keys, k)
		}
		for _, e := range s.extra {
			doc.Keys = append(doc.Keys, e)
		}
		s.mu.Unlock()
		w.Header().Set("Content-Type", "application/jwk-set+json")
		_ = json.NewEncoder(w).Encode(doc)
	}))
	tb.Cleanup(s.Close)
	return s
}

func (s *jwksServer) add(tb testing.TB, pub any, kid string, alg jwkset.ALG) {
	tb.Helper()
	k, err := jwkset.NewJWKFromKey(pub, jwkset.JWKOptions{Metadata: jwkset.JWKMetadataOptions{KID: kid, ALG: alg, USE: jwkset.UseSig}})
	if err != nil {
		tb.Fatal(err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.keys = append(s.keys, k.Marshal())
}

func (s *jwksServer) remove(kid string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	kept := s.keys[:0]
	for _, k := range s.keys {
		if k.KID != kid {
			kept = append(kept, k)
		}
	}
	s.keys = kept
}

func (s *jwksServer) addRaw(raw string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.extra = append(s.extra, json.RawMessage(raw))
}

// syncBuffer collects log output from several goroutines.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func newAuth(tb testing.TB, cfg Config) *Authenticator {
	tb.Helper()
	if cfg.Issuer == "" {
		cfg.Issuer = testIssuer
	}
	if cfg.Audience == "" {
		cfg.Audience = testAudience
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewJSONHandler(tb.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	// Cancelled as soon as New returns, as a startup timeout would be: the background JWKS
	// refresh the tests below rely on must outlive it.
	ctx, cancel := context.WithCancel(context.Background())
	a, err := New(ctx, cfg)
	cancel()
	if err != nil {
		tb.Fatalf("New: %v", err)
	}
	tb.Cleanup(a.Close)
	return a
}

func claims(mods ...func(jwt.MapClaims)) jwt.MapClaims {
	now := time.Now()
	c := jwt.MapClaims{
		"iss":       testIssuer,
		"aud":       testAudience,
		"sub":       "user-42",
		"tenant_id": testTenant,
		"scope":     ScopeRead,
		"iat":       now.Unix(),
		"exp":       now.Add(time.Hour).Unix(),
	}
	for _, m := range mods {
		m(c)
	}
	return c
}

func set(k string, v any) func(jwt.MapClaims) { return func(c jwt.MapClaims) { c[k] = v } }
func del(k string) func(jwt.MapClaims)        { return func(c jwt.MapClaims) { delete(c, k) } }

func mint(tb testing.TB, m jwt.SigningMethod, key any, kid string, c jwt.MapClaims) string {
	tb.Helper()
	tok := jwt.NewWithClaims(m, c)
	if kid != "" {
		tok.Header["kid"] = kid
	}
	s, err := tok.SignedString(key)
	if err != nil {
		tb.Fatalf("sign %s: %v", m.Alg(), err)
	}
	return s
}

func pemPublic(tb testing.TB, pub any) []byte {
	tb.Helper()
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		tb.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

func writeFile(tb testing.TB, data []byte) string {
	tb.Helper()
	p := filepath.Join(tb.TempDir(), "keys.pem")
	if err := os.WriteFile(p, data, 0o600); err != nil {
		tb.Fatal(err)
	}
	return p
}

// fleet is one authenticator per key source over the same keys.
type fleet struct {
	k       keys
	jwks    *jwksServer
	byJWKS  *Authenticator
	keyFile []byte
	byFile  *Authenticator
	secret  []byte
	byDev   *Authenticator
}

func newFleet(tb testing.TB, k keys, logger *slog.Logger) fleet {
	tb.Helper()
	f := fleet{k: k, jwks: newJWKSServer(tb)}
	f.jwks.add(tb, k.rsa.Public(), "rsa-1", jwkset.AlgRS256)
	f.jwks.add(tb, k.ec.Public(), "ec-1", jwkset.AlgES256)
	f.jwks.add(tb, k.ed.Public(), "ed-1", jwkset.AlgEdDSA)
	f.byJWKS = newAuth(tb, Config{JWKSURL: f.jwks.URL, Logger: logger})

	f.keyFile = append(pemPublic(tb, k.rsa.Public()), pemPublic(tb, k.ec.Public())...)
	f.byFile = newAuth(tb, Config{KeyFile: writeFile(tb, f.keyFile), Logger: logger})

	f.secret = bytes.Repeat([]byte("s"), 32)
	f.byDev = newAuth(tb, Config{DevMode: true, DevHS256Secret: f.secret, Logger: logger})
	return f
}

func (f fleet) pick(name string) *Authenticator {
	switch name {
	case "jwks":
		return f.byJWKS
	case "file":
		return f.byFile
	case "dev":
		return f.byDev
	}
	panic("unknown authenticator " + name)
}

func TestAuthenticateAccepts(t *testing.T) {
	k := newKeys(t)
	f := newFleet(t, k, nil)

	tests := []struct {
		name   string
		auth   string
		header string
		want   Principal
	}{
		{"RS256 from JWKS", "jwks", "Bearer " + mint(t, jwt.SigningMethodRS256, k.rsa, "rsa-1", claims()),
			Principal{Subject: "user-42", TenantID: testTenant, Scopes: []string{ScopeRead}}},
		{"ES256 from JWKS", "jwks", "Bearer " + mint(t, jwt.SigningMethodES256, k.ec, "ec-1", claims()),
			Principal{Subject: "user-42", TenantID: testTenant, Scopes: []string{ScopeRead}}},
		{"EdDSA from JWKS", "jwks", "Bearer " + mint(t, jwt.SigningMethodEdDSA, k.ed, "ed-1", claims()),
			Principal{Subject: "user-42", TenantID: testTenant, Scopes: []string{ScopeRead}}},
		{"RS256 from JWKS without kid", "jwks", "Bearer " + mint(t, jwt.SigningMethodRS256, k.rsa, "", claims()),
			Principal{Subject: "user-42", TenantID: testTenant, Scopes: []string{ScopeRead}}},
		{"RS256 from key file", "file", "Bearer " + mint(t, jwt.SigningMethodRS256, k.rsa, "whatever", claims()),
			Principal{Subject: "user-42", TenantID: testTenant, Scopes: []string{ScopeRead}}},
		{"ES256 from key file", "file", "Bearer " + mint(t, jwt.SigningMethodES256, k.ec, "", claims()),
			Principal{Subject: "user-42", TenantID: testTenant, Scopes: []string{ScopeRead}}},
		{"HS256 in dev mode", "dev", "Bearer " + mint(t, jwt.SigningMethodHS256, f.secret, "", claims()),
			Principal{Subject: "user-42", TenantID: testTenant, Scopes: []string{ScopeRead}}},
		{"scheme is case-insensitive", "jwks", "bearer " + mint(t, jwt.SigningMethodRS256, k.rsa, "rsa-1", claims()),
			Principal{Subject: "user-42", TenantID: testTenant, Scopes: []string{ScopeRead}}},
		{"expired within the leeway", "jwks", "Bearer " + mint(t, jwt.SigningMethodRS256, k.rsa, "rsa-1",
			claims(set("exp", time.Now().Add(-10*time.Second).Unix()))),
			Principal{Subject: "user-42", TenantID: testTenant, Scopes: []string{ScopeRead}}},
		{"audience in an array", "jwks", "Bearer " + mint(t, jwt.SigningMethodRS256, k.rsa, "rsa-1",
			claims(set("aud", []string{"other", testAudience}))),
			Principal{Subject: "user-42", TenantID: testTenant, Scopes: []string{ScopeRead}}},
		{"tenant upper-case is canonicalised", "jwks", "Bearer " + mint(t, jwt.SigningMethodRS256, k.rsa, "rsa-1",
			claims(set("tenant_id", strings.ToUpper(testTenant)))),
			Principal{Subject: "user-42", TenantID: testTenant, Scopes: []string{ScopeRead}}},
		{"scp array and scope string are merged", "jwks", "Bearer " + mint(t, jwt.SigningMethodRS256, k.rsa, "rsa-1",
			claims(set("scope", "integrations:read openid"), set("scp", []string{ScopeWrite, ScopeRead}))),
			Principal{Subject: "user-42", TenantID: testTenant, Scopes: []string{ScopeRead, ScopeWrite, "openid"}}},
		{"no scope at all", "jwks", "Bearer " + mint(t, jwt.SigningMethodRS256, k.rsa, "rsa-1", claims(del("scope"))),
			Principal{Subject: "user-42", TenantID: testTenant}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := f.pick(tt.auth).Authenticate(t.Context(), tt.header)
			if err != nil {
				t.Fatalf("Authenticate: %v", err)
			}
			if got.Subject != tt.want.Subject || got.TenantID != tt.want.TenantID ||
				strings.Join(got.Scopes, " ") != strings.Join(tt.want.Scopes, " ") {
				t.Fatalf("principal = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestAuthenticateRejects(t *testing.T) {
	k := newKeys(t)
	logs := &syncBuffer{}
	f := newFleet(t, k, slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	rs := func(c jwt.MapClaims) string { return mint(t, jwt.SigningMethodRS256, k.rsa, "rsa-1", c) }
	valid := rs(claims())
	parts := strings.Split(valid, ".")
	tamperedPayload := base64.RawURLEncoding.EncodeToString([]byte(
		`{"iss":"` + testIssuer + `","aud":"` + testAudience + `","sub":"root","tenant_id":"` + testTenant +
			`","scope":"integrations:admin","exp":` + fmt.Sprint(time.Now().Add(time.Hour).Unix()) + `}`))
	rsaPEM := pemPublic(t, k.rsa.Public())
	noneToken := mint(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, "rsa-1", claims())

	tests := []struct {
		name   string
		auth   string
		header string
		reason string
	}{
		{"no header", "jwks", "", "missing bearer token"},
		{"scheme only", "jwks", "Bearer", "malformed authorization header"},
		{"Basic", "jwks", "Basic dXNlcjpwYXNz", "unsupported authorization scheme, use Bearer"},
		{"token without scheme", "jwks", valid, "unsupported authorization scheme, use Bearer"},
		{"two tokens", "jwks", "Bearer " + valid + " " + valid, "malformed authorization header"},
		{"not a JWT", "jwks", "Bearer abc.def", "malformed token"},
		{"garbage segments", "jwks", "Bearer a.b.c", "malformed token"},
		{"too large", "jwks", "Bearer " + strings.Repeat("a", maxTokenBytes+1), "token too large"},
		{"expired", "jwks", "Bearer " + rs(claims(set("exp", time.Now().Add(-time.Hour).Unix()))), "token expired"},
		{"nbf in the future", "jwks", "Bearer " + rs(claims(set("nbf", time.Now().Add(time.Hour).Unix()))), "token not valid yet"},
		{"iat in the future", "jwks", "Bearer " + rs(claims(set("iat", time.Now().Add(time.Hour).Unix()))), "token issued in the future"},
		{"no exp", "jwks", "Bearer " + rs(claims(del("exp"))), "missing expiry"},
		{"exp is a string", "jwks", "Bearer " + rs(claims(set("exp", "tomorrow"))), "malformed claims"},
		{"wrong issuer", "jwks", "Bearer " + rs(claims(set("iss", "https://evil.test"))), "wrong issuer"},
		{"no issuer", "jwks", "Bearer " + rs(claims(del("iss"))), "missing issuer"},
		{"wrong audience", "jwks", "Bearer " + rs(claims(set("aud", "someone-else"))), "wrong audience"},
		{"no audience", "jwks", "Bearer " + rs(claims(del("aud"))), "missing audience"},
		{"forged signature, JWKS", "jwks", "Bearer " + mint(t, jwt.SigningMethodRS256, k.other, "rsa-1", claims()), "bad signature"},
		{"forged signature, key file", "file", "Bearer " + mint(t, jwt.SigningMethodRS256, k.other, "", claims()), "bad signature"},
		{"forged signature, no kid", "jwks", "Bearer " + mint(t, jwt.SigningMethodRS256, k.other, "", claims()), "bad signature"},
		{"payload swapped", "jwks", "Bearer " + parts[0] + "." + tamperedPayload + "." + parts[2], "bad signature"},
		{"alg none", "jwks", "Bearer " + noneToken, "signing method not allowed"},
		{"alg none, key file", "file", "Bearer " + noneToken, "signing method not allowed"},
		{"alg none, dev mode", "dev", "Bearer " + noneToken, "signing method not allowed"},
		{"HS256 keyed with the RSA public key PEM, JWKS", "jwks",
			"Bearer " + mint(t, jwt.SigningMethodHS256, rsaPEM, "rsa-1", claims()), "signing method not allowed"},
		{"HS256 keyed with the key file's bytes", "file",
			"Bearer " + mint(t, jwt.SigningMethodHS256, f.keyFile, "", claims()), "signing method not allowed"},
		{"HS256 when not in dev mode", "jwks",
			"Bearer " + mint(t, jwt.SigningMethodHS256, f.secret, "", claims()), "signing method not allowed"},
		{"RS256 in dev mode", "dev", "Bearer " + valid, "signing method not allowed"},
		{"HS256 with another secret in dev mode", "dev",
			"Bearer " + mint(t, jwt.SigningMethodHS256, bytes.Repeat([]byte("x"), 32), "", claims()), "bad signature"},
		{"unknown kid", "jwks", "Bearer " + mint(t, jwt.SigningMethodRS256, k.rsa, "nope", claims()), "unknown signing key"},
		{"EdDSA with no EdDSA key in the file", "file",
			"Bearer " + mint(t, jwt.SigningMethodEdDSA, k.ed, "", claims()), "unknown signing key"},
		{"ES256 under an RS256 kid", "jwks", "Bearer " + mint(t, jwt.SigningMethodES256, k.ec, "rsa-1", claims()), "unknown signing key"},
		{"missing tenant", "jwks", "Bearer " + rs(claims(del("tenant_id"))), "missing tenant claim"},
		{"empty tenant", "jwks", "Bearer " + rs(claims(set("tenant_id", ""))), "missing tenant claim"},
		{"tenant not a uuid", "jwks", "Bearer " + rs(claims(set("tenant_id", "acme"))), "malformed tenant claim"},
		{"tenant a number", "jwks", "Bearer " + rs(claims(set("tenant_id", 42))), "malformed tenant claim"},
		{"tenant urn form", "jwks", "Bearer " + rs(claims(set("tenant_id", "urn:uuid:"+testTenant))), "malformed tenant claim"},
		{"tenant nil uuid", "jwks", "Bearer " + rs(claims(set("tenant_id", uuid.Nil.String()))), "malformed tenant claim"},
		{"missing sub", "jwks", "Bearer " + rs(claims(del("sub"))), "missing subject"},
		{"sub a number", "jwks", "Bearer " + rs(claims(set("sub", 7))), "malformed subject claim"},
		{"scope a number", "jwks", "Bearer " + rs(claims(set("scope", 7))), "malformed scope claim"},
		{"scp with a number", "jwks", "Bearer " + rs(claims(set("scp", []any{ScopeRead, 7}))), "malformed scope claim"},
	}
	var tokens []string
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, tok, _ := strings.Cut(tt.header, " ")
			if len(tok) > 20 {
				tokens = append(tokens, tok)
			}
			p, err := f.pick(tt.auth).Authenticate(t.Context(), tt.header)
			if err == nil {
				t.Fatalf("accepted, principal %+v", p)
			}
			if !errors.Is(err, ErrUnauthenticated) {
				t.Fatalf("error %v does not wrap ErrUnauthenticated", err)
			}
			var ae *Error
			if !errors.As(err, &ae) {
				t.Fatalf("error %T is not *Error", err)
			}
			if ae.Reason != tt.reason {
				t.Fatalf("reason = %q, want %q (error %v)", ae.Reason, tt.reason, errors.Unwrap(err))
			}
			if ae.GetStatus() != http.StatusUnauthorized {
				t.Fatalf("status = %d", ae.GetStatus())
			}
			if tok != "" && strings.Contains(err.Error(), tok) {
				t.Fatal("error message echoes the token")
			}
		})
	}
	out := logs.String()
	if out == "" {
		t.Fatal("no debug log of failures; the no-token-in-logs check would be vacuous")
	}
	for _, tok := range tokens {
		if strings.Contains(out, tok) {
			t.Fatal("a token appears in the logs")
		}
	}
}

func TestPrincipalCan(t *testing.T) {
	tests := []struct {
		scopes             []string
		read, write, admin bool
	}{
		{nil, false, false, false},
		{[]string{"openid", "integrations:reader"}, false, false, false},
		{[]string{ScopeRead}, true, false, false},
		{[]string{ScopeWrite}, true, true, false},
		{[]string{ScopeAdmin}, true, true, true},
		{[]string{ScopeRead, ScopeAdmin}, true, true, true},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.scopes, "+"), func(t *testing.T) {
			p := Principal{Scopes: tt.scopes}
			if got := [3]bool{p.Can(ScopeRead), p.Can(ScopeWrite), p.Can(ScopeAdmin)}; got != [3]bool{tt.read, tt.write, tt.admin} {
				t.Fatalf("Can(read, write, admin) = %v, want %v", got, [3]bool{tt.read, tt.write, tt.admin})
			}
		})
	}
}

func TestScopesFromToken(t *testing.T) {
	k := newKeys(t)
	f := newFleet(t, k, nil)
	tests := []struct {
		name              string
		mod               func(jwt.MapClaims)
		canRead, canWrite bool
	}{
		{"read-only via scope", set("scope", ScopeRead), true, false},
		{"admin via scp array", func(c jwt.MapClaims) { delete(c, "scope"); c["scp"] = []string{ScopeAdmin} }, true, true},
		{"write via scp string", func(c jwt.MapClaims) { delete(c, "scope"); c["scp"] = ScopeWrite }, true, true},
		{"unrelated scopes", set("scope", "openid profile"), false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := f.byJWKS.Authenticate(t.Context(), "Bearer "+mint(t, jwt.SigningMethodRS256, k.rsa, "rsa-1", claims(tt.mod)))
			if err != nil {
				t.Fatal(err)
			}
			if p.Can(ScopeRead) != tt.canRead || p.Can(ScopeWrite) != tt.canWrite {
				t.Fatalf("scopes %v: Can(read)=%v Can(write)=%v, want %v %v", p.Scopes, p.Can(ScopeRead), p.Can(ScopeWrite), tt.canRead, tt.canWrite)
			}
		})
	}
}

func TestTenantClaimConfigurable(t *testing.T) {
	k := newKeys(t)
	srv := newJWKSServer(t)
	srv.add(t, k.rsa.Public(), "rsa-1", jwkset.AlgRS256)
	a := newAuth(t, Config{JWKSURL: srv.URL, TenantClaim: "https://inthub.dev/tenant"})

	tok := mint(t, jwt.SigningMethodRS256, k.rsa, "rsa-1", claims(del("tenant_id"), set("https://inthub.dev/tenant", testTenant)))
	p, err := a.Authenticate(t.Context(), "Bearer "+tok)
	if err != nil || p.TenantID != testTenant {
		t.Fatalf("custom claim: principal %+v, err %v", p, err)
	}
	// The default claim name means nothing once another is configured.
	tok = mint(t, jwt.SigningMethodRS256, k.rsa, "rsa-1", claims())
	if _, err := a.Authenticate(t.Context(), "Bearer "+tok); !errors.Is(err, ErrUnauthenticated) {
		t.Fatalf("default claim accepted under a custom claim name: %v", err)
	}
}

func TestNewValidatesConfig(t *testing.T) {
	dir := t.TempDir()
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	privFile := filepath.Join(dir, "private.pem")
	if err := os.WriteFile(privFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	emptyFile := filepath.Join(dir, "empty.pem")
	if err := os.WriteFile(emptyFile, []byte("not a pem file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	weak, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	weakFile := writeFile(t, pemPublic(t, weak.Public()))
	goodFile := writeFile(t, pemPublic(t, priv.Public()))
	secret := bytes.Repeat([]byte("k"), 32)

	tests := []struct {
		name string
		cfg  Config
		want string // substring of the error; "" means New succeeds
	}{
		{"key file ok", Config{KeyFile: goodFile}, ""},
		{"dev secret ok", Config{DevMode: true, DevHS256Secret: secret}, ""},
		{"no key source", Config{}, "set exactly one of"},
		{"two key sources", Config{KeyFile: goodFile, JWKSURL: "https://authority.test/jwks"}, "set exactly one of"},
		{"dev secret and key file", Config{DevMode: true, DevHS256Secret: secret, KeyFile: goodFile}, "set exactly one of"},
		{"dev secret without dev mode", Config{DevHS256Secret: secret}, "without DevMode"},
		{"short dev secret", Config{DevMode: true, DevHS256Secret: []byte("short")}, "at least 32"},
		{"no issuer", Config{Issuer: "-", KeyFile: goodFile}, "Issuer is empty"},
		{"no audience", Config{Audience: "-", KeyFile: goodFile}, "Audience is empty"},
		{"JWKS over http to a remote host", Config{JWKSURL: "http://authority.example/jwks"}, "use https"},
		{"JWKS not a URL", Config{JWKSURL: "authority/jwks"}, "not an absolute URL"},
		{"JWKS ftp", Config{JWKSURL: "ftp://authority.example/jwks"}, "scheme must be https"},
		{"negative leeway", Config{KeyFile: goodFile, Leeway: -time.Second}, "Leeway"},
		{"huge leeway", Config{KeyFile: goodFile, Leeway: time.Hour}, "Leeway"},
		{"key file missing", Config{KeyFile: filepath.Join(dir, "nope.pem")}, "read KeyFile"},
		{"key file with a private key", Config{KeyFile: privFile}, "private key"},
		{"key file without PEM", Config{KeyFile: emptyFile}, "no PEM public key"},
		{"key file with a 1024-bit RSA key", Config{KeyFile: weakFile}, "at least 2048"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := tt.cfg
			cfg.Issuer, cfg.Audience = orString(cfg.Issuer, testIssuer), orString(cfg.Audience, testAudience)
			if cfg.Issuer == "-" {
				cfg.Issuer = ""
			}
			if cfg.Audience == "-" {
				cfg.Audience = ""
			}
			cfg.Logger = slog.New(slog.DiscardHandler)
			a, err := New(t.Context(), cfg)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("New: %v", err)
				}
				a.Close()
				return
			}
			if err == nil {
				a.Close()
				t.Fatalf("New accepted the config, want error containing %q", tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %q does not contain %q", err, tt.want)
			}
		})
	}
}

func orString(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// A flood of tokens with random kids must not turn into a flood of JWKS requests.
func TestJWKSUnknownKIDFlood(t *testing.T) {
	k := newKeys(t)
	srv := newJWKSServer(t)
	srv.add(t, k.rsa.Public(), "rsa-1", jwkset.AlgRS256)
	a := newAuth(t, Config{JWKSURL: srv.URL, JWKSUnknownKIDInterval: time.Hour, Logger: slog.New(slog.DiscardHandler)})
	if got := srv.hits.Load(); got != 1 {
		t.Fatalf("JWKS hits after New = %d, want 1", got)
	}

	const n = 200
	tokens := make([]string, n)
	for i := range tokens {
		tokens[i] = "Bearer " + mint(t, jwt.SigningMethodRS256, k.rsa, uuid.NewString(), claims())
	}
	var wg sync.WaitGroup
	var accepted, wrongReason atomic.Int64
	for i := range n {
		wg.Go(func() {
			_, err := a.Authenticate(t.Context(), tokens[i])
			var ae *Error
			switch {
			case err == nil:
				accepted.Add(1)
			case !errors.As(err, &ae) || ae.Reason != "unknown signing key":
				wrongReason.Add(1)
			}
		})
	}
	wg.Wait()
	if accepted.Load() != 0 || wrongReason.Load() != 0 {
		t.Fatalf("accepted %d, wrong reason %d", accepted.Load(), wrongReason.Load())
	}
	// One fetch at start, at most one refresh for the whole flood.
	if got := srv.hits.Load(); got > 2 {
		t.Fatalf("JWKS hit %d times by %d unknown kids, want at most 2", got, n)
	}
	if _, err := a.Authenticate(t.Context(), "Bearer "+mint(t, jwt.SigningMethodRS256, k.rsa, "rsa-1", claims())); err != nil {
		t.Fatalf("known key refused after the flood: %v", err)
	}
}

// A key published under a new kid is found by the unknown-kid refresh once the rate
// limit allows, and the flood before it still costs only a few requests.
func TestJWKSPicksUpNewKID(t *testing.T) {
	k := newKeys(t)
	srv := newJWKSServer(t)
	srv.add(t, k.rsa.Public(), "rsa-1", jwkset.AlgRS256)
	const interval = 200 * time.Millisecond
	a := newAuth(t, Config{JWKSURL: srv.URL, JWKSUnknownKIDInterval: interval, Logger: slog.New(slog.DiscardHandler)})
	start := time.Now()

	newTok := "Bearer " + mint(t, jwt.SigningMethodES256, k.ec, "ec-2", claims())
	if _, err := a.Authenticate(t.Context(), newTok); !errors.Is(err, ErrUnauthenticated) {
		t.Fatalf("key not yet published was accepted: %v", err)
	}
	for range 200 {
		_, _ = a.Authenticate(t.Context(), "Bearer "+mint(t, jwt.SigningMethodES256, k.ec, uuid.NewString(), claims()))
	}
	srv.add(t, k.ec.Public(), "ec-2", jwkset.AlgES256)

	ticker := time.NewTicker(20 * time.Millisecond)
	defer ticker.Stop()
	deadline := time.After(10 * time.Second)
	for {
		_, err := a.Authenticate(t.Context(), newTok)
		if err == nil {
			break
		}
		select {
		case <-deadline:
			t.Fatalf("new kid never accepted: %v", err)
		case <-ticker.C:
		}
	}
	// Initial fetch, plus at most one refresh per interval started (and one of slack for
	// the boundary).
	elapsed := time.Since(start)
	limit := 2 + int64(elapsed/interval) + 1
	if got := srv.hits.Load(); got > limit {
		t.Fatalf("JWKS hit %d times in %s, want at most %d", got, elapsed, limit)
	}
}

// An Authority down at start does not stop the catalog; its keys are used once it answers.
func TestJWKSDownAtStart(t *testing.T) {
	k := newKeys(t)
	srv := newJWKSServer(t)
	srv.add(t, k.rsa.Public(), "rsa-1", jwkset.AlgRS256)
	srv.status.Store(http.StatusServiceUnavailable)
	a := newAuth(t, Config{JWKSURL: srv.URL, JWKSUnknownKIDInterval: 50 * time.Millisecond, Logger: slog.New(slog.DiscardHandler)})

	tok := "Bearer " + mint(t, jwt.SigningMethodRS256, k.rsa, "rsa-1", claims())
	_, err := a.Authenticate(t.Context(), tok)
	var ae *Error
	if !errors.As(err, &ae) || ae.Reason != "unknown signing key" {
		t.Fatalf("with the JWKS down: %v, want unknown signing key", err)
	}
	srv.status.Store(0)
	waitFor(t, 10*time.Second, func() error {
		_, err := a.Authenticate(t.Context(), tok)
		return err
	})
}

// A key withdrawn from the JWKS stops being accepted after the periodic refresh.
func TestJWKSRevokedKeyDropped(t *testing.T) {
	k := newKeys(t)
	srv := newJWKSServer(t)
	srv.add(t, k.rsa.Public(), "rsa-1", jwkset.AlgRS256)
	srv.add(t, k.ec.Public(), "ec-1", jwkset.AlgES256)
	a := newAuth(t, Config{JWKSURL: srv.URL, JWKSRefreshInterval: 50 * time.Millisecond, Logger: slog.New(slog.DiscardHandler)})

	tok := "Bearer " + mint(t, jwt.SigningMethodRS256, k.rsa, "", claims()) // no kid: checked against the whole set
	if _, err := a.Authenticate(t.Context(), tok); err != nil {
		t.Fatal(err)
	}
	srv.remove("rsa-1")
	waitFor(t, 10*time.Second, func() error {
		if _, err := a.Authenticate(t.Context(), tok); err == nil {
			return errors.New("revoked key still accepted")
		}
		return nil
	})
}

// Symmetric, encryption and weak keys in a JWKS are never loaded.
func TestJWKSSkipsUnusableKeys(t *testing.T) {
	k := newKeys(t)
	weak, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	srv := newJWKSServer(t)
	srv.add(t, k.rsa.Public(), "rsa-1", jwkset.AlgRS256)
	srv.add(t, weak.Public(), "weak", jwkset.AlgRS256)
	secret := bytes.Repeat([]byte("h"), 32)
	srv.addRaw(`{"kty":"oct","kid":"hmac","alg":"HS256","k":"` + base64.RawURLEncoding.EncodeToString(secret) + `"}`)
	enc, err := jwkset.NewJWKFromKey(k.other.Public(), jwkset.JWKOptions{Metadata: jwkset.JWKMetadataOptions{KID: "enc-1", USE: jwkset.UseEnc}})
	if err != nil {
		t.Fatal(err)
	}
	raw, err := json.Marshal(enc.Marshal())
	if err != nil {
		t.Fatal(err)
	}
	srv.addRaw(string(raw))
	srv.addRaw(`{"kty":"RSA","kid":"broken","n":"!!","e":"AQAB"}`)

	a := newAuth(t, Config{JWKSURL: srv.URL, JWKSUnknownKIDInterval: time.Hour, Logger: slog.New(slog.DiscardHandler)})
	loaded, err := a.jwks.KeyReadAll(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if len(loaded) != 1 || loaded[0].Marshal().KID != "rsa-1" {
		var kids []string
		for _, l := range loaded {
			kids = append(kids, l.Marshal().KID)
		}
		t.Fatalf("loaded kids %v, want only rsa-1", kids)
	}
	for _, tc := range []struct {
		kid string
		m   jwt.SigningMethod
		key any
	}{
		{"weak", jwt.SigningMethodRS256, weak},
		{"enc-1", jwt.SigningMethodRS256, k.other},
		{"hmac", jwt.SigningMethodHS256, secret},
	} {
		if _, err := a.Authenticate(t.Context(), "Bearer "+mint(t, tc.m, tc.key, tc.kid, claims())); !errors.Is(err, ErrUnauthenticated) {
			t.Fatalf("token under skipped key %s accepted: %v", tc.kid, err)
		}
	}
}

func waitFor(tb testing.TB, within time.Duration, cond func() error) {
	tb.Helper()
	ticker := time.NewTicker(20 * time.Millisecond)
	defer ticker.Stop()
	deadline := time.After(within)
	for {
		err := cond()
		if err == nil {
			return
		}
		select {
		case <-deadline:
			tb.Fatalf("condition not met within %s: %v", within, err)
		case <-ticker.C:
		}
	}
}

func TestMiddleware(t *testing.T) {
	k := newKeys(t)
	srv := newJWKSServer(t)
	srv.add(t, k.rsa.Public(), "rsa-1", jwkset.AlgRS256)
	a := newAuth(t, Config{JWKSURL: srv.URL})

	mux := http.NewServeMux()
	ok := func(w http.ResponseWriter, r *http.Request) {
		p, found := PrincipalFrom(r.Context())
		if !found {
			_, _ = io.WriteString(w, "anonymous")
			return
		}
		_, _ = io.WriteString(w, p.Subject+"@"+p.TenantID)
	}
	mux.HandleFunc("GET /healthz", ok)
	mux.HandleFunc("GET /metrics", ok)
	mux.Handle("GET /api/v1/integrations", ScopeMiddleware(ScopeRead)(http.HandlerFunc(ok)))
	mux.Handle("POST /api/v1/integrations", ScopeMiddleware(ScopeWrite)(http.HandlerFunc(ok)))
	h := Middleware(a, "/healthz", "/readyz", "/metrics")(mux)

	tokWith := func(scope string) string {
		return mint(t, jwt.SigningMethodRS256, k.rsa, "rsa-1", claims(set("scope", scope)))
	}
	expired := mint(t, jwt.SigningMethodRS256, k.rsa, "rsa-1", claims(set("exp", time.Now().Add(-time.Hour).Unix())))
	readTok, writeTok, adminTok := tokWith(ScopeRead), tokWith(ScopeWrite), tokWith(ScopeAdmin)

	tests := []struct {
		name      string
		method    string
		path      string
		auth      []string
		status    int
		body      string // exact body for 2xx; problem detail otherwise
		challenge string // substring of WWW-Authenticate
	}{
		{"healthz open", "GET", "/healthz", nil, 200, "anonymous", ""},
		{"metrics open", "GET", "/metrics", nil, 200, "anonymous", ""},
		{"healthz open even with a bad token", "GET", "/healthz", []string{"Bearer " + expired}, 200, "anonymous", ""},
		{"api needs a token", "GET", "/api/v1/integrations", nil, 401, "missing bearer token", `Bearer realm="inthub"`},
		{"dot-dot past a public path", "GET", "/healthz/../api/v1/integrations", nil, 401, "missing bearer token", "Bearer"},
		{"unknown path needs a token", "GET", "/nope", nil, 401, "missing bearer token", "Bearer"},
		{"expired token", "GET", "/api/v1/integrations", []string{"Bearer " + expired}, 401, "token expired", `error="invalid_token"`},
		{"Basic", "GET", "/api/v1/integrations", []string{"Basic dXNlcjpwYXNz"}, 401, "unsupported authorization scheme, use Bearer", `error="invalid_token"`},
		{"two Authorization headers", "GET", "/api/v1/integrations", []string{"Bearer " + readTok, "Bearer " + adminTok}, 401, "malformed authorization header", `error="invalid_token"`},
		{"read token reads", "GET", "/api/v1/integrations", []string{"Bearer " + readTok}, 200, "user-42@" + testTenant, ""},
		{"read token cannot write", "POST", "/api/v1/integrations", []string{"Bearer " + readTok}, 403, "missing scope integrations:write", `error="insufficient_scope", scope="integrations:write"`},
		{"write token writes", "POST", "/api/v1/integrations", []string{"Bearer " + writeTok}, 200, "user-42@" + testTenant, ""},
		{"admin token writes", "POST", "/api/v1/integrations", []string{"Bearer " + adminTok}, 200, "user-42@" + testTenant, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest(tt.method, tt.path, nil)
			for _, v := range tt.auth {
				r.Header.Add("Authorization", v)
			}
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			res := w.Result()
			body := w.Body.String()
			if res.StatusCode != tt.status {
				t.Fatalf("status %d, want %d; body %s", res.StatusCode, tt.status, body)
			}
			if tt.status < 300 {
				if body != tt.body {
					t.Fatalf("body %q, want %q", body, tt.body)
				}
				return
			}
			if ct := res.Header.Get("Content-Type"); ct != "application/problem+json" {
				t.Fatalf("Content-Type %q", ct)
			}
			if ch := res.Header.Get("WWW-Authenticate"); !strings.Contains(ch, tt.challenge) {
				t.Fatalf("WWW-Authenticate %q does not contain %q", ch, tt.challenge)
			}
			var p struct {
				Type   string `json:"type"`
				Title  string `json:"title"`
				Status int    `json:"status"`
				Detail string `json:"detail"`
			}
			dec := json.NewDecoder(strings.NewReader(body))
			dec.DisallowUnknownFields()
			if err := dec.Decode(&p); err != nil {
				t.Fatalf("problem body %q: %v", body, err)
			}
			if p.Type != "about:blank" || p.Title != http.StatusText(tt.status) || p.Status != tt.status || p.Detail != tt.body {
				t.Fatalf("problem %+v, want detail %q", p, tt.body)
			}
			for _, v := range tt.auth {
				_, tok, _ := strings.Cut(v, " ")
				if strings.Contains(body, tok) || strings.Contains(res.Header.Get("WWW-Authenticate"), tok) {
					t.Fatal("response echoes the token")
				}
			}
		})
	}
}

func TestRequireScope(t *testing.T) {
	tests := []struct {
		name   string
		ctx    context.Context
		scope  string
		is     error
		status int
	}{
		{"no principal fails closed", context.Background(), ScopeRead, ErrUnauthenticated, 401},
		{"read cannot write", WithPrincipal(context.Background(), Principal{Scopes: []string{ScopeRead}}), ScopeWrite, ErrForbidden, 403},
		{"write cannot administer", WithPrincipal(context.Background(), Principal{Scopes: []string{ScopeWrite}}), ScopeAdmin, ErrForbidden, 403},
		{"admin can read", WithPrincipal(context.Background(), Principal{Scopes: []string{ScopeAdmin}}), ScopeRead, nil, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := RequireScope(tt.ctx, tt.scope)
			if tt.is == nil {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if !errors.Is(err, tt.is) {
				t.Fatalf("error %v, want %v", err, tt.is)
			}
			// The shape huma/v2 maps to a status, headers and a problem+json body.
			se, ok := err.(interface {
				GetStatus() int
				GetHeaders() http.Header
				ContentType(string) string
			})
			if !ok {
				t.Fatalf("%T lacks GetStatus/GetHeaders/ContentType", err)
			}
			if se.GetStatus() != tt.status || se.ContentType("application/json") != "application/problem+json" ||
				se.GetHeaders().Get("WWW-Authenticate") == "" {
				t.Fatalf("status %d, content type %q, headers %v", se.GetStatus(), se.ContentType("application/json"), se.GetHeaders())
			}
			b, err := json.Marshal(err)
			if err != nil {
				t.Fatal(err)
			}
			want := fmt.Sprintf(`"status":%d`, tt.status)
			if !strings.Contains(string(b), want) || !strings.Contains(string(b), `"type":"about:blank"`) {
				t.Fatalf("problem JSON %s", b)
			}
		})
	}
}

func TestDevToken(t *testing.T) {
	secret := bytes.Repeat([]byte("d"), 32)
	a := newAuth(t, Config{DevMode: true, DevHS256Secret: secret})

	tok, err := DevToken(secret, testIssuer, testAudience, "dev-user", strings.ToUpper(testTenant), []string{ScopeAdmin}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	p, err := a.Authenticate(t.Context(), "Bearer "+tok)
	if err != nil {
		t.Fatalf("round trip: %v", err)
	}
	if p.Subject != "dev-user" || p.TenantID != testTenant || !p.Can(ScopeWrite) {
		t.Fatalf("principal %+v", p)
	}

	other := newAuth(t, Config{DevMode: true, DevHS256Secret: bytes.Repeat([]byte("e"), 32)})
	if _, err := other.Authenticate(t.Context(), "Bearer "+tok); !errors.Is(err, ErrUnauthenticated) {
		t.Fatalf("dev token accepted under another secret: %v", err)
	}
	expired, err := DevToken(secret, testIssuer, testAudience, "dev-user", testTenant, nil, time.Nanosecond)
	if err != nil {
		t.Fatal(err)
	}
	// The token is already past exp; only the leeway can save it, so use none to see it refused.
	strict := newAuth(t, Config{DevMode: true, DevHS256Secret: secret, Leeway: time.Nanosecond})
	waitFor(t, 5*time.Second, func() error {
		if _, err := strict.Authenticate(t.Context(), "Bearer "+expired); err == nil {
			return errors.New("expired dev token accepted")
		}
		return nil
	})

	for _, tc := range []struct {
		name   string
		secret []byte
		tenant string
		ttl    time.Duration
	}{
		{"short secret", []byte("short"), testTenant, time.Hour},
		{"bad tenant", secret, "acme", time.Hour},
		{"no ttl", secret, testTenant, 0},
	} {
		if _, err := DevToken(tc.secret, testIssuer, testAudience, "dev-user", tc.tenant, nil, tc.ttl); err == nil {
			t.Fatalf("%s: DevToken accepted", tc.name)
		}
	}
}

// The keyfuncs above already refuse a key of the wrong type, which hides whether the parser
// itself pins the methods. Here the keyfunc is the vulnerable one (it hands out whatever
// key bytes it has), so only WithValidMethods stands between an HS256 token keyed with the
// RSA public key and acceptance.
func TestParserPinsMethods(t *testing.T) {
	k := newKeys(t)
	f := newFleet(t, k, slog.New(slog.DiscardHandler))
	rsaPEM := pemPublic(t, k.rsa.Public())
	tests := []struct {
		name string
		auth string
		tok  string
		key  any
	}{
		{"HS256 keyed with the RSA PEM, JWKS", "jwks", mint(t, jwt.SigningMethodHS256, rsaPEM, "rsa-1", claims()), rsaPEM},
		{"HS256 keyed with the key file, file", "file", mint(t, jwt.SigningMethodHS256, f.keyFile, "", claims()), f.keyFile},
		{"RS256 in dev mode", "dev", mint(t, jwt.SigningMethodRS256, k.rsa, "", claims()), k.rsa.Public()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			called := false
			_, err := f.pick(tt.auth).parser.ParseWithClaims(tt.tok, jwt.MapClaims{}, func(*jwt.Token) (any, error) {
				called = true
				return tt.key, nil
			})
			if err == nil {
				t.Fatal("parser accepted a token outside the allowed methods")
			}
			if called || !errors.Is(err, jwt.ErrTokenSignatureInvalid) {
				t.Fatalf("not refused by the method check (keyfunc called: %v): %v", called, err)
			}
		})
	}
}
