package ecr

import (
	"context"
	"time"

	"inthub.dev/pkg/connectors"
	"inthub.dev/pkg/connectors/oci"
)

// Capabilities reported as Checks, beside oci's ping, tags and digest.
const (
	CheckAuth  = "auth"         // GetAuthorizationToken mints a registry token
	CheckRepos = oci.CheckRepos // the catalog can be listed
)

// TestConnection runs, one Check each: a fresh GetAuthorizationToken
// (auth), a catalog page (repos), then through registry.oci the ping with
// the token, the probe repository's tags and a tag → digest HEAD. The
// probe repository is the configured one, else the first listed.
func (c *Connector) TestConnection(ctx context.Context) connectors.Result {
	return c.probe(ctx, true)
}

// CheckHealth uses the cached token (minting one when it is due), pings
// the registry and resolves the probe tag.
func (c *Connector) CheckHealth(ctx context.Context) connectors.Result {
	return c.probe(ctx, false)
}

func (c *Connector) probe(ctx context.Context, full bool) connectors.Result {
	return oci.Report(ctx, &c.Registry, c.log, oci.Check{
		Full:    full,
		First:   CheckAuth,
		Healthy: "ECR issues tokens and the registry answers",
		Steps: func(ctx context.Context, r *connectors.Result) error {
			r.Details["authMode"] = c.conf.AuthMode
			r.Details["region"] = c.conf.Region
			t := time.Now()
			tok, err := c.token(ctx, full)
			if err != nil {
				r.Checks = append(r.Checks, oci.Failed(CheckAuth, time.Since(t), err))
				return err
			}
			exp := tok.expires
			r.CredentialExpiry = &exp
			r.Details["tokenExpiresAt"] = exp.UTC().Format(time.RFC3339)
			msg := "authorization token valid until " + r.Details["tokenExpiresAt"]
			if tok.proxy != "" {
				msg += " for " + tok.proxy
			}
			r.Checks = append(r.Checks, oci.Passed(CheckAuth, time.Since(t), msg))
			return nil
		},
		Probe: oci.Probe{
			Repository: c.conf.ProbeRepository,
			List:       c.Inner().ListRepositories,
			Listed:     "repositories listed",
			None:       "no repository found: tags and digest were not checked",
			For:        c.registry,
		},
	})
}
