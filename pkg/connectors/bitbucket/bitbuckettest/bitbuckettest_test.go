package bitbuckettest_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"inthub.dev/pkg/connectors/bitbucket/bitbuckettest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type client struct {
	t    *testing.T
	s    *bitbuckettest.Server
	hc   *http.Client
	auth func(*http.Request)
}

func basic(user, pass string) func(*http.Request) {
	return func(r *http.Request) { r.SetBasicAuth(user, pass) }
}

func bearer(tok string) func(*http.Request) {
	return func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+tok) }
}

func (c client) do(method, path, body string) (int, http.Header, map[string]any) {
	c.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(c.t.Context(), method, c.s.URL()+path, rd)
	if err != nil {
		c.t.Fatal(err)
	}
	if c.auth != nil {
		c.auth(req)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	b, _ := io.ReadAll(resp.Body)
	_ = json.Unmarshal(b, &out)
	return resp.StatusCode, resp.Header, out
}

var sha = bitbuckettest.SHA("c1")

func cloud(t *testing.T) (*bitbuckettest.Server, client) {
	s := bitbuckettest.New(t, bitbuckettest.Options{})
	s.AddUser(bitbuckettest.User{Name: "bot", Password: "app-pw"})
	s.AddUser(bitbuckettest.User{Name: "reader", Password: "pw", Scopes: []string{"repository"}})
	s.AddToken("ws-token", bitbuckettest.Token{Name: "ws-bot", Workspace: "acme"})
	s.AddToken("repo-token", bitbuckettest.Token{Name: "repo-bot", Workspace: "acme", Repo: "web"})
	for i := range 150 {
		s.AddRepo(bitbuckettest.Repo{Owner: "acme", Slug: fmt.Sprintf("r%03d", i)})
	}
	s.AddRepo(bitbuckettest.Repo{Owner: "acme", Slug: "web", Commits: []string{sha}, PullRequests: []int{1}})
	return s, client{t: t, s: s, hc: s.Client(), auth: basic("bot", "app-pw")}
}

func dc(t *testing.T, o bitbuckettest.Options) (*bitbuckettest.Server, client) {
	o.Flavor = bitbuckettest.DataCenter
	s := bitbuckettest.New(t, o)
	s.AddUser(bitbuckettest.User{Name: "bot", Password: "pw"})
	s.AddToken("proj-token", bitbuckettest.Token{Name: "proj-bot", Projects: []string{"ACME"}})
	for i := range 1500 {
		s.AddRepo(bitbuckettest.Repo{Owner: "ACME", Slug: fmt.Sprintf("r%04d", i)})
	}
	s.AddRepo(bitbuckettest.Repo{Owner: "ACME", Slug: "web", Commits: []string{sha}, PullRequests: []int{1}})
	s.AddRepo(bitbuckettest.Repo{Owner: "OTHER", Slug: "x"})
	return s, client{t: t, s: s, hc: s.Client(), auth: basic("bot", "pw")}
}

func TestCloudAuth(t *testing.T) {
	_, c := cloud(t)
	tests := []struct {
		name   string
		auth   func(*http.Request)
		path   string
		status int
		want   string
	}{
		{"app password", basic("bot", "app-pw"), "/2.0/user", 200, ""},
		{"wrong password", basic("bot", "nope"), "/2.0/user", 401, ""},
		{"no credentials", nil, "/2.0/repositories/acme", 401, ""},
		{"token has no account", bearer("ws-token"), "/2.0/user", 401, "not supported for this endpoint"},
		{"token lists its workspace", bearer("ws-token"), "/2.0/repositories/acme?pagelen=1", 200, ""},
		{"token outside its workspace", bearer("ws-token"), "/2.0/repositories/other", 403, ""},
		{"unknown token", bearer("nope"), "/2.0/repositories/acme", 401, ""},
		{"missing scope", basic("reader", "pw"), "/2.0/user", 403, "account"},
		{"repo token outside its repo", bearer("repo-token"), "/2.0/repositories/acme/r001/refs/branches", 403, ""},
	}
	for _, tt := range tests {
		c.auth = tt.auth
		status, _, body := c.do("GET", tt.path, "")
		if status != tt.status {
			t.Errorf("%s: %d, want %d (%v)", tt.name, status, tt.status, body)
		}
		if b, _ := json.Marshal(body); !strings.Contains(string(b), tt.want) {
			t.Errorf("%s: %s, want …%s…", tt.name, b, tt.want)
		}
	}
	// A repository token sees only its repository.
	c.auth = bearer("repo-token")
	_, _, body := c.do("GET", "/2.0/repositories/acme?pagelen=100", "")
	if vs := body["values"].([]any); len(vs) != 1 {
		t.Fatalf("repo token lists %d repositories", len(vs))
	}
}

func TestCloudPaging(t *testing.T) {
	_, c := cloud(t)
	if status, _, body := c.do("GET", "/2.0/repositories/acme?pagelen=101", ""); status != 400 || !strings.Contains(fmt.Sprint(body), "Invalid pagelen") {
		t.Fatalf("pagelen 101: %d %v", status, body)
	}
	_, _, body := c.do("GET", "/2.0/repositories/acme", "")
	if len(body["values"].([]any)) != 10 || body["next"] == nil {
		t.Fatalf("default page: %v", body["pagelen"])
	}
	n, path := 0, "/2.0/repositories/acme?pagelen=100"
	for {
		_, _, body := c.do("GET", path, "")
		n += len(body["values"].([]any))
		next, _ := body["next"].(string)
		if next == "" {
			break
		}
		path = strings.TrimPrefix(next, c.s.URL())
	}
	if n != 151 {
		t.Fatalf("%d repositories over the pages", n)
	}
}

func TestDataCenterAuthAndPaging(t *testing.T) {
	_, c := dc(t, bitbuckettest.Options{})
	status, h, body := c.do("GET", "/rest/api/1.0/projects/ACME/repos?limit=5000", "")
	if status != 200 || h.Get("X-AUSERNAME") != "bot" || body["limit"].(float64) != 1000 || body["isLastPage"] != false || body["nextPageStart"].(float64) != 1000 {
		t.Fatalf("%d %v limit %v last %v next %v", status, h.Get("X-AUSERNAME"), body["limit"], body["isLastPage"], body["nextPageStart"])
	}
	_, _, body = c.do("GET", "/rest/api/1.0/projects/ACME/repos?limit=1000&start=1000", "")
	if body["isLastPage"] != true || len(body["values"].([]any)) != 501 {
		t.Fatalf("last page %v, %d", body["isLastPage"], len(body["values"].([]any)))
	}
	c.auth = bearer("proj-token")
	if status, _, _ := c.do("GET", "/rest/api/1.0/projects/OTHER/repos", ""); status != 403 {
		t.Fatalf("token outside its project: %d", status)
	}
	c.auth = basic("bot", "wrong")
	if status, h, _ := c.do("GET", "/rest/api/1.0/projects/ACME/repos", ""); status != 401 || h.Get("X-Seraph-LoginReason") == "" {
		t.Fatalf("wrong password: %d", status)
	}
	c.auth = nil
	if status, _, body := c.do("GET", "/rest/api/1.0/application-properties", ""); status != 200 || body["version"] == nil {
		t.Fatalf("anonymous application-properties: %d", status)
	}
}

// TestStatusKeyIsIdempotent: the same key updates the one status.
func TestStatusKeyIsIdempotent(t *testing.T) {
	t.Run("cloud", func(t *testing.T) {
		s, c := cloud(t)
		path := "/2.0/repositories/acme/web/commit/" + sha + "/statuses/build"
		for _, state := range []string{"INPROGRESS", "SUCCESSFUL", "SUCCESSFUL"} {
			if status, _, body := c.do("POST", path, `{"key":"scan","state":"`+state+`","url":"https://x"}`); status != 201 {
				t.Fatalf("%s: %d %v", state, status, body)
			}
		}
		if sts := s.Statuses("acme/web", sha); len(sts) != 1 || sts[0].Updates != 2 || sts[0].State != "SUCCESSFUL" {
			t.Fatalf("%+v", sts)
		}
		for body, want := range map[string]int{
			`{"key":"scan","state":"DONE","url":"https://x"}`:                 400,
			`{"key":"scan","state":"FAILED"}`:                                 400,
			`{"state":"FAILED","url":"https://x"}`:                            400,
			`{"key":"other","state":"STOPPED","url":"https://x"}`:             201,
			`{"key":"scan","state":"FAILED","url":"https://x","name":"scan"}`: 201,
		} {
			if status, _, _ := c.do("POST", path, body); status != want {
				t.Errorf("%s: %d, want %d", body, status, want)
			}
		}
		c.auth = bearer("ws-token")
		if status, _, _ := c.do("POST", path, `{"key":"scan","state":"FAILED","url":"https://x"}`); status != 403 {
			t.Errorf("another creator overwrote the status: %d", status)
		}
		if status, _, _ := c.do("POST", "/2.0/repositories/acme/web/commit/"+bitbuckettest.SHA("nope")+"/statuses/build", `{"key":"k","state":"FAILED","url":"https://x"}`); status != 404 {
			t.Errorf("unknown commit: %d", status)
		}
	})
	t.Run("datacenter", func(t *testing.T) {
		s, c := dc(t, bitbuckettest.Options{})
		path := "/rest/api/1.0/projects/ACME/repos/web/commits/" + sha + "/builds"
		for range 3 {
			if status, _, body := c.do("POST", path, `{"key":"scan","state":"CANCELLED","url":"https://x"}`); status != 204 {
				t.Fatalf("%d %v", status, body)
			}
		}
		if sts := s.Statuses("ACME/web", sha); len(sts) != 1 || sts[0].Updates != 2 {
			t.Fatalf("%+v", sts)
		}
		if status, _, _ := c.do("POST", path, `{"key":"`+strings.Repeat("k", 256)+`","state":"FAILED","url":"https://x"}`); status != 400 {
			t.Errorf("long key: %d", status)
		}
		_, legacy := dc(t, bitbuckettest.Options{LegacyBuildStatus: true})
		status, _, body := legacy.do("POST", path, `{"key":"scan","state":"FAILED","url":"https://x"}`)
		if errs := body["errors"].([]any); status != 404 || errs[0].(map[string]any)["exceptionName"] != nil {
			t.Errorf("legacy-only /builds: %d %v", status, body)
		}
		if status, _, _ := legacy.do("POST", "/rest/build-status/1.0/commits/"+sha, `{"key":"scan","state":"FAILED","url":"https://x"}`); status != 204 {
			t.Errorf("legacy API: %d", status)
		}
	})
}

func TestCommentSemantics(t *testing.T) {
	t.Run("cloud", func(t *testing.T) {
		s, c := cloud(t)
		path := "/2.0/repositories/acme/web/pullrequests/1/comments"
		status, _, body := c.do("POST", path, `{"content":{"raw":"hi"}}`)
		if status != 201 {
			t.Fatalf("%d %v", status, body)
		}
		id := fmt.Sprint(int64(body["id"].(float64)))
		if status, _, _ := c.do("POST", path, `{"content":{"raw":"  "}}`); status != 400 {
			t.Errorf("blank comment: %d", status)
		}
		c.auth = bearer("ws-token")
		if status, _, _ := c.do("PUT", path+"/"+id, `{"content":{"raw":"mine now"}}`); status != 403 {
			t.Errorf("another user's edit: %d", status)
		}
		s.AddToken("ro", bitbuckettest.Token{Name: "ro", Workspace: "acme", Scopes: []string{"pullrequest"}})
		c.auth = bearer("ro")
		if status, _, body := c.do("POST", path, `{"content":{"raw":"x"}}`); status != 403 || !strings.Contains(fmt.Sprint(body), "pullrequest:write") {
			t.Errorf("read-only token posted: %d %v", status, body)
		}
		if status, _, _ := c.do("GET", path, ""); status != 200 {
			t.Errorf("read-only token cannot read: %d", status)
		}
	})
	t.Run("datacenter", func(t *testing.T) {
		s, c := dc(t, bitbuckettest.Options{})
		path := "/rest/api/1.0/projects/ACME/repos/web/pull-requests/1/comments"
		_, _, body := c.do("POST", path, `{"text":"hi"}`)
		id := fmt.Sprint(int64(body["id"].(float64)))
		if status, _, _ := c.do("PUT", path+"/"+id, `{"text":"edit","version":1}`); status != 409 {
			t.Errorf("stale version: %d", status)
		}
		if status, _, _ := c.do("PUT", path+"/"+id, `{"text":"edit","version":0}`); status != 200 {
			t.Errorf("current version: %d", status)
		}
		if status, _, _ := c.do("POST", path, `{"text":"`+strings.Repeat("x", bitbuckettest.MaxDCComment+1)+`"}`); status != 400 {
			t.Errorf("long comment: %d", status)
		}
		_, _, acts := c.do("GET", "/rest/api/1.0/projects/ACME/repos/web/pull-requests/1/activities", "")
		if vs := acts["values"].([]any); len(vs) != 2 || vs[0].(map[string]any)["action"] != "COMMENTED" {
			t.Errorf("activities %v", vs)
		}
		if cs := s.Comments("ACME/web", 1); len(cs) != 1 || cs[0].Version != 1 || cs[0].Text != "edit" {
			t.Errorf("comments %+v", cs)
		}
	})
}

func TestCodeInsightsLimits(t *testing.T) {
	s, c := cloud(t)
	base := "/2.0/repositories/acme/web/commit/" + sha + "/reports/r1"
	if status, _, _ := c.do("POST", base+"/annotations", `[]`); status != 404 {
		t.Errorf("annotations without a report: %d", status)
	}
	if status, _, _ := c.do("PUT", base, `{"title":"t"}`); status != 400 {
		t.Errorf("report without report_type: %d", status)
	}
	if status, _, _ := c.do("PUT", base, `{"title":"t","report_type":"SECURITY","result":"PASSED"}`); status != 200 {
		t.Fatalf("report: %d", status)
	}
	batch := func(from, n int) string {
		var items []string
		for i := from; i < from+n; i++ {
			items = append(items, fmt.Sprintf(`{"external_id":"a%d","annotation_type":"BUG","summary":"s"}`, i))
		}
		return "[" + strings.Join(items, ",") + "]"
	}
	if status, _, _ := c.do("POST", base+"/annotations", batch(0, 101)); status != 400 {
		t.Errorf("101 in one call: %d", status)
	}
	for i := range 10 {
		if status, _, _ := c.do("POST", base+"/annotations", batch(i*100, 100)); status != 200 {
			t.Fatalf("batch %d: %d", i, status)
		}
	}
	if status, _, _ := c.do("POST", base+"/annotations", batch(0, 100)); status != 200 {
		t.Errorf("the same external ids again: %d", status)
	}
	if status, _, _ := c.do("POST", base+"/annotations", batch(1000, 1)); status != 400 {
		t.Errorf("the 1001st: %d", status)
	}
	if n := len(s.Reports("acme/web", sha)["r1"].Annotations); n != 1000 {
		t.Fatalf("%d annotations", n)
	}
}

func TestRateLimit(t *testing.T) {
	s, c := dc(t, bitbuckettest.Options{RateLimit: 10})
	s.SetRemaining(1)
	if status, h, _ := c.do("GET", "/rest/api/1.0/application-properties", ""); status != 200 || h.Get("X-RateLimit-Remaining") != "0" {
		t.Fatalf("%d %v", status, h)
	}
	if status, h, _ := c.do("GET", "/rest/api/1.0/application-properties", ""); status != 429 || h.Get("Retry-After") == "" {
		t.Fatalf("%d %v", status, h)
	}
	cs, cc := cloud(t)
	cs.SetRemaining(1)
	if _, h, _ := cc.do("GET", "/2.0/user", ""); h.Get("X-RateLimit-NearLimit") != "true" {
		t.Fatalf("near limit %v", h)
	}
	if status, _, _ := cc.do("GET", "/2.0/user", ""); status != 429 {
		t.Fatalf("%d", status)
	}
}
