package ghcr_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"inthub.dev/pkg/connectors"
	"inthub.dev/pkg/connectors/ghcr"
	"inthub.dev/pkg/connectors/oci/ocitest"
	"inthub.dev/pkg/fault"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func (f *fakeGitHub) config(extra map[string]any) map[string]any {
	conf := map[string]any{"endpoint": f.registry.URL, "apiEndpoint": f.api.URL, "insecure": true,
		"username": user, "token": patRef, "owner": "acme", "ownerType": "org", "timeoutSeconds": 5}
	return ocitest.Merge(conf, extra)
}

var allSecrets = secrets{patRef: pat, noScopeRf: noScope}

func newConnector(t testing.TB, conf map[string]any, sec secrets, log *ocitest.Buffer) *ghcr.Connector {
	t.Helper()
	if log == nil {
		log = &ocitest.Buffer{}
	}
	c, err := ghcr.New(ocitest.Config(t, ghcr.Type, conf, sec, log))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestOrgFlow: the PAT's scopes are read from the API, the org's
// container packages (nested names too) are paged through, and the
// registry's token flow takes the username and PAT.
func TestOrgFlow(t *testing.T) {
	ctx := context.Background()
	f := newFakeGitHub(t)
	log := &ocitest.Buffer{}
	c := newConnector(t, f.config(nil), allSecrets, log)
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	res := c.TestConnection(ctx)
	if res.Status != connectors.StatusHealthy || !slices.Equal(ocitest.CheckNames(res), []string{"+auth", "+repos", "+ping", "+tags", "+digest"}) {
		t.Fatalf("TestConnection = %s %q: %s", res.Status, ocitest.CheckNames(res), res.Message)
	}
	if res.Details["repository"] != "acme/api" || res.Details["login"] != user || res.RateLimit == nil || res.RateLimit.Limit != 5000 {
		t.Errorf("Details %v, RateLimit %+v", res.Details, res.RateLimit)
	}
	if !strings.Contains(res.Checks[0].Message, "read:packages") {
		t.Errorf("auth check: %s", res.Checks[0].Message)
	}

	var all []string
	cursor := ""
	for range 10 {
		p, err := c.ListRepositories(ctx, connectors.ListOptions{Limit: 2, Cursor: cursor})
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, ocitest.Names(p)...)
		if cursor = p.Next; cursor == "" {
			break
		}
	}
	if want := []string{"acme/api", "acme/tools/cli", "acme/web"}; !slices.Equal(all, want) {
		t.Errorf("repositories = %q, want %q", all, want)
	}
	if d, err := c.ResolveTag(ctx, "acme/tools/cli", "v1"); err != nil || !strings.HasPrefix(d, "sha256:") {
		t.Errorf("ResolveTag(nested) = %s, %v", d, err)
	}
	if strings.Contains(log.String(), pat) {
		t.Error("the PAT appears in the log")
	}

	// Health with a probe repository does not spend the API budget.
	before := f.apiCalls.Load()
	h := newConnector(t, f.config(map[string]any{"probeRepository": "acme/web", "probeTag": "v1"}), allSecrets, nil).CheckHealth(ctx)
	if h.Status != connectors.StatusHealthy || !slices.Equal(ocitest.CheckNames(h), []string{"+ping", "+digest"}) || f.apiCalls.Load() != before {
		t.Errorf("CheckHealth = %s %q: %s (API calls %d → %d)", h.Status, ocitest.CheckNames(h), h.Message, before, f.apiCalls.Load())
	}
}

// TestUserOwner: a user's packages; another user's private ones stay
// hidden.
func TestUserOwner(t *testing.T) {
	ctx := context.Background()
	f := newFakeGitHub(t)
	own := newConnector(t, f.config(map[string]any{"owner": nil, "ownerType": nil}), allSecrets, nil)
	if p, err := own.ListRepositories(ctx, connectors.ListOptions{}); err != nil || !slices.Equal(ocitest.Names(p), []string{"octocat/dotfiles"}) {
		t.Errorf("own packages = %q, %v", ocitest.Names(p), err)
	}
	other := newConnector(t, f.config(map[string]any{"owner": "hubot", "ownerType": "user"}), allSecrets, nil)
	if p, err := other.ListRepositories(ctx, connectors.ListOptions{}); err != nil || !slices.Equal(ocitest.Names(p), []string{"hubot/site"}) {
		t.Errorf("hubot's packages = %q, %v", ocitest.Names(p), err)
	}
	wrongType := newConnector(t, f.config(map[string]any{"owner": "hubot", "ownerType": "org"}), allSecrets, nil)
	if _, err := wrongType.ListRepositories(ctx, connectors.ListOptions{}); fault.ClassOf(err) != fault.ClassPermanent || !strings.Contains(err.Error(), "404") {
		t.Errorf("a user listed as an org = %v", err)
	}
}

