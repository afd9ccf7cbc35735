package dockerhub_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"inthub.dev/pkg/connectors"
	"inthub.dev/pkg/connectors/dockerhub"
	"inthub.dev/pkg/connectors/oci/ocitest"
	"inthub.dev/pkg/fault"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func (f *fakeHub) config(extra map[string]any) map[string]any {
	conf := map[string]any{"endpoint": f.registry.URL, "hubEndpoint": f.api.URL, "insecure": true,
		"username": user, "token": patRef, "timeoutSeconds": 5}
	return ocitest.Merge(conf, extra)
}

func newConnector(t testing.TB, conf map[string]any, sec secrets, log *ocitest.Buffer) *dockerhub.Connector {
	t.Helper()
	if log == nil {
		log = &ocitest.Buffer{}
	}
	c, err := dockerhub.New(ocitest.Config(t, dockerhub.Type, conf, sec, log))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestUserFlow: the PAT is exchanged at the Hub API for discovery and
// sent as Basic credentials to the token service for pulls; private
// repositories of the user's namespace are listed and pulled.
func TestUserFlow(t *testing.T) {
	ctx := context.Background()
	f := newFakeHub(t)
	log := &ocitest.Buffer{}
	c := newConnector(t, f.config(nil), secrets{patRef: pat}, log)
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	res := c.TestConnection(ctx)
	if res.Status != connectors.StatusHealthy ||
		!slices.Equal(ocitest.CheckNames(res), []string{"+auth", "+repos", "+ping", "+tags", "+digest", "+rate_limit"}) {
		t.Fatalf("TestConnection = %s %q: %s", res.Status, ocitest.CheckNames(res), res.Message)
	}
	// The probe is the namespace's first repository, a private one.
	if res.Details["repository"] != "acme/api" || res.RateLimit == nil || res.RateLimit.Limit != 200 || res.RateLimit.Remaining != 200 {
		t.Errorf("Details %v, RateLimit %+v; want acme/api probed and 200 of 200 (a HEAD costs no pull)", res.Details, res.RateLimit)
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
	if want := []string{"acme/api", "acme/web", "acme/worker"}; !slices.Equal(all, want) {
		t.Errorf("repositories = %q, want %q", all, want)
	}
	if n := f.logins.Load(); n != 1 {
		t.Errorf("%d Hub logins, want 1 (the Hub token is cached)", n)
	}
	m, err := c.FetchManifest(ctx, "acme/api", "latest")
	if err != nil || m.Digest == "" {
		t.Fatalf("FetchManifest(private) = %+v, %v", m, err)
	}
	if strings.Contains(log.String(), pat) {
		t.Error("the PAT appears in the log")
	}
}

// TestAnonymous: without credentials, a namespace's public repositories
// are listed and pulled, a private one is refused, and the budget is the
// anonymous one.
func TestAnonymous(t *testing.T) {
	ctx := context.Background()
	f := newFakeHub(t)
	c := newConnector(t, f.config(map[string]any{"username": nil, "token": nil, "namespace": "acme"}), nil, nil)
	res := c.TestConnection(ctx)
	if res.Status != connectors.StatusHealthy || !slices.Equal(ocitest.CheckNames(res), []string{"+repos", "+ping", "+tags", "+digest", "+rate_limit"}) {
		t.Fatalf("TestConnection = %s %q: %s", res.Status, ocitest.CheckNames(res), res.Message)
	}
	if res.Details["repository"] != "acme/web" || res.RateLimit == nil || res.RateLimit.Limit != 100 || !strings.Contains(res.Details["auth"], "anonymous") {
		t.Errorf("Details %v, RateLimit %+v", res.Details, res.RateLimit)
	}
	p, err := c.ListRepositories(ctx, connectors.ListOptions{})
	if err != nil || !slices.Equal(ocitest.Names(p), []string{"acme/web", "acme/worker"}) {
		t.Errorf("ListRepositories = %q, %v (private ones must not show)", ocitest.Names(p), err)
	}
	_, err = c.ResolveTag(ctx, "acme/api", "latest")
	if fault.ClassOf(err) != fault.ClassPermanent {
		t.Errorf("ResolveTag(private, anonymous) = %v, want permanent", err)
	}
	if f.logins.Load() != 0 {
		t.Error("an anonymous integration logged in")
	}
}

// TestPullRateLimit: the budget is read from the manifest HEAD without
// spending it; GETs spend it; low headroom is degraded; a spent budget
// makes a pull transient with a wait derived from the window, and the
// health check degraded with the same hint.
func TestPullRateLimit(t *testing.T) {
	ctx := context.Background()
	f := newFakeHub(t)
	c := newConnector(t, f.config(map[string]any{"username": nil, "token": nil, "namespace": "library", "probeRepository": "library/alpine", "probeTag": "latest"}), nil, nil)
	f.setBudget("anon", 10, 3)

	res := c.CheckHealth(ctx)
	if res.Status != connectors.StatusHealthy || res.RateLimit == nil || res.RateLimit.Remaining != 3 || res.RateLimit.Limit != 10 {
		t.Fatalf("CheckHealth = %s %+v: %s", res.Status, res.RateLimit, res.Message)
	}
	if !slices.Equal(ocitest.CheckNames(res), []string{"+ping", "+digest", "+rate_limit"}) || res.Details["rateLimitWindow"] != "6h0m0s" {
		t.Errorf("checks %q, details %v", ocitest.CheckNames(res), res.Details)
	}
	if f.apiCalls.Load() != 0 {
		t.Error("the health check with a probe repository called the Hub API")
	}
	for range 3 {
		if _, err := c.FetchManifest(ctx, "library/alpine", "latest"); err != nil {
			t.Fatal(err)
		}
	}
	_, err := c.FetchManifest(ctx, "library/alpine", "latest")
	want := window * time.Second / 10
	if fault.ClassOf(err) != fault.ClassTransient || fault.RetryAfterOf(err) != want || !strings.Contains(err.Error(), "429") {
		t.Fatalf("FetchManifest over the limit = %v (class %s, retry %s), want transient 429 retrying after %s", err, fault.ClassOf(err), fault.RetryAfterOf(err), want)
	}
	res = c.CheckHealth(ctx)
	if res.Status != connectors.StatusDegraded || res.Class != fault.ClassTransient || fault.RetryAfterOf(res.Err) != want ||
		!strings.Contains(res.Message, "0 of 10 pulls left") || !slices.Equal(ocitest.CheckNames(res), []string{"+ping", "+digest", "-rate_limit"}) {
		t.Errorf("CheckHealth with a spent budget = %s %s %q (retry %s): %s", res.Status, res.Class, ocitest.CheckNames(res), fault.RetryAfterOf(res.Err), res.Message)
	}

	f.setBudget("anon", 100, 7)
	res = c.CheckHealth(ctx)
	if res.Status != connectors.StatusDegraded || res.Class != fault.ClassUnknown || !strings.Contains(res.Message, "under 10 %") {
		t.Errorf("CheckHealth with 7 %% left = %s %s: %s", res.Status, res.Class, res.Message)
	}
}

// TestHubFailures: a refused PAT is permanent with a hint; a spent Hub
// API budget is transient with the reset as its wait.
func TestHubFailures(t *testing.T) {
	ctx := context.Background()
	f := newFakeHub(t)
	bad := newConnector(t, f.config(nil), secrets{patRef: "dckr_pat_wrong"}, nil)
	res := bad.TestConnection(ctx)
	if res.Class != fault.ClassPermanent || !slices.Equal(ocitest.CheckNames(res), []string{"-auth"}) ||
		!strings.Contains(res.Message, "401") || !strings.Contains(res.Message, "personal access token") {
		t.Errorf("TestConnection with a wrong PAT = %s %s %q: %s", res.Status, res.Class, ocitest.CheckNames(res), res.Message)
	}
	if _, err := bad.ResolveTag(ctx, "acme/web", "latest"); fault.ClassOf(err) != fault.ClassPermanent {
		t.Errorf("ResolveTag with a wrong PAT = %v, want permanent (the token service refuses it)", err)
	}

	c := newConnector(t, f.config(map[string]any{"username": nil, "token": nil, "namespace": "library"}), nil, nil)
	f.mu.Lock()
	f.apiLeft = 0
	f.mu.Unlock()
	_, err := c.ListRepositories(ctx, connectors.ListOptions{})
	if fault.ClassOf(err) != fault.ClassTransient || fault.RetryAfterOf(err) < 60*time.Second {
		t.Errorf("ListRepositories over the API limit = %v (class %s, retry %s)", err, fault.ClassOf(err), fault.RetryAfterOf(err))
	}

	unknown := newConnector(t, f.config(map[string]any{"username": nil, "token": nil, "namespace": "nobody"}), nil, nil)
	f.mu.Lock()
	f.apiLeft = -1
	f.mu.Unlock()
	if _, err := unknown.ListRepositories(ctx, connectors.ListOptions{}); fault.ClassOf(err) != fault.ClassPermanent || !strings.Contains(err.Error(), "404") {
		t.Errorf("ListRepositories(unknown namespace) = %v", err)
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name  string
		conf  string
		field string
	}{
		{"defaults with a user", `{"username":"acme","token":"authref://env/PAT"}`, ""},
		{"anonymous", `{"namespace":"library"}`, ""},
		{"anonymous without namespace", `{}`, "namespace"},
		{"token without user", `{"token":"authref://env/PAT","namespace":"x"}`, "username"},
		{"token in clear", `{"username":"acme","token":"dckr_pat_abc"}`, "token"},
		{"http registry", `{"namespace":"library","endpoint":"http://registry.example"}`, "endpoint"},
		{"hub with a path", `{"namespace":"library","hubEndpoint":"https://hub.docker.com/v2"}`, "hubEndpoint"},
		{"http hub", `{"namespace":"library","hubEndpoint":"http://hub.example"}`, "hubEndpoint"},
		{"bad probe", `{"namespace":"library","probeRepository":"Library/Alpine"}`, "probeRepository"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := dockerhub.New(connectors.Config{Type: dockerhub.Type, Config: []byte(tt.conf)})
			if err != nil {
				t.Fatal(err)
			}
			err = c.Validate()
			var ce *dockerhub.ConfigError
			switch {
			case tt.field == "" && err != nil:
				t.Errorf("Validate = %v", err)
			case tt.field != "" && (!errors.As(err, &ce) || ce.Field != tt.field || fault.ClassOf(err) != fault.ClassPermanent):
				t.Errorf("Validate = %v, want a permanent error on %s", err, tt.field)
			}
			if err != nil && strings.Contains(err.Error(), "dckr_pat_abc") {
				t.Error("the clear token is quoted")
			}
		})
	}
	if _, err := dockerhub.New(connectors.Config{Type: dockerhub.Type, Config: []byte(`{"namespace":"x","nope":1}`)}); err == nil {
		t.Error("an unknown field was accepted")
	}
}

// TestHubTokenRefused: a cached Hub token the API no longer accepts is
// dropped after its 401, and the next call logs in again.
func TestHubTokenRefused(t *testing.T) {
	ctx := context.Background()
	f := newFakeHub(t)
	c := newConnector(t, f.config(nil), secrets{patRef: pat}, nil)
	if _, err := c.ListRepositories(ctx, connectors.ListOptions{}); err != nil {
		t.Fatal(err)
	}
	f.rotateKey()
	if _, err := c.ListRepositories(ctx, connectors.ListOptions{}); fault.ClassOf(err) != fault.ClassPermanent || !strings.Contains(err.Error(), "401") {
		t.Fatalf("ListRepositories with a stale token = %v", err)
	}
	p, err := c.ListRepositories(ctx, connectors.ListOptions{})
	if err != nil || len(p.Items) != 3 {
		t.Fatalf("ListRepositories after the refusal = %q, %v; want a new login", ocitest.Names(p), err)
	}
	if n := f.logins.Load(); n != 2 {
		t.Errorf("%d logins, want 2", n)
	}
}
