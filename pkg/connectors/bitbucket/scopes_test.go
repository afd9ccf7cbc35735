package bitbucket

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"inthub.dev/pkg/connectors"
	"inthub.dev/pkg/connectors/bitbucket/bitbuckettest"
	"inthub.dev/pkg/fault"
)

func TestScopes(t *testing.T) {
	cloudPassword, cloudBearer := flavours[0], flavours[1]
	dcPass, dcBearer := flavours[2], flavours[3]
	for _, tt := range []struct {
		name     string
		f        flavour
		setup    func(*bitbuckettest.Server)
		granted  string
		missing  string
		version  string
		suggests string // a suggestion contains it, when some is missing
		err      func(error) bool
	}{
		{name: "cloud app password", f: cloudPassword, granted: "account,pullrequest:write,repository", version: "2.0"},
		{name: "cloud app password without pullrequest:write", f: cloudPassword,
			setup: func(s *bitbuckettest.Server) {
				s.AddUser(bitbuckettest.User{Name: botUser, Password: appPassword, Scopes: []string{"repository"}})
			},
			granted: "repository", missing: "pullrequest:write", version: "2.0", suggests: "app-passwords"},
		{name: "cloud access token with pullrequest:write alone", f: cloudBearer,
			setup: func(s *bitbuckettest.Server) {
				s.AddToken(cloudToken, bitbuckettest.Token{Workspace: workspace, Scopes: []string{"pullrequest:write"}})
			},
			granted: "pullrequest:write", version: "2.0"},
		{name: "cloud access token that reads pull requests only", f: cloudBearer,
			setup: func(s *bitbuckettest.Server) {
				s.AddToken(cloudToken, bitbuckettest.Token{Workspace: workspace, Scopes: []string{"pullrequest"}})
			},
			granted: "pullrequest", missing: "pullrequest:write", version: "2.0", suggests: "access-tokens"},
		// The repositories are refused (403): the refusal lists the scopes.
		{name: "cloud access token without repository", f: cloudBearer,
			setup: func(s *bitbuckettest.Server) {
				s.AddToken(cloudToken, bitbuckettest.Token{Workspace: workspace, Scopes: []string{"account"}})
			},
			granted: "account", missing: "pullrequest:write,repository", version: "2.0", suggests: "access token"},
		{name: "cloud revoked token", f: cloudBearer, setup: func(s *bitbuckettest.Server) { s.Revoke(cloudToken) },
			err: func(err error) bool {
				return fault.ClassOf(err) == fault.ClassPermanent && statusOf(err) == http.StatusUnauthorized
			}},
		{name: "cloud answers without scopes", f: cloudBearer,
			setup: func(s *bitbuckettest.Server) {
				s.Fail(bitbuckettest.RouteRepos, bitbuckettest.Fault{Status: http.StatusOK, Body: `{"values":[],"pagelen":1}`})
			},
			err: func(err error) bool { return errors.Is(err, connectors.ErrScopesNotReported) }},
		{name: "data center user", f: dcPass, granted: "PROJECT_READ,REPO_READ,REPO_WRITE", version: "8.19.1"},
		{name: "data center project reader", f: dcBearer,
			setup: func(s *bitbuckettest.Server) {
				s.AddToken(dcToken, bitbuckettest.Token{Projects: []string{projectKey}, Permissions: []string{bitbuckettest.ProjectRead}})
			},
			granted: "PROJECT_READ,REPO_READ", version: "8.19.1"},
		{name: "data center repository writer", f: dcBearer,
			setup: func(s *bitbuckettest.Server) {
				s.AddToken(dcToken, bitbuckettest.Token{Projects: []string{projectKey}, Permissions: []string{bitbuckettest.RepoWrite}})
			},
			granted: "REPO_READ,REPO_WRITE", missing: "PROJECT_READ", version: "8.19.1", suggests: "reads some repositories"},
		{name: "data center token of another project", f: dcBearer,
			setup: func(s *bitbuckettest.Server) {
				s.AddToken(dcToken, bitbuckettest.Token{Projects: []string{"other"}, Permissions: []string{bitbuckettest.ProjectAdmin}})
			},
			missing: "PROJECT_READ", version: "8.19.1", suggests: "HTTP access token"},
		{name: "data center project on a later page", f: dcPass,
			setup: func(s *bitbuckettest.Server) {
				for i := range 1000 { // A0000… sort before ACME
					s.AddRepo(bitbuckettest.Repo{Owner: fmt.Sprintf("A%04d", i), Slug: "r"})
				}
			},
			granted: "PROJECT_READ,REPO_READ,REPO_WRITE", version: "8.19.1"},
		{name: "data center revoked token", f: dcBearer, setup: func(s *bitbuckettest.Server) { s.Revoke(dcToken) },
			err: func(err error) bool {
				return fault.ClassOf(err) == fault.ClassPermanent && statusOf(err) == http.StatusUnauthorized
			}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s := seeded(t, tt.f)
			if tt.setup != nil {
				tt.setup(s)
			}
			c := newConn(t, s, tt.f, opts{})
			rep, err := c.Scopes(t.Context())
			if tt.err != nil {
				if !tt.err(err) {
					t.Fatalf("err %v (class %v)", err, fault.ClassOf(err))
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if g := strings.Join(rep.Granted, ","); g != tt.granted {
				t.Errorf("granted %q, want %q", g, tt.granted)
			}
			if m := strings.Join(rep.Missing, ","); m != tt.missing {
				t.Errorf("missing %q, want %q", m, tt.missing)
			}
			if rep.APIVersion != tt.version || len(rep.Required) == 0 {
				t.Errorf("version %q required %v", rep.APIVersion, rep.Required)
			}
			if tt.missing == "" {
				if len(rep.Suggestions)+len(rep.Commands) != 0 {
					t.Errorf("suggestions %v, commands %v for nothing missing", rep.Suggestions, rep.Commands)
				}
				return
			}
			if !strings.Contains(strings.Join(rep.Suggestions, "\n"), tt.suggests) || len(rep.Commands) == 0 {
				t.Errorf("suggestions %q lack %q (commands %v)", rep.Suggestions, tt.suggests, rep.Commands)
			}
			for _, cmd := range rep.Commands {
				for _, secret := range []string{appPassword, cloudToken, dcPassword, dcToken} {
					if strings.Contains(cmd, secret) {
						t.Errorf("command %q holds a secret", cmd)
					}
				}
				if !strings.Contains(cmd, s.URL()) || !strings.Contains(cmd, "$BITBUCKET_") {
					t.Errorf("command %q: want the instance's URL and a placeholder for the credential", cmd)
				}
			}
		})
	}
}
