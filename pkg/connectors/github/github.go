// Package github is the scm.github connector: a GitHub App installation on
// github.com, GHE.com or GitHub Enterprise Server.
//
// The app signs a JWT with its private key (resolved through the
// config's privateKey AuthRef when a call needs it) and trades it for an
// installation token, which ghinstallation caches and refreshes before it
// expires; go-github makes the calls. Every call goes to one API root
// (see NormalizeEndpoint) through the caller's HTTP client, with a
// per-request timeout from timeoutSeconds, redirects kept to the API's
// origin and bodies capped. Failures come back classified (package fault)
// with a message that names what failed and never a credential.
package github

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"time"

	"github.com/bradleyfalzon/ghinstallation/v2"
	gh "github.com/google/go-github/v62/github"

	"inthub.dev/pkg/connectors"
	"inthub.dev/pkg/fault"
	"inthub.dev/schemas"
)

const (
	// Type is the integration type id.
	Type = "scm.github"
	// Provider names the provider.
	Provider = "github"
)

// Capabilities are what the connector does besides test and health.
var capabilities = []string{"repos", "branches", "tags", "comment", "status", "check_run"}

func init() {
	schema, err := schemas.ConfigSchema(Type)
	if err != nil {
		// The schema is embedded: its absence is a broken build.
		panic(fmt.Sprintf("github: %v", err))
	}
	connectors.Default().Register(Info(schema), New)
}

// Info describes the type, for registries other than the default (tests).
func Info(schema []byte) connectors.Info {
	return connectors.Info{
		Type:         Type,
		Provider:     Provider,
		DisplayName:  "GitHub App",
		Description:  "A GitHub App installation on github.com or GitHub Enterprise Server: repositories, branches and tags of the installation; pull-request comments, commit statuses and check runs.",
		Capabilities: capabilities,
		ConfigSchema: schema,
	}
}

// Connector is one GitHub App installation.
type Connector struct {
	cfg     connectors.Config
	conf    config
	log     *slog.Logger
	timeout time.Duration

	// Derived from the config in New; nil when the endpoint is invalid
	// (Validate says why and every call fails with it).
	ends         endpoints
	apiURL       *url.URL
	base         http.RoundTripper
	userRedirect func(*http.Request, []*http.Request) error
	signer       *keySigner
	tokens       *tokenSource // the long-lived installation token
	app          *gh.Client   // authenticated as the app (JWT)
	inst         *gh.Client   // authenticated as the installation

	ann annotations // what Annotate has written (annotate.go)
}

var (
	_ connectors.Connector   = (*Connector)(nil)
	_ connectors.Provisioner = (*Connector)(nil)
	_ connectors.Discoverer  = (*Connector)(nil)
)

// New builds the connector without I/O. A config that is not a JSON
// object of known fields is refused here; the rest is for Validate.
func New(cfg connectors.Config) (connectors.Connector, error) {
	conf, err := decodeConfig(cfg.Config)
	if err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	c := &Connector{
		cfg:     cfg,
		conf:    conf,
		timeout: conf.timeout(),
		signer:  &keySigner{},
		log: log.With(slog.String("provider", Provider), slog.String("integrationId", cfg.IntegrationID),
			slog.String("tenantId", cfg.TenantID)),
	}
	ends, err := normalize(conf.Endpoint)
	if err != nil {
		return c, nil
	}
	c.ends = ends
	c.apiURL, _ = url.Parse(ends.api)

	next := http.DefaultTransport
	if hc := cfg.HTTPClient; hc != nil {
		if hc.Transport != nil {
			next = hc.Transport
		}
		c.userRedirect = hc.CheckRedirect
	}
	c.base = &limitTransport{next: next}

	apps, err := ghinstallation.NewAppsTransportWithOptions(c.base, conf.AppID, ghinstallation.WithSigner(c.signer))
	if err != nil {
		return nil, err
	}
	c.app = c.client(&appTransport{c: c, apps: apps})
	c.tokens = c.newTokenSource()
	c.inst = c.client(&tokenTransport{ts: c.tokens})
	return c, nil
}

// client is a go-github client on rt, rooted at the API root.
func (c *Connector) client(rt http.RoundTripper) *gh.Client {
	cl := gh.NewClient(&http.Client{Transport: rt, CheckRedirect: c.checkRedirect})
	cl.BaseURL, _ = url.Parse(c.ends.api)
	cl.UploadURL, _ = url.Parse(c.ends.uploads)
	cl.UserAgent = "inthub-scm.github"
	return cl
}

func (c *Connector) Type() string     { return Type }
func (c *Connector) Provider() string { return Provider }

// Validate checks the config without network calls.
func (c *Connector) Validate() error { return c.conf.validate(c.cfg.AuthRef) }

// Provision checks the config and that the private key resolves and
// parses, so that a wrong AuthRef shows at setup rather than at the first
// health check. The key is not kept.
func (c *Connector) Provision(ctx context.Context) error {
	if err := c.Validate(); err != nil {
		return err
	}
	release, err := c.holdKey(ctx)
	if err != nil {
		return err
	}
	release()
	return nil
}

// Close releases nothing: the HTTP client is the caller's, and the key is
// held only during calls. It is safe after a failed Provision.
func (c *Connector) Close() error { return nil }

// call runs f with the per-request timeout and classifies its failure.
func (c *Connector) call(ctx context.Context, o op, f func(ctx context.Context) error) error {
	if err := c.Validate(); err != nil {
		return err
	}
	cctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	if err := f(cctx); err != nil {
		err = c.classify(ctx, o, err)
		c.log.LogAttrs(ctx, slog.LevelDebug, "github call failed", slog.String("operation", o.name),
			slog.String("errorClass", fault.ClassOf(err).String()), slog.String("error", err.Error()))
		return err
	}
	return nil
}
