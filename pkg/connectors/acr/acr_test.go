package acr_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"inthub.dev/pkg/connectors"
	"inthub.dev/pkg/connectors/acr"
	"inthub.dev/pkg/connectors/oci/ocitest"
	"inthub.dev/pkg/fault"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// env is a registry, its AAD and a connector wired to both.
type env struct {
	aad *fakeAAD
	acr *fakeACR
	clk *clock
	log *ocitest.Buffer
}

func newEnv(t testing.TB) *env {
	clk := newClock()
	aad := newFakeAAD(t, clk)
	return &env{aad: aad, acr: newFakeACR(t, aad, clk), clk: clk, log: &ocitest.Buffer{}}
}

func (e *env) spConfig(extra map[string]any) map[string]any {
	conf := map[string]any{
		"endpoint": e.acr.srv.URL, "insecure": true, "authorityHost": e.aad.srv.URL,
		"tenantId": tenant, "clientId": clientID, "clientSecret": secRef,
		"probeRepository": "apps/web", "timeoutSeconds": 5,
	}
	for k, v := range extra {
		conf[k] = v
	}
	return conf
}

func (e *env) connector(t testing.TB, conf map[string]any, sec secrets) *acr.Connector {
	t.Helper()
	cfg := ocitest.Config(t, acr.Type, conf, sec, e.log)
	cfg.Now = e.clk.Now
	c, err := acr.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestServicePrincipalFlow: AAD client credentials → exchange → refresh
// token as the password of the token flow; both tokens are cached.
func TestServicePrincipalFlow(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	c := e.connector(t, e.spConfig(nil), secrets{secRef: secret})
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}

	res := c.TestConnection(ctx)
	if res.Status != connectors.StatusHealthy || !slices.Equal(ocitest.CheckNames(res), []string{"+auth", "+repos", "+ping", "+tags", "+digest"}) {
		t.Fatalf("TestConnection = %s %q: %s", res.Status, ocitest.CheckNames(res), res.Message)
	}
	want := e.clk.Now().Add(3 * time.Hour)
	if res.CredentialExpiry == nil || res.CredentialExpiry.Sub(want).Abs() > time.Second {
		t.Errorf("CredentialExpiry = %v, want %v (the refresh token's exp)", res.CredentialExpiry, want)
	}
	if !strings.Contains(res.Details["digest"], "sha256:") {
		t.Errorf("Details = %v", res.Details)
	}

	// Health, tags and discovery reuse both tokens.
	if h := c.CheckHealth(ctx); h.Status != connectors.StatusHealthy {
		t.Errorf("CheckHealth = %s: %s", h.Status, h.Message)
	}
	page, err := c.ListRepositories(ctx, connectors.ListOptions{})
	if names := repoNames(page); err != nil || !slices.Equal(names, []string{"apps/web", "base/alpine"}) {
		t.Errorf("ListRepositories = %q, %v", names, err)
	}
	if _, err := c.ListTags(ctx, "base/alpine", connectors.ListOptions{}); err != nil {
		t.Errorf("ListTags: %v", err)
	}
	if n := e.aad.calls.Load(); n != 1 {
		t.Errorf("AAD was called %d times, want 1 (the token is cached)", n)
	}
	if n := e.acr.exchanges.Load(); n != 1 {
		t.Errorf("%d exchanges, want 1 (the refresh token is cached)", n)
	}
	if e.acr.reg.TokenCalls.Load() < 3 || e.acr.reg.Refused.Load() != 0 {
		t.Errorf("token endpoint: %d calls, %d refused", e.acr.reg.TokenCalls.Load(), e.acr.reg.Refused.Load())
	}
	if strings.Contains(e.log.String(), secret) {
		t.Error("the client secret appears in the log")
	}
}

func repoNames(p connectors.Page[connectors.Repository]) []string {
	var out []string
	for _, r := range p.Items {
		out = append(out, r.FullName)
	}
	return out
}

