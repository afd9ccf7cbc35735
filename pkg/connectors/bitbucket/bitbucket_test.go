package bitbucket

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"inthub.dev/pkg/connectors"
	"inthub.dev/pkg/connectors/bitbucket/bitbuckettest"
	"inthub.dev/pkg/fault"
	"inthub.dev/schemas"
)

func TestSite(t *testing.T) {
	tests := []struct {
		flavor, endpoint string
		wantFlavor       string
		wantRoot         string // the REST root
		err              string
	}{
		{"", "", Cloud, "https://api.bitbucket.org/2.0", ""},
		{"cloud", "", Cloud, "https://api.bitbucket.org/2.0", ""},
		{"", "https://bitbucket.org", Cloud, "https://api.bitbucket.org/2.0", ""},
		{"", "https://api.bitbucket.org/2.0/", Cloud, "https://api.bitbucket.org/2.0", ""},
		{"", "https://API.Bitbucket.org", Cloud, "https://api.bitbucket.org/2.0", ""},
		{"", "https://bitbucket.example.com", DataCenter, "https://bitbucket.example.com/rest/api/1.0", ""},
		{"datacenter", "https://example.com/bitbucket/", DataCenter, "https://example.com/bitbucket/rest/api/1.0", ""},
		{"", "https://example.com/bitbucket/rest/api/1.0", DataCenter, "https://example.com/bitbucket/rest/api/1.0", ""},
		{"", "https://example.com/rest/api/latest", DataCenter, "https://example.com/rest/api/1.0", ""},
		{"cloud", "http://127.0.0.1:8080", Cloud, "http://127.0.0.1:8080/2.0", ""},
		{"datacenter", "", "", "", "needs its endpoint"},
		{"datacenter", "https://bitbucket.org", "", "", "is Bitbucket Cloud"},
		{"server", "https://x.example.com", "", "", "flavor must be"},
		{"", "http://bitbucket.org", "", "", "https only"},
		{"", "ftp://x", "", "", "absolute http(s) URL"},
		{"", "https://user:pw@x.example.com", "", "", "must not contain credentials"},
		{"", "https://x.example.com?a=b", "", "", "query or fragment"},
	}
	for _, tt := range tests {
		flavor, _, err := Site(tt.flavor, tt.endpoint)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) || fault.ClassOf(err) != fault.ClassPermanent {
				t.Errorf("Site(%q, %q) = %v, want permanent …%s…", tt.flavor, tt.endpoint, err, tt.err)
			}
			continue
		}
		if err != nil || flavor != tt.wantFlavor {
			t.Errorf("Site(%q, %q) = %s, %v; want %s", tt.flavor, tt.endpoint, flavor, err, tt.wantFlavor)
			continue
		}
		conf := map[string]any{"flavor": tt.flavor, "endpoint": tt.endpoint, "token": tokenRef}
		if flavor == Cloud {
			conf["workspace"] = "acme"
		} else {
			conf["projectKey"] = "ACME"
		}
		cc, _ := New(connectors.Config{Type: Type, Config: mustJSON(t, conf)})
		if err := cc.Validate(); err != nil {
			t.Errorf("%q %q: Validate: %v", tt.flavor, tt.endpoint, err)
			continue
		}
		if got := cc.(*Connector).root.String(); got != tt.wantRoot {
			t.Errorf("%q %q: root %s, want %s", tt.flavor, tt.endpoint, got, tt.wantRoot)
		}
	}
}

