package github_test

import (
	"errors"
	"strings"
	"testing"

	"inthub.dev/pkg/connectors/github"
)

// The seed's endpoint contract: one API root, github.com → api.github.com,
// a GHES root → <root>/api/v3, an explicit /api/v3 kept, trailing slashes
// normalised, never the origin root.
func TestNormalizeEndpoint(t *testing.T) {
	for _, tc := range []struct {
		in, want string // want "" = rejected
	}{
		{"", "https://api.github.com/"},
		{"github.com", "https://api.github.com/"},
		{"GitHub.com", "https://api.github.com/"},
		{"https://github.com", "https://api.github.com/"},
		{"https://github.com/", "https://api.github.com/"},
		{"https://github.com//", "https://api.github.com/"},
		{"https://www.github.com", "https://api.github.com/"},
		{"https://api.github.com", "https://api.github.com/"},
		{"https://api.github.com/", "https://api.github.com/"},
		{"https://github.com:443", "https://api.github.com/"},
		{"  https://github.com  ", "https://api.github.com/"},
		{"https://ghe.example.com", "https://ghe.example.com/api/v3/"},
		{"https://ghe.example.com/", "https://ghe.example.com/api/v3/"},
		{"ghe.example.com", "https://ghe.example.com/api/v3/"},
		{"https://GHE.Example.com", "https://ghe.example.com/api/v3/"},
		{"https://ghe.example.com/api/v3", "https://ghe.example.com/api/v3/"},
		{"https://ghe.example.com/api/v3/", "https://ghe.example.com/api/v3/"},
		{"https://ghe.example.com:8443", "https://ghe.example.com:8443/api/v3/"},
		{"https://ghe.example.com:443/api/v3", "https://ghe.example.com/api/v3/"},
		{"https://proxy.example.com/github/api/v3", "https://proxy.example.com/github/api/v3/"},
		{"https://10.1.2.3", "https://10.1.2.3/api/v3/"},
		{"https://[2001:db8::1]", "https://[2001:db8::1]/api/v3/"},
		{"https://[2001:db8::1]:8443/api/v3/", "https://[2001:db8::1]:8443/api/v3/"},
		{"https://octocorp.ghe.com", "https://api.octocorp.ghe.com/"},
		{"https://api.octocorp.ghe.com/", "https://api.octocorp.ghe.com/"},

		// Plain http: the JWT and the installation tokens would travel in clear.
		{"http://github.com", ""},
		{"http://ghe.example.com", ""},
		{"http://ghe.example.com/api/v3", ""},
		// A path that is neither a root nor an API root.
		{"https://ghe.example.com/api", ""},
		{"https://ghe.example.com/api/v4", ""},
		{"https://ghe.example.com/app", ""},
		{"https://ghe.example.com/api/v3/app", ""},
		{"https://ghe.example.com/x/../api/v3", ""},
		{"https://ghe.example.com//api/v3", ""},
		{"https://ghe.example.com/%2e%2e/api/v3", ""},
		{"https://github.com/acme", ""},
		{"https://api.github.com/api/v3", ""},
		{"https://github.com:8443", ""},
		// Credentials, queries, fragments.
		{"https://user:pass@ghe.example.com", ""},
		{"https://ghe.example.com?x=1", ""},
		{"https://ghe.example.com/#frag", ""},
		// Garbage.
		{"ftp://ghe.example.com", ""},
		{"https://", ""},
		{"://", ""},
		{"ghe example.com", ""},
		{"https://ghe.example.com:notaport", ""},
		{"mailto:admin@example.com", ""},
		{"https://.ghe.com", ""},
	} {
		got, err := github.NormalizeEndpoint(tc.in)
		switch {
		case tc.want == "" && err == nil:
			t.Errorf("NormalizeEndpoint(%q) = %q, want an error", tc.in, got)
		case tc.want == "" && !errors.Is(err, github.ErrEndpoint):
			t.Errorf("NormalizeEndpoint(%q): error %v does not wrap ErrEndpoint", tc.in, err)
		case tc.want != "" && err != nil:
			t.Errorf("NormalizeEndpoint(%q): %v, want %q", tc.in, err, tc.want)
		case tc.want != "" && got != tc.want:
			t.Errorf("NormalizeEndpoint(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestNormalizeEndpointHidesCredentials(t *testing.T) {
	_, err := github.NormalizeEndpoint("https://admin:hunter2@ghe.example.com")
	if err == nil {
		t.Fatal("accepted an endpoint with credentials")
	}
	if got := err.Error(); contains(got, "hunter2") {
		t.Errorf("the error quotes the password: %s", got)
	}
}

// Normalising twice changes nothing.
func TestNormalizeEndpointIdempotent(t *testing.T) {
	for _, in := range []string{"github.com", "https://ghe.example.com", "https://ghe.example.com:8443/api/v3", "https://octocorp.ghe.com"} {
		once, err := github.NormalizeEndpoint(in)
		if err != nil {
			t.Fatal(err)
		}
		twice, err := github.NormalizeEndpoint(once)
		if err != nil || twice != once {
			t.Errorf("NormalizeEndpoint(%q) = %q, %v; want %q", once, twice, err, once)
		}
	}
}

func contains(s, sub string) bool { return len(sub) > 0 && strings.Contains(s, sub) }
