package github_test

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"inthub.dev/pkg/connectors"
	"inthub.dev/pkg/connectors/github"
	"inthub.dev/pkg/connectors/github/githubtest"
	"inthub.dev/pkg/fault"
	"inthub.dev/schemas"
)

func TestRegistered(t *testing.T) {
	info, ok := connectors.Default().Lookup(github.Type)
	if !ok {
		t.Fatal("scm.github is not registered with connectors.Default()")
	}
	if info.Provider != "github" || info.DisplayName != "GitHub App" {
		t.Errorf("info = %+v", info)
	}
	for _, c := range []string{"repos", "branches", "tags"} {
		if !strings.Contains(strings.Join(info.Capabilities, ","), c) {
			t.Errorf("capabilities %v lack %q", info.Capabilities, c)
		}
	}
	want, _ := schemas.ConfigSchema(github.Type)
	if string(info.ConfigSchema) != string(want) {
		t.Error("the registered schema is not schemas.ConfigSchema(\"scm.github\")")
	}
	// The registered config fields are the ones the connector decodes:
	// every property of the schema is accepted by New.
	var schema struct {
		Properties map[string]json.RawMessage `json:"properties"`
	}
	if err := json.Unmarshal(info.ConfigSchema, &schema); err != nil {
		t.Fatal(err)
	}
	conf := map[string]any{}
	for name := range schema.Properties {
		conf[name] = nil
	}
	raw, _ := json.Marshal(conf)
	if _, err := github.New(connectors.Config{Type: github.Type, Config: raw}); err != nil {
		t.Errorf("New refuses a schema property: %v", err)
	}
}

// TestConnection end to end, on github.com (the fake at the root, as
// api.github.com) and on GHES (the fake under /api/v3, with the origin
// root answering 404 and recording the call), from each way an operator
// may write the endpoint.
func TestTestConnectionHealthy(t *testing.T) {
	for _, tc := range []struct {
		name, prefix, endpoint, apiRoot string
	}{
		{"github.com bare", "", "github.com", "https://api.github.com/"},
		{"github.com root", "", "https://github.com/", "https://api.github.com/"},
		{"api.github.com", "", "https://api.github.com", "https://api.github.com/"},
		{"empty endpoint", "", "", "https://api.github.com/"},
		{"GHES root", "/api/v3", "https://ghe.example.com", "https://ghe.example.com/api/v3/"},
		{"GHES root slash", "/api/v3", "https://ghe.example.com/", "https://ghe.example.com/api/v3/"},
		{"GHES explicit api root", "/api/v3", "https://ghe.example.com/api/v3", "https://ghe.example.com/api/v3/"},
		{"GHES explicit api root slash", "/api/v3", "https://ghe.example.com/api/v3/", "https://ghe.example.com/api/v3/"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hosts := []string{"api.github.com", "github.com"}
			if tc.prefix != "" {
				hosts = []string{"ghe.example.com"}
			}
			srv := githubtest.New(t, githubtest.Options{Prefix: tc.prefix, Hosts: hosts})
			c, _ := newConn(t, srv, func(s *setup) { s.conf["endpoint"] = tc.endpoint })
			before := time.Now()
			r := c.TestConnection(t.Context())
			if r.Status != connectors.StatusHealthy || r.Err != nil || r.Class != fault.ClassUnknown {
				t.Fatalf("status %s (%v): %s", r.Status, r.Class, r.Message)
			}
			for _, capability := range []string{"app", "installation", "repos", "rate_limit"} {
				ck, ok := checkByCap(r, capability)
				if !ok || !ck.OK || ck.Message == "" || ck.Latency <= 0 {
					t.Errorf("check %s = %+v (present %v)", capability, ck, ok)
				}
			}
			if len(r.Checks) != 4 {
				t.Errorf("%d checks, want 4", len(r.Checks))
			}
			if r.CredentialExpiry == nil || r.CredentialExpiry.Before(before.Add(59*time.Minute)) || r.CredentialExpiry.After(before.Add(61*time.Minute)) {
				t.Errorf("CredentialExpiry = %v, want the token's expires_at, an hour ahead", r.CredentialExpiry)
			}
			if r.RateLimit == nil || r.RateLimit.Limit != 5000 || r.RateLimit.Remaining <= 0 || r.RateLimit.Reset.IsZero() {
				t.Errorf("RateLimit = %+v", r.RateLimit)
			}
			if r.Details["apiRoot"] != tc.apiRoot || r.Details["repositories"] != "3" || r.Details["appSlug"] != "inthub-test" {
				t.Errorf("Details = %v", r.Details)
			}
			if v := srv.Violations(); len(v) > 0 {
				t.Errorf("requests outside the API root: %v", v)
			}
			if srv.Requests(githubtest.RouteApp) != 1 || srv.Exchanges() != 1 || srv.Requests(githubtest.RouteRepos) != 1 ||
				srv.Requests(githubtest.RouteRateLimit) != 1 {
				t.Errorf("requests: app %d, exchanges %d, repos %d, rate_limit %d; want one each",
					srv.Requests(githubtest.RouteApp), srv.Exchanges(), srv.Requests(githubtest.RouteRepos), srv.Requests(githubtest.RouteRateLimit))
			}
		})
	}
}

