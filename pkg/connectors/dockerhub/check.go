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
	CheckAuth      = "auth"         // the PAT is exchanged for a Hub API token
	CheckRepos     = oci.CheckRepos // the namespace's repositories are listed
	CheckRateLimit = "rate_limit"   // the pull budget the manifest HEAD reported
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
	mode := "anonymous"
	if c.conf.Username != "" {
		mode = "user " + c.conf.Username
	}
	ctx, rec := withRecorder(ctx)
	return oci.Report(ctx, &c.Registry, c.log, oci.Check{
		Full:    full,
		Details: map[string]string{"namespace": c.conf.Namespace, "auth": mode},
		First:   CheckAuth,
		Healthy: "Docker Hub answers and the credentials are accepted",
		Steps: func(ctx context.Context, r *connectors.Result) error {
			if !full || c.conf.Username == "" {
				return nil
			}
			t := time.Now()
			if _, err := c.hubToken(ctx); err != nil {
				r.Checks = append(r.Checks, oci.Failed(CheckAuth, time.Since(t), err))
				return err
			}
			r.Checks = append(r.Checks, oci.Passed(CheckAuth, time.Since(t), "personal access token of "+c.conf.Username+" accepted by the Hub API"))
			return nil
		},
		Probe: oci.Probe{
			Repository: c.conf.ProbeRepository,
			List:       c.ListRepositories,
			Listed:     "repositories of " + c.conf.Namespace + " listed",
			None:       "the namespace has no repository: tags, digest and the pull budget were not checked",
			For:        c.registry,
		},
		Adjust: func(r *connectors.Result) { c.rateLimit(rec, r) },
	})
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
		r.Checks = append(r.Checks, oci.Passed(CheckRateLimit, 0, "no pull limit reported (a plan without one)"))
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
		r.Checks = append(r.Checks, oci.Failed(CheckRateLimit, 0, err))
		r.Status, r.Class, r.Err = connectors.StatusDegraded, fault.ClassTransient, err
		r.Message = CheckRateLimit + ": " + err.Error()
	case r.RateLimit.Headroom() < lowHeadroom:
		r.Checks = append(r.Checks, oci.Passed(CheckRateLimit, 0, msg))
		r.Status = connectors.StatusDegraded
		r.Message = "rate_limit: under 10 % of the pull budget left: " + msg
	default:
		r.Checks = append(r.Checks, oci.Passed(CheckRateLimit, 0, msg))
	}
}
