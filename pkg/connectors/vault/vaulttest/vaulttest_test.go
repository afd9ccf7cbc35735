package vaulttest_test

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"inthub.dev/pkg/connectors/vault/vaulttest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestRules holds the fake to the rules a real Vault enforces, so that a
// lenient fake cannot make the connector's tests pass for the wrong
// reason.
func TestRules(t *testing.T) {
	fv := vaulttest.New(t, vaulttest.Options{Namespace: "team-a"})
	fv.Put("secret", "app", map[string]any{"k": "v2"})
	fv.Put("legacy", "app", map[string]any{"k": "v1"})
	fv.AddToken("hvs.limited", vaulttest.Token{Policies: []string{"default"}})
	fv.AddToken("hvs.expired", vaulttest.Token{TTL: time.Nanosecond})
	hc := fv.Client()

	do := func(method, path, token, ns, body string) (int, string) {
		t.Helper()
		req, _ := http.NewRequestWithContext(t.Context(), method, fv.URL+path, strings.NewReader(body))
		if token != "" {
			req.Header.Set("X-Vault-Token", token)
		}
		if ns != "" {
			req.Header.Set("X-Vault-Namespace", ns)
		}
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	root := vaulttest.RootToken
	for _, tt := range []struct {
		name, method, path, token, ns, body string
		code                                int
		has                                 string
	}{
		{"kv2 read", "GET", "/v1/secret/data/app", root, "team-a", "", 200, `"k":"v2"`},
		{"kv2 without data/", "GET", "/v1/secret/app", root, "team-a", "", 404, ""},
		{"kv1 read", "GET", "/v1/legacy/app", root, "team-a", "", 200, `"k":"v1"`},
		{"kv1 with data/", "GET", "/v1/legacy/data/app", root, "team-a", "", 404, ""},
		{"no token", "GET", "/v1/secret/data/app", "", "team-a", "", 403, "permission denied"},
		{"unknown token", "GET", "/v1/secret/data/app", "hvs.nope", "team-a", "", 403, ""},
		{"expired token", "GET", "/v1/secret/data/app", "hvs.expired", "team-a", "", 403, ""},
		{"no namespace", "GET", "/v1/secret/data/app", root, "", "", 403, ""},
		{"wrong namespace", "GET", "/v1/secret/data/app", root, "team-b", "", 403, ""},
		{"mounts need the capability", "GET", "/v1/sys/mounts", "hvs.limited", "team-a", "", 403, ""},
		{"mounts", "GET", "/v1/sys/mounts", root, "team-a", "", 200, `"legacy/"`},
		{"lookup-self", "GET", "/v1/auth/token/lookup-self", "hvs.limited", "team-a", "", 200, `"policies":["default"]`},
		{"health needs no token", "GET", "/v1/sys/health", "", "", "", 200, `"initialized":true`},
		{"approle wrong secret", "POST", "/v1/auth/approle/login", "", "team-a", `{"role_id":"role-1","secret_id":"x"}`, 400, "invalid role or secret ID"},
		{"approle without namespace", "POST", "/v1/auth/approle/login", "", "", `{"role_id":"role-1","secret_id":"secret-1"}`, 403, ""},
		{"approle", "POST", "/v1/auth/approle/login", "", "team-a", `{"role_id":"role-1","secret_id":"secret-1"}`, 200, `"client_token":"hvs.approle-1"`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			code, body := do(tt.method, tt.path, tt.token, tt.ns, tt.body)
			if code != tt.code || !strings.Contains(body, tt.has) {
				t.Errorf("%s %s: %d %s, want %d with %q", tt.method, tt.path, code, body, tt.code, tt.has)
			}
		})
	}
	t.Run("approle token works", func(t *testing.T) {
		if code, _ := do("GET", "/v1/secret/data/app", "hvs.approle-1", "team-a", ""); code != 200 {
			t.Errorf("read with the issued token: %d", code)
		}
	})

	t.Run("deleted v2 version", func(t *testing.T) {
		fv.Delete("secret", "app")
		code, body := do("GET", "/v1/secret/data/app", root, "team-a", "")
		var doc struct {
			Data struct {
				Data     any            `json:"data"`
				Metadata map[string]any `json:"metadata"`
			} `json:"data"`
		}
		_ = json.Unmarshal([]byte(body), &doc)
		if code != 404 || doc.Data.Data != nil || doc.Data.Metadata["deletion_time"] == "" {
			t.Errorf("%d %s", code, body)
		}
	})

	for _, tt := range []struct {
		state        vaulttest.State
		health, read int
	}{
		{vaulttest.Active, 200, 200},
		{vaulttest.Standby, 429, 200},
		{vaulttest.PerfStandby, 473, 200},
		{vaulttest.DRSecondary, 472, 400},
		{vaulttest.NotInitialized, 501, 503},
		{vaulttest.Sealed, 503, 503},
	} {
		fv.SetState(tt.state)
		if code, _ := do("GET", "/v1/sys/health", "", "", ""); code != tt.health {
			t.Errorf("state %d: health %d, want %d", tt.state, code, tt.health)
		}
		if code, _ := do("GET", "/v1/legacy/app", root, "team-a", ""); code != tt.read {
			t.Errorf("state %d: read %d, want %d", tt.state, code, tt.read)
		}
	}
	fv.SetState(vaulttest.Standby)
	if code, _ := do("GET", "/v1/sys/health?standbyok=true", "", "", ""); code != 200 {
		t.Errorf("standbyok: %d", code)
	}
	fv.SetState(vaulttest.Active)

	t.Run("faults spare health", func(t *testing.T) {
		fv.Fail(vaulttest.Fault{Status: 429, RetryAfter: 5 * time.Second})
		defer fv.Clear()
		if code, _ := do("GET", "/v1/sys/health", "", "", ""); code != 200 {
			t.Errorf("health under a rate limit: %d", code)
		}
		if code, _ := do("GET", "/v1/legacy/app", root, "team-a", ""); code != 429 {
			t.Errorf("read under a rate limit: %d", code)
		}
	})
}
