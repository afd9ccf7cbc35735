package ecr_test

import (
	"context"
	"encoding/json"
	"errors"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"inthub.dev/pkg/connectors"
	"inthub.dev/pkg/connectors/ecr"
	"inthub.dev/pkg/connectors/oci/ocitest"
	"inthub.dev/pkg/fault"
	"inthub.dev/schemas"
)

type secrets = ocitest.Secrets

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var goodSecrets = secrets{"authref://vault/aws#secret": staticSec}

type env struct {
	c   *ecr.Connector
	log *ocitest.Buffer
}

func newConnector(t testing.TB, f *fakeAWS, conf map[string]any, sec secrets) env {
	t.Helper()
	buf := &ocitest.Buffer{}
	cfg := ocitest.Config(t, ecr.Type, conf, sec, buf)
	// These tests play an operator who lends the hub's identity;
	// TestHubIdentityIsTheOperatorsToLend plays one who does not.
	cfg.HubIdentity = true
	if f != nil {
		cfg.Now = f.clock.now
	}
	c, err := ecr.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	return env{c: c, log: buf}
}

// defaultChain points the SDK's default chain at environment keys only:
// no shared files, no instance metadata.
func defaultChain(t *testing.T, keyID, secret string) {
	dir := t.TempDir()
	t.Setenv("AWS_ACCESS_KEY_ID", keyID)
	t.Setenv("AWS_SECRET_ACCESS_KEY", secret)
	t.Setenv("AWS_SESSION_TOKEN", "")
	t.Setenv("AWS_PROFILE", "")
	t.Setenv("AWS_CONFIG_FILE", filepath.Join(dir, "config"))
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(dir, "credentials"))
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	t.Setenv("AWS_WEB_IDENTITY_TOKEN_FILE", "")
	t.Setenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", "")
	t.Setenv("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "")
}

// TestAuthModes: each auth mode gets a token from the fake ECR API (SigV4
// checked), and the registry, which accepts only tokens the fake minted,
// then answers ping, catalog, tags and digest.
// A tenant's integration may sign with the hub's own AWS identity only
// when the operator allows it: otherwise it could reach whatever the hub's
// role reaches. Refused, permanently, with what to do, and without asking
// AWS for anything.
func TestHubIdentityIsTheOperatorsToLend(t *testing.T) {
	const envKey, envSec = "AKIAFAKEENVIRONMENT1", "env-secret-key-value-abcdef0123456789"
	for name, extra := range map[string]func(f *fakeAWS) map[string]any{
		"default chain": func(*fakeAWS) map[string]any {
			return map[string]any{"authMode": "default", "accessKeyId": nil, "secretAccessKey": nil}
		},
		"assume role with the default chain": func(f *fakeAWS) map[string]any {
			return map[string]any{"authMode": "assume_role", "accessKeyId": nil, "secretAccessKey": nil,
				"roleArn": roleARN, "externalId": extID, "stsEndpoint": f.stsSrv.URL}
		},
	} {
		t.Run(name, func(t *testing.T) {
			f := newFakeAWS(t)
			defaultChain(t, envKey, envSec)
			f.addKey(envKey, awsKey{secret: envSec, ecr: true, assume: map[string]bool{roleARN: true}})
			cfg := ocitest.Config(t, ecr.Type, f.config(extra(f)), goodSecrets, &ocitest.Buffer{})
			cfg.Now = f.clock.now
			c, err := ecr.New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			res := c.TestConnection(context.Background())
			if res.OK() || res.Class != fault.ClassPermanent || !strings.Contains(res.Message, "--allow-hub-identity") {
				t.Fatalf("TestConnection = %s (%s): %s", res.Status, res.Class, res.Message)
			}
			if f.stsCalls.Load() != 0 {
				t.Errorf("STS called %d times", f.stsCalls.Load())
			}
		})
	}
}

