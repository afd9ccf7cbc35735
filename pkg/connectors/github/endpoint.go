package github

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"path"
	"regexp"
	"strings"
)

// DefaultEndpoint is what an empty endpoint means.
const DefaultEndpoint = "https://github.com"

// ErrEndpoint is wrapped by every error NormalizeEndpoint returns.
var ErrEndpoint = errors.New("invalid GitHub endpoint")

// prefixPath is what may stand before /api/v3 when a GHES sits behind a
// reverse proxy under a path: plain segments, nothing that a URL resolver
// would rewrite ("..", "//", escapes).
var prefixPath = regexp.MustCompile(`^(/[A-Za-z0-9_~-][A-Za-z0-9._~-]*)*$`)

// NormalizeEndpoint turns what an operator typed into the one API root the
// connector calls, always ending in "/" so that every probe ("app",
// "rate_limit") is a path relative to it:
//
//	github.com, https://github.com, https://api.github.com → https://api.github.com/
//	https://ghe.example.com                                → https://ghe.example.com/api/v3/
//	https://ghe.example.com/api/v3                         → https://ghe.example.com/api/v3/ (kept)
//
// A GHES root is never used as the API root: an origin-root "/app" on a
// GHES is its web UI, which answers 200 with HTML or a login redirect and
// makes a broken integration look healthy. Plain http is refused, because
// the app's JWT and the installation tokens would cross the network in
// clear; so are credentials, a query or a fragment in the URL, and any
// path other than a root or one ending in /api/v3.
func NormalizeEndpoint(raw string) (apiRoot string, err error) {
	e, err := normalize(raw)
	return e.api, err
}

// endpoints are the roots of one GitHub: the REST API and the uploads
// host (release assets; GHES serves it under /api/uploads).
type endpoints struct {
	api     string
	uploads string
}

func normalize(raw string) (endpoints, error) {
	fail := func(format string, args ...any) (endpoints, error) {
		return endpoints{}, fmt.Errorf("%w: "+format, append([]any{ErrEndpoint}, args...)...)
	}
	s := strings.TrimSpace(raw)
	if s == "" {
		s = DefaultEndpoint
	}
	if !strings.Contains(s, "://") {
		// "github.com" or "ghe.example.com": a bare host means https.
		s = "https://" + s
	}
	u, err := url.Parse(s)
	if err != nil {
		return fail("%q is not a URL", raw)
	}
	switch u.Scheme {
	case "https":
	case "http":
		return fail("%q must use https: the app's JWT and installation tokens must not cross the network in clear", raw)
	default:
		return fail("%q must be an https URL", raw)
	}
	if u.Opaque != "" || u.Host == "" {
		return fail("%q has no host", raw)
	}
	if u.User != nil {
		// Not echoed: the userinfo may be a password.
		return fail("the endpoint must not contain credentials; the app authenticates with its private key")
	}
	if u.RawQuery != "" || u.ForceQuery || u.Fragment != "" {
		return fail("%q must not have a query or a fragment", raw)
	}
	host := strings.TrimSuffix(strings.ToLower(u.Hostname()), ".")
	if host == "" {
		return fail("%q has no host", raw)
	}
	port := u.Port()
	p := strings.TrimRight(u.Path, "/")
	if u.RawPath != "" || path.Clean("/"+p) != "/"+strings.TrimPrefix(p, "/") {
		return fail("%q has a path that is not plain", raw)
	}

	switch {
	case host == "github.com" || host == "www.github.com" || host == "api.github.com":
		if port != "" && port != "443" {
			return fail("%q: github.com is served on port 443 only", raw)
		}
		if p != "" {
			return fail("%q: give https://github.com without a path (an organisation goes in the organization field)", raw)
		}
		return endpoints{api: "https://api.github.com/", uploads: "https://uploads.github.com/"}, nil

	case strings.HasSuffix(host, ".ghe.com"):
		// GitHub Enterprise Cloud with data residency: the API is on its
		// own host, as for github.com, not under /api/v3.
		sub := strings.TrimPrefix(strings.TrimSuffix(host, ".ghe.com"), "api.")
		if sub == "" || strings.Contains(sub, ".") || p != "" || (port != "" && port != "443") {
			return fail("%q: give a GHE.com endpoint as https://<subdomain>.ghe.com", raw)
		}
		return endpoints{
			api:     "https://api." + sub + ".ghe.com/",
			uploads: "https://uploads." + sub + ".ghe.com/",
		}, nil
	}

	// GitHub Enterprise Server: the API lives under <root>/api/v3.
	prefix, explicit := strings.CutSuffix(p, "/api/v3")
	if !explicit && p != "" {
		return fail("%q: give the server's root (https://ghe.example.com) or its API root (https://ghe.example.com/api/v3)", raw)
	}
	if !prefixPath.MatchString(prefix) {
		return fail("%q has a path that is not plain", raw)
	}
	hostport := host
	if strings.Contains(host, ":") {
		hostport = "[" + host + "]"
	}
	if port != "" && port != "443" {
		hostport = net.JoinHostPort(host, port)
	}
	origin := "https://" + hostport
	return endpoints{
		api:     origin + prefix + "/api/v3/",
		uploads: origin + prefix + "/api/uploads/",
	}, nil
}
