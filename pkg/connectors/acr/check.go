package acr

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
	CheckAuth  = "auth"  // AAD token and refresh-token exchange
	CheckRepos = "repos" // the catalog can be listed
)

// TestConnection runs, one Check each: the service principal's token
// chain (auth: AAD grant and exchange; its expiry becomes
// CredentialExpiry), a catalog page (repos), then through registry.oci
// the ping with the token flow, the probe repository's tags and a tag →
// digest HEAD. The probe repository is the configured one, else the first
// one listed.
func (c *Connector) TestConnection(ctx context.Context) connectors.Result {
	return c.probe(ctx, true)
}

// CheckHealth runs the token chain (from cache when it is fresh), the
// ping and the probe tag's HEAD.
func (c *Connector) CheckHealth(ctx context.Context) connectors.Result {
	return c.probe(ctx, false)
}

func (c *Connector) probe(ctx context.Context, full bool) connectors.Result {
	start := time.Now()
	r := connectors.Result{Details: map[string]string{"authMode": c.conf.AuthMode}}
	err := c.run(ctx, full, &r)
	r = oci.Finish(r, start, err, "Azure Container Registry answers and the credentials are accepted")
	op := "health_check"
	if full {
		op = "test_connection"
	}
	if err != nil {
		c.log.WarnContext(ctx, "acr check failed", "operation", op, "class", r.Class.String(), "error", r.Message)
	} else {
		c.log.DebugContext(ctx, "acr check passed", "operation", op, "latencyMs", r.Latency.Milliseconds())
	}
	return r
}

func (c *Connector) run(ctx context.Context, full bool, r *connectors.Result) error {
	if c.invalid != nil {
		r.Checks = append(r.Checks, failed(CheckAuth, 0, c.invalid))
		return c.invalid
	}
	r.Details["endpoint"] = c.reg.Endpoint()
	if c.tokens != nil {
		t := time.Now()
		rt, err := c.tokens.refreshToken(ctx)
		if err != nil {
			r.Checks = append(r.Checks, failed(CheckAuth, time.Since(t), err))
			return err
		}
		exp := rt.exp.UTC()
		r.CredentialExpiry = &exp
		r.Checks = append(r.Checks, passed(CheckAuth, time.Since(t),
			fmt.Sprintf("service principal %s: AAD token exchanged for an ACR refresh token valid until %s", c.conf.ClientID, exp.Format(time.RFC3339))))
	}

	probe := c.conf.ProbeRepository
	if full || probe == "" {
		t := time.Now()
		page, err := c.reg.ListRepositories(ctx, connectors.ListOptions{Limit: 1})
		if err != nil {
			r.Checks = append(r.Checks, failed(CheckRepos, time.Since(t), err))
			return err
		}
		if full {
			r.Checks = append(r.Checks, passed(CheckRepos, time.Since(t), "the catalog is listed"))
		}
		if probe == "" && len(page.Items) > 0 {
			probe = page.Items[0].FullName
		}
	}
	reg := c.reg
	if probe != c.conf.ProbeRepository {
		reg = oci.NewWithOptions(c.cfg, c.ociConfig(probe), c.ociOptions())
	}
	if err := reg.Run(ctx, full, r); err != nil {
		return err
	}
	if probe == "" {
		r.Details["probe"] = "the registry holds no repository: tags and digest were not checked"
	}
	return nil
}

func (c *Connector) ociConfig(probe string) oci.Config {
	conf := oci.Config{
		Endpoint:        c.conf.Endpoint,
		Insecure:        c.conf.Insecure,
		ProbeRepository: probe,
		ProbeTag:        c.conf.ProbeTag,
		TimeoutSeconds:  c.conf.TimeoutSeconds,
	}
	if c.conf.AuthMode == ModeAdmin {
		conf.Username, conf.Password = c.conf.Username, c.conf.Password
	}
	return conf
}

func (c *Connector) ociOptions() oci.Options {
	if c.tokens == nil {
		return oci.Options{}
	}
	return oci.Options{Credentials: c.tokens.credentials, Refused: c.tokens.refused}
}

func passed(capability string, d time.Duration, msg string) connectors.Check {
	return connectors.Check{Capability: capability, OK: true, Message: msg, Latency: d}
}

func failed(capability string, d time.Duration, err error) connectors.Check {
	class := fault.ClassOf(err)
	if class == fault.ClassUnknown {
		class = fault.ClassTransient
	}
	return connectors.Check{Capability: capability, Message: err.Error(), Latency: d, Class: class, Err: err}
}
