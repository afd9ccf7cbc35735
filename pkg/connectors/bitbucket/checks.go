package bitbucket

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"inthub.dev/pkg/connectors"
	"inthub.dev/pkg/fault"
)

// lowHeadroom is the rate-limit fraction under which the integration is
// degraded (DESIGN §7: headroom > 10 %).
const lowHeadroom = 0.10

// Capabilities reported as Checks.
const (
	CheckUser     = "user"     // Cloud, app password / API token: GET /2.0/user
	CheckVersion  = "version"  // Data Center: application-properties
	CheckRepos    = "repos"    // one page of the workspace's / project's repositories
	CheckBranches = "branches" // one branch of the first repository (test only)
)

// run collects the checks of one TestConnection or CheckHealth.
type run struct {
	c       *Connector
	cred    credential
	start   time.Time
	checks  []connectors.Check
	details map[string]string
	rate    *connectors.RateLimit
	near    bool
	repo    string // slug of the first repository listed
}

// failed reports whether the last check failed: after a refused
// credential or a dead server the next checks would only repeat it. A
// Cloud account that may not be read (403: an API token without
// read:user:bitbucket) is no such failure: the credential works, and
// what the integration is for is still worth checking.
func (r *run) failed() bool {
	if len(r.checks) == 0 {
		return false
	}
	last := r.checks[len(r.checks)-1]
	return !last.OK && !(last.Capability == CheckUser && statusOf(last.Err) == http.StatusForbidden)
}

func (r *run) step(ctx context.Context, capability string, fn func(ctx context.Context) (string, response, error)) {
	if r.failed() {
		return
	}
	r.checks = append(r.checks, connectors.RunCheck(ctx, capability, func(ctx context.Context) (string, error) {
		msg, resp, err := fn(ctx)
		r.note(resp)
		return msg, err
	}))
}

func (r *run) note(resp response) {
	if resp.rateLimit != nil {
		r.rate = resp.rateLimit
	}
	r.near = r.near || resp.nearLimit
	if resp.user != "" {
		r.details["user"] = resp.user
	}
}

// finish folds the checks into a Result (each is needed for the
// integration to work, so any failing makes it unhealthy) and degrades a
// healthy one whose rate-limit budget is nearly spent.
func (r *run) finish(critical ...string) connectors.Result {
	res := connectors.NewResult(r.checks, r.start, critical...)
	res.Details, res.RateLimit = r.details, r.rate
	if res.Status != connectors.StatusHealthy {
		return res
	}
	var warn []string
	if rl := r.rate; rl != nil && rl.Limit > 0 && rl.Headroom() < lowHeadroom {
		warn = append(warn, fmt.Sprintf("rate limit nearly used: %d of %d requests left", rl.Remaining, rl.Limit))
	} else if r.near {
		// Cloud tells only that under 20 % of the hourly budget is left.
		warn = append(warn, "rate limit nearly used: Bitbucket reports X-RateLimit-NearLimit (under 20 % of the hourly budget left)")
	}
	if len(warn) > 0 {
		res.Status = connectors.StatusDegraded
		res.Message += "; " + strings.Join(warn, "; ")
	}
	return res
}

func (c *Connector) begin(ctx context.Context) (*run, connectors.Result, bool) {
	r := &run{c: c, start: time.Now(), details: map[string]string{}}
	if c.confErr != nil {
		return r, connectors.FailedResult(r.start, "config", c.confErr), false
	}
	r.details["flavor"] = c.flavor
	r.details["apiRoot"] = c.root.String()
	cred, err := c.credential(ctx)
	if err != nil {
		return r, connectors.FailedResult(r.start, "auth", err), false
	}
	r.cred = cred
	return r, connectors.Result{}, true
}

// TestConnection proves the endpoint, the credential and what the
// integration is for. Cloud: the account (GET /2.0/user) when a user's app
// password or API token authenticates (an access token has no account to
// show), one page of the workspace's repositories, and one branch of the
// first. Data Center: the version (application-properties), one page of
// the project's repositories, and one branch of the first.
func (c *Connector) TestConnection(ctx context.Context) connectors.Result {
	r, failed, ok := c.begin(ctx)
	if !ok {
		return failed
	}
	c.identity(ctx, r)
	r.step(ctx, CheckRepos, func(ctx context.Context) (string, response, error) { return c.probeRepos(ctx, r) })
	if r.repo != "" {
		r.step(ctx, CheckBranches, func(ctx context.Context) (string, response, error) { return c.probeBranches(ctx, r) })
	}
	return r.finish(CheckVersion, CheckRepos, CheckBranches)
}

