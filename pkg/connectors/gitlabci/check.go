package gitlabci

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"inthub.dev/pkg/connectors"
)

// TestConnection runs scm.gitlab's test (an access token: the version,
// the token's user and expiry, a page of projects; a job token: its job
// and a branch of its project), then reads one pipeline of the project
// and whether it has a .gitlab-ci.yml (access tokens only).
func (c *Connector) TestConnection(ctx context.Context) connectors.Result {
	return c.probe(ctx, c.gl.TestConnection(ctx), true)
}

// CheckHealth runs scm.gitlab's health check and reads one pipeline
// (GET /projects/:id/pipelines?per_page=1).
func (c *Connector) CheckHealth(ctx context.Context) connectors.Result {
	return c.probe(ctx, c.gl.CheckHealth(ctx), false)
}

func (c *Connector) probe(ctx context.Context, base connectors.Result, full bool) connectors.Result {
	start := time.Now().Add(-base.Latency)
	if err := c.Validate(); err != nil {
		return connectors.FailedResult(start, "config", err)
	}
	checks := base.Checks
	mine := []string{CheckPipelines}
	if full {
		mine = append(mine, CheckCIConfig)
	}
	details := base.Details
	if details == nil {
		details = map[string]string{}
	}
	base.Details = details
	skip := func(why string, caps ...string) {
		for _, cp := range caps {
			checks = append(checks, connectors.Check{Capability: cp, Message: "not run: " + why})
		}
	}
	if !base.OK() {
		skip("GitLab refused the credential or did not answer", mine...)
		return c.result(start, base, checks)
	}
	project, err := c.probeProject(ctx)
	switch {
	case err != nil:
		checks = append(checks, connectors.RunCheck(ctx, CheckPipelines, func(context.Context) (string, error) { return "", err }))
		if full {
			skip("no project to probe", CheckCIConfig)
		}
		return c.result(start, base, checks)
	case project == "":
		skip("the token sees no project (set project)", mine...)
		return c.result(start, base, checks)
	}
	details["project"] = project
	checks = append(checks, connectors.RunCheck(ctx, CheckPipelines, func(ctx context.Context) (string, error) {
		p, err := c.ListPipelines(ctx, project, connectors.ListOptions{Limit: 1})
		if err != nil {
			return "", err
		}
		if len(p.Items) == 0 {
			return "project " + project + " has no pipeline yet", nil
		}
		pl := p.Items[0]
		details["lastPipeline"] = pl.CreatedAt.Format(time.RFC3339)
		return fmt.Sprintf("latest pipeline of %s: #%d on %s, %s, at %s", project, pl.ID, pl.Ref, pl.Status, pl.CreatedAt.Format(time.RFC3339)), nil
	}))
	if !full {
		return c.result(start, base, checks)
	}
	if c.gl.UsesJobToken() {
		// Not a failure: the job running is the proof that the project
		// has a pipeline configuration.
		checks = append(checks, connectors.Check{Capability: CheckCIConfig, OK: true,
			Message: "not checked: a CI job token cannot read repository files (its own job shows the project has a pipeline configuration)"})
		return c.result(start, base, checks)
	}
	checks = append(checks, connectors.RunCheck(ctx, CheckCIConfig, func(ctx context.Context) (string, error) {
		cc, err := c.CIConfigOf(ctx, project)
		if err != nil {
			return "", err
		}
		details["ciConfig"] = strconv.FormatBool(cc.Present)
		switch {
		case cc.Ref == "":
			return "the repository of " + project + " is empty: no " + CIConfigPath, nil
		case !cc.Present:
			return fmt.Sprintf("no %s on %s of %s (pipelines run only from another configuration source)", CIConfigPath, cc.Ref, project), nil
		}
		return fmt.Sprintf("%s on %s (%d bytes)", CIConfigPath, cc.Ref, cc.Size), nil
	}))
	return c.result(start, base, checks)
}

// probeProject is the configured project, else the job token's project,
// else the first project the access token lists ("" when it sees none).
func (c *Connector) probeProject(ctx context.Context) (string, error) {
	if c.conf.Project != "" {
		return c.conf.Project, nil
	}
	if c.gl.UsesJobToken() {
		id, err := c.jobProject(ctx)
		if err != nil {
			return "", fmt.Errorf("ci.gitlab_ci: %w", err)
		}
		return strconv.FormatInt(id, 10), nil
	}
	p, err := c.gl.ListRepositories(ctx, connectors.ListOptions{Limit: 1})
	if err != nil {
		return "", fmt.Errorf("ci.gitlab_ci: %w", err)
	}
	if len(p.Items) == 0 {
		return "", nil
	}
	return p.Items[0].FullName, nil
}

// result folds scm.gitlab's checks and ours; every check is critical
// (a CI integration that cannot read pipelines is not working). A
// warning scm.gitlab degraded a healthy result for (an expiring token, a
// low rate-limit budget) is kept.
func (c *Connector) result(start time.Time, base connectors.Result, checks []connectors.Check) connectors.Result {
	caps := make([]string, 0, len(checks))
	for _, ck := range checks {
		caps = append(caps, ck.Capability)
	}
	r := connectors.NewResult(checks, start, caps...)
	r.Details, r.CredentialExpiry, r.RateLimit = base.Details, base.CredentialExpiry, base.RateLimit
	if r.Status == connectors.StatusHealthy && base.Status == connectors.StatusDegraded {
		r.Status, r.Message = base.Status, base.Message
	}
	if r.Status != connectors.StatusHealthy {
		c.log.WarnContext(context.Background(), "gitlab ci check not healthy", "status", r.Status, "class", r.Class.String(), "error", r.Message)
	}
	return r
}