func TestAuthModes(t *testing.T) {
	const envKey, envSec = "AKIAFAKEENVIRONMENT1", "env-secret-key-value-abcdef0123456789"
	tests := []struct {
		name    string
		extra   func(f *fakeAWS) map[string]any
		env     bool // the default chain has envKey
		stsUsed bool
	}{
		{"static", func(*fakeAWS) map[string]any { return nil }, false, false},
		{"default chain", func(*fakeAWS) map[string]any {
			return map[string]any{"authMode": "default", "accessKeyId": nil, "secretAccessKey": nil}
		}, true, false},
		{"assume role with static keys", func(f *fakeAWS) map[string]any {
			return map[string]any{"authMode": "assume_role", "roleArn": roleARN, "externalId": extID, "stsEndpoint": f.stsSrv.URL}
		}, false, true},
		{"assume role with the default chain", func(f *fakeAWS) map[string]any {
			return map[string]any{"authMode": "assume_role", "accessKeyId": nil, "secretAccessKey": nil,
				"roleArn": roleARN, "externalId": extID, "stsEndpoint": f.stsSrv.URL, "roleSessionName": "ci-probe"}
		}, true, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			f := newFakeAWS(t)
			if tt.env {
				defaultChain(t, envKey, envSec)
			}
			if tt.stsUsed {
				// Only the assumed role may get ECR tokens: a token
				// proves the role was assumed.
				f.addKey(staticKey, awsKey{secret: staticSec, assume: map[string]bool{roleARN: true}})
				f.addKey(envKey, awsKey{secret: envSec, assume: map[string]bool{roleARN: true}})
			} else {
				f.addKey(envKey, awsKey{secret: envSec, ecr: true})
			}
			e := newConnector(t, f, f.config(tt.extra(f)), goodSecrets)

			res := e.c.TestConnection(ctx)
			want := []string{"+auth", "+repos", "+ping", "+tags", "+digest"}
			if !res.OK() || !slices.Equal(ocitest.CheckNames(res), want) {
				t.Fatalf("TestConnection = %s %q: %s", res.Status, ocitest.CheckNames(res), res.Message)
			}
			if res.CredentialExpiry == nil || res.CredentialExpiry.Sub(f.clock.now().Add(12*time.Hour)).Abs() > time.Second {
				t.Errorf("CredentialExpiry = %v, want the token's expiry", res.CredentialExpiry)
			}
			if got := f.stsCalls.Load(); (got > 0) != tt.stsUsed {
				t.Errorf("STS calls = %d", got)
			}
			if f.reg.Refused.Load() != 0 {
				t.Errorf("the registry refused %d credentials", f.reg.Refused.Load())
			}
			if tt.name == "assume role with the default chain" && f.lastSession.Load() != "ci-probe" {
				t.Errorf("RoleSessionName = %v", f.lastSession.Load())
			}
			if h := e.c.CheckHealth(ctx); !h.OK() {
				t.Errorf("CheckHealth = %s: %s", h.Status, h.Message)
			}
			for _, s := range []string{staticSec, envSec} {
				if strings.Contains(e.log.String(), s) {
					t.Error("a secret key appears in the log")
				}
			}
		})
	}
}

// TestTokenCache: one GetAuthorizationToken serves many calls, also
// concurrent ones; a token near its expiry is replaced before the registry
// would refuse it; a token the registry refuses is dropped and re-minted.
func TestTokenCache(t *testing.T) {
	ctx := context.Background()
	f := newFakeAWS(t)
	e := newConnector(t, f, f.config(nil), goodSecrets)

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
	if _, err := e.c.ListTags(ctx, repo, connectors.ListOptions{}); err != nil {
		t.Fatal(err)
	}
	if n := f.ecrCalls.Load(); n != 1 {
		t.Errorf("GetAuthorizationToken called %d times for 9 operations, want 1", n)
	}

	// 11h50m later the 12h token is inside its refresh margin: a new one
	// is minted, and the registry would have taken the old one still.
	f.clock.advance(11*time.Hour + 50*time.Minute)
	if _, err := e.c.ResolveTag(ctx, repo, "v1"); err != nil {
		t.Fatal(err)
	}
	if n := f.ecrCalls.Load(); n != 2 {
		t.Errorf("GetAuthorizationToken calls = %d after the refresh point, want 2", n)
	}

	// Past expiry: the old tokens are refused by the registry, the
	// connector has a fresh one already.
	f.clock.advance(12*time.Hour + time.Minute)
	if _, err := e.c.ResolveTag(ctx, repo, "v1"); err != nil {
		t.Fatalf("ResolveTag after expiry: %v", err)
	}
	if n := f.ecrCalls.Load(); n != 3 || f.reg.Refused.Load() != 0 {
		t.Errorf("GetAuthorizationToken calls = %d, registry refusals %d; want 3 and 0", n, f.reg.Refused.Load())
	}

	// A token revoked early (the fake forgets it): the call fails as a
	// refused credential, the cache is dropped, the next call re-mints.
	f.mu.Lock()
	clear(f.tokens)
	f.mu.Unlock()
	_, err := e.c.ResolveTag(ctx, repo, "v1")
	if fault.ClassOf(err) != fault.ClassPermanent || !strings.Contains(err.Error(), "401") {
		t.Errorf("ResolveTag with a revoked token = %v", err)
	}
	if _, err := e.c.ResolveTag(ctx, repo, "v1"); err != nil || f.ecrCalls.Load() != 4 {
		t.Errorf("ResolveTag after the refusal = %v (GetAuthorizationToken calls %d, want 4)", err, f.ecrCalls.Load())
	}
}

