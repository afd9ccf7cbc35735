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
	var degraded string
	return oci.Report(ctx, &c.Registry, c.log, oci.Check{
		Full:    full,
		First:   CheckHealth,
		Healthy: "Harbor is healthy and the registry answers",
		Steps: func(ctx context.Context, r *connectors.Result) (err error) {
			degraded, err = c.steps(ctx, full, r)
			return err
		},
		Probe: oci.Probe{
			Repository: c.conf.ProbeRepository,
			List:       c.ListRepositories,
			Listed:     c.listed(),
			None:       "no repository found: tags and digest were not checked",
			For:        c.registry,
		},
		Adjust: func(r *connectors.Result) {
			if degraded != "" {
				// Harbor still serves what was probed, so the integration
				// works, but a component (scanner, job service, ...) is down.
				r.Status = connectors.StatusDegraded
				r.Message = degraded
			}
		},
	})
}

func (c *Connector) listed() string {
	if c.conf.Project != "" {
		return "repositories listed in project " + c.conf.Project
	}
	return "repositories listed"
}

// steps appends Harbor's own checks; it returns a degradation message
// when health reports unhealthy components, and the first failure.
func (c *Connector) steps(ctx context.Context, full bool, r *connectors.Result) (string, error) {
	r.Details["endpoint"] = c.base.String()
	var degraded string
	t := time.Now()
	h, err := c.Health(ctx)
	if err != nil {
		r.Checks = append(r.Checks, oci.Failed(CheckHealth, time.Since(t), err))
		return "", err
	}
	if bad := h.Unhealthy(); len(bad) > 0 || h.Status != "healthy" {
		degraded = fmt.Sprintf("Harbor reports status %q; unhealthy components: %s", h.Status, strings.Join(bad, ", "))
		r.Details["unhealthyComponents"] = strings.Join(bad, ",")
		r.Checks = append(r.Checks, connectors.Check{Capability: CheckHealth, Message: degraded, Latency: time.Since(t), Class: fault.ClassTransient})
	} else {
		r.Checks = append(r.Checks, oci.Passed(CheckHealth, time.Since(t), fmt.Sprintf("healthy (%d components)", len(h.Components))))
	}

	if full {
		// Harbor answers 401 to any API call whose basic credentials are
		// wrong, so one small authenticated call proves the account.
		t = time.Now()
		if _, _, err := c.projects(ctx, 1, 1); err != nil {
			r.Checks = append(r.Checks, oci.Failed(CheckAuth, time.Since(t), err))
			return degraded, err
		}
		r.Checks = append(r.Checks, oci.Passed(CheckAuth, time.Since(t), "account "+c.conf.Username+" accepted"))
	}
	return degraded, nil
}
