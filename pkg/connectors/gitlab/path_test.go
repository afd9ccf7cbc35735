package gitlab

import (
	"net/url"
	"strings"
	"testing"

	"inthub.dev/pkg/fault"
)

func TestProjectPathEncoding(t *testing.T) {
	root, err := APIRoot("https://gitlab.example.com")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		path    string
		wantURI string // request URI of its branches, "" when refused
		wantErr string
	}{
		{"two levels", "acme/api", "/api/v4/projects/acme%2Fapi/repository/branches", ""},
		{"nested groups", "acme/platform/team/api", "/api/v4/projects/acme%2Fplatform%2Fteam%2Fapi/repository/branches", ""},
		{"dots dashes underscores", "my.group/sub_group/my-project.v2", "/api/v4/projects/my.group%2Fsub_group%2Fmy-project.v2/repository/branches", ""},
		{"numeric id", "4711", "/api/v4/projects/4711/repository/branches", ""},
		{"digits in a path", "acme/2024", "/api/v4/projects/acme%2F2024/repository/branches", ""},
		{"leading slash", "/acme/api", "", "must not start or end with a slash"},
		{"trailing slash", "acme/api/", "", "must not start or end with a slash"},
		{"doubled slash", "acme//api", "", "doubled slash"},
		{"no namespace", "api", "", "needs its namespace"},
		{"empty", "", "", "empty"},
		{"space", "acme/my project", "", "paths allow only"},
		{"encoded already", "acme%2Fapi", "", "needs its namespace"},
		{"dot dot", "acme/../admin", "", "not a path name"},
		{"single dot", "acme/./api", "", "not a path name"},
		{"leading dash", "acme/-api", "", "starts with '-'"},
		{"ends with .git", "acme/api.git", "", "ends with"},
		{"ends with .atom", "acme/api.atom", "", "ends with"},
		{"ends with dot", "acme/api.", "", "ends with"},
		{"query injection", "acme/api?private_token=x", "", "paths allow only"},
		{"hash", "acme/api#x", "", "paths allow only"},
		{"non-ascii", "acme/äpi", "", "paths allow only"},
		{"leading zero is not an id", "0815", "", "needs its namespace"},
		{"too deep", strings.Repeat("g/", 21) + "p", "", "nested deeper"},
		{"segment too long", "acme/" + strings.Repeat("a", 256), "", "longer than"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := checkPath("project", tt.path, 2)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("checkPath(%q) = %v, want an error containing %q", tt.path, err, tt.wantErr)
				}
				if fault.ClassOf(err) != fault.ClassPermanent {
					t.Fatalf("class = %v, want permanent", fault.ClassOf(err))
				}
				return
			}
			if err != nil {
				t.Fatalf("checkPath(%q) = %v", tt.path, err)
			}
			u := apiURL(root, nil, "projects", tt.path, "repository", "branches")
			if got := u.RequestURI(); got != tt.wantURI {
				t.Fatalf("request URI = %q, want %q", got, tt.wantURI)
			}
			// What goes on the wire must parse back to the same project.
			back, err := url.Parse(u.String())
			if err != nil {
				t.Fatal(err)
			}
			if back.EscapedPath() != tt.wantURI {
				t.Fatalf("round trip = %q, want %q", back.EscapedPath(), tt.wantURI)
			}
		})
	}
}

func TestGroupPath(t *testing.T) {
	for _, ok := range []string{"acme", "acme/platform", "a.b/c-d/e_f"} {
		if err := checkPath("group", ok, 1); err != nil {
			t.Errorf("group %q refused: %v", ok, err)
		}
	}
	for _, bad := range []string{"", "/acme", "acme/", "acme platform", "acme/..", "4711x/"} {
		if err := checkPath("group", bad, 1); err == nil {
			t.Errorf("group %q accepted", bad)
		}
	}
}

func TestAPIURLKeepsRelativeRoot(t *testing.T) {
	root, err := APIRoot("https://example.com/git%20lab/")
	if err != nil {
		t.Fatal(err)
	}
	u := apiURL(root, url.Values{"per_page": {"1"}}, "projects", "a/b", "repository", "tags")
	want := "https://example.com/git%20lab/api/v4/projects/a%2Fb/repository/tags?per_page=1"
	if u.String() != want {
		t.Fatalf("url = %s, want %s", u, want)
	}
}

func TestAPIRoot(t *testing.T) {
	tests := []struct {
		in, want, wantErr string
	}{
		{"", "https://gitlab.com/api/v4", ""},
		{"https://gitlab.com", "https://gitlab.com/api/v4", ""},
		{"https://gitlab.com/", "https://gitlab.com/api/v4", ""},
		{"https://GitLab.Example.com", "https://gitlab.example.com/api/v4", ""},
		{"https://example.com/gitlab", "https://example.com/gitlab/api/v4", ""},
		{"https://example.com/gitlab/api/v4/", "https://example.com/gitlab/api/v4", ""},
		{"http://10.0.0.5:8080", "http://10.0.0.5:8080/api/v4", ""},
		{"https://gitlab.com/api/v4", "https://gitlab.com/api/v4", ""},
		{"https://gitlab.com/api/v3", "", "removed API v3"},
		{"ftp://gitlab.com", "", "absolute http(s) URL"},
		{"gitlab.com", "", "absolute http(s) URL"},
		{"https://user:pw@gitlab.com", "", "must not contain credentials"},
		{"https://gitlab.com/?private_token=x", "", "query"},
		{"https://gitlab.com/#x", "", "fragment"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			u, err := APIRoot(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("APIRoot(%q) = %v, %v; want error %q", tt.in, u, err, tt.wantErr)
				}
				if strings.Contains(err.Error(), "pw") {
					t.Fatalf("error quotes the userinfo: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if u.String() != tt.want {
				t.Fatalf("APIRoot(%q) = %s, want %s", tt.in, u, tt.want)
			}
		})
	}
}
