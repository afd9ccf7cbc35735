package gitlab

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"inthub.dev/pkg/connectors"
	"inthub.dev/pkg/fault"
)

// expiryWarning is how close to its expiry a token makes the integration
// degraded, so that someone rotates it before it stops working.
const expiryWarning = 7 * 24 * time.Hour

// lowHeadroom is the rate-limit fraction under which the integration is
// degraded (DESIGN §7: headroom > 10 %).
const lowHeadroom = 0.10

// run collects the checks of one TestConnection or CheckHealth.
type run struct {
	c       *Connector
	cred    credential
	start   time.Time
	checks  []connectors.Check
	details map[string]string
	expiry  *time.Time
	rate    *connectors.RateLimit
}

func (c *Connector) newRun() *run {
	d := map[string]string{}
	if c.root != nil {
		d["apiRoot"] = c.root.String()
	}
	return &run{c: c, start: time.Now(), details: d}
}

// failed reports whether a check has failed: after a refused credential
// or a dead server the next checks would only repeat the same failure,
// each costing up to the timeout, so the run stops there.
func (r *run) failed() bool {
	return len(r.checks) > 0 && !r.checks[len(r.checks)-1].OK
}

// step runs one capability check unless an earlier one failed.
func (r *run) step(ctx context.Context, capability string, fn func(ctx context.Context) (string, response, error)) {
	if r.failed() {
		return
	}
	r.checks = append(r.checks, connectors.RunCheck(ctx, capability, func(ctx context.Context) (string, error) {
		msg, resp, err := fn(ctx)
		r.noteRate(resp)
		return msg, err
	}))
}

func (r *run) noteRate(resp response) {
	if resp.rateLimit != nil {
		r.rate = resp.rateLimit
	}
}

// finish folds the checks into a Result (any failed check makes it
// unhealthy: each is needed for the integration to work) and degrades a
// healthy one whose token is about to expire or whose rate-limit budget
// is nearly spent.
func (r *run) finish(capabilities ...string) connectors.Result {
	res := connectors.NewResult(r.checks, r.start, capabilities...)
	res.Details, res.CredentialExpiry, res.RateLimit = r.details, r.expiry, r.rate
	if res.Status != connectors.StatusHealthy {
		return res
	}
	var warn []string
	if exp := r.expiry; exp != nil && exp.Sub(r.c.now()) < expiryWarning {
		warn = append(warn, fmt.Sprintf("the token expires on %s; rotate it", exp.Format(time.DateOnly)))
	}
	if rl := r.rate; rl != nil && rl.Limit > 0 && rl.Headroom() < lowHeadroom {
		warn = append(warn, fmt.Sprintf("rate limit nearly used: %d of %d requests left", rl.Remaining, rl.Limit))
	}
	if len(warn) > 0 {
		res.Status = connectors.StatusDegraded
		res.Message += "; " + strings.Join(warn, "; ")
	}
	return res
}

// begin resolves the credential; ok is false with the failed Result when
// the config is invalid or the secret does not resolve.
func (c *Connector) begin(ctx context.Context) (*run, connectors.Result, bool) {
	r := c.newRun()
	if c.confErr != nil {
		return r, connectors.FailedResult(r.start, "config", c.confErr), false
	}
	cred, err := c.credential(ctx)
	if err != nil {
		return r, connectors.FailedResult(r.start, "auth", err), false
	}
	r.cred = cred
	return r, connectors.Result{}, true
}

// TestConnection proves the endpoint, the credential and the capability
// the integration is for. For an access token: GET /version, GET /user,
// the token's own record (GET /personal_access_tokens/self, for its
// expiry), then one page of the projects it can list (capability repos).
// For a CI job token: GET /job, then one branch of the job's project:
// GitLab lets a job token call only a short list of endpoints (/job, the
// branches, tags and a few others of allowed projects), and neither
// /version nor a project listing is among them on most versions, so a
// test through those would fail while real use works.
func (c *Connector) TestConnection(ctx context.Context) connectors.Result {
	r, failed, ok := c.begin(ctx)
	if !ok {
		return failed
	}
	if c.jobToken() {
		c.jobChecks(ctx, r)
		if !r.failed() {
			c.version(ctx, r, true)
		}
		return r.finish("job", "branches")
	}
	c.version(ctx, r, false)
	r.step(ctx, "user", func(ctx context.Context) (string, response, error) { return c.user(ctx, r) })
	if !r.failed() {
		c.tokenExpiry(ctx, r)
	}
	r.step(ctx, "repos", func(ctx context.Context) (string, response, error) { return c.probeProjects(ctx, r.cred) })
	return r.finish("version", "user", "repos")
}

// CheckHealth is the periodic check: the version and one page of projects
// for an access token; the job and one branch for a CI job token.
func (c *Connector) CheckHealth(ctx context.Context) connectors.Result {
	r, failed, ok := c.begin(ctx)
	if !ok {
		return failed
	}
	if c.jobToken() {
		c.jobChecks(ctx, r)
		return r.finish("job", "branches")
	}
	c.version(ctx, r, false)
	r.step(ctx, "repos", func(ctx context.Context) (string, response, error) { return c.probeProjects(ctx, r.cred) })
	return r.finish("version", "repos")
}

// jobChecks proves a job token (GET /job) and reads one branch of the
// job's project, an endpoint job tokens may call.
func (c *Connector) jobChecks(ctx context.Context, r *run) {
	var projectID int64
	r.step(ctx, "job", func(ctx context.Context) (string, response, error) {
		msg, id, resp, err := c.job(ctx, r.cred)
		projectID = id
		return msg, resp, err
	})
	r.step(ctx, "branches", func(ctx context.Context) (string, response, error) {
		return c.probeBranches(ctx, r.cred, strconv.FormatInt(projectID, 10))
	})
}

