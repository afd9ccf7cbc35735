package bitbuckettest_test

import (
	"net/http"
	"strings"
	"testing"

	"inthub.dev/pkg/connectors/bitbucket/bitbuckettest"
)

func TestCloudScopeHeaders(t *testing.T) {
	_, c := cloud(t)
	for _, tc := range []struct {
		name             string
		auth             func(*http.Request)
		path             string
		status           int
		scopes, accepted string
		credential       string
	}{
		{"app password", basic("bot", "app-pw"), "/2.0/repositories/acme?pagelen=1", http.StatusOK, "account, repository, pullrequest:write", "repository", "app_password"},
		{"workspace token", bearer("ws-token"), "/2.0/repositories/acme/web/pullrequests/1/comments", http.StatusOK, "repository, pullrequest:write", "pullrequest", "workspace_access_token"},
		{"repository token", bearer("repo-token"), "/2.0/repositories/acme?pagelen=1", http.StatusOK, "repository, pullrequest:write", "repository", "repo_access_token"},
		// A refusal for a missing scope reports the scopes too.
		{"refused for a scope", basic("reader", "pw"), "/2.0/repositories/acme/web/pullrequests/1/comments", http.StatusForbidden, "repository", "pullrequest", "app_password"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c.auth = tc.auth
			status, h, _ := c.do(http.MethodGet, tc.path, "")
			if status != tc.status || h.Get("X-OAuth-Scopes") != tc.scopes || h.Get("X-Accepted-OAuth-Scopes") != tc.accepted ||
				h.Get("X-Credential-Type") != tc.credential {
				t.Errorf("%d scopes %q accepted %q credential %q", status, h.Get("X-OAuth-Scopes"), h.Get("X-Accepted-OAuth-Scopes"), h.Get("X-Credential-Type"))
			}
		})
	}
	c.auth = bearer("nope")
	if status, h, _ := c.do(http.MethodGet, "/2.0/repositories/acme", ""); status != http.StatusUnauthorized || h.Get("X-OAuth-Scopes") != "" {
		t.Errorf("a refused credential: %d, scopes %q", status, h.Get("X-OAuth-Scopes"))
	}
}

func TestDataCenterPermissions(t *testing.T) {
	s := bitbuckettest.New(t, bitbuckettest.Options{Flavor: bitbuckettest.DataCenter})
	s.AddRepo(bitbuckettest.Repo{Owner: "ACME", Slug: "api"})
	s.AddRepo(bitbuckettest.Repo{Owner: "ACME", Slug: "web"})
	s.AddRepo(bitbuckettest.Repo{Owner: "OPS", Slug: "infra"})
	s.AddUser(bitbuckettest.User{Name: "admin", Password: "pw"})
	s.AddToken("reader", bitbuckettest.Token{Projects: []string{"ACME"}, Permissions: []string{bitbuckettest.ProjectRead}})
	s.AddToken("repo-writer", bitbuckettest.Token{Projects: []string{"ACME"}, Permissions: []string{bitbuckettest.RepoWrite}})
	c := client{t: t, s: s, hc: s.Client()}

	slugs := func(out map[string]any, field string) string {
		var names []string
		for _, v := range out["values"].([]any) {
			names = append(names, v.(map[string]any)[field].(string))
		}
		return strings.Join(names, ",")
	}
	for _, tc := range []struct {
		name   string
		auth   func(*http.Request)
		path   string
		status int
		want   string
	}{
		{"every project", basic("admin", "pw"), "/rest/api/1.0/projects", http.StatusOK, "ACME,OPS"},
		{"projects with write", basic("admin", "pw"), "/rest/api/1.0/projects?permission=PROJECT_WRITE", http.StatusOK, "ACME,OPS"},
		{"projects with admin", basic("admin", "pw"), "/rest/api/1.0/projects?permission=PROJECT_ADMIN", http.StatusOK, ""},
		{"a reader's projects", bearer("reader"), "/rest/api/1.0/projects?permission=PROJECT_READ", http.StatusOK, "ACME"},
		{"a repository writer holds no project permission", bearer("repo-writer"), "/rest/api/1.0/projects?permission=PROJECT_READ", http.StatusOK, ""},
		{"a repository writer sees the project", bearer("repo-writer"), "/rest/api/1.0/projects", http.StatusOK, "ACME"},
		{"repos of a project", basic("admin", "pw"), "/rest/api/1.0/repos?projectkey=acme", http.StatusOK, "api,web"},
		{"a reader cannot write", bearer("reader"), "/rest/api/1.0/repos?projectkey=ACME&permission=REPO_WRITE", http.StatusOK, ""},
		{"a reader reads", bearer("reader"), "/rest/api/1.0/repos?permission=REPO_READ", http.StatusOK, "api,web"},
		{"a repository writer writes", bearer("repo-writer"), "/rest/api/1.0/repos?projectkey=ACME&permission=REPO_WRITE", http.StatusOK, "api,web"},
		{"a project permission for repositories", bearer("reader"), "/rest/api/1.0/repos?permission=PROJECT_READ", http.StatusBadRequest, ""},
		{"an unknown permission", bearer("reader"), "/rest/api/1.0/projects?permission=ADMIN", http.StatusBadRequest, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c.auth = tc.auth
			status, h, out := c.do(http.MethodGet, tc.path, "")
			if status != tc.status {
				t.Fatalf("%d %v, want %d", status, out, tc.status)
			}
			if h.Get("X-OAuth-Scopes") != "" {
				t.Error("Data Center sent X-OAuth-Scopes")
			}
			if status != http.StatusOK {
				return
			}
			field := "slug"
			if strings.Contains(tc.path, "/projects") {
				field = "key"
			}
			if got := slugs(out, field); got != tc.want {
				t.Errorf("listed %q, want %q", got, tc.want)
			}
		})
	}
}
