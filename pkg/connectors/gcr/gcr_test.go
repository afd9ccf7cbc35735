package gcr_test

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"inthub.dev/pkg/connectors"
	"inthub.dev/pkg/connectors/gcr"
	"inthub.dev/pkg/connectors/oci/ocitest"
	"inthub.dev/pkg/fault"
	"inthub.dev/schemas"
)

type secrets = ocitest.Secrets

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type env struct {
	c   *gcr.Connector
	log *ocitest.Buffer
}

func newConnector(t testing.TB, f *fakeGoogle, conf map[string]any, sec secrets) env {
	t.Helper()
	buf := &ocitest.Buffer{}
	cfg := ocitest.Config(t, gcr.Type, conf, sec, buf)
	cfg.Now = f.clock.now
	c, err := gcr.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	return env{c: c, log: buf}
}

// privateKeyLines are pieces of the key that must never be logged.
func privateKeyLines(sec secrets) []string {
	var k struct {
		PrivateKey string `json:"private_key"`
	}
	_ = json.Unmarshal([]byte(sec["authref://vault/gcp#key"]), &k)
	lines := strings.Split(k.PrivateKey, "\n")
	if len(lines) < 3 {
		return nil
	}
	return lines[1:3]
}

// TestTokenFlow: the key's JWT (signature, issuer, audience, scope checked
// by the fake) buys an access token, which the registry's token service
// takes as oauth2accesstoken's password; then ping, catalog, tags, digest.
func TestTokenFlow(t *testing.T) {
	ctx := context.Background()
	f := newFakeGoogle(t)
	sec := f.secrets()
	e := newConnector(t, f, f.config(nil), sec)
	res := e.c.TestConnection(ctx)
	if want := []string{"+auth", "+repos", "+ping", "+tags", "+digest"}; !res.OK() || !slices.Equal(ocitest.CheckNames(res), want) {
		t.Fatalf("TestConnection = %s %q: %s", res.Status, ocitest.CheckNames(res), res.Message)
	}
	if res.CredentialExpiry == nil || res.CredentialExpiry.Sub(f.clock.now().Add(time.Hour)).Abs() > 2*time.Second {
		t.Errorf("CredentialExpiry = %v, want the token's", res.CredentialExpiry)
	}
	if res.Details["serviceAccount"] != email {
		t.Errorf("Details = %v", res.Details)
	}
	if h := e.c.CheckHealth(ctx); !h.OK() {
		t.Errorf("CheckHealth = %s: %s", h.Status, h.Message)
	}
	if f.calls.Load() != 1 || f.reg.Refused.Load() != 0 {
		t.Errorf("token endpoint calls %d (want 1: health reuses the token), registry refusals %d", f.calls.Load(), f.reg.Refused.Load())
	}
	for _, line := range privateKeyLines(sec) {
		if strings.Contains(e.log.String(), line) {
			t.Error("the private key appears in the log")
		}
	}
}