// TestAuthFailures: each failure of the token exchange comes back with the
// class the worker acts on and a message that says what to fix.
func TestAuthFailures(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name    string
		setup   func(f *fakeAWS) (map[string]any, secrets)
		class   fault.Class
		message []string
	}{
		{"wrong secret key", func(f *fakeAWS) (map[string]any, secrets) {
			return f.config(nil), secrets{"authref://vault/aws#secret": "not-the-secret"}
		}, fault.ClassPermanent, []string{"InvalidSignatureException", "check accessKeyId and secretAccessKey"}},
		{"unknown access key", func(f *fakeAWS) (map[string]any, secrets) {
			return f.config(map[string]any{"accessKeyId": "AKIAUNKNOWNKEY000000"}), goodSecrets
		}, fault.ClassPermanent, []string{"UnrecognizedClientException", "AWS refused the credentials"}},
		{"key without ECR permission", func(f *fakeAWS) (map[string]any, secrets) {
			f.addKey(staticKey, awsKey{secret: staticSec})
			return f.config(nil), goodSecrets
		}, fault.ClassPermanent, []string{"AccessDeniedException", "ecr:GetAuthorizationToken"}},
		{"secret not resolvable", func(f *fakeAWS) (map[string]any, secrets) {
			return f.config(nil), secrets{}
		}, fault.ClassPermanent, []string{"cannot resolve the secretAccessKey AuthRef"}},
		{"throttled", func(f *fakeAWS) (map[string]any, secrets) {
			f.ecrThrottle.Store(true)
			return f.config(nil), goodSecrets
		}, fault.ClassTransient, []string{"ThrottlingException", "retry later"}},
		{"ECR server error", func(f *fakeAWS) (map[string]any, secrets) {
			f.ecrFail.Store(true)
			return f.config(nil), goodSecrets
		}, fault.ClassTransient, []string{"500", "ServerException"}},
		{"wrong external id", func(f *fakeAWS) (map[string]any, secrets) {
			return f.config(map[string]any{"authMode": "assume_role", "roleArn": roleARN, "externalId": "other-id", "stsEndpoint": f.stsSrv.URL}), goodSecrets
		}, fault.ClassPermanent, []string{"STS AssumeRole", "AccessDenied", "trust policy"}},
		{"STS throttled", func(f *fakeAWS) (map[string]any, secrets) {
			f.stsThrottle.Store(true)
			return f.config(map[string]any{"authMode": "assume_role", "roleArn": roleARN, "externalId": extID, "stsEndpoint": f.stsSrv.URL}), goodSecrets
		}, fault.ClassTransient, []string{"STS AssumeRole", "Throttling"}},
		{"API unreachable", func(f *fakeAWS) (map[string]any, secrets) {
			f.ecrSrv.Close()
			return f.config(nil), goodSecrets
		}, fault.ClassOffline, []string{"connection refused"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeAWS(t)
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
			if tt.class == fault.ClassTransient && fault.RetryAfterOf(res.Err) <= 0 && strings.Contains(tt.name, "throttled") {
				t.Errorf("no retry hint on %v", res.Err)
			}
			// The registry side fails the same way, never with a token.
			_, err := e.c.ResolveTag(ctx, repo, "v1")
			if fault.ClassOf(err) != tt.class {
				t.Errorf("ResolveTag = %v (class %s)", err, fault.ClassOf(err))
			}
			if f.reg.BasicCalls.Load() != 0 {
				t.Errorf("the registry saw %d calls with credentials", f.reg.BasicCalls.Load())
			}
			if strings.Contains(res.Message, staticSec) || strings.Contains(e.log.String(), staticSec) {
				t.Error("the secret key leaks")
			}
		})
	}
}

