package harbor

import (
	"context"
	"fmt"
	"strings"
	"time"

	"inthub.dev/pkg/connectors"
	"inthub.dev/pkg/connectors/oci"
	"inthub.dev/pkg/fault"
)

// TestConnection runs, one Check each: Harbor's health document, the
// account against the API (auth), a repository listing (repos), then the
// registry side through registry.oci: ping with the token flow, the probe
// repository's tags and a tag → digest HEAD. The probe repository is the
// configured one, else the first one listed.
func (c *Connector) TestConnection(ctx context.Context) connectors.Result {
	return c.probe(ctx, true)
}

// CheckHealth reads the health document, then pings the registry and
// resolves the probe tag.
func (c *Connector) CheckHealth(ctx context.Context) connectors.Result {
	return c.probe(ctx, false)
}

func (c *Connector) probe(ctx context.Context, full bool) connectors.Result {
	start := time.Now()
	r := connectors.Result{Details: map[string]string{}}
	degraded, err := c.run(ctx, full, &r)
	r = oci.Finish(r, start, err, "Harbor is healthy and the registry answers")
	if err == nil && degraded != "" {
		// Harbor still serves what was probed, so the integration works,
		// but a component (scanner, job service, ...) is down.
		r.Status = connectors.StatusDegraded
		r.Message = degraded
	}
	op := "health_check"
	if full {
		op = "test_connection"
	}
	if r.Status != connectors.StatusHealthy {
		c.log.WarnContext(ctx, "harbor check not healthy", "operation", op, "status", r.Status, "class", r.Class.String(), "error", r.Message)
	} else {
		c.log.DebugContext(ctx, "harbor check passed", "operation", op, "latencyMs", r.Latency.Milliseconds())
	}
	return r
}

// run appends the checks; it returns a degradation message when health
// reports unhealthy components, and the first failure.
func (c *Connector) run(ctx context.Context, full bool, r *connectors.Result) (string, error) {
	if c.invalid != nil {
		r.Checks = append(r.Checks, failed(CheckHealth, 0, c.invalid))
		return "", c.invalid
	}
	r.Details["endpoint"] = c.base.String()
	var degraded string
	t := time.Now()
	h, err := c.Health(ctx)
	if err != nil {
		r.Checks = append(r.Checks, failed(CheckHealth, time.Since(t), err))
		return "", err
	}
	if bad := h.Unhealthy(); len(bad) > 0 || h.Status != "healthy" {
		degraded = fmt.Sprintf("Harbor reports status %q; unhealthy components: %s", h.Status, strings.Join(bad, ", "))
		r.Details["unhealthyComponents"] = strings.Join(bad, ",")
		r.Checks = append(r.Checks, connectors.Check{Capability: CheckHealth, Message: degraded, Latency: time.Since(t), Class: fault.ClassTransient})
	} else {
		r.Checks = append(r.Checks, passed(CheckHealth, time.Since(t), fmt.Sprintf("healthy (%d components)", len(h.Components))))
	}

	if full {
		// Harbor answers 401 to any API call whose basic credentials are
		// wrong, so one small authenticated call proves the account.
		t = time.Now()
		if _, _, err := c.projects(ctx, 1, 1); err != nil {
			r.Checks = append(r.Checks, failed(CheckAuth, time.Since(t), err))
			return degraded, err
		}
		r.Checks = append(r.Checks, passed(CheckAuth, time.Since(t), "account "+c.conf.Username+" accepted"))
	}

	probe := c.conf.ProbeRepository
	if full || probe == "" {
		t = time.Now()
		page, err := c.ListRepositories(ctx, connectors.ListOptions{Limit: 1})
		if err != nil {
			r.Checks = append(r.Checks, failed(CheckRepos, time.Since(t), err))
			return degraded, err
		}
		if full {
			msg := "repositories listed"
			if c.conf.Project != "" {
				msg += " in project " + c.conf.Project
			}
			r.Checks = append(r.Checks, passed(CheckRepos, time.Since(t), msg))
		}
		if probe == "" && len(page.Items) > 0 {
			probe = page.Items[0].FullName
		}
	}
	reg := oci.NewWithConfig(c.cfg, c.ociConfig(probe))
	if err := reg.Run(ctx, full, r); err != nil {
		return degraded, err
	}
	if probe == "" {
		r.Details["probe"] = "no repository found: tags and digest were not checked"
	}
	return degraded, nil
}

func passed(capability string, d time.Duration, msg string) connectors.Check {
	return connectors.Check{Capability: capability, OK: true, Message: msg, Latency: d}
}

func failed(capability string, d time.Duration, err error) connectors.Check {
	class := fault.ClassOf(err)
	if class == fault.ClassUnknown {
		class = fault.ClassTransient
	}
	return connectors.Check{Capability: capability, Message: err.Error(), Latency: d, Class: class}
}
