package github_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"

	"inthub.dev/pkg/connectors/github/githubtest"
	"inthub.dev/pkg/fault"
)

// narrowed answers the token exchange as GitHub does for an installation
// that accepted only some of the app's permissions: the fake's answer
// with its permissions replaced (and the GHES version header, when set).
type narrowed struct {
	next  http.RoundTripper
	perms map[string]string
	ghes  string
}

func (n narrowed) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := n.next.RoundTrip(req)
	if err != nil || !strings.HasSuffix(req.URL.Path, "/access_tokens") || resp.StatusCode != http.StatusCreated {
		return resp, err
	}
	var body map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return nil, err
	}
	resp.Body.Close()
	body["permissions"] = n.perms
	b, _ := json.Marshal(body)
	resp.Body = io.NopCloser(bytes.NewReader(b))
	resp.ContentLength = int64(len(b))
	resp.Header.Set("Content-Length", strconv.Itoa(len(b)))
	if n.ghes != "" {
		resp.Header.Set("X-Github-Enterprise-Version", n.ghes)
	}
	return resp, nil
}

// TestScopes: the permissions of a fresh installation token against
// checks, pull_requests and statuses at write: read is not enough; the
// missing ones come with where to grant them and a command to check,
// naming no credential.
func TestScopes(t *testing.T) {
	for _, tc := range []struct {
		name        string
		prefix      string
		perms       map[string]string
		ghes        string
		wantMissing []string
		wantVersion string
		wantURL     string
	}{
		{name: "all granted", perms: nil, wantVersion: "2022-11-28"},
		{name: "admin covers write", perms: map[string]string{"checks": "admin", "pull_requests": "write", "statuses": "write", "metadata": "read"},
			wantVersion: "2022-11-28"},
		{name: "read is not write", perms: map[string]string{"checks": "read", "pull_requests": "write", "metadata": "read"},
			wantMissing: []string{"checks:write", "statuses:write"}, wantURL: "https://github.com/settings/apps/<app-slug>/permissions"},
		{name: "GHES", prefix: "/api/v3", perms: map[string]string{"metadata": "read"}, ghes: "3.14.2",
			wantMissing: []string{"checks:write", "pull_requests:write", "statuses:write"},
			wantVersion: "GitHub Enterprise Server 3.14.2", wantURL: "https://ghe.example.com/settings/apps/<app-slug>/permissions"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := githubtest.New(t, githubtest.Options{Prefix: tc.prefix})
			c, s := newConn(t, srv, func(s *setup) {
				if tc.perms != nil || tc.ghes != "" {
					cl := srv.Client()
					cl.Transport = narrowed{next: cl.Transport, perms: tc.perms, ghes: tc.ghes}
					s.cfg.HTTPClient = cl
				}
			})
			rep, err := c.Scopes(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(rep.Required, []string{"checks:write", "pull_requests:write", "statuses:write"}) ||
				!slices.Equal(rep.Missing, tc.wantMissing) {
				t.Errorf("required %v, missing %v, want missing %v (granted %v)", rep.Required, rep.Missing, tc.wantMissing, rep.Granted)
			}
			if tc.wantVersion != "" && rep.APIVersion != tc.wantVersion {
				t.Errorf("version %q, want %q", rep.APIVersion, tc.wantVersion)
			}
			if len(tc.wantMissing) > 0 {
				if len(rep.Suggestions) == 0 || !strings.Contains(rep.Suggestions[0], tc.wantURL) ||
					!slices.Equal(rep.Commands, []string{"gh api /app/installations/2 --jq .permissions"}) {
					t.Errorf("suggestions %q, commands %q", rep.Suggestions, rep.Commands)
				}
			}
			out, _ := json.Marshal(rep)
			for _, sec := range append(pemSecrets(srv.KeyPEM()), srv.LastToken()) {
				if sec != "" && strings.Contains(string(out), sec) {
					t.Errorf("the report holds a credential: %s", out)
				}
			}
			if n := s.secrets.resolutions(); n == 0 {
				t.Error("the key was never resolved")
			}
			if len(srv.Violations()) > 0 {
				t.Errorf("requests outside the API: %v", srv.Violations())
			}
		})
	}
}

// TestScopesRefused: an app key GitHub refuses is a classified failure,
// permanent, as for a test connection.
func TestScopesRefused(t *testing.T) {
	srv := githubtest.New(t, githubtest.Options{})
	srv.Fail(githubtest.RouteAccessTokens, githubtest.Unauthorized())
	c, _ := newConn(t, srv, nil)
	_, err := c.Scopes(t.Context())
	if err == nil || fault.ClassOf(err) != fault.ClassPermanent {
		t.Errorf("Scopes = %v (class %v), want a permanent failure", err, fault.ClassOf(err))
	}
}