// TestDiscovery: catalog, tags by pages, manifests through the token.
func TestDiscovery(t *testing.T) {
	ctx := context.Background()
	f := newFakeAWS(t)
	e := newConnector(t, f, f.config(nil), goodSecrets)
	repos, err := e.c.ListRepositories(ctx, connectors.ListOptions{})
	if err != nil || len(repos.Items) != 2 || repos.Items[0].FullName != "team/app" {
		t.Errorf("ListRepositories = %+v, %v", repos, err)
	}
	var tags []string
	cursor := ""
	for range 5 {
		page, err := e.c.ListTags(ctx, repo, connectors.ListOptions{Limit: 1, Cursor: cursor})
		if err != nil {
			t.Fatal(err)
		}
		for _, tg := range page.Items {
			tags = append(tags, tg.Name)
		}
		if cursor = page.Next; cursor == "" {
			break
		}
	}
	if !slices.Equal(tags, []string{"v1", "v2"}) {
		t.Errorf("tags = %q", tags)
	}
	d, err := e.c.ResolveTag(ctx, repo, "v2")
	if err != nil {
		t.Fatal(err)
	}
	if err := e.c.VerifyDigest(ctx, repo, d); err != nil {
		t.Errorf("VerifyDigest: %v", err)
	}
	if m, err := e.c.FetchManifest(ctx, repo, "v2"); err != nil || m.Digest != d {
		t.Errorf("FetchManifest = %s, %v", m.Digest, err)
	}
	if _, err := e.c.ListBranches(ctx, repo, connectors.ListOptions{}); !errors.Is(err, errors.ErrUnsupported) {
		t.Errorf("ListBranches = %v", err)
	}
	if f.ecrCalls.Load() != 1 {
		t.Errorf("GetAuthorizationToken calls = %d", f.ecrCalls.Load())
	}
}

// TestProbeDefaultsToFirstRepository: without probeRepository the checks
// resolve a tag of the catalog's first repository.
func TestProbeDefaultsToFirstRepository(t *testing.T) {
	f := newFakeAWS(t)
	e := newConnector(t, f, f.config(map[string]any{"probeRepository": nil}), goodSecrets)
	res := e.c.CheckHealth(context.Background())
	if !res.OK() || res.Details["repository"] != "team/app" || res.Details["digest"] == "" {
		t.Errorf("CheckHealth = %s %v: %s", res.Status, res.Details, res.Message)
	}
}