// version asks GET /version, which needs authentication and so proves the
// endpoint is a GitLab and the token is accepted at all. With a job token
// GitLab answers 401 to /version: that is recorded, not a failure.
func (c *Connector) version(ctx context.Context, r *run, optional bool) {
	probe := func(ctx context.Context) (string, response, error) {
		var v struct {
			Version  string `json:"version"`
			Revision string `json:"revision"`
		}
		resp, err := c.get(ctx, r.cred, call{op: "read version", elems: []string{"version"}}, &v)
		if err != nil {
			return "", resp, err
		}
		if v.Version == "" {
			return "", resp, fault.Permanentf("gitlab: read version: the answer has no version; check that the endpoint is a GitLab root")
		}
		r.details["version"] = v.Version
		r.details["revision"] = v.Revision
		return "GitLab " + v.Version, resp, nil
	}
	if !optional {
		r.step(ctx, "version", probe)
		return
	}
	_, resp, err := probe(ctx)
	r.noteRate(resp)
	switch code := statusOf(err); {
	case err == nil:
	case code == http.StatusUnauthorized || code == http.StatusForbidden:
		r.details["version"] = "unknown (GitLab does not show its version to a CI job token)"
	default:
		r.details["version"] = "unknown (" + err.Error() + ")"
	}
}

func (c *Connector) user(ctx context.Context, r *run) (string, response, error) {
	var u struct {
		ID       int64  `json:"id"`
		Username string `json:"username"`
		Bot      bool   `json:"bot"`
		State    string `json:"state"`
	}
	resp, err := c.get(ctx, r.cred, call{op: "read the token's user", elems: []string{"user"}}, &u)
	if err != nil {
		return "", resp, err
	}
	r.details["user"] = u.Username
	if u.Bot {
		r.details["bot"] = "true" // a project or group access token
	}
	return "authenticated as " + u.Username, resp, nil
}

// tokenExpiry reads the token's own record. Older GitLab (< 15.5) has no
// such endpoint and a token may lack the scope: either way the expiry is
// just not known, which is not a failure of the integration.
func (c *Connector) tokenExpiry(ctx context.Context, r *run) {
	var t struct {
		Name      string   `json:"name"`
		Scopes    []string `json:"scopes"`
		ExpiresAt *string  `json:"expires_at"`
		Active    *bool    `json:"active"`
		Revoked   bool     `json:"revoked"`
	}
	resp, err := c.get(ctx, r.cred, call{op: "read the token", elems: []string{"personal_access_tokens", "self"}}, &t)
	r.noteRate(resp)
	if err != nil {
		r.details["tokenExpiry"] = "unknown"
		return
	}
	if len(t.Scopes) > 0 {
		r.details["scopes"] = strings.Join(t.Scopes, ",")
	}
	if t.ExpiresAt == nil || *t.ExpiresAt == "" {
		r.details["tokenExpiry"] = "never"
		return
	}
	// expires_at is a date; GitLab treats the token as expired from
	// 00:00 UTC of that day.
	d, err := time.Parse(time.DateOnly, *t.ExpiresAt)
	if err != nil {
		if d, err = time.Parse(time.RFC3339, *t.ExpiresAt); err != nil {
			r.details["tokenExpiry"] = "unknown"
			return
		}
	}
	d = d.UTC()
	r.expiry = &d
	r.details["tokenExpiry"] = d.Format(time.RFC3339)
}

func (c *Connector) job(ctx context.Context, cred credential) (string, int64, response, error) {
	var j struct {
		ID       int64  `json:"id"`
		Status   string `json:"status"`
		Ref      string `json:"ref"`
		Pipeline struct {
			ProjectID int64 `json:"project_id"`
		} `json:"pipeline"`
	}
	resp, err := c.get(ctx, cred, call{op: "read the job token's job", elems: []string{"job"}}, &j)
	if err != nil {
		return "", 0, resp, err
	}
	if j.Pipeline.ProjectID == 0 {
		return "", 0, resp, fault.Permanentf("gitlab: read the job token's job: the answer names no project")
	}
	return fmt.Sprintf("job %d (%s) of project %d", j.ID, j.Status, j.Pipeline.ProjectID), j.Pipeline.ProjectID, resp, nil
}

func (c *Connector) probeProjects(ctx context.Context, cred credential) (string, response, error) {
	var ps []project
	op, elems, q := c.projectsCall()
	q.Set("per_page", "1")
	resp, err := c.get(ctx, cred, call{op: op, elems: elems, query: q}, &ps)
	if err != nil {
		return "", resp, err
	}
	if len(ps) == 0 {
		return "no projects visible to the token", resp, nil
	}
	return "projects listed", resp, nil
}

func (c *Connector) probeBranches(ctx context.Context, cred credential, projectID string) (string, response, error) {
	var bs []branch
	resp, err := c.get(ctx, cred, call{
		op:    "list branches of project " + projectID,
		elems: []string{"projects", projectID, "repository", "branches"},
		query: url.Values{"per_page": {"1"}},
	}, &bs)
	if err != nil {
		return "", resp, err
	}
	return "branches listed", resp, nil
}

// statusOf is the HTTP status of a failed call, 0 for a transport failure.
func statusOf(err error) int {
	var re *connectors.RequestError
	if errors.As(err, &re) {
		return re.StatusCode
	}
	return 0
}