func mustJSON(t testing.TB, v any) json.RawMessage {
	t.Helper()
	for k, x := range v.(map[string]any) {
		if x == "" {
			delete(v.(map[string]any), k)
		}
	}
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestValidate holds the connector's own checks and the config schema to
// the same configs: what one refuses, the other does.
func TestValidate(t *testing.T) {
	schema, err := schemas.ConfigSchema(Type)
	if err != nil {
		t.Fatal(err)
	}
	cv, err := schemas.CompileConfig(schema, nil)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		conf string
		err  string // "" = valid
	}{
		{"cloud token", `{"workspace":"acme","token":"authref://env/T"}`, ""},
		{"cloud app password", `{"workspace":"acme","username":"bot","password":"authref://env/P"}`, ""},
		{"dc token", `{"endpoint":"https://bb.example.com","projectKey":"ACME","token":"authref://env/T"}`, ""},
		{"dc explicit", `{"flavor":"datacenter","endpoint":"https://bb.example.com","projectKey":"~alice","username":"u","password":"authref://env/P","timeoutSeconds":5}`, ""},
		{"both auths", `{"workspace":"acme","token":"authref://env/T","username":"u","password":"authref://env/P"}`, "alternatives"},
		{"no auth", `{"workspace":"acme"}`, "set token"},
		{"username alone", `{"workspace":"acme","username":"u"}`, "go together"},
		{"secret in clear", `{"workspace":"acme","token":"ATCTT3xFfGN0"}`, "AuthRef"},
		{"cloud without workspace", `{"token":"authref://env/T"}`, "workspace"},
		{"cloud with projectKey", `{"workspace":"acme","projectKey":"ACME","token":"authref://env/T"}`, "projectKey is for Data Center"},
		{"dc without project", `{"endpoint":"https://bb.example.com","token":"authref://env/T"}`, "projectKey"},
		{"dc with workspace", `{"flavor":"datacenter","endpoint":"https://bb.example.com","projectKey":"A","workspace":"acme","token":"authref://env/T"}`, "workspace is for Bitbucket Cloud"},
		{"bad project key", `{"endpoint":"https://bb.example.com","projectKey":"A B","token":"authref://env/T"}`, "not a project key"},
		{"bad timeout", `{"workspace":"acme","token":"authref://env/T","timeoutSeconds":301}`, "timeoutSeconds"},
		{"unknown field", `{"workspace":"acme","token":"authref://env/T","org":"x"}`, "unknown field"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := New(connectors.Config{Type: Type, Config: json.RawMessage(tt.conf)})
			if err != nil {
				t.Fatal(err)
			}
			verr := c.Validate()
			var doc any
			_ = json.Unmarshal([]byte(tt.conf), &doc)
			serr := cv.Validate(doc)
			if tt.err == "" {
				if verr != nil || serr != nil {
					t.Fatalf("Validate = %v, schema = %v; want both valid", verr, serr)
				}
				return
			}
			if verr == nil || !strings.Contains(verr.Error(), tt.err) || fault.ClassOf(verr) != fault.ClassPermanent {
				t.Errorf("Validate = %v, want permanent …%s…", verr, tt.err)
			}
			if serr == nil {
				t.Errorf("the schema accepts what the connector refuses")
			}
			if verr != nil && strings.Contains(verr.Error(), "ATCTT3xFfGN0") {
				t.Errorf("the error echoes the secret: %v", verr)
			}
			// Every call reports the same error, with no request made.
			if r := c.TestConnection(t.Context()); r.OK() || r.Class != fault.ClassPermanent {
				t.Errorf("TestConnection on an invalid config: %s %v", r.Status, r.Class)
			}
		})
	}
}

func TestAuthHeaders(t *testing.T) {
	for _, f := range flavours {
		t.Run(f.name, func(t *testing.T) {
			s := seeded(t, f)
			c := newConn(t, s, f, opts{})
			if r := c.CheckHealth(t.Context()); r.Status != connectors.StatusHealthy {
				t.Fatalf("%s: %s", r.Status, r.Message)
			}
			var want string
			switch {
			case f.bearer && f.flavor == Cloud:
				want = "Bearer " + cloudToken
			case f.bearer:
				want = "Bearer " + dcToken
			case f.flavor == Cloud:
				want = "Basic " + base64.StdEncoding.EncodeToString([]byte(botUser+":"+appPassword))
			default:
				want = "Basic " + base64.StdEncoding.EncodeToString([]byte(botUser+":"+dcPassword))
			}
			for _, req := range s.Seen() {
				if got := req.Header.Get("Authorization"); got != want {
					t.Errorf("%s %s: Authorization %q, want %q", req.Method, req.URI, got, want)
				}
				if f.flavor == DataCenter && req.Header.Get("X-Atlassian-Token") != "no-check" {
					t.Errorf("%s %s without X-Atlassian-Token", req.Method, req.URI)
				}
			}
		})
	}
}

