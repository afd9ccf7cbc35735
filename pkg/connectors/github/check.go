package github

import (
	"context"
	"fmt"
	"strconv"
	"time"

	gh "github.com/google/go-github/v62/github"

	"inthub.dev/pkg/connectors"
	"inthub.dev/pkg/fault"
)

// lowHeadroom is the share of the rate limit below which the integration
// is degraded: calls still work, but not for long at this pace.
const lowHeadroom = 0.10

// TestConnection runs what the integration is used for, one check each:
// the app's key and id (GET app with the JWT), the installation (a token
// exchange, whose expiry is reported), the installation's repositories,
// and the rate limit's headroom. A check whose prerequisite failed is
// reported as not run rather than failing the same way again.
func (c *Connector) TestConnection(ctx context.Context) connectors.Result {
	start := time.Now()
	if err := c.Validate(); err != nil {
		return failed(start, err)
	}
	r := connectors.Result{Details: c.details()}
	// A fresh token source: the exchange happens now, so the check proves
	// the installation as it is, not as it was when a cached token was
	// issued.
	ts := c.newTokenSource()
	inst := c.client(&tokenTransport{ts: ts})

	var firstErr error
	run := func(capability string, o op, f func(ctx context.Context) (string, error)) bool {
		ck, err := c.check(ctx, capability, o, f)
		r.Checks = append(r.Checks, ck)
		if err != nil && firstErr == nil {
			firstErr = err
		}
		return err == nil
	}
	skip := func(why string, capabilities ...string) {
		for _, cp := range capabilities {
			r.Checks = append(r.Checks, connectors.Check{Capability: cp, Message: "not run: " + why})
		}
	}

	appOK := run("app", op{kind: opApp, name: "authenticate as the app (GET app)"}, func(ctx context.Context) (string, error) {
		app, _, err := c.app.Apps.Get(ctx, "")
		if err != nil {
			return "", err
		}
		r.Details["appSlug"] = app.GetSlug()
		if o := app.GetOwner().GetLogin(); o != "" {
			r.Details["appOwner"] = o
		}
		return fmt.Sprintf("authenticated as app %q (id %d) with its private key", app.GetSlug(), app.GetID()), nil
	})
	if !appOK {
		skip("the app could not authenticate", "installation", "repos", "rate_limit")
		return finish(start, r, firstErr)
	}

	tokenOK := run("installation", op{kind: opToken, name: "exchange the app JWT for an installation token"}, func(ctx context.Context) (string, error) {
		if _, err := ts.token(ctx); err != nil {
			return "", err
		}
		exp := ts.expiry()
		if exp.IsZero() {
			return fmt.Sprintf("installation %d issued a token", c.conf.InstallationID), nil
		}
		r.CredentialExpiry = &exp
		return fmt.Sprintf("installation %d issued a token valid until %s", c.conf.InstallationID, exp.UTC().Format(time.RFC3339)), nil
	})
	if !tokenOK {
		skip("no installation token", "repos", "rate_limit")
		return finish(start, r, firstErr)
	}

	run("repos", op{kind: opInstallation, name: "list the installation's repositories"}, func(ctx context.Context) (string, error) {
		return c.probeRepos(ctx, inst, r.Details)
	})
	run("rate_limit", op{kind: opInstallation, name: "read the rate limit"}, func(ctx context.Context) (string, error) {
		return c.probeRateLimit(ctx, inst, &r)
	})
	return finish(start, r, firstErr)
}

// CheckHealth is the periodic check: the rate limit and one page of one
// repository of the installation, on the cached installation token (an
// exchange happens only when it is due).
func (c *Connector) CheckHealth(ctx context.Context) connectors.Result {
	start := time.Now()
	if err := c.Validate(); err != nil {
		return failed(start, err)
	}
	r := connectors.Result{Details: c.details()}
	var firstErr error
	for _, p := range []struct {
		capability string
		o          op
		f          func(ctx context.Context) (string, error)
	}{
		{"rate_limit", op{kind: opInstallation, name: "read the rate limit"}, func(ctx context.Context) (string, error) {
			return c.probeRateLimit(ctx, c.inst, &r)
		}},
		{"repos", op{kind: opInstallation, name: "list the installation's repositories"}, func(ctx context.Context) (string, error) {
			return c.probeRepos(ctx, c.inst, r.Details)
		}},
	} {
		// Without a token the next probe would only repeat the failed
		// exchange.
		if firstErr != nil && !time.Now().Before(c.tokens.expiry()) {
			r.Checks = append(r.Checks, connectors.Check{Capability: p.capability, Message: "not run: no installation token"})
			continue
		}
		ck, err := c.check(ctx, p.capability, p.o, p.f)
		r.Checks = append(r.Checks, ck)
		if err != nil && firstErr == nil {
			firstErr = err
		}
	}
	if exp := c.tokens.expiry(); !exp.IsZero() {
		r.CredentialExpiry = &exp
	}
	return finish(start, r, firstErr)
}