// The GHES fake really refuses origin-root probes: a connector that called
// https://ghe.example.com/app would fail, and the call would be recorded.
func TestFakeGHESRefusesOriginRoot(t *testing.T) {
	srv := githubtest.New(t, githubtest.Options{Prefix: "/api/v3"})
	resp, err := srv.Client().Get("https://ghe.example.com/app")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound || len(srv.Violations()) != 1 {
		t.Errorf("origin-root /app: %d, violations %v", resp.StatusCode, srv.Violations())
	}
}

func TestTestConnectionDegradedOnLowHeadroom(t *testing.T) {
	srv := githubtest.New(t, githubtest.Options{})
	srv.SetRemaining(300) // 6% of 5000
	c, _ := newConn(t, srv, nil)
	r := c.TestConnection(t.Context())
	if r.Status != connectors.StatusDegraded || !r.OK() || r.Class != fault.ClassUnknown {
		t.Fatalf("status %s (%v): %s; want degraded", r.Status, r.Class, r.Message)
	}
	if r.RateLimit == nil || r.RateLimit.Headroom() >= 0.1 {
		t.Errorf("RateLimit = %+v", r.RateLimit)
	}
	if !strings.Contains(r.Message, "left") {
		t.Errorf("message %q does not say what is left", r.Message)
	}
	// At 10% and above it is healthy.
	srv.SetRemaining(1000)
	if r := c.CheckHealth(t.Context()); r.Status != connectors.StatusHealthy {
		t.Errorf("at 20%% headroom: %s: %s", r.Status, r.Message)
	}
}

func TestCheckHealth(t *testing.T) {
	srv := githubtest.New(t, githubtest.Options{Prefix: "/api/v3"})
	c, s := newConn(t, srv, nil)
	if err := c.Provision(t.Context()); err != nil {
		t.Fatal(err)
	}
	r := c.CheckHealth(t.Context())
	if r.Status != connectors.StatusHealthy {
		t.Fatalf("%s: %s", r.Status, r.Message)
	}
	if len(r.Checks) != 2 || r.Checks[0].Capability != "rate_limit" || r.Checks[1].Capability != "repos" {
		t.Errorf("checks = %+v, want rate_limit and repos", r.Checks)
	}
	if r.CredentialExpiry == nil || r.RateLimit == nil {
		t.Errorf("CredentialExpiry %v, RateLimit %v", r.CredentialExpiry, r.RateLimit)
	}
	// Health does not authenticate as the app: the cached installation
	// token serves both probes, and the second check reuses it.
	if srv.Requests(githubtest.RouteApp) != 0 || srv.Exchanges() != 1 {
		t.Errorf("app calls %d, exchanges %d; want 0 and 1", srv.Requests(githubtest.RouteApp), srv.Exchanges())
	}
	resolved := s.secrets.resolutions()
	for range 3 {
		if r := c.CheckHealth(t.Context()); r.Status != connectors.StatusHealthy {
			t.Fatalf("%s: %s", r.Status, r.Message)
		}
	}
	if srv.Exchanges() != 1 {
		t.Errorf("%d exchanges after four health checks; the token should be reused until it is due", srv.Exchanges())
	}
	if s.secrets.resolutions() != resolved {
		t.Errorf("the key was resolved %d more times while the token was valid", s.secrets.resolutions()-resolved)
	}
	if v := srv.Violations(); len(v) > 0 {
		t.Errorf("requests outside the API root: %v", v)
	}
}