func TestTestConnection(t *testing.T) {
	tests := map[string]struct {
		checks  []string
		details map[string]string
	}{
		"cloud/app-password":    {[]string{"user:true", "repos:true", "branches:true"}, map[string]string{"user": botUser, "flavor": Cloud, "auth": "app password / API token"}},
		"cloud/access-token":    {[]string{"repos:true", "branches:true"}, map[string]string{"flavor": Cloud, "auth": "access token"}},
		"datacenter/password":   {[]string{"version:true", "repos:true", "branches:true"}, map[string]string{"version": "8.19.1", "user": botUser}},
		"datacenter/http-token": {[]string{"version:true", "repos:true", "branches:true"}, map[string]string{"version": "8.19.1", "user": botUser + "-token"}},
	}
	for _, f := range flavours {
		t.Run(f.name, func(t *testing.T) {
			tt := tests[f.name]
			s := seeded(t, f)
			c := newConn(t, s, f, opts{})
			r := c.TestConnection(t.Context())
			if r.Status != connectors.StatusHealthy || !slices.Equal(checkNames(r), tt.checks) {
				t.Fatalf("%s %v: %s", r.Status, checkNames(r), r.Message)
			}
			for k, v := range tt.details {
				if r.Details[k] != v {
					t.Errorf("details[%s] = %q, want %q (%v)", k, r.Details[k], v, r.Details)
				}
			}
			if r.Latency <= 0 {
				t.Error("no latency")
			}
			// The repository probe reads one item, as a page of 1.
			for _, req := range s.Seen() {
				if req.Route == bitbuckettest.RouteRepos && !strings.Contains(req.URI, map[bool]string{true: "pagelen=1", false: "limit=1"}[f.flavor == Cloud]) {
					t.Errorf("repos probe %s asks for more than one", req.URI)
				}
			}
		})
	}
}

func TestCheckHealth(t *testing.T) {
	want := map[string][]string{
		"cloud/app-password":    {"user:true", "repos:true"},
		"cloud/access-token":    {"repos:true"},
		"datacenter/password":   {"version:true", "repos:true"},
		"datacenter/http-token": {"version:true", "repos:true"},
	}
	for _, f := range flavours {
		t.Run(f.name, func(t *testing.T) {
			s := seeded(t, f)
			c := newConn(t, s, f, opts{})
			r := c.CheckHealth(t.Context())
			if r.Status != connectors.StatusHealthy || !slices.Equal(checkNames(r), want[f.name]) {
				t.Fatalf("%s %v: %s", r.Status, checkNames(r), r.Message)
			}
			if s.Requests(bitbuckettest.RouteBranches) != 0 {
				t.Error("health read branches: it is the cheaper subset")
			}
		})
	}
}

