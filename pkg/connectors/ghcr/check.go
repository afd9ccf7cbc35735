package ghcr

import (
	"context"
	"fmt"
	"strings"
	"time"

	"inthub.dev/pkg/connectors"
	"inthub.dev/pkg/connectors/oci"
	"inthub.dev/pkg/fault"
)

// Capabilities reported as Checks, beside oci's ping, tags and digest.
const (
	CheckAuth  = "auth"         // the PAT is accepted by the API and has read:packages
	CheckRepos = oci.CheckRepos // the owner's container packages are listed
)

// TestConnection runs, one Check each: the token against the API and its
// scopes (auth; the API's rate-limit budget becomes RateLimit), a page of
// the owner's container packages (repos), then through registry.oci the
// ping with the token flow, the probe repository's tags and a tag →
// digest HEAD. The probe repository is the configured one, else the
// owner's first package.
func (c *Connector) TestConnection(ctx context.Context) connectors.Result {
	return c.probe(ctx, true)
}

// CheckHealth pings the registry and resolves the probe tag (the API only
// when no probeRepository is set).
func (c *Connector) CheckHealth(ctx context.Context) connectors.Result {
	return c.probe(ctx, false)
}

func (c *Connector) probe(ctx context.Context, full bool) connectors.Result {
	return oci.Report(ctx, &c.Registry, c.log, oci.Check{
		Full:    full,
		Details: map[string]string{"owner": c.conf.Owner},
		First:   CheckAuth,
		Healthy: "ghcr.io answers and the token can read packages",
		Steps: func(ctx context.Context, r *connectors.Result) error {
			r.Details["endpoint"] = c.Inner().Endpoint()
			if full {
				return c.auth(ctx, r)
			}
			return nil
		},
		Probe: oci.Probe{
			Repository: c.conf.ProbeRepository,
			List:       c.ListRepositories,
			Listed:     "container packages of " + c.conf.Owner + " listed",
			None:       "the owner has no container package: tags and digest were not checked",
			For:        c.registry,
		},
		Adjust: func(r *connectors.Result) {
			if r.RateLimit != nil && r.RateLimit.Headroom() < 0.10 {
				r.Status = connectors.StatusDegraded
				r.Message = fmt.Sprintf("rate_limit: under 10 %% of the GitHub API budget left (%d of %d)", r.RateLimit.Remaining, r.RateLimit.Limit)
			}
		},
	})
}

// auth checks the token against the API and its scopes; the API's
// rate-limit budget becomes RateLimit.
func (c *Connector) auth(ctx context.Context, r *connectors.Result) error {
	t := time.Now()
	login, has, classic, rl, err := c.whoami(ctx)
	r.RateLimit = rl
	if err == nil && classic && !canReadPackages(has) {
		err = fault.Permanent(fmt.Errorf("GET /user: %w", &ScopeError{Has: has}))
	}
	if err != nil {
		r.Checks = append(r.Checks, oci.Failed(CheckAuth, time.Since(t), err))
		return err
	}
	r.Details["login"] = login
	msg := "token of " + login + " accepted"
	if classic {
		msg += "; scopes: " + strings.Join(has, ", ")
	} else {
		// Fine-grained tokens and app tokens carry no scope list;
		// the registry checks below tell whether GHCR takes it.
		msg += "; not a classic PAT (no scope list): GHCR documents classic PATs with read:packages"
	}
	r.Checks = append(r.Checks, oci.Passed(CheckAuth, time.Since(t), msg))
	return nil
}
