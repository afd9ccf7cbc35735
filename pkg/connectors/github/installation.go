package github

import (
	"context"

	gh "github.com/google/go-github/v62/github"
)

// Installation runs f with the installation's go-github client (the
// installation token, the API root, the body cap and the redirect rule of
// this connector), bounded by the per-request timeout, and classifies its
// failure as this connector's own calls are. It is for connectors built
// on a GitHub App integration (ci.github_actions). name says what f does
// ("list the workflows of acme/api"); repo, when set, is the repository a
// 404 is about; perm, when set, is the installation permission a 403
// means is missing ("actions:read").
func (c *Connector) Installation(ctx context.Context, name, repo, perm string, f func(ctx context.Context, cl *gh.Client) error) error {
	kind := opInstallation
	if repo != "" {
		kind = opRepo
	}
	return c.call(ctx, op{kind: kind, name: name, repo: repo, perm: perm}, func(ctx context.Context) error {
		return f(ctx, c.inst)
	})
}
