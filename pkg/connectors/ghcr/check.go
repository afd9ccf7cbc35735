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
	CheckAuth  = "auth"  // the PAT is accepted by the API and has read:packages
	CheckRepos = "repos" // the owner's container packages are listed
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
	start := time.Now()
	r := connectors.Result{Details: map[string]string{"owner": c.conf.Owner}}
	err := c.run(ctx, full, &r)
	r = oci.Finish(r, start, err, "ghcr.io answers and the token can read packages")
	if err == nil && r.RateLimit != nil && r.RateLimit.Headroom() < 0.10 {
		r.Status = connectors.StatusDegraded
		r.Message = fmt.Sprintf("rate_limit: under 10 %% of the GitHub API budget left (%d of %d)", r.RateLimit.Remaining, r.RateLimit.Limit)
	}
	op := "health_check"
	if full {
		op = "test_connection"
	}
	if r.Status != connectors.StatusHealthy {
		c.log.WarnContext(ctx, "ghcr check not healthy", "operation", op, "status", r.Status, "class", r.Class.String(), "error", r.Message)
	} else {
		c.log.DebugContext(ctx, "ghcr check passed", "operation", op, "latencyMs", r.Latency.Milliseconds())
	}
	return r
}

func (c *Connector) run(ctx context.Context, full bool, r *connectors.Result) error {
	if c.invalid != nil {
		r.Checks = append(r.Checks, failed(CheckAuth, 0, c.invalid))
		return c.invalid
	}
	r.Details["endpoint"] = c.reg.Endpoint()
	if full {
		t := time.Now()
		login, has, classic, rl, err := c.whoami(ctx)
		r.RateLimit = rl
		if err == nil && classic && !canReadPackages(has) {
			err = fault.Permanent(fmt.Errorf("GET /user: %w", &ScopeError{Has: has}))
		}
		if err != nil {
			r.Checks = append(r.Checks, failed(CheckAuth, time.Since(t), err))
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
		r.Checks = append(r.Checks, passed(CheckAuth, time.Since(t), msg))
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
			r.Checks = append(r.Checks, passed(CheckRepos, time.Since(t), "container packages of "+c.conf.Owner+" listed"))
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
		if denied := registryDenied(err); denied != err {
			last := &r.Checks[len(r.Checks)-1]
			last.Message, last.Err = denied.Error(), denied
			return denied
		}
		return err
	}
	if probe == "" {
		r.Details["probe"] = "the owner has no container package: tags and digest were not checked"
	}
	return nil
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
