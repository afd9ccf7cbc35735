package acr

import (
	"context"
	"fmt"
	"time"

	"inthub.dev/pkg/connectors"
	"inthub.dev/pkg/connectors/oci"
)

// Capabilities reported as Checks, beside oci's ping, tags and digest.
const (
	CheckAuth  = "auth"         // AAD token and refresh-token exchange
	CheckRepos = oci.CheckRepos // the catalog can be listed
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
	return oci.Report(ctx, &c.Registry, c.log, oci.Check{
		Full:    full,
		Details: map[string]string{"authMode": c.conf.AuthMode},
		First:   CheckAuth,
		Healthy: "Azure Container Registry answers and the credentials are accepted",
		Steps: func(ctx context.Context, r *connectors.Result) error {
			r.Details["endpoint"] = c.Inner().Endpoint()
			if c.tokens == nil {
				return nil
			}
			t := time.Now()
			rt, err := c.tokens.refreshToken(ctx)
			if err != nil {
				r.Checks = append(r.Checks, oci.Failed(CheckAuth, time.Since(t), err))
				return err
			}
			exp := rt.exp.UTC()
			r.CredentialExpiry = &exp
			r.Checks = append(r.Checks, oci.Passed(CheckAuth, time.Since(t),
				fmt.Sprintf("service principal %s: AAD token exchanged for an ACR refresh token valid until %s", c.conf.ClientID, exp.Format(time.RFC3339))))
			return nil
		},
		Probe: oci.Probe{
			Repository: c.conf.ProbeRepository,
			List:       c.Inner().ListRepositories,
			Listed:     "the catalog is listed",
			None:       "the registry holds no repository: tags and digest were not checked",
			For:        c.registry,
		},
	})
}

// registry is the distribution connector for probe.
func (c *Connector) registry(probe string) *oci.Connector {
	return oci.NewWithOptions(c.cfg, c.ociConfig(probe), c.ociOptions())
}

func (c *Connector) ociConfig(probe string) oci.Config {
	conf := oci.Config{
		Endpoint: c.conf.Endpoint,
		Settings: c.conf.Probing(probe),
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