// TestAuthFailures: refused credentials are permanent and unhealthy, and
// a missing scope or permission is named.
func TestAuthFailures(t *testing.T) {
	tests := []struct {
		name   string
		f      flavour
		setup  func(s *bitbuckettest.Server)
		secret string // replaces the credential's value
		conf   map[string]any
		status connectors.Status
		check  string // the failing check
		want   string
	}{
		{name: "cloud wrong app password", f: flavours[0], secret: "nope", status: connectors.StatusUnhealthy, check: "user", want: "401"},
		{name: "cloud revoked token", f: flavours[1], setup: func(s *bitbuckettest.Server) { s.Revoke(cloudToken) }, status: connectors.StatusUnhealthy, check: "repos", want: "access token is tied to"},
		{name: "cloud token without repository scope", f: flavours[1],
			setup: func(s *bitbuckettest.Server) {
				s.AddToken(cloudToken, bitbuckettest.Token{Name: "t", Workspace: workspace, Scopes: []string{"pullrequest:read"}})
			},
			status: connectors.StatusUnhealthy, check: "repos", want: "lack the repository scope"},
		{name: "cloud token of another workspace", f: flavours[1],
			setup: func(s *bitbuckettest.Server) {
				s.AddToken(cloudToken, bitbuckettest.Token{Name: "t", Workspace: "other"})
			},
			status: connectors.StatusUnhealthy, check: "repos", want: "403"},
		{name: "cloud app password without account scope", f: flavours[0],
			setup: func(s *bitbuckettest.Server) {
				s.AddUser(bitbuckettest.User{Name: botUser, Password: appPassword, Scopes: []string{"repository"}})
			},
			status: connectors.StatusDegraded, check: "user", want: "lack the account scope (read:user:bitbucket"},
		{name: "dc wrong password", f: flavours[2], secret: "nope", status: connectors.StatusUnhealthy, check: "version", want: "401"},
		{name: "dc token of another project", f: flavours[3],
			setup: func(s *bitbuckettest.Server) {
				s.AddToken(dcToken, bitbuckettest.Token{Name: "t", Projects: []string{"OTHER"}})
			},
			status: connectors.StatusUnhealthy, check: "repos", want: "PROJECT_READ"},
		{name: "dc unknown project", f: flavours[2], conf: map[string]any{"projectKey": "NOPE"}, status: connectors.StatusUnhealthy, check: "repos", want: "does not exist"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := seeded(t, tt.f)
			if tt.setup != nil {
				tt.setup(s)
			}
			sec := defaultSecrets()
			if tt.secret != "" {
				sec.m[passwordRef], sec.m[tokenRef] = tt.secret, tt.secret
			}
			c := newConn(t, s, tt.f, opts{secrets: sec, conf: tt.conf})
			for _, r := range []connectors.Result{c.TestConnection(t.Context()), c.CheckHealth(t.Context())} {
				if r.Status != tt.status || r.Class != fault.ClassPermanent {
					t.Fatalf("%s %v: %s", r.Status, r.Class, r.Message)
				}
				var failed *connectors.Check
				for i := range r.Checks {
					if !r.Checks[i].OK {
						failed = &r.Checks[i]
					}
				}
				if failed == nil || failed.Capability != tt.check || !strings.Contains(failed.Message, tt.want) {
					t.Fatalf("failed check %+v, want %s: …%s…", failed, tt.check, tt.want)
				}
				for _, v := range []string{appPassword, cloudToken, dcPassword, dcToken} {
					if strings.Contains(r.Message, v) {
						t.Fatalf("a secret in %q", r.Message)
					}
				}
			}
		})
	}
}

// TestErrors: the classes the worker frame acts on, per status.
func TestErrors(t *testing.T) {
	tests := []struct {
		name  string
		fault bitbuckettest.Fault
		class fault.Class
		retry time.Duration // 0: any
		want  string
	}{
		{"401", bitbuckettest.Fault{Status: 401}, fault.ClassPermanent, 0, "401"},
		{"403", bitbuckettest.Fault{Status: 403}, fault.ClassPermanent, 0, "403"},
		{"404", bitbuckettest.Fault{Status: 404}, fault.ClassPermanent, 0, "does not exist"},
		{"429 retry-after", bitbuckettest.Fault{Status: 429, Header: http.Header{"Retry-After": {"42"}}}, fault.ClassTransient, 42 * time.Second, "rate limited"},
		{"500", bitbuckettest.Fault{Status: 500}, fault.ClassTransient, 0, "server failed"},
		{"503", bitbuckettest.Fault{Status: 503, Header: http.Header{"Retry-After": {"7"}}}, fault.ClassTransient, 7 * time.Second, "503"},
		{"html 200", bitbuckettest.Fault{Status: 200, Body: "<html>login</html>"}, fault.ClassPermanent, 0, "not Bitbucket's JSON"},
	}
	for _, f := range []flavour{flavours[1], flavours[2]} {
		for _, tt := range tests {
			t.Run(f.name+"/"+tt.name, func(t *testing.T) {
				s := seeded(t, f)
				s.Fail(bitbuckettest.RouteRepos, tt.fault)
				c := newConn(t, s, f, opts{})
				_, err := c.ListRepositories(t.Context(), connectors.ListOptions{})
				if err == nil || fault.ClassOf(err) != tt.class || !strings.Contains(err.Error(), tt.want) {
					t.Fatalf("err = %v (%v), want %v …%s…", err, fault.ClassOf(err), tt.class, tt.want)
				}
				if tt.retry > 0 && fault.RetryAfterOf(err) != tt.retry {
					t.Errorf("retry after %v, want %v", fault.RetryAfterOf(err), tt.retry)
				}
			})
		}
	}
}