// TestTokenCache: one exchange serves concurrent calls; a token inside its
// refresh margin is replaced before it expires; one the registry refuses
// is dropped and replaced on the next call.
func TestTokenCache(t *testing.T) {
	ctx := context.Background()
	f := newFakeGoogle(t)
	e := newConnector(t, f, f.config(nil), f.secrets())
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 8 {
		wg.Go(func() {
			if _, err := e.c.ResolveTag(ctx, repo, "v1"); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("ResolveTag: %v", err)
	}
	if n := f.calls.Load(); n != 1 {
		t.Errorf("token exchanges = %d for 8 concurrent calls, want 1", n)
	}

	f.clock.advance(56 * time.Minute) // inside the 5 minute margin
	if _, err := e.c.ResolveTag(ctx, repo, "v1"); err != nil {
		t.Fatal(err)
	}
	f.clock.advance(61 * time.Minute) // the first token has expired
	if _, err := e.c.ResolveTag(ctx, repo, "v1"); err != nil {
		t.Fatalf("ResolveTag after expiry: %v", err)
	}
	if n := f.calls.Load(); n != 3 || f.reg.Refused.Load() != 0 {
		t.Errorf("token exchanges = %d, registry refusals = %d; want 3 and 0", n, f.reg.Refused.Load())
	}

	f.mu.Lock()
	clear(f.tokens) // revoked early
	f.mu.Unlock()
	if _, err := e.c.ResolveTag(ctx, repo, "v1"); fault.ClassOf(err) != fault.ClassPermanent || !strings.Contains(err.Error(), "401") {
		t.Errorf("ResolveTag with a revoked token = %v", err)
	}
	if _, err := e.c.ResolveTag(ctx, repo, "v1"); err != nil || f.calls.Load() != 4 {
		t.Errorf("ResolveTag after the refusal = %v (exchanges %d, want 4)", err, f.calls.Load())
	}
}

// TestAuthFailures: each failure of the exchange is classified and says
// what to fix; the registry never sees a credential.
func TestAuthFailures(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name    string
		setup   func(f *fakeGoogle) (map[string]any, secrets)
		class   fault.Class
		message []string
	}{
		{"wrong key", func(f *fakeGoogle) (map[string]any, secrets) {
			return f.config(nil), secrets{"authref://vault/gcp#key": keyJSON(keys()[1], f.tokenURL())}
		}, fault.ClassPermanent, []string{"400", "invalid_grant", "Invalid JWT Signature", "create a new JSON key"}},
		{"throttled", func(f *fakeGoogle) (map[string]any, secrets) {
			f.throttle.Store(true)
			return f.config(nil), f.secrets()
		}, fault.ClassTransient, []string{"429", "rate limited"}},
		{"server error", func(f *fakeGoogle) (map[string]any, secrets) {
			f.fail.Store(true)
			return f.config(nil), f.secrets()
		}, fault.ClassTransient, []string{"500"}},
		{"key not JSON", func(f *fakeGoogle) (map[string]any, secrets) {
			return f.config(nil), secrets{"authref://vault/gcp#key": "-----BEGIN PRIVATE KEY-----"}
		}, fault.ClassPermanent, []string{"not a JSON key file"}},
		{"user credentials, not a service account", func(f *fakeGoogle) (map[string]any, secrets) {
			return f.config(nil), secrets{"authref://vault/gcp#key": `{"type":"authorized_user","client_id":"x","client_secret":"y","refresh_token":"z"}`}
		}, fault.ClassPermanent, []string{"not a service-account key", "authorized_user"}},
		{"key not resolvable", func(f *fakeGoogle) (map[string]any, secrets) {
			return f.config(nil), secrets{}
		}, fault.ClassPermanent, []string{"cannot resolve the serviceAccountKey AuthRef"}},
		{"token endpoint unreachable", func(f *fakeGoogle) (map[string]any, secrets) {
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				panic(err)
			}
			addr := l.Addr().String()
			l.Close()
			return f.config(nil), secrets{"authref://vault/gcp#key": keyJSON(keys()[0], "http://"+addr+"/token")}
		}, fault.ClassOffline, []string{"connection refused"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeGoogle(t)
			conf, sec := tt.setup(f)
			e := newConnector(t, f, conf, sec)
			res := e.c.TestConnection(ctx)
			if res.Class != tt.class || !slices.Equal(ocitest.CheckNames(res), []string{"-auth"}) {
				t.Errorf("TestConnection = %s %s %q: %s", res.Status, res.Class, ocitest.CheckNames(res), res.Message)
			}
			for _, m := range tt.message {
				if !strings.Contains(res.Message, m) {
					t.Errorf("message %q lacks %q", res.Message, m)
				}
			}
			if tt.name == "throttled" && fault.RetryAfterOf(res.Err) != 4*time.Second {
				t.Errorf("RetryAfter = %v, want the 4s of Retry-After", fault.RetryAfterOf(res.Err))
			}
			if _, err := e.c.ResolveTag(ctx, repo, "v1"); fault.ClassOf(err) != tt.class {
				t.Errorf("ResolveTag = %v (class %s)", err, fault.ClassOf(err))
			}
			if f.reg.TokenCalls.Load() != 0 {
				t.Errorf("the registry's token service was asked %d times", f.reg.TokenCalls.Load())
			}
			for _, line := range privateKeyLines(sec) {
				if line != "" && (strings.Contains(res.Message, line) || strings.Contains(e.log.String(), line)) {
					t.Error("the private key leaks")
				}
			}
		})
	}

	t.Run("token_uri over plain http without insecure", func(t *testing.T) {
		f := newFakeGoogle(t)
		e := newConnector(t, f, map[string]any{"endpoint": "https://europe-west1-docker.pkg.dev", "serviceAccountKey": "authref://vault/gcp#key", "probeRepository": repo}, f.secrets())
		res := e.c.TestConnection(ctx)
		if res.Class != fault.ClassPermanent || !strings.Contains(res.Message, "token_uri is plain http") || f.calls.Load() != 0 {
			t.Errorf("TestConnection = %s %s: %s (exchanges %d)", res.Status, res.Class, res.Message, f.calls.Load())
		}
	})
}

