package gitlab

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"inthub.dev/pkg/connectors"
	"inthub.dev/pkg/connectors/gitlab/gitlabtest"
	"inthub.dev/pkg/fault"
)

const (
	patValue = "glpat-Sup3rS3cretT0ken0000"
	jobValue = "glcbt-64_J0bT0kenS3cret11111"
	patRef   = "authref://env/GITLAB_TOKEN"
	jobRef   = "authref://env/CI_JOB_TOKEN"
)

// secretMap resolves AuthRefs from a map and counts resolutions.
type secretMap struct {
	mu    sync.Mutex
	m     map[string]string
	calls int
	err   error
}

func (s *secretMap) Resolve(_ context.Context, ref string) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls++
	if s.err != nil {
		return nil, s.err
	}
	v, ok := s.m[ref]
	if !ok {
		return nil, fault.Permanentf("authref: %s: not found", ref)
	}
	return []byte(v + "\n"), nil // as read from a file
}

func testSecrets() *secretMap {
	return &secretMap{m: map[string]string{patRef: patValue, jobRef: jobValue}}
}

// testClient is a client of the test's own, closed at cleanup, so that no
// keep-alive goroutine outlives the test.
func testClient(t testing.TB) *http.Client {
	t.Helper()
	tr := &http.Transport{Proxy: nil}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

// seeded is a fake with a user "alice" (member of acme/*, read_api
// only), a job token whose job belongs to project 2, and a handful of
// projects.
func seeded(t testing.TB, o ...gitlabtest.Options) *gitlabtest.Server {
	t.Helper()
	var opt gitlabtest.Options
	if len(o) > 0 {
		opt = o[0]
	}
	f := gitlabtest.New(t, opt)
	f.AddToken(patValue, alice())
	f.AddJobToken(jobValue, gitlabtest.JobToken{JobID: 555, ProjectID: 2})
	for _, p := range []gitlabtest.Project{
		{ID: 1, Path: "acme/api", Visibility: "internal", Branches: []string{"main", "release-1"}, Tags: []string{"v1.0.0", "v1.1.0"}},
		{ID: 2, Path: "acme/platform/team/web.app", Visibility: "public", Branches: []string{"develop", "main"}, Tags: []string{"v2"}},
		{ID: 3, Path: "acme/private-x", Visibility: "private", Branches: []string{"main"}},
		{ID: 4, Path: "other/thing", Visibility: "public", Branches: []string{"main"}},
	} {
		f.AddProject(p)
	}
	return f
}

func alice() gitlabtest.Token {
	return gitlabtest.Token{
		User: "alice", Scopes: []string{"read_api"}, ExpiresAt: "2031-03-01",
		Member: []string{"acme/api", "acme/platform/team/web.app", "acme/private-x"},
	}
}

type opts struct {
	conf    map[string]any
	secrets *secretMap
	client  *http.Client
	logger  *slog.Logger
	now     func() time.Time
	authRef string
}

func newConn(t testing.TB, f *gitlabtest.Server, o opts) *Connector {
	t.Helper()
	conf := map[string]any{"token": patRef}
	if f != nil {
		conf["endpoint"] = f.URL()
	}
	for k, v := range o.conf {
		if v == nil {
			delete(conf, k)
		} else {
			conf[k] = v
		}
	}
	raw, err := json.Marshal(conf)
	if err != nil {
		t.Fatal(err)
	}
	if o.secrets == nil {
		o.secrets = testSecrets()
	}
	if o.client == nil {
		o.client = testClient(t)
	}
	if o.now == nil {
		o.now = func() time.Time { return time.Date(2030, 1, 1, 12, 0, 0, 0, time.UTC) }
	}
	c, err := New(connectors.Config{
		IntegrationID: "int-1", TenantID: "ten-1", Type: Type,
		Config: raw, AuthRef: o.authRef, Secrets: o.secrets, HTTPClient: o.client, Logger: o.logger, Now: o.now,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	return c.(*Connector)
}

func checkNames(r connectors.Result) []string {
	var out []string
	for _, c := range r.Checks {
		out = append(out, fmt.Sprintf("%s:%v", c.Capability, c.OK))
	}
	return out
}

func TestTestConnectionWithAccessToken(t *testing.T) {
	f := seeded(t)
	c := newConn(t, f, opts{})
	r := c.TestConnection(t.Context())
	if r.Status != connectors.StatusHealthy || !r.OK() {
		t.Fatalf("status %s (%s), checks %v", r.Status, r.Message, checkNames(r))
	}
	if got, want := strings.Join(checkNames(r), " "), "version:true user:true repos:true"; got != want {
		t.Fatalf("checks = %s, want %s", got, want)
	}
	for k, want := range map[string]string{"version": "17.5.1-ee", "revision": "4f1b2e3a", "user": "alice", "scopes": "read_api", "apiRoot": f.URL() + "/api/v4"} {
		if r.Details[k] != want {
			t.Errorf("Details[%s] = %q, want %q", k, r.Details[k], want)
		}
	}
	wantExp := time.Date(2031, 3, 1, 0, 0, 0, 0, time.UTC)
	if r.CredentialExpiry == nil || !r.CredentialExpiry.Equal(wantExp) {
		t.Fatalf("CredentialExpiry = %v, want %v", r.CredentialExpiry, wantExp)
	}
	if r.RateLimit == nil || r.RateLimit.Limit != 2000 || r.RateLimit.Remaining != 1996 || r.RateLimit.Reset.Unix() != f.RateLimitReset().Unix() {
		t.Fatalf("RateLimit = %+v, want 2000/1996 reset %v (4 requests)", r.RateLimit, f.RateLimitReset())
	}
	for _, req := range f.Seen() {
		if req.Header.Get("Private-Token") != patValue || req.Header.Get("Job-Token") != "" {
			t.Fatalf("request %s sent the wrong token headers", req.URI)
		}
	}
	if got := f.Seen()[3].URI; !strings.Contains(got, "membership=true") || !strings.Contains(got, "per_page=1") {
		t.Fatalf("projects probe = %s", got)
	}
}

func TestTokenExpiry(t *testing.T) {
	tests := []struct {
		name       string
		expiresAt  string
		noSelf     bool
		wantStatus connectors.Status
		wantDetail string
		wantExpiry bool
	}{
		{"far away", "2031-03-01", false, connectors.StatusHealthy, "2031-03-01T00:00:00Z", true},
		{"within a week", "2030-01-05", false, connectors.StatusDegraded, "2030-01-05T00:00:00Z", true},
		{"never", "", false, connectors.StatusHealthy, "never", false},
		{"old GitLab without the endpoint", "2030-01-05", true, connectors.StatusHealthy, "unknown", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := seeded(t, gitlabtest.Options{NoTokenSelf: tt.noSelf})
			tok := alice()
			tok.ExpiresAt = tt.expiresAt
			f.AddToken(patValue, tok)
			r := newConn(t, f, opts{}).TestConnection(t.Context())
			if r.Status != tt.wantStatus {
				t.Fatalf("status = %s (%s), want %s", r.Status, r.Message, tt.wantStatus)
			}
			if r.Details["tokenExpiry"] != tt.wantDetail {
				t.Fatalf("tokenExpiry = %q, want %q", r.Details["tokenExpiry"], tt.wantDetail)
			}
			if (r.CredentialExpiry != nil) != tt.wantExpiry {
				t.Fatalf("CredentialExpiry = %v", r.CredentialExpiry)
			}
			if tt.wantStatus == connectors.StatusDegraded && !strings.Contains(r.Message, "expires on 2030-01-05") {
				t.Fatalf("message %q does not warn of the expiry", r.Message)
			}
		})
	}
}

func TestTestConnectionWithJobToken(t *testing.T) {
	f := seeded(t)
	c := newConn(t, f, opts{conf: map[string]any{"token": nil, "jobToken": jobRef}})
	r := c.TestConnection(t.Context())
	if r.Status != connectors.StatusHealthy {
		t.Fatalf("status %s (%s), checks %v", r.Status, r.Message, checkNames(r))
	}
	if got, want := strings.Join(checkNames(r), " "), "job:true branches:true"; got != want {
		t.Fatalf("checks = %s, want %s", got, want)
	}
	if !strings.Contains(r.Details["version"], "unknown") {
		t.Fatalf("version detail = %q: the fake refuses /version to a job token, as GitLab does", r.Details["version"])
	}
	if !strings.Contains(r.Checks[0].Message, "job 555") || !strings.Contains(r.Checks[0].Message, "project 2") {
		t.Fatalf("job check message = %q", r.Checks[0].Message)
	}
	for _, req := range f.Seen() {
		if req.Header.Get("Job-Token") != jobValue || req.Header.Get("Private-Token") != "" {
			t.Fatalf("request %s sent the wrong token headers", req.URI)
		}
	}
	h := c.CheckHealth(t.Context())
	if h.Status != connectors.StatusHealthy || len(h.Checks) != 2 {
		t.Fatalf("health %s %v", h.Status, checkNames(h))
	}

	// Once the job ends GitLab refuses its token: the message says why.
	f.Revoke(jobValue)
	r = c.CheckHealth(t.Context())
	if r.Status != connectors.StatusUnhealthy || r.Class != fault.ClassPermanent {
		t.Fatalf("after the job: %s %v", r.Status, r.Class)
	}
	if !strings.Contains(r.Message, "401") || !strings.Contains(r.Message, "valid only while its job runs") {
		t.Fatalf("message = %q", r.Message)
	}
}

func TestCheckHealth(t *testing.T) {
	f := seeded(t)
	r := newConn(t, f, opts{}).CheckHealth(t.Context())
	if r.Status != connectors.StatusHealthy {
		t.Fatalf("status %s (%s)", r.Status, r.Message)
	}
	if got, want := strings.Join(checkNames(r), " "), "version:true repos:true"; got != want {
		t.Fatalf("checks = %s, want %s", got, want)
	}
	if r.Details["version"] != "17.5.1-ee" || r.Latency <= 0 {
		t.Fatalf("details %v latency %v", r.Details, r.Latency)
	}
}

// The fake must itself refuse an unencoded project path, or the encoding
// tests below would prove nothing.
func TestFakeRejectsUnencodedPath(t *testing.T) {
	f := seeded(t)
	for _, p := range []string{"acme/api", "acme%2Fapi"} {
		req, _ := http.NewRequest(http.MethodGet, f.URL()+"/api/v4/projects/"+p+"/repository/branches", nil)
		req.Header.Set("PRIVATE-TOKEN", patValue)
		resp, err := testClient(t).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		want := http.StatusOK
		if p == "acme/api" {
			want = http.StatusNotFound
		}
		if resp.StatusCode != want {
			t.Fatalf("%s: status %d, want %d", p, resp.StatusCode, want)
		}
	}
}

func TestDiscoveryEncodesProjectPaths(t *testing.T) {
	for _, prefix := range []string{"", "/gitlab"} {
		t.Run("root"+prefix, func(t *testing.T) {
			f := seeded(t, gitlabtest.Options{Prefix: prefix})
			c := newConn(t, f, opts{})
			bs, err := c.ListBranches(t.Context(), "acme/platform/team/web.app", connectors.ListOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if len(bs.Items) != 2 || bs.Items[0].Name != "develop" || bs.Items[1].CommitSHA != fmt.Sprintf("%040x", 2) || bs.Next != "" {
				t.Fatalf("branches = %+v", bs)
			}
			ts, err := c.ListTags(t.Context(), "acme/api", connectors.ListOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if len(ts.Items) != 2 || ts.Items[0].Name != "v1.0.0" || ts.Items[0].Digest != "" {
				t.Fatalf("tags = %+v", ts)
			}
			byID, err := c.ListBranches(t.Context(), "1", connectors.ListOptions{})
			if err != nil || len(byID.Items) != 2 {
				t.Fatalf("by id: %+v %v", byID, err)
			}
			seen := f.Seen()
			if got := seen[0].URI; got != prefix+"/api/v4/projects/acme%2Fplatform%2Fteam%2Fweb.app/repository/branches" {
				t.Fatalf("sent %s", got)
			}
			if got := seen[1].URI; !strings.HasPrefix(got, prefix+"/api/v4/projects/acme%2Fapi/repository/tags?") {
				t.Fatalf("sent %s", got)
			}
		})
	}
}

func TestDiscoveryRefusesBadPathsBeforeCalling(t *testing.T) {
	f := seeded(t)
	c := newConn(t, f, opts{})
	for _, p := range []string{"/acme/api", "acme/api/", "acme/../x", "acme/a b"} {
		if _, err := c.ListBranches(t.Context(), p, connectors.ListOptions{}); fault.ClassOf(err) != fault.ClassPermanent {
			t.Fatalf("ListBranches(%q) = %v, want permanent", p, err)
		}
		if _, err := c.ListTags(t.Context(), p, connectors.ListOptions{}); fault.ClassOf(err) != fault.ClassPermanent {
			t.Fatalf("ListTags(%q) = %v, want permanent", p, err)
		}
	}
	if n := len(f.Seen()); n != 0 {
		t.Fatalf("%d requests sent for refused paths", n)
	}
	_, err := c.ListBranches(t.Context(), "acme/missing", connectors.ListOptions{})
	if fault.ClassOf(err) != fault.ClassPermanent || !strings.Contains(err.Error(), "404 Project Not Found") || !strings.Contains(err.Error(), "acme/missing") {
		t.Fatalf("missing project: %v", err)
	}
}

func TestListRepositoriesPagination(t *testing.T) {
	for _, linkOnly := range []bool{false, true} {
		t.Run(fmt.Sprintf("linkOnly=%v", linkOnly), func(t *testing.T) {
			f := gitlabtest.New(t, gitlabtest.Options{LinkOnly: linkOnly})
			tok := alice()
			tok.Member = nil
			for i := 1; i <= 45; i++ {
				path := fmt.Sprintf("acme/p%02d", i)
				f.AddProject(gitlabtest.Project{ID: int64(i), Path: path, Visibility: "private"})
				if i%9 != 0 { // 40 memberships
					tok.Member = append(tok.Member, path)
				}
			}
			f.AddToken(patValue, tok)
			c := newConn(t, f, opts{})

			var got []string
			cursor, pages := "", 0
			for {
				page, err := c.ListRepositories(t.Context(), connectors.ListOptions{Limit: 15, Cursor: cursor})
				if err != nil {
					t.Fatal(err)
				}
				pages++
				for _, r := range page.Items {
					got = append(got, r.FullName)
					if !r.Private || r.DefaultBranch != "main" || r.ID == "" {
						t.Fatalf("repo %+v", r)
					}
				}
				if page.Next == "" {
					break
				}
				cursor = page.Next
				if pages > 10 {
					t.Fatal("pagination does not end")
				}
			}
			if pages != 3 || len(got) != 40 || got[0] != "acme/p01" || got[39] != "acme/p44" {
				t.Fatalf("%d pages, %d repos: %v", pages, len(got), got)
			}
			for _, req := range f.Seen() {
				if !strings.Contains(req.URI, "per_page=15") || !strings.Contains(req.URI, "membership=true") || !strings.Contains(req.URI, "order_by=id") {
					t.Fatalf("request %s", req.URI)
				}
			}
		})
	}
}

func TestListOptions(t *testing.T) {
	f := seeded(t)
	c := newConn(t, f, opts{})
	if _, err := c.ListRepositories(t.Context(), connectors.ListOptions{Limit: 1000}); err != nil {
		t.Fatal(err)
	}
	if got := f.Seen()[0].URI; !strings.Contains(got, "per_page=100") {
		t.Fatalf("limit not capped at GitLab's 100: %s", got)
	}
	for _, bad := range []string{"page=0", "page=x", "private_token=abc", "%zz", "page=1&page=2", strings.Repeat("a", 2000)} {
		_, err := c.ListRepositories(t.Context(), connectors.ListOptions{Cursor: bad})
		if fault.ClassOf(err) != fault.ClassPermanent || !strings.Contains(err.Error(), "invalid page cursor") {
			t.Fatalf("cursor %q: %v", bad, err)
		}
	}
	if n := len(f.Seen()); n != 1 {
		t.Fatalf("%d requests, want only the first", n)
	}
}

func TestGroupScopedDiscovery(t *testing.T) {
	f := seeded(t)
	c := newConn(t, f, opts{conf: map[string]any{"group": "acme/platform"}})
	page, err := c.ListRepositories(t.Context(), connectors.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(page.Items) != 1 || page.Items[0].FullName != "acme/platform/team/web.app" || page.Items[0].Private {
		t.Fatalf("group projects = %+v", page.Items)
	}
	if got := f.Seen()[0].URI; !strings.HasPrefix(got, "/api/v4/groups/acme%2Fplatform/projects?") || !strings.Contains(got, "include_subgroups=true") {
		t.Fatalf("sent %s", got)
	}
	r := newConn(t, f, opts{conf: map[string]any{"group": "nope"}}).TestConnection(t.Context())
	if r.OK() || r.Class != fault.ClassPermanent || !strings.Contains(r.Message, "404 Group Not Found") {
		t.Fatalf("unknown group: %s %v %q", r.Status, r.Class, r.Message)
	}
}

func TestFaults(t *testing.T) {
	tests := []struct {
		name       string
		route      gitlabtest.Route
		fault      gitlabtest.Fault
		wantClass  fault.Class
		wantRetry  time.Duration
		wantInMsg  []string
		wantChecks string
	}{
		{"401 on version", gitlabtest.RouteVersion, gitlabtest.Fault{Status: 401}, fault.ClassPermanent, 0,
			[]string{"read version", "401 Unauthorized", "invalid, expired or revoked"}, "version:false"},
		{"403 insufficient scope on user", gitlabtest.RouteUser, gitlabtest.Fault{Status: 403, Body: `{"error":"insufficient_scope","error_description":"The request requires higher privileges than provided by the access token.","scope":"read_user api"}`},
			fault.ClassPermanent, 0, []string{"403 Forbidden", "insufficient_scope", "read_api or api scope"}, "version:true user:false"},
		{"404 on projects", gitlabtest.RouteProjects, gitlabtest.Fault{Status: 404, Body: `{"error":"404 Not Found"}`}, fault.ClassPermanent, 0,
			[]string{"list projects", "404"}, "version:true user:true repos:false"},
		{"429 with Retry-After", gitlabtest.RouteProjects, gitlabtest.Fault{Status: 429, Header: http.Header{"Retry-After": {"30"}}}, fault.ClassTransient, 30 * time.Second,
			[]string{"429", "rate limited"}, "version:true user:true repos:false"},
		{"500", gitlabtest.RouteVersion, gitlabtest.Fault{Status: 500, Body: `{"message":"500 Internal Server Error"}`}, fault.ClassTransient, 0,
			[]string{"500", "server failed"}, "version:false"},
		{"503 with Retry-After", gitlabtest.RouteUser, gitlabtest.Fault{Status: 503, Header: http.Header{"Retry-After": {"5"}}}, fault.ClassTransient, 5 * time.Second,
			[]string{"503"}, "version:true user:false"},
		{"HTML from a proxy", gitlabtest.RouteVersion, gitlabtest.Fault{Status: 200, Body: "<html>login</html>"}, fault.ClassPermanent, 0,
			[]string{"not GitLab's JSON"}, "version:false"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := seeded(t)
			f.Fail(tt.route, tt.fault)
			r := newConn(t, f, opts{}).TestConnection(t.Context())
			if r.Status != connectors.StatusUnhealthy || r.OK() {
				t.Fatalf("status %s", r.Status)
			}
			if r.Class != tt.wantClass || fault.ClassOf(r.Err) != tt.wantClass {
				t.Fatalf("class %v / %v, want %v (%v)", r.Class, fault.ClassOf(r.Err), tt.wantClass, r.Err)
			}
			if got := fault.RetryAfterOf(r.Err); got != tt.wantRetry {
				t.Fatalf("retry after %v, want %v", got, tt.wantRetry)
			}
			for _, s := range tt.wantInMsg {
				if !strings.Contains(r.Message, s) {
					t.Errorf("message %q lacks %q", r.Message, s)
				}
			}
			if got := strings.Join(checkNames(r), " "); got != tt.wantChecks {
				t.Fatalf("checks %s, want %s", got, tt.wantChecks)
			}
			last := r.Checks[len(r.Checks)-1]
			if last.OK || last.Class != tt.wantClass || last.Message == "" {
				t.Fatalf("failed check %+v", last)
			}
		})
	}
}

func TestRateLimitFromGitLabHeaders(t *testing.T) {
	t.Run("429 without Retry-After waits for RateLimit-Reset", func(t *testing.T) {
		f := seeded(t)
		reset := time.Now().Add(90 * time.Second).Truncate(time.Second)
		f.Fail(gitlabtest.RouteProjects, gitlabtest.Fault{Status: 429, Header: http.Header{
			"Ratelimit-Reset": {fmt.Sprint(reset.Unix())}, "Ratelimit-Remaining": {"0"}, "Ratelimit-Limit": {"2000"},
		}})
		_, err := newConn(t, f, opts{}).ListRepositories(t.Context(), connectors.ListOptions{})
		if fault.ClassOf(err) != fault.ClassTransient {
			t.Fatalf("class %v: %v", fault.ClassOf(err), err)
		}
		if d := fault.RetryAfterOf(err); d < 80*time.Second || d > 91*time.Second {
			t.Fatalf("retry after %v, want about 90s", d)
		}
	})
	t.Run("spent budget answers 429 Retry-After", func(t *testing.T) {
		f := seeded(t)
		f.SetRemaining(2)
		r := newConn(t, f, opts{}).TestConnection(t.Context())
		// The fake's Retry-After is the time left in its window.
		wait := time.Until(f.RateLimitReset())
		if d := fault.RetryAfterOf(r.Err); r.Class != fault.ClassTransient || d < wait-2*time.Second || d > wait+2*time.Second {
			t.Fatalf("class %v retry %v: %v", r.Class, fault.RetryAfterOf(r.Err), r.Err)
		}
		if r.RateLimit == nil || r.RateLimit.Remaining != 0 {
			t.Fatalf("rate limit %+v", r.RateLimit)
		}
	})
	t.Run("low headroom degrades", func(t *testing.T) {
		f := seeded(t)
		f.SetRemaining(100) // of 2000: 5 %
		r := newConn(t, f, opts{}).CheckHealth(t.Context())
		if r.Status != connectors.StatusDegraded || !r.OK() || !strings.Contains(r.Message, "rate limit nearly used") {
			t.Fatalf("status %s %q", r.Status, r.Message)
		}
		if r.RateLimit.Headroom() >= 0.1 {
			t.Fatalf("headroom %v", r.RateLimit.Headroom())
		}
	})
}

func TestTimeouts(t *testing.T) {
	t.Run("configured timeout", func(t *testing.T) {
		f := seeded(t)
		f.Fail(gitlabtest.RouteVersion, gitlabtest.Fault{Slow: true})
		c := newConn(t, f, opts{conf: map[string]any{"timeoutSeconds": 1}})
		start := time.Now()
		r := c.CheckHealth(t.Context())
		if el := time.Since(start); el > 5*time.Second {
			t.Fatalf("took %v", el)
		}
		if r.Class != fault.ClassTransient || !strings.Contains(r.Message, "timed out after 1") || !strings.Contains(r.Message, "timeoutSeconds is 1") {
			t.Fatalf("class %v message %q", r.Class, r.Message)
		}
	})
	t.Run("caller's deadline", func(t *testing.T) {
		f := seeded(t)
		f.Fail(gitlabtest.RouteProjects, gitlabtest.Fault{Slow: true})
		ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
		defer cancel()
		_, err := newConn(t, f, opts{}).ListRepositories(ctx, connectors.ListOptions{})
		if fault.ClassOf(err) != fault.ClassTransient || strings.Contains(err.Error(), "timeoutSeconds") {
			t.Fatalf("%v (%v)", err, fault.ClassOf(err))
		}
	})
}

func TestNetworkFaults(t *testing.T) {
	closed := httptest.NewServer(http.NotFoundHandler())
	closedURL := closed.URL
	closed.Close()

	tlsSrv := httptest.NewTLSServer(http.NotFoundHandler())
	defer tlsSrv.Close()

	tests := []struct {
		name      string
		endpoint  string
		wantClass fault.Class
		wantInMsg string
	}{
		{"connection refused", closedURL, fault.ClassOffline, "connection refused"},
		{"no such host", "https://gitlab.invalid", fault.ClassOffline, "does not resolve"},
		{"self-signed certificate", tlsSrv.URL, fault.ClassPermanent, "certificate"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newConn(t, nil, opts{conf: map[string]any{"endpoint": tt.endpoint}})
			r := c.TestConnection(t.Context())
			if r.Class != tt.wantClass || r.OK() {
				t.Fatalf("class %v status %s: %v", r.Class, r.Status, r.Err)
			}
			if !strings.Contains(r.Message, tt.wantInMsg) || !strings.Contains(r.Message, "read version") {
				t.Fatalf("message %q", r.Message)
			}
			if strings.Contains(r.Message, patValue) {
				t.Fatal("token in message")
			}
		})
	}
}

func TestRedirectNeverCarriesTheToken(t *testing.T) {
	var leaked atomic.Bool
	elsewhere := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Private-Token") != "" || r.Header.Get("Job-Token") != "" {
			leaked.Store(true)
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"version":"evil"}`)
	}))
	defer elsewhere.Close()
	// 127.0.0.1 and localhost are different hosts to net/http, as two
	// domains would be in production.
	target := strings.Replace(elsewhere.URL, "127.0.0.1", "localhost", 1)
	redirector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, target+r.URL.Path, http.StatusFound)
	}))
	defer redirector.Close()

	for _, conf := range []map[string]any{{"endpoint": redirector.URL}, {"endpoint": redirector.URL, "token": nil, "jobToken": jobRef}} {
		r := newConn(t, nil, opts{conf: conf}).TestConnection(t.Context())
		if leaked.Load() {
			t.Fatal("the token reached another host through a redirect")
		}
		if conf["jobToken"] == nil && (r.OK() || r.Class != fault.ClassPermanent || !strings.Contains(r.Message, "redirects to another host")) {
			t.Fatalf("status %s class %v: %q", r.Status, r.Class, r.Message)
		}
	}
}

func TestSecretsResolvedPerCallAndNeverShown(t *testing.T) {
	var logs bytes.Buffer
	logger := slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	f := seeded(t)
	sec := testSecrets()
	c := newConn(t, f, opts{secrets: sec, logger: logger})
	if sec.calls != 0 {
		t.Fatal("New resolved a secret")
	}
	c.TestConnection(t.Context())
	c.CheckHealth(t.Context())
	if _, err := c.ListRepositories(t.Context(), connectors.ListOptions{}); err != nil {
		t.Fatal(err)
	}
	if sec.calls != 3 {
		t.Fatalf("%d resolutions, want one per call", sec.calls)
	}
	// Now failing calls, whose errors are logged.
	f.Fail(gitlabtest.RouteVersion, gitlabtest.Fault{Status: 401})
	r := c.TestConnection(t.Context())
	_, err := c.ListBranches(t.Context(), "acme/nope", connectors.ListOptions{})
	if err == nil || r.OK() {
		t.Fatal("expected failures")
	}
	out := logs.String()
	if !strings.Contains(out, `"integrationId":"int-1"`) || !strings.Contains(out, `"tenantId":"ten-1"`) || !strings.Contains(out, "401") {
		t.Fatalf("logs lack fields:\n%s", out)
	}
	for _, s := range []string{out, r.Message, fmt.Sprint(r.Err), err.Error(), fmt.Sprintf("%+v", r)} {
		if strings.Contains(s, patValue) || strings.Contains(s, "Sup3rS3cret") {
			t.Fatalf("secret leaked: %s", s)
		}
	}

	t.Run("resolver failure", func(t *testing.T) {
		sec := testSecrets()
		sec.err = errors.New("vault: connection refused")
		r := newConn(t, f, opts{secrets: sec}).TestConnection(t.Context())
		if r.OK() || r.Class != fault.ClassTransient || !strings.Contains(r.Message, "resolve token") {
			t.Fatalf("%s %v %q", r.Status, r.Class, r.Message)
		}
		sec.err = fault.Permanentf("authref: env var GITLAB_TOKEN is not set")
		r = newConn(t, f, opts{secrets: sec}).TestConnection(t.Context())
		if r.Class != fault.ClassPermanent {
			t.Fatalf("class %v", r.Class)
		}
	})
	t.Run("empty or odd secret", func(t *testing.T) {
		for _, v := range []string{"", "  ", "tok en", "tok\r\nX-Evil: 1"} {
			sec := &secretMap{m: map[string]string{patRef: v}}
			r := newConn(t, f, opts{secrets: sec}).TestConnection(t.Context())
			if r.OK() || r.Class != fault.ClassPermanent || (v != "" && strings.Contains(r.Message, v)) {
				t.Fatalf("secret %q: %s %v %q", v, r.Status, r.Class, r.Message)
			}
		}
	})
}

func TestIntegrationAuthRefIsTheFallbackToken(t *testing.T) {
	f := seeded(t)
	c := newConn(t, f, opts{conf: map[string]any{"token": nil}, authRef: patRef})
	if r := c.TestConnection(t.Context()); r.Status != connectors.StatusHealthy {
		t.Fatalf("%s %q", r.Status, r.Message)
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name    string
		config  string
		authRef string
		wantErr string
	}{
		{"token", `{"token":"authref://env/T"}`, "", ""},
		{"job token and group", `{"jobToken":"authref://env/CI_JOB_TOKEN","group":"acme/platform","endpoint":"https://git.example.com/gitlab"}`, "", ""},
		{"integration authref", `{}`, "authref://vault/gitlab#token", ""},
		{"every field", `{"endpoint":"https://gitlab.com","token":"authref://env/T","webhookSecret":"authref://env/W","group":"acme","timeoutSeconds":10,"healthIntervalSeconds":60}`, "", ""},
		{"no credential", `{}`, "", "set token"},
		{"both tokens", `{"token":"authref://env/A","jobToken":"authref://env/B"}`, "", "only one"},
		{"secret in clear", `{"token":"glpat-abcdefabcdef"}`, "", "must be an AuthRef"},
		{"unknown field", `{"token":"authref://env/T","tokne":"x"}`, "", "unknown field"},
		{"not an object", `[]`, "", "config"},
		{"trailing data", `{"token":"authref://env/T"} {}`, "", "trailing"},
		{"bad endpoint", `{"token":"authref://env/T","endpoint":"gitlab.com"}`, "", "absolute"},
		{"bad group", `{"token":"authref://env/T","group":"/acme"}`, "", "slash"},
		{"timeout too long", `{"token":"authref://env/T","timeoutSeconds":301}`, "", "timeoutSeconds"},
		{"interval too short", `{"token":"authref://env/T","healthIntervalSeconds":5}`, "", "healthIntervalSeconds"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sec := testSecrets()
			c, err := New(connectors.Config{Type: Type, Config: json.RawMessage(tt.config), AuthRef: tt.authRef, Secrets: sec})
			if err != nil {
				t.Fatalf("New: %v (constructors report config errors through Validate)", err)
			}
			err = c.Validate()
			if tt.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) || fault.ClassOf(err) != fault.ClassPermanent {
				t.Fatalf("Validate = %v, want permanent %q", err, tt.wantErr)
			}
			if strings.Contains(err.Error(), "glpat-abcdef") {
				t.Fatal("error quotes the secret")
			}
			// Every call reports the same error without I/O.
			r := c.TestConnection(t.Context())
			if r.OK() || r.Class != fault.ClassPermanent || sec.calls != 0 {
				t.Fatalf("TestConnection on a bad config: %s %v, %d resolutions", r.Status, r.Class, sec.calls)
			}
			if _, err := c.(connectors.Discoverer).ListRepositories(t.Context(), connectors.ListOptions{}); fault.ClassOf(err) != fault.ClassPermanent {
				t.Fatalf("ListRepositories on a bad config: %v", err)
			}
			if err := c.Close(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestRegistered(t *testing.T) {
	info, ok := connectors.Default().Lookup(Type)
	if !ok {
		t.Fatal("scm.gitlab is not registered")
	}
	if info.Provider != "gitlab" || info.DisplayName != "GitLab" || len(info.ConfigSchema) == 0 {
		t.Fatalf("info %+v", info)
	}
	for _, cap := range []string{"repos", "branches", "tags"} {
		if !strings.Contains(strings.Join(info.Capabilities, ","), cap) {
			t.Fatalf("capabilities %v lack %s", info.Capabilities, cap)
		}
	}
	f := seeded(t)
	c, err := connectors.Default().New(connectors.Config{
		Type: Type, Config: json.RawMessage(fmt.Sprintf(`{"endpoint":%q,"token":%q}`, f.URL(), patRef)),
		Secrets: testSecrets(), HTTPClient: testClient(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	if c.Type() != Type || c.Provider() != "gitlab" {
		t.Fatalf("%s %s", c.Type(), c.Provider())
	}
	if _, ok := c.(connectors.Discoverer); !ok {
		t.Fatal("not a Discoverer")
	}
	if r := c.CheckHealth(t.Context()); !r.OK() {
		t.Fatalf("%s %q", r.Status, r.Message)
	}
	if func() (p any) {
		defer func() { p = recover() }()
		connectors.Default().Register(Info(nil), New)
		return nil
	}() == nil {
		t.Fatal("a second registration did not panic")
	}
}

func TestSameOrigin(t *testing.T) {
	tests := []struct {
		from, to string
		want     bool
	}{
		{"https://git.example.com/api/v4/version", "https://git.example.com/other", true},
		{"https://git.example.com/x", "https://git.example.com:443/y", true},
		{"http://git.example.com/x", "https://git.example.com/x", true},
		{"http://git.example.com:8080/x", "https://git.example.com:8443/x", false},
		{"https://git.example.com/x", "http://git.example.com/x", false},
		{"https://git.example.com/x", "https://git.example.com:8443/x", false},
		{"https://git.example.com/x", "https://evil.example.com/x", false},
		{"https://git.example.com/x", "https://git.example.com.evil.com/x", false},
	}
	for _, tt := range tests {
		from, _ := url.Parse(tt.from)
		to, _ := url.Parse(tt.to)
		if got := sameOrigin(from, to); got != tt.want {
			t.Errorf("sameOrigin(%s, %s) = %v, want %v", tt.from, tt.to, got, tt.want)
		}
	}
}

// A redirect within the instance (a moved path) is followed with the
// token; a redirect loop is cut short.
func TestRedirectWithinTheInstance(t *testing.T) {
	f := seeded(t)
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if rest, ok := strings.CutPrefix(r.URL.RequestURI(), "/old"); ok {
			http.Redirect(w, r, rest, http.StatusMovedPermanently)
			return
		}
		if strings.HasPrefix(r.URL.Path, "/loop") {
			http.Redirect(w, r, r.URL.RequestURI(), http.StatusFound)
			return
		}
		// Same host and port as the client saw: pass on to the fake.
		req, _ := http.NewRequestWithContext(r.Context(), r.Method, f.URL()+r.URL.RequestURI(), nil)
		req.Header = r.Header.Clone()
		resp, err := testClient(t).Do(req)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		for k, v := range resp.Header {
			w.Header()[k] = v
		}
		w.WriteHeader(resp.StatusCode)
		_, _ = io.Copy(w, resp.Body)
	}))
	defer front.Close()

	c := newConn(t, nil, opts{conf: map[string]any{"endpoint": front.URL + "/old"}})
	if r := c.CheckHealth(t.Context()); !r.OK() {
		t.Fatalf("%s %q", r.Status, r.Message)
	}
	if n := len(f.Seen()); n != 2 {
		t.Fatalf("the fake saw %d requests, want 2 through the redirect", n)
	}
	c = newConn(t, nil, opts{conf: map[string]any{"endpoint": front.URL + "/loop"}})
	_, err := c.ListRepositories(t.Context(), connectors.ListOptions{})
	if fault.ClassOf(err) != fault.ClassPermanent || !strings.Contains(err.Error(), "stopped after 5 redirects") {
		t.Fatalf("redirect loop: %v", err)
	}
}
