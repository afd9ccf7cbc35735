package gcr

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
	CheckAuth  = "auth"  // the service-account key is exchanged for an access token
	CheckRepos = "repos" // the catalog can be listed
)

// TestConnection runs, one Check each: a fresh access token from the
// service-account key (auth), a catalog page (repos), then through
// registry.oci the ping with the token, the probe repository's tags and a
// tag → digest HEAD. The probe repository is the configured one, else the
// first listed (Artifact Registry lists none: configure one there).
func (c *Connector) TestConnection(ctx context.Context) connectors.Result {
	return c.probe(ctx, true)
}

// CheckHealth uses the cached token (a new one when it is due), pings
// the registry and resolves the probe tag.
func (c *Connector) CheckHealth(ctx context.Context) connectors.Result {
	return c.probe(ctx, false)
}

func (c *Connector) probe(ctx context.Context, full bool) connectors.Result {
	start := time.Now()
	r := connectors.Result{Details: map[string]string{}}
	err := c.run(ctx, full, &r)
	r = oci.Finish(r, start, err, "Google issues access tokens and the registry answers")
	op := "health_check"
	if full {
		op = "test_connection"
	}
	if err != nil {
		c.log.WarnContext(ctx, "gcr check failed", "operation", op, "class", r.Class.String(), "error", r.Message)
	} else {
		c.log.DebugContext(ctx, "gcr check passed", "operation", op, "latencyMs", r.Latency.Milliseconds())
	}
	return r
}

func (c *Connector) run(ctx context.Context, full bool, r *connectors.Result) error {
	if c.invalid != nil {
		r.Checks = append(r.Checks, failed(CheckAuth, 0, c.invalid))
		return c.invalid
	}
	t := time.Now()
	tok, err := c.token(ctx, full)
	if err != nil {
		r.Checks = append(r.Checks, failed(CheckAuth, time.Since(t), err))
		return err
	}
	exp := tok.expires
	r.CredentialExpiry = &exp
	r.Details["serviceAccount"] = tok.email
	r.Details["tokenExpiresAt"] = exp.UTC().Format(time.RFC3339)
	r.Checks = append(r.Checks, passed(CheckAuth, time.Since(t), "access token for "+tok.email+" valid until "+r.Details["tokenExpiresAt"]))

	probe := c.conf.ProbeRepository
	if full || probe == "" {
		t = time.Now()
		page, err := c.reg.ListRepositories(ctx, connectors.ListOptions{Limit: 1})
		if err != nil {
			r.Checks = append(r.Checks, failed(CheckRepos, time.Since(t), err))
			return err
		}
		if full {
			r.Checks = append(r.Checks, passed(CheckRepos, time.Since(t), "repositories listed"))
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
		r.Details["probe"] = "no repository found (Artifact Registry lists none: set probeRepository): tags and digest were not checked"
	}
	return nil
}

func passed(capability string, d time.Duration, msg string) connectors.Check {
	return connectors.Check{Capability: capability, OK: true, Message: msg, Latency: d}
}

func failed(capability string, d time.Duration, err error) connectors.Check {
	class := fault.ClassOf(err)
	if class == fault.ClassUnknown {
		class = fault.ClassTransient
	}
	return connectors.Check{Capability: capability, Message: fmt.Sprint(err), Latency: d, Class: class}
}