// TestMissingScope: a PAT without read:packages is a permanent
// authorization error that names the scope, from the API (scope list,
// listing) and from the registry (DENIED at the token endpoint).
func TestMissingScope(t *testing.T) {
	ctx := context.Background()
	f := newFakeGitHub(t)
	c := newConnector(t, f.config(map[string]any{"token": noScopeRf}), allSecrets, nil)

	res := c.TestConnection(ctx)
	var se *ghcr.ScopeError
	if res.Status != connectors.StatusUnhealthy || res.Class != fault.ClassPermanent || !slices.Equal(ocitest.CheckNames(res), []string{"-auth"}) ||
		!errors.As(res.Err, &se) || !slices.Equal(se.Has, []string{"repo", "workflow"}) || !strings.Contains(res.Message, "lacks the read:packages scope") {
		t.Errorf("TestConnection = %s %s %q: %s", res.Status, res.Class, ocitest.CheckNames(res), res.Message)
	}
	if _, err := c.ListRepositories(ctx, connectors.ListOptions{}); !errors.As(err, &se) || fault.ClassOf(err) != fault.ClassPermanent {
		t.Errorf("ListRepositories = %v, want a permanent ScopeError", err)
	}
	_, err := c.ResolveTag(ctx, "acme/web", "v1")
	if fault.ClassOf(err) != fault.ClassPermanent || !strings.Contains(err.Error(), "403") || !strings.Contains(err.Error(), "read:packages") {
		t.Errorf("ResolveTag = %v, want permanent 403 naming read:packages", err)
	}
	h := newConnector(t, f.config(map[string]any{"token": noScopeRf, "probeRepository": "acme/web"}), allSecrets, nil).CheckHealth(ctx)
	if h.Class != fault.ClassPermanent || !strings.Contains(h.Message, "read:packages") || !slices.Equal(ocitest.CheckNames(h), []string{"-ping"}) {
		t.Errorf("CheckHealth = %s %s %q: %s", h.Status, h.Class, ocitest.CheckNames(h), h.Message)
	}
}

// TestAPIFailures: a bad PAT is permanent; a spent API budget (GitHub's
// 403 with remaining 0) is transient with its reset.
func TestAPIFailures(t *testing.T) {
	ctx := context.Background()
	f := newFakeGitHub(t)
	bad := newConnector(t, f.config(nil), secrets{patRef: "ghp_wrong"}, nil)
	res := bad.TestConnection(ctx)
	if res.Class != fault.ClassPermanent || !strings.Contains(res.Message, "Bad credentials") || strings.Contains(res.Message, "ghp_wrong") {
		t.Errorf("TestConnection with a bad PAT = %s %s: %s", res.Status, res.Class, res.Message)
	}
	if _, err := bad.ResolveTag(ctx, "acme/web", "v1"); fault.ClassOf(err) != fault.ClassPermanent || !strings.Contains(err.Error(), "401") {
		t.Errorf("ResolveTag with a bad PAT = %v", err)
	}

	c := newConnector(t, f.config(nil), allSecrets, nil)
	f.mu.Lock()
	f.apiLeft = 0
	f.mu.Unlock()
	_, err := c.ListRepositories(ctx, connectors.ListOptions{})
	if fault.ClassOf(err) != fault.ClassTransient || fault.RetryAfterOf(err) < 20*60e9 {
		t.Errorf("ListRepositories over the limit = %v (class %s, retry %s)", err, fault.ClassOf(err), fault.RetryAfterOf(err))
	}

	f.mu.Lock()
	f.apiLeft = 100 // 2 % of 5000
	f.mu.Unlock()
	if res := c.TestConnection(ctx); res.Status != connectors.StatusDegraded || !strings.Contains(res.Message, "under 10 %") {
		t.Errorf("TestConnection with 2 %% of the API budget = %s: %s", res.Status, res.Message)
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name  string
		conf  string
		field string
	}{
		{"defaults", `{"username":"octocat","token":"authref://env/PAT"}`, ""},
		{"integration authref", `{"username":"octocat"}`, ""},
		{"no username", `{"token":"authref://env/PAT"}`, "username"},
		{"token in clear", `{"username":"octocat","token":"ghp_abc"}`, "token"},
		{"owner type", `{"username":"octocat","token":"authref://env/PAT","ownerType":"team"}`, "ownerType"},
		{"owner", `{"username":"octocat","token":"authref://env/PAT","owner":"a/b"}`, "owner"},
		{"http api", `{"username":"octocat","token":"authref://env/PAT","apiEndpoint":"http://api.example"}`, "apiEndpoint"},
		{"ghes api", `{"username":"octocat","token":"authref://env/PAT","endpoint":"https://containers.ghe.example","apiEndpoint":"https://ghe.example/api/v3"}`, ""},
		{"registry path", `{"username":"octocat","token":"authref://env/PAT","endpoint":"https://ghcr.io/octocat"}`, "endpoint"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := ghcr.New(connectors.Config{Type: ghcr.Type, Config: []byte(tt.conf), AuthRef: "authref://env/GHCR"})
			if err != nil {
				t.Fatal(err)
			}
			err = c.Validate()
			var ce *ghcr.ConfigError
			switch {
			case tt.field == "" && err != nil:
				t.Errorf("Validate = %v", err)
			case tt.field != "" && (!errors.As(err, &ce) || ce.Field != tt.field || fault.ClassOf(err) != fault.ClassPermanent):
				t.Errorf("Validate = %v, want a permanent error on %s", err, tt.field)
			}
			if err != nil && strings.Contains(err.Error(), "ghp_abc") {
				t.Error("the clear token is quoted")
			}
		})
	}
}
