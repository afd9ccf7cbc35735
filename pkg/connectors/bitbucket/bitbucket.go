// Package bitbucket is the scm.bitbucket connector: Bitbucket Cloud (REST
// API 2.0, one workspace) and Bitbucket Data Center (REST API 1.0, one
// project), with an access token sent as Bearer (Cloud workspace, project
// or repository access tokens; Data Center HTTP access tokens) or a
// username and password over Basic auth (a Cloud app password or API
// token; a Data Center password).
//
// Like scm.gitlab it talks plain net/http: the two flavours share little
// beyond the word "Bitbucket", the Go clients for either bring their own
// retrying transports (drivers here classify and return, never retry),
// and the connector needs a dozen endpoints.
package bitbucket

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"time"

	"inthub.dev/pkg/connectors"
	"inthub.dev/pkg/connectors/strictjson"
	"inthub.dev/pkg/fault"
	"inthub.dev/schemas"
)

// Type is the integration type id.
const Type = "scm.bitbucket"

// Flavours.
const (
	Cloud      = "cloud"
	DataCenter = "datacenter"
)

// CloudEndpoint is the API host of Bitbucket Cloud, the default endpoint.
const CloudEndpoint = "https://api.bitbucket.org"

const defaultTimeout = 30 * time.Second

func init() {
	schema, err := schemas.ConfigSchema(Type)
	if err != nil {
		// The schema is embedded in inthub.dev/schemas: a missing one is
		// a broken build, not a runtime condition.
		panic(err)
	}
	connectors.Default().Register(Info(schema), New)
}

// Info describes the type, for registries other than the default one.
func Info(schema []byte) connectors.Info {
	return connectors.Info{
		Type:         Type,
		Provider:     "bitbucket",
		DisplayName:  "Bitbucket",
		Description:  "Bitbucket Cloud (a workspace) or Bitbucket Data Center (a project), with an access token or a username and app password / password",
		Capabilities: []string{"repos", "branches", "tags", "comment", "status", "check_run"},
		ConfigSchema: schema,
	}
}

// config is the integration's config, as in schemas/config/scm.bitbucket.json.
type config struct {
	Flavor                string `json:"flavor"`
	Endpoint              string `json:"endpoint"`
	Workspace             string `json:"workspace"`
	ProjectKey            string `json:"projectKey"`
	Username              string `json:"username"`
	Password              string `json:"password"`
	Token                 string `json:"token"`
	TimeoutSeconds        int    `json:"timeoutSeconds"`
	HealthIntervalSeconds int    `json:"healthIntervalSeconds"`
}

// Connector is one Bitbucket integration. It is safe for concurrent use.
type Connector struct {
	cfg     connectors.Config
	conf    config
	confErr error // from decoding, reported by Validate and every call

	flavor  string
	site    *url.URL // instance root (DC) or API host (Cloud), no path for Cloud
	root    *url.URL // REST root: ".../2.0" or ".../rest/api/1.0"
	web     string   // what users open: https://bitbucket.org or the DC root
	owner   string   // the workspace (Cloud) or project key (DC)
	timeout time.Duration
	client  *http.Client
	logger  *slog.Logger
	now     func() time.Time

	ann *annotationState // what Annotate remembers (annotate.go)
}

var (
	_ connectors.Connector  = (*Connector)(nil)
	_ connectors.Discoverer = (*Connector)(nil)
)

// New builds a connector. It does no I/O and resolves no secret; a config
// that does not decode is reported by Validate and by every call.
func New(cfg connectors.Config) (connectors.Connector, error) {
	c := &Connector{
		cfg:     cfg,
		timeout: defaultTimeout,
		client:  guardRedirects(cfg.HTTPClient),
		logger:  cfg.Logger,
		now:     cfg.Now,
		ann:     newAnnotationState(),
	}
	if c.logger == nil {
		c.logger = slog.New(slog.DiscardHandler)
	}
	if c.now == nil {
		c.now = time.Now
	}
	c.conf, c.confErr = decode(cfg.Config)
	if c.confErr == nil {
		c.confErr = c.check()
	}
	return c, nil
}

func decode(raw json.RawMessage) (config, error) {
	var conf config
	if err := strictjson.Decode(raw, &conf); err != nil {
		return conf, fault.Permanentf("bitbucket: config: %w", err)
	}
	return conf, nil
}