// TestDiscovery: catalog, tags by pages, manifests.
func TestDiscovery(t *testing.T) {
	ctx := context.Background()
	f := newFakeGoogle(t)
	e := newConnector(t, f, f.config(map[string]any{"probeRepository": nil}), f.secrets())
	repos, err := e.c.ListRepositories(ctx, connectors.ListOptions{Limit: 1})
	if err != nil || len(repos.Items) != 1 || repos.Items[0].FullName != repo || repos.Next == "" {
		t.Fatalf("ListRepositories = %+v, %v", repos, err)
	}
	next, err := e.c.ListRepositories(ctx, connectors.ListOptions{Limit: 1, Cursor: repos.Next})
	if err != nil || len(next.Items) != 1 || next.Items[0].FullName != "proj-1/web" {
		t.Errorf("ListRepositories(next) = %+v, %v", next, err)
	}
	page, err := e.c.ListTags(ctx, repo, connectors.ListOptions{})
	if err != nil || len(page.Items) != 2 {
		t.Errorf("ListTags = %+v, %v", page, err)
	}
	d, err := e.c.ResolveTag(ctx, repo, "v2")
	if err != nil {
		t.Fatal(err)
	}
	m, err := e.c.FetchManifest(ctx, repo, d)
	if err != nil || m.Digest != d {
		t.Errorf("FetchManifest = %s, %v", m.Digest, err)
	}
	if err := e.c.VerifyDigest(ctx, repo, d); err != nil {
		t.Errorf("VerifyDigest: %v", err)
	}
	// Without probeRepository, health probes the catalog's first one.
	if res := e.c.CheckHealth(ctx); !res.OK() || res.Details["repository"] != repo {
		t.Errorf("CheckHealth = %s %v: %s", res.Status, res.Details, res.Message)
	}
	if _, err := e.c.ListBranches(ctx, repo, connectors.ListOptions{}); !errors.Is(err, errors.ErrUnsupported) {
		t.Errorf("ListBranches = %v", err)
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		config, authRef string
		field           string
	}{
		{`{"endpoint": "https://gcr.io", "serviceAccountKey": "authref://vault/gcp#key"}`, "", ""},
		{`{"endpoint": "https://europe-west1-docker.pkg.dev", "probeRepository": "proj/repo/img", "probeTag": "v1"}`, "authref://env/GCP_KEY", ""},
		{`{"endpoint": "https://gcr.io"}`, "", "serviceAccountKey"},
		{`{"endpoint": "https://gcr.io", "serviceAccountKey": "{\"type\":\"service_account\"}"}`, "", "serviceAccountKey"},
		{`{"endpoint": "http://gcr.io", "serviceAccountKey": "authref://env/K"}`, "", "endpoint"},
		{`{"serviceAccountKey": "authref://env/K"}`, "", "endpoint"},
		{`{"endpoint": "https://gcr.io", "serviceAccountKey": "authref://env/K", "probeRepository": "Proj/App"}`, "", "probeRepository"},
	}
	for _, tt := range tests {
		c, err := gcr.New(connectors.Config{Type: gcr.Type, Config: json.RawMessage(tt.config), AuthRef: tt.authRef})
		if err != nil {
			t.Fatalf("New(%s): %v", tt.config, err)
		}
		err = c.Validate()
		var ce *gcr.ConfigError
		switch {
		case tt.field == "" && err != nil:
			t.Errorf("Validate(%s) = %v", tt.config, err)
		case tt.field != "" && (!errors.As(err, &ce) || ce.Field != tt.field || fault.ClassOf(err) != fault.ClassPermanent):
			t.Errorf("Validate(%s) = %v, want an error on %s", tt.config, err, tt.field)
		}
		if err != nil && strings.Contains(err.Error(), "service_account") {
			t.Errorf("Validate echoes the key: %v", err)
		}
		if tt.field != "" {
			if res := c.TestConnection(context.Background()); res.Class != fault.ClassPermanent || res.OK() {
				t.Errorf("TestConnection of %s = %s %s", tt.config, res.Status, res.Class)
			}
		}
	}
	if _, err := gcr.New(connectors.Config{Config: json.RawMessage(`{"endpoint": "https://gcr.io", "extra": 1}`)}); err == nil {
		t.Error("New accepted an unknown field")
	}
}

func TestRegistered(t *testing.T) {
	info, ok := connectors.Default().Lookup(gcr.Type)
	if !ok || info.Provider != "gcr" || len(info.ConfigSchema) == 0 {
		t.Fatalf("Lookup = %+v, %v", info, ok)
	}
	cv, err := schemas.CompileConfig(info.ConfigSchema, nil)
	if err != nil {
		t.Fatal(err)
	}
	full := `{"endpoint": "https://europe-west1-docker.pkg.dev", "serviceAccountKey": "authref://vault/gcp#key", "insecure": false,
		"probeRepository": "proj/repo/img", "probeTag": "v1", "timeoutSeconds": 5, "healthIntervalSeconds": 60}`
	var doc any
	_ = json.Unmarshal([]byte(full), &doc)
	if err := cv.Validate(doc); err != nil {
		t.Errorf("schema refuses a full config: %v", err)
	}
	if c, err := gcr.New(connectors.Config{Type: gcr.Type, Config: json.RawMessage(full)}); err != nil || c.Validate() != nil {
		t.Errorf("the connector refuses the full config: %v", err)
	}
	_ = json.Unmarshal([]byte(`{"endpoint": "https://gcr.io", "serviceAccountKey": "{\"type\": \"service_account\", \"private_key\": \"x\"}"}`), &doc)
	if err := cv.Validate(doc); err == nil {
		t.Error("schema accepts a key in clear")
	}
}