// TestRateLimited: Cloud's own 429 carries no Retry-After: the hint is a
// minute; Data Center's carries one.
func TestRateLimited(t *testing.T) {
	for _, f := range []flavour{flavours[0], flavours[3]} {
		t.Run(f.name, func(t *testing.T) {
			s := seeded(t, f)
			s.SetRemaining(0)
			c := newConn(t, s, f, opts{})
			r := c.CheckHealth(t.Context())
			if r.Status != connectors.StatusUnhealthy || r.Class != fault.ClassTransient || fault.RetryAfterOf(r.Err) < time.Second {
				t.Fatalf("%s %v retry %v: %s", r.Status, r.Class, fault.RetryAfterOf(r.Err), r.Message)
			}
			if f.flavor == Cloud && fault.RetryAfterOf(r.Err) != cloudRetryDefault {
				t.Errorf("cloud retry %v, want %v", fault.RetryAfterOf(r.Err), cloudRetryDefault)
			}
		})
	}
}

// TestRateLimitHeadroom: a nearly spent budget degrades a healthy check.
func TestRateLimitHeadroom(t *testing.T) {
	for _, f := range []flavour{flavours[0], flavours[2]} {
		t.Run(f.name, func(t *testing.T) {
			s := seeded(t, f, bitbuckettest.Options{RateLimit: 1000})
			c := newConn(t, s, f, opts{})
			if r := c.CheckHealth(t.Context()); r.Status != connectors.StatusHealthy {
				t.Fatalf("full budget: %s: %s", r.Status, r.Message)
			}
			s.SetRemaining(50) // 5 %
			r := c.CheckHealth(t.Context())
			if r.Status != connectors.StatusDegraded || !strings.Contains(r.Message, "rate limit nearly used") {
				t.Fatalf("%s: %s", r.Status, r.Message)
			}
			if f.flavor == DataCenter && (r.RateLimit == nil || r.RateLimit.Limit != 1000 || r.RateLimit.Remaining > 50) {
				t.Errorf("rate limit %+v", r.RateLimit)
			}
		})
	}
}

func TestTimeout(t *testing.T) {
	f := flavours[2]
	s := seeded(t, f)
	s.SetLatency(3 * time.Second)
	c := newConn(t, s, f, opts{conf: map[string]any{"timeoutSeconds": 1}})
	start := time.Now()
	r := c.CheckHealth(t.Context())
	if took := time.Since(start); took > 2500*time.Millisecond {
		t.Errorf("took %v with timeoutSeconds 1", took)
	}
	if r.Class != fault.ClassTransient || !strings.Contains(r.Message, "timeoutSeconds is 1") {
		t.Fatalf("%s %v: %s", r.Status, r.Class, r.Message)
	}
}

func TestUnreachable(t *testing.T) {
	for _, f := range []flavour{flavours[0], flavours[2]} {
		s := seeded(t, f)
		c := newConn(t, s, f, opts{})
		s.Down()
		r := c.CheckHealth(t.Context())
		if r.Status != connectors.StatusUnhealthy || r.Class != fault.ClassOffline {
			t.Fatalf("%s: %s %v: %s", f.name, r.Status, r.Class, r.Message)
		}
		s.Up()
		if r := c.CheckHealth(t.Context()); r.Status != connectors.StatusHealthy {
			t.Fatalf("%s after Up: %s: %s", f.name, r.Status, r.Message)
		}
	}
}