// TestRefreshTokenExpiry: a refresh token past its exp is not sent (the
// registry would refuse it); the connector gets a new AAD token and
// exchanges again. A refresh token the registry revoked early is refused
// once, dropped, and the next call exchanges again.
func TestRefreshTokenExpiry(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	c := e.connector(t, e.spConfig(nil), secrets{secRef: secret})
	if _, err := c.ResolveTag(ctx, "apps/web", "v1"); err != nil {
		t.Fatal(err)
	}

	t.Run("expired", func(t *testing.T) {
		e.clk.Advance(3*time.Hour + time.Second)
		if _, err := c.ResolveTag(ctx, "apps/web", "v1"); err != nil {
			t.Fatalf("ResolveTag after expiry: %v", err)
		}
		if n := e.acr.exchanges.Load(); n != 2 {
			t.Errorf("%d exchanges, want 2", n)
		}
		if n := e.aad.calls.Load(); n != 2 {
			t.Errorf("%d AAD calls, want 2 (its token expired after 1h)", n)
		}
		if n := e.acr.reg.Refused.Load(); n != 0 {
			t.Errorf("the registry refused %d credentials: an expired refresh token was sent", n)
		}
	})

	t.Run("within the margin", func(t *testing.T) {
		// 30 s before exp is too late to start a flow with it.
		e.clk.Advance(3*time.Hour - 30*time.Second)
		if _, err := c.ResolveTag(ctx, "apps/web", "v1"); err != nil {
			t.Fatal(err)
		}
		if n := e.acr.exchanges.Load(); n != 3 {
			t.Errorf("%d exchanges, want 3", n)
		}
	})

	t.Run("revoked", func(t *testing.T) {
		e.acr.revoke()
		_, err := c.ResolveTag(ctx, "apps/web", "v1")
		if fault.ClassOf(err) != fault.ClassPermanent || !strings.Contains(err.Error(), "401") {
			t.Fatalf("ResolveTag with a revoked refresh token = %v (class %s), want permanent 401", err, fault.ClassOf(err))
		}
		if _, err := c.ResolveTag(ctx, "apps/web", "v1"); err != nil {
			t.Fatalf("the next call should exchange again: %v", err)
		}
		if n := e.acr.exchanges.Load(); n != 4 {
			t.Errorf("%d exchanges, want 4", n)
		}
	})
}

