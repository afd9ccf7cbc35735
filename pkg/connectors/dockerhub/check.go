package dockerhub

import (
	"context"
	"fmt"
	"time"

	"inthub.dev/pkg/connectors"
	"inthub.dev/pkg/connectors/oci"
	"inthub.dev/pkg/fault"
)

// Capabilities reported as Checks, beside oci's ping, tags and digest.
const (
	CheckAuth      = "auth"       // the PAT is exchanged for a Hub API token
	CheckRepos     = "repos"      // the namespace's repositories are listed
	CheckRateLimit = "rate_limit" // the pull budget the manifest HEAD reported
)

// lowHeadroom is the share of the pull budget under which the
// integration is degraded: pulls are about to be refused.
const lowHeadroom = 0.10

// TestConnection runs, one Check each: the Hub token exchange (auth, with
// credentials), a page of the namespace's repositories (repos), then
// through registry.oci the ping with the token flow, the probe
// repository's tags and a tag → digest HEAD, and the pull budget that
// HEAD reported (rate_limit). The probe repository is the configured one,
// else the namespace's first.
func (c *Connector) TestConnection(ctx context.Context) connectors.Result {
	return c.probe(ctx, true)
}

// CheckHealth pings the registry, HEADs the probe tag (which costs no
// pull) and reports the budget.
func (c *Connector) CheckHealth(ctx context.Context) connectors.Result {
	return c.probe(ctx, false)
}

func (c *Connector) probe(ctx context.Context, full bool) connectors.Result {
	start := time.Now()
	mode := "anonymous"
	if c.conf.Username != "" {
		mode = "user " + c.conf.Username
	}
	r := connectors.Result{Details: map[string]string{"namespace": c.conf.Namespace, "auth": mode}}
	ctx, rec := withRecorder(ctx)
	err := c.run(ctx, full, &r)
	r = oci.Finish(r, start, err, "Docker Hub answers and the credentials are accepted")
	if err == nil {
		c.rateLimit(rec, &r)
	}
	op := "health_check"
	if full {
		op = "test_connection"
	}
	if r.Status != connectors.StatusHealthy {
		c.log.WarnContext(ctx, "dockerhub check not healthy", "operation", op, "status", r.Status, "class", r.Class.String(), "error", r.Message)
	} else {
		c.log.DebugContext(ctx, "dockerhub check passed", "operation", op, "latencyMs", r.Latency.Milliseconds())
	}
	return r
}

func (c *Connector) run(ctx context.Context, full bool, r *connectors.Result) error {
	if c.invalid != nil {
		r.Checks = append(r.Checks, failed(CheckAuth, 0, c.invalid))
		return c.invalid
	}
	if full && c.conf.Username != "" {
		t := time.Now()
		if _, err := c.hubToken(ctx); err != nil {
			r.Checks = append(r.Checks, failed(CheckAuth, time.Since(t), err))
			return err
		}
		r.Checks = append(r.Checks, passed(CheckAuth, time.Since(t), "personal access token of "+c.conf.Username+" accepted by the Hub API"))
	}
	probe := c.conf.ProbeRepository
	if full || probe == "" {
		t := time.Now()
		page, err := c.ListRepositories(ctx, connectors.ListOptions{Limit: 1})
		if err != nil {
			r.Checks = append(r.Checks, failed(CheckRepos, time.Since(t), err))
			return err
		}
		if full {
			r.Checks = append(r.Checks, passed(CheckRepos, time.Since(t), "repositories of "+c.conf.Namespace+" listed"))
		}
		if probe == "" && len(page.Items) > 0 {
			probe = page.Items[0].FullName
		}
	}
	reg := c.reg
	if probe != c.conf.ProbeRepository {
		reg = c.registry(probe)
	}
	if err := reg.Run(ctx, full, r); err != nil {
		return err
	}
	if probe == "" {
		r.Details["probe"] = "the namespace has no repository: tags, digest and the pull budget were not checked"
	}
	return nil
}

// rateLimit adds the pull budget seen during the check: under 10 % left
// is degraded (pulls are about to be refused), none left is degraded and
// transient with the wait until a pull frees up.
func (c *Connector) rateLimit(rec *recorder, r *connectors.Result) {
	if r.Details["digest"] == "" {
		return
	}
	b, ok := rec.get()
	if !ok {
		r.Checks = append(r.Checks, passed(CheckRateLimit, 0, "no pull limit reported (a plan without one)"))
		return
	}
	r.RateLimit = b.RateLimit()
	r.Details["rateLimitWindow"] = b.window.String()
	msg := fmt.Sprintf("%d of %d pulls left in a rolling %s window", b.remaining, b.limit, b.window)
	if b.source != "" {
		msg += " (charged to " + b.source + ")"
	}
	switch {
	case b.remaining <= 0:
		err := fault.RetryAfter(fmt.Errorf("the Docker Hub pull limit is reached: %s; authenticate, or use a plan with a higher limit", msg), b.retryHint())
		r.Checks = append(r.Checks, failed(CheckRateLimit, 0, err))
		r.Status, r.Class, r.Err = connectors.StatusDegraded, fault.ClassTransient, err
		r.Message = CheckRateLimit + ": " + err.Error()
	case r.RateLimit.Headroom() < lowHeadroom:
		r.Checks = append(r.Checks, passed(CheckRateLimit, 0, msg))
		r.Status = connectors.StatusDegraded
		r.Message = "rate_limit: under 10 % of the pull budget left: " + msg
	default:
		r.Checks = append(r.Checks, passed(CheckRateLimit, 0, msg))
	}
}

func passed(capability string, d time.Duration, msg string) connectors.Check {
	return connectors.Check{Capability: capability, OK: true, Message: msg, Latency: max(d, time.Nanosecond)}
}

func failed(capability string, d time.Duration, err error) connectors.Check {
	class := fault.ClassOf(err)
	if class == fault.ClassUnknown {
		class = fault.ClassTransient
	}
	return connectors.Check{Capability: capability, Message: err.Error(), Latency: d, Class: class, Err: err}
}
