package gcr

import (
	"context"
	"time"

	"inthub.dev/pkg/connectors"
	"inthub.dev/pkg/connectors/oci"
)

// Capabilities reported as Checks, beside oci's ping, tags and digest.
const (
	CheckAuth  = "auth"         // the service-account key is exchanged for an access token
	CheckRepos = oci.CheckRepos // the catalog can be listed
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
	return oci.Report(ctx, &c.Registry, c.log, oci.Check{
		Full:    full,
		First:   CheckAuth,
		Healthy: "Google issues access tokens and the registry answers",
		Steps: func(ctx context.Context, r *connectors.Result) error {
			t := time.Now()
			tok, err := c.token(ctx, full)
			if err != nil {
				r.Checks = append(r.Checks, oci.Failed(CheckAuth, time.Since(t), err))
				return err
			}
			exp := tok.expires
			r.CredentialExpiry = &exp
			r.Details["serviceAccount"] = tok.email
			r.Details["tokenExpiresAt"] = exp.UTC().Format(time.RFC3339)
			r.Checks = append(r.Checks, oci.Passed(CheckAuth, time.Since(t), "access token for "+tok.email+" valid until "+r.Details["tokenExpiresAt"]))
			return nil
		},
		Probe: oci.Probe{
			Repository: c.conf.ProbeRepository,
			List:       c.Inner().ListRepositories,
			Listed:     "repositories listed",
			None:       "no repository found (Artifact Registry lists none: set probeRepository): tags and digest were not checked",
			For:        c.registry,
		},
	})
}