// TestAADFailures: a refused grant is permanent with AAD's code and a
// hint, a throttled or failing AAD transient; no exchange is attempted.
func TestAADFailures(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name  string
		conf  map[string]any
		sec   string
		class fault.Class
		want  []string
	}{
		{"wrong secret", nil, "not-the-secret", fault.ClassPermanent,
			[]string{"401", "invalid_client", "AADSTS7000215", "secret's value, not its ID"}},
		{"unknown tenant", map[string]any{"tenantId": "contoso.onmicrosoft.com"}, secret, fault.ClassPermanent,
			[]string{"400", "AADSTS90002", "tenantId does not name a tenant"}},
		{"unknown client", map[string]any{"clientId": "ffffffff-0000-0000-0000-000000000000"}, secret, fault.ClassPermanent,
			[]string{"AADSTS700016", "clientId is not an application"}},
		{"bad scope", map[string]any{"scope": "https://vault.azure.net/.default"}, secret, fault.ClassPermanent,
			[]string{"AADSTS70011"}},
		{"registry audience", map[string]any{"scope": acr.ScopeACR}, secret, fault.ClassUnknown, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			c := e.connector(t, e.spConfig(tt.conf), secrets{secRef: tt.sec})
			res := c.TestConnection(ctx)
			if tt.want == nil {
				if res.Status != connectors.StatusHealthy {
					t.Fatalf("TestConnection = %s: %s", res.Status, res.Message)
				}
				return
			}
			if res.Status != connectors.StatusUnhealthy || res.Class != tt.class || !slices.Equal(ocitest.CheckNames(res), []string{"-auth"}) {
				t.Fatalf("TestConnection = %s %s %q: %s", res.Status, res.Class, ocitest.CheckNames(res), res.Message)
			}
			for _, w := range tt.want {
				if !strings.Contains(res.Message, w) {
					t.Errorf("message %q lacks %q", res.Message, w)
				}
			}
			if strings.Contains(res.Message, "Trace ID") || strings.Contains(res.Message, tt.sec) {
				t.Errorf("message carries AAD's trace lines or the secret: %q", res.Message)
			}
			if e.acr.exchanges.Load() != 0 {
				t.Error("an exchange was attempted without an AAD token")
			}
		})
	}

	for _, tt := range []struct {
		name   string
		status int
		class  fault.Class
	}{
		{"throttled", http.StatusTooManyRequests, fault.ClassTransient},
		{"unavailable", http.StatusServiceUnavailable, fault.ClassTransient},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			down := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Retry-After", "5")
				aadErr(w, tt.status, "temporarily_unavailable", "The server is temporarily too busy to handle the request.", 50196)
			}))
			t.Cleanup(down.Close)
			c := e.connector(t, e.spConfig(map[string]any{"authorityHost": down.URL}), secrets{secRef: secret})
			res := c.CheckHealth(ctx)
			if res.Class != tt.class || fault.RetryAfterOf(res.Err) != 5*time.Second || !strings.Contains(res.Message, "AADSTS50196") {
				t.Errorf("CheckHealth = %s %s (retry %v): %s", res.Status, res.Class, fault.RetryAfterOf(res.Err), res.Message)
			}
		})
	}

	t.Run("secret not resolvable", func(t *testing.T) {
		e := newEnv(t)
		c := e.connector(t, e.spConfig(nil), secrets{})
		res := c.TestConnection(ctx)
		if res.Class != fault.ClassPermanent || !strings.Contains(res.Message, "clientSecret AuthRef") || e.aad.calls.Load() != 0 {
			t.Errorf("TestConnection = %s %s: %s", res.Status, res.Class, res.Message)
		}
	})
}

// TestExchangeRefused: the registry refuses an AAD token it cannot
// accept (here one issued by another directory's authority).
func TestExchangeRefused(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	other := newFakeAAD(t, e.clk)
	c := e.connector(t, e.spConfig(map[string]any{"authorityHost": other.srv.URL}), secrets{secRef: secret})
	res := c.TestConnection(ctx)
	if res.Class != fault.ClassPermanent || !slices.Equal(ocitest.CheckNames(res), []string{"-auth"}) ||
		!strings.Contains(res.Message, "/oauth2/exchange") || !strings.Contains(res.Message, "AcrPull") {
		t.Errorf("TestConnection = %s %s %q: %s", res.Status, res.Class, ocitest.CheckNames(res), res.Message)
	}
	// The refused AAD token is not reused: the next try asks AAD again.
	_ = c.CheckHealth(ctx)
	if n := other.calls.Load(); n != 2 {
		t.Errorf("%d AAD calls, want 2", n)
	}
}

// TestAdminUser: basic credentials of the admin user in the token flow.
func TestAdminUser(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	conf := map[string]any{"endpoint": e.acr.srv.URL, "insecure": true, "authMode": "admin",
		"username": "myregistry", "password": adminRef, "timeoutSeconds": 5}
	c := e.connector(t, conf, secrets{adminRef: adminPW})
	res := c.TestConnection(ctx)
	// No probeRepository: the first repository of the catalog is probed.
	if res.Status != connectors.StatusHealthy || !slices.Equal(ocitest.CheckNames(res), []string{"+repos", "+ping", "+tags", "+digest"}) || res.Details["repository"] != "apps/web" {
		t.Fatalf("TestConnection = %s %q %v: %s", res.Status, ocitest.CheckNames(res), res.Details, res.Message)
	}
	if e.aad.calls.Load() != 0 || e.acr.exchanges.Load() != 0 {
		t.Error("admin mode went to AAD")
	}
	bad := e.connector(t, conf, secrets{adminRef: "wrong"})
	if res := bad.CheckHealth(ctx); res.Class != fault.ClassPermanent || !strings.Contains(res.Message, "401") {
		t.Errorf("CheckHealth with a wrong password = %s %s: %s", res.Status, res.Class, res.Message)
	}
}