// TestDiscoveryPaging walks every page of a large workspace / project
// with a limit above the flavour's cap: the connector asks for the cap
// (Cloud refuses more with a 400), follows the cursors, and sees each
// repository once.
func TestDiscoveryPaging(t *testing.T) {
	for _, f := range []flavour{flavours[0], flavours[1], flavours[2], flavours[3]} {
		t.Run(f.name, func(t *testing.T) {
			s := seeded(t, f)
			n := 250
			if f.flavor == DataCenter {
				n = 2100
			}
			for i := range n {
				s.AddRepo(bitbuckettest.Repo{Owner: f.owner(), Slug: fmt.Sprintf("r%04d", i)})
			}
			c := newConn(t, s, f, opts{})
			seen := map[string]bool{}
			cursor, pages := "", 0
			for {
				p, err := c.ListRepositories(t.Context(), connectors.ListOptions{Limit: 5000, Cursor: cursor})
				if err != nil {
					t.Fatalf("page %d: %v", pages, err)
				}
				pages++
				for _, r := range p.Items {
					if seen[r.FullName] {
						t.Fatalf("%s listed twice", r.FullName)
					}
					seen[r.FullName] = true
					if !strings.HasPrefix(r.FullName, f.owner()+"/") || r.ID == "" {
						t.Fatalf("repository %+v", r)
					}
				}
				if p.Next == "" {
					break
				}
				cursor = p.Next
			}
			total := n + 3
			wantPages := (total + 99) / 100
			if f.flavor == DataCenter {
				wantPages = (total + 999) / 1000
			}
			if len(seen) != total || pages != wantPages {
				t.Fatalf("%d repositories in %d pages, want %d in %d", len(seen), pages, total, wantPages)
			}
			for _, req := range s.Seen() {
				if strings.Contains(req.URI, "pagelen=5000") || strings.Contains(req.URI, "limit=5000") {
					t.Fatalf("asked past the cap: %s", req.URI)
				}
			}
		})
	}
}

func TestListBranchesAndTags(t *testing.T) {
	for _, f := range flavours {
		t.Run(f.name, func(t *testing.T) {
			s := seeded(t, f)
			c := newConn(t, s, f, opts{})
			var names []string
			cursor := ""
			for {
				p, err := c.ListBranches(t.Context(), f.owner()+"/api", connectors.ListOptions{Limit: 2, Cursor: cursor})
				if err != nil {
					t.Fatal(err)
				}
				for _, b := range p.Items {
					names = append(names, b.Name)
					if len(b.CommitSHA) != 40 {
						t.Errorf("branch %+v without its commit", b)
					}
				}
				if cursor = p.Next; cursor == "" {
					break
				}
			}
			if !slices.Equal(names, []string{"develop", "main", "release-1"}) {
				t.Fatalf("branches %v", names)
			}
			tags, err := c.ListTags(t.Context(), "api", connectors.ListOptions{})
			if err != nil || len(tags.Items) != 2 || tags.Items[0].Name != "v1.0.0" {
				t.Fatalf("tags %+v, %v", tags, err)
			}
			if _, err := c.ListBranches(t.Context(), f.owner()+"/nope", connectors.ListOptions{}); fault.ClassOf(err) != fault.ClassPermanent || statusOf(err) != 404 {
				t.Fatalf("missing repository: %v", err)
			}
		})
	}
}

func TestDiscoveryRefusesBadInputBeforeCalling(t *testing.T) {
	f := flavours[0]
	s := seeded(t, f)
	c := newConn(t, s, f, opts{})
	for _, repo := range []string{"", "acme/", "acme/../x", "acme/a/b", "a b/c", "acme/.."} {
		if _, err := c.ListBranches(t.Context(), repo, connectors.ListOptions{}); fault.ClassOf(err) != fault.ClassPermanent {
			t.Errorf("ListBranches(%q) = %v", repo, err)
		}
	}
	for _, cursor := range []string{"%zz", "next=https://evil.example.com/", "page=-1", "start=5"} {
		if _, err := c.ListRepositories(t.Context(), connectors.ListOptions{Cursor: cursor}); fault.ClassOf(err) != fault.ClassPermanent {
			t.Errorf("cursor %q: %v", cursor, err)
		}
	}
	if n := len(s.Seen()); n != 0 {
		t.Fatalf("%d requests for bad input", n)
	}
}

