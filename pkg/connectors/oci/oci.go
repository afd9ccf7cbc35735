// Package oci is the registry.oci connector: any registry that speaks the
// OCI distribution API (/v2/), anonymously, with basic credentials or with
// the bearer token flow that a WWW-Authenticate challenge asks for.
//
// Authentication is oras-go's auth.Client (oras.land/oras-go/v2), driven
// over the caller's egress-controlled http.Client: it parses challenges,
// fetches and scopes tokens, strips credentials on cross-origin redirects
// and refuses token realms on loopback, link-local and metadata addresses
// unless the realm is the registry's own host. The four distribution calls
// (ping, tag list, manifest HEAD/GET) are made here, not through oras-go's
// Repository type, because a connector needs what that type hides: the
// status and Retry-After of a failure (for the error class), one page of
// tags at a time (for Page cursors), and a digest when the registry sends
// no Docker-Content-Digest on HEAD (oras-go fails there; we GET and hash).
package oci

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"oras.land/oras-go/v2/registry"

	"inthub.dev/pkg/connectors"
	"inthub.dev/pkg/fault"
)

// Type is the integration type id.
const Type = "registry.oci"

func init() {
	Register(connectors.Info{
		Type:         Type,
		Provider:     "oci",
		DisplayName:  "OCI registry",
		Description:  "Any registry speaking the OCI distribution API: tags, tag → digest, manifests, digest verification.",
		Capabilities: []string{"ping", "repos", "tags", "digest", "manifest"},
	}, New)
}

// Interface guards.
var (
	_ connectors.Connector     = (*Connector)(nil)
	_ connectors.ImageRegistry = (*Connector)(nil)
	_ connectors.Discoverer    = (*Connector)(nil)
)

// Config is the integration's config (schemas/config/registry.oci.json).
type Config struct {
	Endpoint string `json:"endpoint"`
	Username string `json:"username,omitempty"`
	// Password is an AuthRef URI, never the password.
	Password string `json:"password,omitempty"`
	Settings
}

// Settings are the config fields that every registry integration has
// beside its endpoint and credentials; a provider's config embeds them.
type Settings struct {
	// Insecure allows an http:// endpoint (and plain http to a provider's
	// other endpoints). TLS verification is never turned off: an https
	// endpoint is always verified.
	Insecure bool `json:"insecure,omitempty"`
	// ProbeRepository is the repository that TestConnection and
	// CheckHealth list and resolve, so that they exercise real use.
	ProbeRepository string `json:"probeRepository,omitempty"`
	// ProbeTag is the tag they resolve; the first listed tag if empty.
	ProbeTag              string `json:"probeTag,omitempty"`
	TimeoutSeconds        int    `json:"timeoutSeconds,omitempty"`
	HealthIntervalSeconds int    `json:"healthIntervalSeconds,omitempty"`
}

// Probing is s with repo as the probe repository: a provider's check
// probes the first repository it lists when none is configured.
func (s Settings) Probing(repo string) Settings {
	s.ProbeRepository = repo
	return s
}

const defaultTimeout = 30 * time.Second

// Connector is one OCI registry integration. It is safe for concurrent use.
type Connector struct {
	cfg  connectors.Config
	conf Config
	// base is the registry root (scheme and host); nil when the config is
	// invalid, in which case every call returns invalid.
	base    *url.URL
	invalid error
	// creds, when set, supplies the credentials instead of
	// conf.Username and conf.Password.
	creds   Credentials
	refused func()
	timeout time.Duration
	log     *slog.Logger
	now     func() time.Time
}

// New builds a connector from an integration. It does no I/O; a config
// that cannot be decoded is an error, one that decodes but is wrong is
// reported by Validate (and by every call).
func New(cfg connectors.Config) (*Connector, error) {
	var conf Config
	if err := DecodeConfig(cfg, Type, &conf); err != nil {
		return nil, err
	}
	return NewWithConfig(cfg, conf), nil
}

// NewWithConfig builds a connector from an already decoded config; the
// registry.harbor connector composes one this way. cfg.Config is ignored.
func NewWithConfig(cfg connectors.Config, conf Config) *Connector {
	return NewWithOptions(cfg, conf, Options{})
}

// Credentials returns the username and password for the registry's own
// host. A provider whose registry password is a short-lived token (ECR,
// GCR, ACR) mints or returns a cached one here. It is called whenever the
// auth flow needs credentials: once per token exchange, or per operation
// for a registry that takes Basic credentials on every call. An error
// keeps its class (transient, permanent, offline); an unclassified one is
// taken as permanent. It must be safe for concurrent use.
type Credentials func(ctx context.Context) (username, password string, err error)