func TestValidate(t *testing.T) {
	base := func(extra map[string]any) map[string]any {
		conf := map[string]any{"endpoint": "https://myregistry.azurecr.io", "tenantId": tenant, "clientId": clientID, "clientSecret": secRef}
		for k, v := range extra {
			if v == nil {
				delete(conf, k)
			} else {
				conf[k] = v
			}
		}
		return conf
	}
	tests := []struct {
		name  string
		conf  map[string]any
		field string
	}{
		{"valid", base(nil), ""},
		{"no endpoint", base(map[string]any{"endpoint": nil}), "endpoint"},
		{"http endpoint", base(map[string]any{"endpoint": "http://myregistry.azurecr.io"}), "endpoint"},
		{"no tenant", base(map[string]any{"tenantId": nil}), "tenantId"},
		{"no client", base(map[string]any{"clientId": nil}), "clientId"},
		{"no secret", base(map[string]any{"clientSecret": nil}), "clientSecret"},
		{"secret in clear", base(map[string]any{"clientSecret": "abc~def"}), "clientSecret"},
		{"scope", base(map[string]any{"scope": "https://management.azure.com/"}), "scope"},
		{"http authority", base(map[string]any{"authorityHost": "http://login.example"}), "authorityHost"},
		{"admin fields in sp mode", base(map[string]any{"username": "u"}), "username"},
		{"admin", map[string]any{"endpoint": "https://r.azurecr.io", "authMode": "admin", "username": "r", "password": adminRef}, ""},
		{"admin without user", map[string]any{"endpoint": "https://r.azurecr.io", "authMode": "admin", "password": adminRef}, "username"},
		{"admin with sp fields", base(map[string]any{"authMode": "admin", "username": "r", "password": adminRef}), "authMode"},
		{"unknown mode", base(map[string]any{"authMode": "msi"}), "authMode"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			raw, _ := json.Marshal(tt.conf)
			c, err := acr.New(connectors.Config{Type: acr.Type, Config: raw})
			if err != nil {
				t.Fatal(err)
			}
			err = c.Validate()
			var ce *acr.ConfigError
			switch {
			case tt.field == "" && err != nil:
				t.Errorf("Validate = %v", err)
			case tt.field != "" && (!errorsAs(err, &ce) || ce.Field != tt.field || fault.ClassOf(err) != fault.ClassPermanent):
				t.Errorf("Validate = %v, want a permanent error on %s", err, tt.field)
			}
			if strings.Contains(errString(err), "abc~def") {
				t.Error("the clear secret is quoted")
			}
		})
	}
	if _, err := acr.New(connectors.Config{Type: acr.Type, Config: []byte(`{"endpoint":"https://r.azurecr.io","nope":1}`)}); err == nil {
		t.Error("an unknown field was accepted")
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// TestConcurrentExchange: calls that find the refresh token expired at
// once share one AAD grant and one exchange.
func TestConcurrentExchange(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	c := e.connector(t, e.spConfig(nil), secrets{secRef: secret})
	if _, err := c.ResolveTag(ctx, "apps/web", "v1"); err != nil {
		t.Fatal(err)
	}
	e.clk.Advance(4 * time.Hour)
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 8 {
		wg.Go(func() {
			_, err := c.ResolveTag(ctx, "apps/web", "v1")
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	if a, x := e.aad.calls.Load(), e.acr.exchanges.Load(); a != 2 || x != 2 {
		t.Errorf("%d AAD grants and %d exchanges for 8 concurrent calls after expiry, want 2 and 2", a, x)
	}
}