// TestCloudNextURLIsNotFollowed: a next link pointing elsewhere becomes
// a cursor of its page number only; the credential stays with the API.
func TestCloudNextURLIsNotFollowed(t *testing.T) {
	c := &Connector{flavor: Cloud}
	got := c.cursor("https://evil.example.com/2.0/repositories/acme?page=3&pagelen=100&token=x", nil, nil)
	if got != "page=3" {
		t.Fatalf("cursor %q", got)
	}
}

func TestSecretsResolvedPerCallAndNeverLogged(t *testing.T) {
	f := flavours[0]
	s := seeded(t, f)
	sec := defaultSecrets()
	c := newConn(t, s, f, opts{secrets: sec})
	for range 3 {
		c.CheckHealth(t.Context())
	}
	if sec.calls != 3 {
		t.Errorf("%d resolutions for 3 checks", sec.calls)
	}
	sec.m[passwordRef] = "wrong"
	r := c.CheckHealth(t.Context())
	if r.OK() {
		t.Fatal("a changed secret was not used")
	}
}

func TestRegistered(t *testing.T) {
	info, ok := connectors.Default().Lookup(Type)
	if !ok || info.Provider != "bitbucket" || len(info.ConfigSchema) == 0 {
		t.Fatalf("%+v %v", info, ok)
	}
	fields, err := schemas.SecretFields(info.ConfigSchema)
	if err != nil || !slices.Equal(fields, []string{"password", "token"}) {
		t.Fatalf("secret fields %v, %v", fields, err)
	}
}

// TestRedirectToAnotherHostIsRefused: an instance answering with a
// redirect elsewhere is a configuration to fix, said as such; the
// credential is never sent there.
func TestRedirectToAnotherHostIsRefused(t *testing.T) {
	var leaked atomic.Bool
	elsewhere := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		leaked.Store(r.Header.Get("Authorization") != "")
		w.WriteHeader(http.StatusOK)
	}))
	defer elsewhere.Close()
	target := strings.Replace(elsewhere.URL, "127.0.0.1", "localhost", 1)
	redirector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, target+r.URL.Path, http.StatusFound)
	}))
	defer redirector.Close()
	f := flavours[2]
	c := newConn(t, nil, f, opts{conf: map[string]any{"endpoint": redirector.URL}})
	r := c.CheckHealth(t.Context())
	if r.OK() || r.Class != fault.ClassPermanent || !strings.Contains(r.Message, "redirects to another host") {
		t.Fatalf("%s %v: %s", r.Status, r.Class, r.Message)
	}
	if leaked.Load() {
		t.Fatal("the credential reached the other host")
	}
}

func TestLogsHoldNoSecret(t *testing.T) {
	for _, f := range flavours {
		s := seeded(t, f)
		var buf bytes.Buffer
		c := newConn(t, s, f, opts{})
		c.logger = slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
		c.TestConnection(t.Context())
		s.Fail(bitbuckettest.RouteAll, bitbuckettest.Fault{Status: 401})
		c.CheckHealth(t.Context())
		if !strings.Contains(buf.String(), `"provider":"bitbucket"`) {
			t.Fatalf("%s: nothing logged", f.name)
		}
		for _, v := range []string{appPassword, cloudToken, dcPassword, dcToken, "Basic ", "Bearer "} {
			if strings.Contains(buf.String(), v) {
				t.Fatalf("%s: the log holds %q", f.name, v)
			}
		}
	}
}

// TestDataCenterCaptcha: after failed logins Data Center wants a CAPTCHA
// and refuses Basic auth until someone logs in through the web UI; the
// message says so rather than "wrong password".
func TestDataCenterCaptcha(t *testing.T) {
	f := flavours[2]
	s := seeded(t, f)
	s.Fail(bitbuckettest.RouteAll, bitbuckettest.Fault{Status: 401, Header: http.Header{"X-Seraph-Loginreason": {"AUTHENTICATION_DENIED"}}})
	r := newConn(t, s, f, opts{}).CheckHealth(t.Context())
	if r.Class != fault.ClassPermanent || !strings.Contains(r.Message, "CAPTCHA") {
		t.Fatalf("%s %v: %s", r.Status, r.Class, r.Message)
	}
}