// ghinstallation refreshes an installation token a minute before it
// expires. The fake issues 30-second tokens, so every call finds its token
// due; the connector must exchange again (resolving the key for it) and
// use the new token, never the old one.
func TestTokenRefresh(t *testing.T) {
	srv := githubtest.New(t, githubtest.Options{TokenTTL: 30 * time.Second})
	c, s := newConn(t, srv, nil)
	ctx := t.Context()

	if _, err := c.ListRepositories(ctx, connectors.ListOptions{}); err != nil {
		t.Fatal(err)
	}
	first, resolved := srv.LastToken(), s.secrets.resolutions()
	if srv.Exchanges() != 1 || first == "" {
		t.Fatalf("exchanges %d, token %q", srv.Exchanges(), first)
	}
	if _, err := c.ListRepositories(ctx, connectors.ListOptions{}); err != nil {
		t.Fatal(err)
	}
	if srv.Exchanges() != 2 || srv.LastToken() == first {
		t.Errorf("a token inside its refresh window was used again (exchanges %d)", srv.Exchanges())
	}
	if s.secrets.resolutions() != resolved+1 {
		t.Errorf("key resolutions %d → %d; the refresh must resolve the key once", resolved, s.secrets.resolutions())
	}
	r := c.CheckHealth(ctx)
	if r.Status != connectors.StatusHealthy || r.CredentialExpiry == nil || time.Until(*r.CredentialExpiry) > 31*time.Second {
		t.Errorf("health after refresh: %s, expiry %v", r.Status, r.CredentialExpiry)
	}

	// Long-lived tokens from now on: one more exchange, then reuse.
	srv.SetTokenTTL(time.Hour)
	for range 3 {
		if _, err := c.ListRepositories(ctx, connectors.ListOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	n := srv.Exchanges()
	for range 3 {
		if _, err := c.ListBranches(ctx, "acme/api", connectors.ListOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if srv.Exchanges() != n {
		t.Errorf("exchanges %d → %d while the token was an hour from expiry", n, srv.Exchanges())
	}
}

// A key rotated in the secret store is used at the next exchange: the
// connector does not keep the old one.
func TestKeyRotation(t *testing.T) {
	srv := githubtest.New(t, githubtest.Options{})
	other := githubtest.New(t, githubtest.Options{}) // a different app's key
	c, s := newConn(t, srv, func(s *setup) { s.secrets.m[keyRef] = other.KeyPEM() })
	if r := c.TestConnection(t.Context()); r.Status != connectors.StatusUnhealthy || r.Class != fault.ClassPermanent {
		t.Fatalf("with the wrong key: %s (%v): %s", r.Status, r.Class, r.Message)
	}
	s.secrets.mu.Lock()
	s.secrets.m[keyRef] = srv.KeyPEM()
	s.secrets.mu.Unlock()
	if r := c.TestConnection(t.Context()); r.Status != connectors.StatusHealthy {
		t.Fatalf("after rotation: %s: %s", r.Status, r.Message)
	}
}

func TestValidate(t *testing.T) {
	srv := githubtest.New(t, githubtest.Options{})
	pem := string(srv.KeyPEM())
	for _, tc := range []struct {
		name   string
		mutate func(map[string]any)
		field  string
	}{
		{"no app id", func(m map[string]any) { delete(m, "appId") }, "appId"},
		{"zero installation", func(m map[string]any) { m["installationId"] = 0 }, "installationId"},
		{"no key", func(m map[string]any) { delete(m, "privateKey") }, "privateKey"},
		{"key in clear", func(m map[string]any) { m["privateKey"] = pem }, "privateKey"},
		{"webhook secret in clear", func(m map[string]any) { m["webhookSecret"] = "s3cr3t-webhook-value" }, "webhookSecret"},
		{"http endpoint", func(m map[string]any) { m["endpoint"] = "http://ghe.example.com" }, "endpoint"},
		{"endpoint path", func(m map[string]any) { m["endpoint"] = "https://ghe.example.com/app" }, "endpoint"},
		{"organization", func(m map[string]any) { m["organization"] = "-bad-" }, "organization"},
		{"timeout", func(m map[string]any) { m["timeoutSeconds"] = 301 }, "timeoutSeconds"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, s := newConn(t, srv, func(s *setup) { tc.mutate(s.conf) })
			err := c.Validate()
			if err == nil {
				t.Fatal("Validate accepted it")
			}
			if fault.ClassOf(err) != fault.ClassPermanent || !strings.Contains(err.Error(), tc.field) {
				t.Errorf("Validate: %v (class %v), want a permanent error naming %s", err, fault.ClassOf(err), tc.field)
			}
			for _, secret := range append(pemSecrets([]byte(pem)), "s3cr3t-webhook-value") {
				if strings.Contains(err.Error(), secret) {
					t.Fatalf("Validate's error quotes a secret: %v", err)
				}
			}
			// Every call fails the same way, without a request.
			r := c.TestConnection(t.Context())
			if r.Status != connectors.StatusUnhealthy || r.Class != fault.ClassPermanent {
				t.Errorf("TestConnection on an invalid config: %s (%v)", r.Status, r.Class)
			}
			if err := c.Provision(t.Context()); err == nil {
				t.Error("Provision accepted an invalid config")
			}
			if _, err := c.ListRepositories(t.Context(), connectors.ListOptions{}); fault.ClassOf(err) != fault.ClassPermanent {
				t.Errorf("ListRepositories on an invalid config: %v", err)
			}
			_ = s
		})
	}
	if srv.Requests(githubtest.RouteApp)+srv.Exchanges()+srv.Requests(githubtest.RouteRepos) != 0 {
		t.Error("an invalid config made requests")
	}

	// The integration's AuthRef stands in for a config without privateKey.
	c, _ := newConn(t, srv, func(s *setup) { delete(s.conf, "privateKey"); s.cfg.AuthRef = keyRef })
	if err := c.Validate(); err != nil {
		t.Errorf("privateKey from the integration's AuthRef: %v", err)
	}
	if r := c.TestConnection(t.Context()); r.Status != connectors.StatusHealthy {
		t.Errorf("privateKey from the integration's AuthRef: %s: %s", r.Status, r.Message)
	}
}

func TestNewRefusesUnknownFields(t *testing.T) {
	for _, raw := range []string{
		`{"appId":1,"installationID":2,"privateKey":"authref://env/K"}`,
		`{"appId":"1"}`,
		`[1]`,
		`{"appId":1} {"appId":2}`,
		`{"appId":1,"APPID":2}`,
		``,
	} {
		if _, err := github.New(connectors.Config{Type: github.Type, Config: json.RawMessage(raw)}); err == nil || fault.ClassOf(err) != fault.ClassPermanent {
			t.Errorf("New(%s) = %v, want a permanent error", raw, err)
		}
	}
}

func TestProvision(t *testing.T) {
	srv := githubtest.New(t, githubtest.Options{})
	for _, tc := range []struct {
		name   string
		key    []byte // nil: not in the store
		wantOK bool
	}{
		{"resolves", srv.KeyPEM(), true},
		{"not set", nil, false},
		{"not a key", []byte("-----BEGIN RSA PRIVATE KEY-----\nbm90IGEga2V5\n-----END RSA PRIVATE KEY-----\n"), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, _ := newConn(t, srv, func(s *setup) {
				delete(s.secrets.m, keyRef)
				if tc.key != nil {
					s.secrets.m[keyRef] = tc.key
				}
			})
			err := c.Provision(t.Context())
			if tc.wantOK {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if fault.ClassOf(err) != fault.ClassPermanent || !strings.Contains(err.Error(), keyRef) {
				t.Errorf("Provision: %v (class %v), want a permanent error naming the AuthRef", err, fault.ClassOf(err))
			}
			// Close works after a failed Provision.
			if err := c.Close(); err != nil {
				t.Error(err)
			}
		})
	}
	if n := srv.Requests(githubtest.RouteApp) + srv.Exchanges(); n != 0 {
		t.Errorf("Provision made %d requests; it only loads the key", n)
	}
}

// The caller's context ends a call at once, whatever the timeout.
func TestCallerCancel(t *testing.T) {
	srv := githubtest.New(t, githubtest.Options{})
	srv.Fail(githubtest.RouteAll, githubtest.Slow())
	c, _ := newConn(t, srv, func(s *setup) { s.conf["timeoutSeconds"] = 60 })
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		_, err := c.ListRepositories(ctx, connectors.ListOptions{})
		done <- err
	}()
	// Cancel once the request is at the fake.
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for deadline := time.Now().Add(10 * time.Second); srv.Requests(githubtest.RouteAccessTokens) == 0; <-tick.C {
		if time.Now().After(deadline) {
			t.Fatal("the request never reached the fake")
		}
	}
	cancel()
	select {
	case err := <-done:
		if fault.ClassOf(err) != fault.ClassTransient || !strings.Contains(err.Error(), "cancelled") {
			t.Errorf("cancelled call: %v (class %v)", err, fault.ClassOf(err))
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a cancelled call did not return")
	}
}

// Health checks, discovery and tests at once, with a token that is due at
// every call: the key holder, the token source and ghinstallation are
// shared by all of them (run with -race).
func TestConcurrentCalls(t *testing.T) {
	srv := githubtest.New(t, githubtest.Options{TokenTTL: 30 * time.Second})
	c, _ := newConn(t, srv, nil)
	errs := make(chan string, 64)
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 4 {
				switch i % 4 {
				case 0:
					if r := c.CheckHealth(t.Context()); r.Status != connectors.StatusHealthy {
						errs <- "health: " + r.Message
					}
				case 1:
					if _, err := c.ListRepositories(t.Context(), connectors.ListOptions{Limit: 2}); err != nil {
						errs <- "repos: " + err.Error()
					}
				case 2:
					if _, err := c.ListTags(t.Context(), "acme/api", connectors.ListOptions{}); err != nil {
						errs <- "tags: " + err.Error()
					}
				case 3:
					if r := c.TestConnection(t.Context()); r.Status != connectors.StatusHealthy {
						errs <- "test: " + r.Message
					}
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
}