func (c *Connector) probeRepos(ctx context.Context, inst *gh.Client, details map[string]string) (string, error) {
	list, _, err := inst.Apps.ListRepos(ctx, &gh.ListOptions{PerPage: 1})
	if err != nil {
		return "", err
	}
	n := list.GetTotalCount()
	details["repositories"] = strconv.Itoa(n)
	if n == 0 {
		// Not a failure: an installation may be set up before it is
		// given repositories. The message says what to do.
		return "the installation can see no repository yet: grant it repositories in the app's installation settings", nil
	}
	return fmt.Sprintf("the installation can see %d repositories", n), nil
}

func (c *Connector) probeRateLimit(ctx context.Context, inst *gh.Client, r *connectors.Result) (string, error) {
	limits, _, err := inst.RateLimit.Get(ctx)
	if err != nil {
		return "", err
	}
	core := limits.GetCore()
	if core == nil {
		return "GitHub reported no core rate limit (rate limiting may be off on this server)", nil
	}
	rl := &connectors.RateLimit{Limit: core.Limit, Remaining: core.Remaining, Reset: core.Reset.Time.UTC()}
	r.RateLimit = rl
	return fmt.Sprintf("%d of %d requests left (%.0f%%) until %s", rl.Remaining, rl.Limit, 100*rl.Headroom(),
		rl.Reset.Format(time.RFC3339)), nil
}

// check runs one capability's probe.
func (c *Connector) check(ctx context.Context, capability string, o op, f func(ctx context.Context) (string, error)) (connectors.Check, error) {
	start := time.Now()
	var msg string
	err := c.call(ctx, o, func(ctx context.Context) error {
		var err error
		msg, err = f(ctx)
		return err
	})
	ck := connectors.Check{Capability: capability, OK: err == nil, Message: msg, Latency: time.Since(start)}
	if err != nil {
		ck.Message = err.Error()
		ck.Class = fault.ClassOf(err)
		ck.Err = err
	}
	return ck, err
}

func (c *Connector) details() map[string]string {
	d := map[string]string{
		"apiRoot":        c.ends.api,
		"appId":          strconv.FormatInt(c.conf.AppID, 10),
		"installationId": strconv.FormatInt(c.conf.InstallationID, 10),
	}
	if c.conf.Organization != "" {
		d["organization"] = c.conf.Organization
	}
	return d
}

func failed(start time.Time, err error) connectors.Result {
	return connectors.Result{
		Status:  connectors.StatusUnhealthy,
		Message: err.Error(),
		Latency: time.Since(start),
		Class:   fault.ClassOf(err),
		Err:     err,
	}
}

func finish(start time.Time, r connectors.Result, firstErr error) connectors.Result {
	r.Latency = time.Since(start)
	switch {
	case firstErr != nil:
		r.Status = connectors.StatusUnhealthy
		r.Message = firstErr.Error()
		r.Class = fault.ClassOf(firstErr)
		r.Err = firstErr
	case r.RateLimit != nil && r.RateLimit.Headroom() < lowHeadroom:
		r.Status = connectors.StatusDegraded
		r.Message = fmt.Sprintf("working, but only %d of %d API requests are left until %s: calls will be refused when they run out",
			r.RateLimit.Remaining, r.RateLimit.Limit, r.RateLimit.Reset.Format(time.RFC3339))
	default:
		r.Status = connectors.StatusHealthy
		r.Message = fmt.Sprintf("GitHub App %s, installation %s: all %d checks passed",
			r.Details["appId"], r.Details["installationId"], len(r.Checks))
	}
	return r
}