func TestValidate(t *testing.T) {
	base := `"region": "us-east-1", "registryId": "123456789012"`
	tests := []struct {
		config string
		field  string // "" = valid
	}{
		{`{` + base + `, "accessKeyId": "AKIAABCDEFGHIJKLMNOP", "secretAccessKey": "authref://env/K"}`, ""},
		{`{` + base + `, "authMode": "default"}`, ""},
		{`{` + base + `, "authMode": "assume_role", "roleArn": "arn:aws:iam::123456789012:role/r"}`, ""},
		{`{"region": "eu-west-1", "endpoint": "https://123456789012.dkr.ecr.eu-west-1.amazonaws.com", "authMode": "default"}`, ""},
		{`{"region": "us-east-1", "authMode": "default"}`, "registryId"},
		{`{"region": "Mars", "registryId": "123456789012", "authMode": "default"}`, "region"},
		{`{"region": "us-east-1", "registryId": "12345", "authMode": "default"}`, "registryId"},
		{`{` + base + `}`, "accessKeyId"},
		{`{` + base + `, "accessKeyId": "AKIAABCDEFGHIJKLMNOP"}`, "secretAccessKey"},
		{`{` + base + `, "accessKeyId": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "secretAccessKey": "authref://env/K"}`, "accessKeyId"},
		{`{` + base + `, "accessKeyId": "AKIAABCDEFGHIJKLMNOP", "secretAccessKey": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"}`, "secretAccessKey"},
		{`{` + base + `, "authMode": "default", "accessKeyId": "AKIAABCDEFGHIJKLMNOP", "secretAccessKey": "authref://env/K"}`, "accessKeyId"},
		{`{` + base + `, "authMode": "assume_role"}`, "roleArn"},
		{`{` + base + `, "authMode": "default", "roleArn": "arn:aws:iam::123456789012:role/r"}`, "roleArn"},
		{`{` + base + `, "authMode": "assume_role", "roleArn": "arn:aws:iam::123456789012:role/r", "roleSessionName": "a b"}`, "roleSessionName"},
		{`{` + base + `, "authMode": "sso"}`, "authMode"},
		{`{` + base + `, "authMode": "default", "apiEndpoint": "http://127.0.0.1:1"}`, "apiEndpoint"},
		{`{` + base + `, "authMode": "default", "endpoint": "http://r.example.com"}`, "endpoint"},
		{`{` + base + `, "authMode": "default", "probeRepository": "Bad"}`, "probeRepository"},
	}
	for _, tt := range tests {
		c, err := ecr.New(connectors.Config{Type: ecr.Type, Config: json.RawMessage(tt.config)})
		if err != nil {
			t.Fatalf("New(%s): %v", tt.config, err)
		}
		err = c.Validate()
		var ce *ecr.ConfigError
		switch {
		case tt.field == "" && err != nil:
			t.Errorf("Validate(%s) = %v", tt.config, err)
		case tt.field != "" && (!errors.As(err, &ce) || ce.Field != tt.field || fault.ClassOf(err) != fault.ClassPermanent):
			t.Errorf("Validate(%s) = %v, want an error on %s", tt.config, err, tt.field)
		}
		if err != nil && strings.Contains(err.Error(), "wJalrXUtnFEMI") {
			t.Errorf("Validate echoes a secret: %v", err)
		}
		if tt.field != "" {
			if res := c.TestConnection(context.Background()); res.Class != fault.ClassPermanent || res.OK() {
				t.Errorf("TestConnection of %s = %s %s", tt.config, res.Status, res.Class)
			}
		}
	}
	if _, err := ecr.New(connectors.Config{Config: json.RawMessage(`{"region": "us-east-1", "extra": 1}`)}); err == nil {
		t.Error("New accepted an unknown field")
	}
	if got := ecr.RegistryEndpoint("123456789012", "cn-north-1"); got != "https://123456789012.dkr.ecr.cn-north-1.amazonaws.com.cn" {
		t.Errorf("RegistryEndpoint(cn) = %s", got)
	}
}

// TestRegistered: the schema accepts what the connector reads and refuses
// a secret in clear.
func TestRegistered(t *testing.T) {
	info, ok := connectors.Default().Lookup(ecr.Type)
	if !ok || info.Provider != "ecr" || len(info.ConfigSchema) == 0 {
		t.Fatalf("Lookup = %+v, %v", info, ok)
	}
	cv, err := schemas.CompileConfig(info.ConfigSchema, nil)
	if err != nil {
		t.Fatal(err)
	}
	full := `{"region": "eu-west-1", "registryId": "123456789012", "endpoint": "https://123456789012.dkr.ecr.eu-west-1.amazonaws.com",
		"authMode": "assume_role", "accessKeyId": "AKIAABCDEFGHIJKLMNOP", "secretAccessKey": "authref://vault/aws#secret",
		"sessionToken": "authref://vault/aws#session", "roleArn": "arn:aws:iam::123456789012:role/ecr-read", "externalId": "tenant-1",
		"roleSessionName": "inthub", "apiEndpoint": "https://api.ecr.eu-west-1.amazonaws.com", "stsEndpoint": "https://sts.eu-west-1.amazonaws.com",
		"insecure": false, "probeRepository": "team/app", "probeTag": "v1", "timeoutSeconds": 5, "healthIntervalSeconds": 60}`
	var doc any
	_ = json.Unmarshal([]byte(full), &doc)
	if err := cv.Validate(doc); err != nil {
		t.Errorf("schema refuses a full config: %v", err)
	}
	c, err := ecr.New(connectors.Config{Type: ecr.Type, Config: json.RawMessage(full)})
	if err != nil || c.Validate() != nil {
		t.Errorf("the connector refuses the full config: %v, %v", err, c.Validate())
	}
	_ = json.Unmarshal([]byte(`{"region": "eu-west-1", "registryId": "123456789012", "accessKeyId": "AKIAABCDEFGHIJKLMNOP", "secretAccessKey": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"}`), &doc)
	if err := cv.Validate(doc); err == nil {
		t.Error("schema accepts a secret key in clear")
	}
}
