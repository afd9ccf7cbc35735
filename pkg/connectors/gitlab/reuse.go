package gitlab

import (
	"context"
	"net/url"

	"inthub.dev/pkg/connectors"
)

// What connectors built on a GitLab integration (ci.gitlab_ci) reuse:
// the credential (an access token or a CI job token, resolved at the
// call), the request with its timeout, redirect rule, body cap and error
// classification, GitLab's pagination, and the path rules.

// Get performs an authenticated GET of the API path elems (each element
// one path segment: a project path is one element, sent %2F-encoded),
// with query and the page o asks for (per_page at most 100, the cursor of
// a previous page), decoding the JSON answer into out. It returns the
// next page's cursor ("" on the last page) and the rate-limit budget
// GitLab reported. op names the call in errors ("list pipelines of
// acme/api").
func (c *Connector) Get(ctx context.Context, op string, elems []string, query url.Values, o connectors.ListOptions, out any) (next string, rl *connectors.RateLimit, err error) {
	cred, err := c.credential(ctx)
	if err != nil {
		return "", nil, err
	}
	q := url.Values{}
	for k, vs := range query {
		q[k] = append([]string(nil), vs...)
	}
	if err := pageQuery(q, o); err != nil {
		return "", nil, err
	}
	resp, err := c.get(ctx, cred, call{op: op, elems: elems, query: q}, out)
	return resp.next, resp.rateLimit, err
}

// UsesJobToken reports whether the integration authenticates with a CI
// job token, which GitLab lets call a short list of endpoints of the
// job's own project only.
func (c *Connector) UsesJobToken() bool { return c.jobToken() }

// CheckProject checks a project reference (a full path "group/project"
// or a numeric id) by GitLab's rules, as this connector does before a
// call.
func CheckProject(ref string) error { return checkPath("project", ref, 2) }

// StatusOf is the HTTP status of a failed call, 0 for a transport failure.
func StatusOf(err error) int { return statusOf(err) }
