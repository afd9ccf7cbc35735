package api

import (
	"encoding/base64"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"
)

func TestAuthentication(t *testing.T) {
	e := newEnv(t)
	tenant := uuid.NewString()
	now := time.Now()
	claims := func(mod func(jwt.MapClaims)) jwt.MapClaims {
		c := jwt.MapClaims{
			"iss": testIssuer, "aud": testAudience, "sub": "mallory", "tenant_id": tenant,
			"scope": ScopeRead + " " + ScopeWrite, "iat": now.Unix(), "exp": now.Add(time.Hour).Unix(),
		}
		mod(c)
		return c
	}
	otherKey := []byte("another-secret-that-is-long-enough-to-sign")
	cases := []struct {
		name   string
		token  string
		method string
		path   string
		status int
	}{
		{"no token", "", http.MethodGet, "/api/v1/integrations", http.StatusUnauthorized},
		{"no token on a write", "", http.MethodPost, "/api/v1/integrations", http.StatusUnauthorized},
		{"no token for the document", "", http.MethodGet, OpenAPIPath, http.StatusUnauthorized},
		{"no token for types", "", http.MethodGet, "/api/v1/integration-types", http.StatusUnauthorized},
		{"expired", signed(t, testSecret, claims(func(c jwt.MapClaims) { c["exp"] = now.Add(-time.Hour).Unix() })),
			http.MethodGet, "/api/v1/integrations", http.StatusUnauthorized},
		{"forged signature", signed(t, otherKey, claims(func(jwt.MapClaims) {})),
			http.MethodGet, "/api/v1/integrations", http.StatusUnauthorized},
		{"wrong audience", signed(t, testSecret, claims(func(c jwt.MapClaims) { c["aud"] = "someone-else" })),
			http.MethodGet, "/api/v1/integrations", http.StatusUnauthorized},
		{"no tenant", signed(t, testSecret, claims(func(c jwt.MapClaims) { delete(c, "tenant_id") })),
			http.MethodGet, "/api/v1/integrations", http.StatusUnauthorized},
		{"tampered payload", tamper(signed(t, testSecret, claims(func(jwt.MapClaims) {}))),
			http.MethodGet, "/api/v1/integrations", http.StatusUnauthorized},
		{"read scope writes", e.newCaller(ScopeRead).token, http.MethodPost, "/api/v1/integrations", http.StatusForbidden},
		{"read scope deletes", e.newCaller(ScopeRead).token, http.MethodDelete, "/api/v1/integrations/" + uuid.NewString(), http.StatusForbidden},
		{"read scope creates a profile", e.newCaller(ScopeRead).token, http.MethodPost, "/api/v1/connection-profiles", http.StatusForbidden},
		{"no catalog scope reads", e.newCaller("other:read").token, http.MethodGet, "/api/v1/integrations", http.StatusForbidden},
		{"no catalog scope reads types", e.newCaller("other:read").token, http.MethodGet, "/api/v1/integration-types", http.StatusForbidden},
		{"write scope reads", e.newCaller(ScopeWrite).token, http.MethodGet, "/api/v1/integrations", http.StatusOK},
		{"admin scope reads", e.newCaller(ScopeAdmin).token, http.MethodGet, "/api/v1/integration-types", http.StatusOK},
		{"healthz without token", "", http.MethodGet, "/healthz", http.StatusOK},
		{"readyz without token", "", http.MethodGet, "/readyz", http.StatusOK},
		{"metrics without token", "", http.MethodGet, "/metrics", http.StatusOK},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var body any
			if tc.method == http.MethodPost {
				body = memInput("auth-" + uuid.NewString()[:8])
			}
			r := e.do(caller{token: tc.token}, tc.method, tc.path, body)
			want(t, r, tc.status)
			if tc.status >= 400 {
				p := r.problem(t)
				if p.Detail == "" {
					t.Errorf("problem without detail: %s", r)
				}
				if tc.status == http.StatusUnauthorized && r.Header.Get("WWW-Authenticate") == "" {
					t.Errorf("401 without WWW-Authenticate")
				}
				if tc.token != "" && strings.Contains(string(r.Body), tc.token) {
					t.Errorf("problem echoes the token")
				}
			}
		})
	}
	// Nothing was written by the refused writes.
	var n int
	if err := e.owner.QueryRow(t.Context(), `SELECT count(*) FROM integrations`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Errorf("%d integrations written by refused requests", n)
	}
}

// tamper flips the subject in a token's payload, keeping its signature.
func tamper(tok string) string {
	parts := strings.Split(tok, ".")
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		panic(err)
	}
	changed := strings.Replace(string(payload), `"mallory"`, `"admin00"`, 1)
	parts[1] = base64.RawURLEncoding.EncodeToString([]byte(changed))
	return strings.Join(parts, ".")
}