var (
	workspaceRE  = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$`)
	projectKeyRE = regexp.MustCompile(`^~?[A-Za-z][A-Za-z0-9_]{0,127}$`)
)

// check validates the decoded config, settles the flavour and derives the
// API root.
func (c *Connector) check() error {
	flavor, site, err := Site(c.conf.Flavor, c.conf.Endpoint)
	if err != nil {
		return err
	}
	c.flavor, c.site = flavor, site
	c.root = &url.URL{Scheme: site.Scheme, Host: site.Host, Path: strings.TrimRight(site.Path, "/")}
	if flavor == Cloud {
		c.root.Path += "/2.0"
		c.web = "https://bitbucket.org"
		if site.Host != "api.bitbucket.org" {
			// A stand-in (a test's fake, a proxy): its web pages are
			// wherever it is.
			c.web = strings.TrimRight(site.String(), "/")
		}
	} else {
		c.root.Path += "/rest/api/1.0"
		c.web = strings.TrimRight(site.String(), "/")
	}

	hasBasic := c.conf.Username != "" || c.conf.Password != ""
	switch {
	case c.conf.Token != "" && hasBasic:
		return fault.Permanentf("bitbucket: config: token and username/password are alternatives: set only one")
	case hasBasic && (c.conf.Username == "" || c.conf.Password == ""):
		return fault.Permanentf("bitbucket: config: username and password go together")
	case c.conf.Token == "" && !hasBasic && c.cfg.AuthRef == "":
		return fault.Permanentf("bitbucket: config: set token (an access token's AuthRef) or username and password (an app password's or password's AuthRef)")
	}
	for field, ref := range map[string]string{"token": c.conf.Token, "password": c.conf.Password} {
		if ref != "" && !strings.HasPrefix(ref, "authref://") {
			return fault.Permanentf("bitbucket: config: %s must be an AuthRef URI (authref://...), never the secret itself", field)
		}
	}
	switch flavor {
	case Cloud:
		switch {
		case c.conf.ProjectKey != "":
			return fault.Permanentf("bitbucket: config: projectKey is for Data Center; Bitbucket Cloud takes a workspace")
		case c.conf.Workspace == "":
			return fault.Permanentf("bitbucket: config: Bitbucket Cloud needs the workspace whose repositories the integration reaches")
		case !workspaceRE.MatchString(c.conf.Workspace):
			return fault.Permanentf("bitbucket: config: workspace %q is not a workspace slug", c.conf.Workspace)
		}
		c.owner = c.conf.Workspace
	default:
		switch {
		case c.conf.Workspace != "":
			return fault.Permanentf("bitbucket: config: workspace is for Bitbucket Cloud; Data Center takes a projectKey")
		case c.conf.ProjectKey == "":
			return fault.Permanentf("bitbucket: config: Bitbucket Data Center needs the projectKey whose repositories the integration reaches")
		case !projectKeyRE.MatchString(c.conf.ProjectKey):
			return fault.Permanentf("bitbucket: config: projectKey %q is not a project key", c.conf.ProjectKey)
		}
		c.owner = c.conf.ProjectKey
	}
	if t := c.conf.TimeoutSeconds; t != 0 {
		if t < 1 || t > 300 {
			return fault.Permanentf("bitbucket: config: timeoutSeconds must be between 1 and 300")
		}
		c.timeout = time.Duration(t) * time.Second
	}
	if h := c.conf.HealthIntervalSeconds; h != 0 && (h < 30 || h > 86400) {
		return fault.Permanentf("bitbucket: config: healthIntervalSeconds must be between 30 and 86400")
	}
	return nil
}

// Site settles the flavour and the instance root. An empty flavour is
// derived from the endpoint: bitbucket.org and api.bitbucket.org are
// Cloud, any other host Data Center; no endpoint at all is Cloud. For
// Cloud, bitbucket.org (the web host) is taken as api.bitbucket.org and an
// explicit /2.0 is dropped; for Data Center an explicit /rest/api/1.0 (or
// /rest/api/latest) is dropped, so that the root is the instance's.
func Site(flavor, endpoint string) (string, *url.URL, error) {
	switch flavor {
	case "", Cloud, DataCenter:
	default:
		return "", nil, fault.Permanentf("bitbucket: config: flavor must be cloud or datacenter")
	}
	if endpoint == "" {
		if flavor == DataCenter {
			return "", nil, fault.Permanentf("bitbucket: config: Bitbucket Data Center needs its endpoint (the instance's root URL)")
		}
		endpoint = CloudEndpoint
	}
	u, err := url.Parse(endpoint)
	if err != nil {
		return "", nil, fault.Permanentf("bitbucket: config: endpoint is not a URL")
	}
	switch {
	case u.Scheme != "http" && u.Scheme != "https", u.Host == "", u.Opaque != "":
		return "", nil, fault.Permanentf("bitbucket: config: endpoint must be an absolute http(s) URL such as https://bitbucket.example.com")
	case u.User != nil:
		return "", nil, fault.Permanentf("bitbucket: config: endpoint must not contain credentials; put them in an AuthRef")
	case u.RawQuery != "" || u.Fragment != "" || u.ForceQuery:
		return "", nil, fault.Permanentf("bitbucket: config: endpoint must not have a query or fragment")
	}
	host := strings.ToLower(u.Host)
	isCloudHost := host == "bitbucket.org" || host == "api.bitbucket.org" || host == "www.bitbucket.org"
	if flavor == "" {
		flavor = DataCenter
		if isCloudHost {
			flavor = Cloud
		}
	}
	p := strings.TrimRight(u.Path, "/")
	switch flavor {
	case Cloud:
		if isCloudHost {
			if u.Scheme != "https" {
				return "", nil, fault.Permanentf("bitbucket: config: Bitbucket Cloud is reached over https only")
			}
			host, p = "api.bitbucket.org", ""
		}
		p = strings.TrimSuffix(p, "/2.0")
	case DataCenter:
		if isCloudHost {
			return "", nil, fault.Permanentf("bitbucket: config: %s is Bitbucket Cloud; set flavor cloud (or leave it out)", host)
		}
		for _, suffix := range []string{"/rest/api/1.0", "/rest/api/latest"} {
			p = strings.TrimSuffix(p, suffix)
		}
	}
	return flavor, &url.URL{Scheme: u.Scheme, Host: host, Path: p}, nil
}

// Type implements connectors.Connector.
func (c *Connector) Type() string { return Type }

// Provider implements connectors.Connector.
func (c *Connector) Provider() string { return "bitbucket" }

// Flavor is cloud or datacenter ("" when the config is invalid).
func (c *Connector) Flavor() string { return c.flavor }

// Validate checks the config without network calls.
func (c *Connector) Validate() error { return c.confErr }

// Close releases nothing: the HTTP client is the caller's.
func (c *Connector) Close() error { return nil }

func (c *Connector) cloud() bool { return c.flavor == Cloud }

// bearer reports whether the integration authenticates with an access
// token (as opposed to a user's password).
func (c *Connector) bearer() bool {
	return c.conf.Token != "" || (c.conf.Username == "" && c.cfg.AuthRef != "")
}

// credential is a resolved secret, alive for one call only: never logged,
// never part of an error.
type credential struct {
	header string // the Authorization header's value
}

// credential resolves the configured secret now.
func (c *Connector) credential(ctx context.Context) (credential, error) {
	if c.confErr != nil {
		return credential{}, c.confErr
	}
	if c.cfg.Secrets == nil {
		return credential{}, fault.Permanentf("bitbucket: no secret resolver configured")
	}
	ref, field := c.conf.Token, "token"
	switch {
	case c.conf.Password != "":
		ref, field = c.conf.Password, "password"
	case ref == "":
		// The integration's own AuthRef, when the config names no
		// secret field, is an access token.
		ref, field = c.cfg.AuthRef, "authRef"
	}
	b, err := c.cfg.Secrets.Resolve(ctx, ref)
	if err != nil {
		if fault.ClassOf(err) == fault.ClassUnknown {
			err = fault.Transient(err)
		}
		return credential{}, fmt.Errorf("bitbucket: resolve %s: %w", field, err)
	}
	v := strings.TrimSpace(string(b))
	if v == "" {
		return credential{}, fault.Permanentf("bitbucket: the secret that %s points at is empty", field)
	}
	for i := 0; i < len(v); i++ {
		if v[i] < 0x20 || v[i] == 0x7f {
			return credential{}, fault.Permanentf("bitbucket: the secret that %s points at holds control characters", field)
		}
	}
	if field == "password" {
		req := http.Request{Header: http.Header{}}
		req.SetBasicAuth(c.conf.Username, v)
		return credential{header: req.Header.Get("Authorization")}, nil
	}
	return credential{header: "Bearer " + v}, nil
}