// Options are what a provider composing this connector may add.
type Options struct {
	// Credentials, when set, replaces username and password of the
	// config (which must then be empty).
	Credentials Credentials
	// Refused, when set, is called when the registry or its token
	// service answers 401 to credentials from Credentials, so that a
	// cached token (revoked, or expired early) is dropped and the next
	// call mints a new one.
	Refused func()
}

// NewWithOptions builds a connector from a decoded config and options;
// registry providers whose password is a token compose one this way.
func NewWithOptions(cfg connectors.Config, conf Config, opts Options) *Connector {
	if conf.Password == "" && conf.Username != "" && opts.Credentials == nil {
		// The integration's own AuthRef holds the password when the
		// config names a user but no password field.
		conf.Password = cfg.AuthRef
	}
	c := &Connector{cfg: cfg, conf: conf, creds: opts.Credentials, refused: opts.Refused,
		timeout: Timeout(conf.TimeoutSeconds), log: Logger(cfg, "oci"), now: cfg.Now}
	if c.now == nil {
		c.now = time.Now
	}
	c.base, c.invalid = c.check()
	return c
}

func (c *Connector) Type() string     { return Type }
func (c *Connector) Provider() string { return "oci" }
func (c *Connector) Close() error     { return nil }

// Validate checks the config without network calls.
func (c *Connector) Validate() error { return c.invalid }

// Endpoint is the registry root the connector talks to.
func (c *Connector) Endpoint() string {
	if c.base == nil {
		return ""
	}
	return c.base.String()
}

func (c *Connector) check() (*url.URL, error) {
	conf := c.conf
	invalid := func(field, format string, args ...any) error {
		return fault.Permanent(&ConfigError{Field: field, Reason: fmt.Sprintf(format, args...)})
	}
	if conf.Endpoint == "" {
		return nil, invalid("endpoint", "is required")
	}
	u, err := url.Parse(conf.Endpoint)
	if err != nil || u.Host == "" || u.Opaque != "" {
		return nil, invalid("endpoint", "must be an absolute http(s) URL")
	}
	switch u.Scheme {
	case "https":
	case "http":
		if !conf.Insecure {
			return nil, invalid("endpoint", "is plain http: set insecure to true to allow it, or use https")
		}
	default:
		return nil, invalid("endpoint", "must be an absolute http(s) URL")
	}
	if u.User != nil {
		return nil, invalid("endpoint", "must not carry credentials; use username and password")
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return nil, invalid("endpoint", "must not have a query or fragment")
	}
	// The distribution API lives at /v2/ of the host root; people often
	// paste that path, which is harmless. Any other path cannot work.
	switch strings.TrimSuffix(u.Path, "/") {
	case "", "/v2":
	default:
		return nil, invalid("endpoint", "must be the registry root (the API is always under /v2/), not %q", u.Path)
	}
	if c.creds != nil && (conf.Username != "" || conf.Password != "") {
		return nil, invalid("username", "must not be set: the provider supplies the registry credentials")
	}
	if (conf.Username == "") != (conf.Password == "") {
		if conf.Username == "" {
			return nil, invalid("username", "is required when a password is set")
		}
		return nil, invalid("password", "is required when username is set")
	}
	if p := conf.Password; p != "" && !strings.HasPrefix(p, "authref://") {
		// Never quote the value: it may be the secret itself.
		return nil, invalid("password", "must be an AuthRef URI (authref://...), not a secret in clear")
	}
	if conf.TimeoutSeconds < 0 || conf.TimeoutSeconds > 300 {
		return nil, invalid("timeoutSeconds", "must be between 1 and 300")
	}
	if conf.ProbeRepository != "" {
		if err := validRepo(u.Host, conf.ProbeRepository); err != nil {
			return nil, invalid("probeRepository", "%v", err)
		}
	}
	if conf.ProbeTag != "" {
		ref := registry.Reference{Registry: u.Host, Repository: "x", Reference: conf.ProbeTag}
		if err := ref.ValidateReferenceAsTag(); err != nil {
			return nil, invalid("probeTag", "is not a valid tag")
		}
	}
	return &url.URL{Scheme: u.Scheme, Host: u.Host}, nil
}

// ConfigError names the config field that is wrong.
type ConfigError struct {
	Field  string
	Reason string
}

func (e *ConfigError) Error() string { return "registry.oci: " + e.Field + " " + e.Reason }

func validRepo(host, repo string) error {
	ref := registry.Reference{Registry: host, Repository: repo}
	if err := ref.ValidateRepository(); err != nil {
		return errors.New("is not a valid repository name (lower-case path components: [a-z0-9]+ separated by . _ __ - /)")
	}
	return nil
}

// ready returns the config error, if any, so that a call on an invalid
// integration fails fast and permanently instead of dialling nowhere.
func (c *Connector) ready() error { return c.invalid }

// httpClient is the caller's egress-controlled client.
func (c *Connector) httpClient() *http.Client { return Client(c.cfg) }