// CheckHealth is the periodic check: the identity (Cloud with a user's
// credential) or version (Data Center), and one page of repositories.
func (c *Connector) CheckHealth(ctx context.Context) connectors.Result {
	r, failed, ok := c.begin(ctx)
	if !ok {
		return failed
	}
	c.identity(ctx, r)
	r.step(ctx, CheckRepos, func(ctx context.Context) (string, response, error) { return c.probeRepos(ctx, r) })
	return r.finish(CheckVersion, CheckRepos, CheckBranches)
}

// identity is Cloud's GET /2.0/user (for a user's credential) or Data
// Center's application-properties, which with credentials proves them:
// Data Center answers 401 to refused credentials even where it would
// serve an anonymous caller.
func (c *Connector) identity(ctx context.Context, r *run) {
	switch {
	case c.cloud() && c.bearer():
		r.details["auth"] = "access token"
	case c.cloud():
		r.details["auth"] = "app password / API token"
		r.step(ctx, CheckUser, func(ctx context.Context) (string, response, error) {
			var u struct {
				UUID        string `json:"uuid"`
				Username    string `json:"username"`
				DisplayName string `json:"display_name"`
			}
			resp, err := c.get(ctx, r.cred, call{op: "read the account", elems: []string{"user"}, scope: "account"}, &u)
			if err != nil {
				return "", resp, err
			}
			if u.UUID == "" {
				return "", resp, fault.Permanentf("bitbucket: read the account: the answer has no uuid; check the endpoint and flavor")
			}
			name := u.Username
			if name == "" {
				name = u.DisplayName
			}
			r.details["user"] = name
			c.ann.setMe(u.UUID)
			return "authenticated as " + name, resp, nil
		})
	default:
		if c.bearer() {
			r.details["auth"] = "HTTP access token"
		} else {
			r.details["auth"] = "username and password"
		}
		r.step(ctx, CheckVersion, func(ctx context.Context) (string, response, error) {
			var p struct {
				Version     string `json:"version"`
				BuildNumber string `json:"buildNumber"`
				DisplayName string `json:"displayName"`
			}
			resp, err := c.get(ctx, r.cred, call{op: "read the application properties", elems: []string{"application-properties"}}, &p)
			if err != nil {
				return "", resp, err
			}
			if p.Version == "" {
				return "", resp, fault.Permanentf("bitbucket: read the application properties: the answer has no version; check that the endpoint is a Bitbucket Data Center root")
			}
			r.details["version"] = p.Version
			return p.DisplayName + " " + p.Version, resp, nil
		})
	}
}

func (c *Connector) probeRepos(ctx context.Context, r *run) (string, response, error) {
	cl := c.reposCall()
	cl.query.Set(c.limitKey(), "1")
	var p page[repo]
	resp, err := c.get(ctx, r.cred, cl, &p)
	if err != nil {
		return "", resp, err
	}
	if len(p.Values) == 0 {
		return "no repositories visible in " + c.owner, resp, nil
	}
	r.repo = p.Values[0].Slug
	return "repositories listed", resp, nil
}

func (c *Connector) probeBranches(ctx context.Context, r *run) (string, response, error) {
	cl := c.branchesCall(c.owner, r.repo)
	cl.query.Set(c.limitKey(), "1")
	var p page[branch]
	resp, err := c.get(ctx, r.cred, cl, &p)
	if err != nil {
		return "", resp, err
	}
	return fmt.Sprintf("branches of %s/%s listed", c.owner, r.repo), resp, nil
}

func (c *Connector) limitKey() string {
	if c.cloud() {
		return "pagelen"
	}
	return "limit"
}

func (c *Connector) reposCall() call {
	if c.cloud() {
		return call{op: "list repositories of workspace " + c.owner, elems: []string{"repositories", c.owner},
			query: url.Values{"sort": {"slug"}}, scope: "repository"}
	}
	return call{op: "list repositories of project " + c.owner, elems: []string{"projects", c.owner, "repos"},
		query: url.Values{}, perm: "PROJECT_READ (or REPO_READ on the repositories)"}
}

func (c *Connector) branchesCall(owner, slug string) call {
	if c.cloud() {
		return call{op: "list branches of " + owner + "/" + slug, elems: []string{"repositories", owner, slug, "refs", "branches"},
			query: url.Values{"sort": {"name"}}, scope: "repository"}
	}
	return call{op: "list branches of " + owner + "/" + slug, elems: []string{"projects", owner, "repos", slug, "branches"},
		query: url.Values{"orderBy": {"ALPHABETICAL"}}, perm: "REPO_READ"}
}
