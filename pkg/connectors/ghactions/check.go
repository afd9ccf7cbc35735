package ghactions

import (
	"context"
	"fmt"
	"time"

	"inthub.dev/pkg/connectors"
)

// TestConnection runs scm.github's test (the app's key and id, the
// installation token exchange, the installation's repositories, the rate
// limit), then lists the probe repository's workflows and its most recent
// run: the calls the integration is for, with actions:read.
func (c *Connector) TestConnection(ctx context.Context) connectors.Result {
	return c.probe(ctx, c.gh.TestConnection(ctx), true)
}

// CheckHealth runs scm.github's health check (rate limit, repositories)
// and lists one workflow of the probe repository.
func (c *Connector) CheckHealth(ctx context.Context) connectors.Result {
	return c.probe(ctx, c.gh.CheckHealth(ctx), false)
}

func (c *Connector) probe(ctx context.Context, base connectors.Result, full bool) connectors.Result {
	start := time.Now().Add(-base.Latency)
	if err := c.Validate(); err != nil {
		return connectors.FailedResult(start, "config", err)
	}
	checks := base.Checks
	mine := []string{CheckWorkflows}
	if full {
		mine = append(mine, CheckRuns)
	}
	skip := func(why string) connectors.Result {
		for _, cp := range mine {
			checks = append(checks, connectors.Check{Capability: cp, Message: "not run: " + why})
		}
		return c.result(start, base, checks)
	}
	if !base.OK() {
		return skip("the GitHub App could not authenticate or list its repositories")
	}
	details := base.Details
	if details == nil {
		details = map[string]string{}
	}
	base.Details = details
	repo := c.conf.ProbeRepository
	if repo == "" {
		page, err := c.gh.ListRepositories(ctx, connectors.ListOptions{Limit: 1})
		switch {
		case err != nil:
			checks = append(checks, connectors.RunCheck(ctx, CheckWorkflows, func(context.Context) (string, error) { return "", err }))
			return c.result(start, base, checks)
		case len(page.Items) == 0:
			return skip("the installation can see no repository (set probeRepository, or grant it one)")
		}
		repo = page.Items[0].FullName
	}
	details["probeRepository"] = repo
	ok := true
	checks = append(checks, connectors.RunCheck(ctx, CheckWorkflows, func(ctx context.Context) (string, error) {
		limit := 1
		if full {
			limit = maxPerPage
		}
		p, err := c.ListWorkflows(ctx, repo, connectors.ListOptions{Limit: limit})
		if err != nil {
			ok = false
			return "", err
		}
		if len(p.Items) == 0 {
			return repo + " has no workflow (no file in .github/workflows)", nil
		}
		if !full {
			return "workflows of " + repo + " listed", nil
		}
		more := ""
		if p.Next != "" {
			more = " or more"
		}
		details["workflows"] = fmt.Sprint(len(p.Items)) + more
		return fmt.Sprintf("%d%s workflows in %s", len(p.Items), more, repo), nil
	}))
	if full {
		if !ok {
			checks = append(checks, connectors.Check{Capability: CheckRuns, Message: "not run: the workflows could not be listed"})
		} else {
			checks = append(checks, connectors.RunCheck(ctx, CheckRuns, func(ctx context.Context) (string, error) {
				p, err := c.ListRuns(ctx, repo, connectors.ListOptions{Limit: 1})
				if err != nil {
					return "", err
				}
				if len(p.Items) == 0 {
					return "no workflow run in " + repo + " yet", nil
				}
				r := p.Items[0]
				outcome := r.Status
				if r.Conclusion != "" {
					outcome += ", " + r.Conclusion
				}
				details["lastRun"] = r.CreatedAt.Format(time.RFC3339)
				return fmt.Sprintf("latest run: %s #%d on %s (%s) at %s", r.Name, r.ID, r.Branch, outcome, r.CreatedAt.Format(time.RFC3339)), nil
			}))
		}
	}
	return c.result(start, base, checks)
}

// result folds scm.github's checks and ours; every one is critical, as
// for scm.github. A low rate-limit budget that scm.github reported as
// degraded stays degraded.
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
	if r.Status == connectors.StatusUnhealthy && r.Err == nil && base.Err != nil {
		r.Class, r.Err = base.Class, base.Err
	}
	return r
}
