// Package gcr is the registry.gcr connector: Google Container Registry
// (gcr.io and its regional hosts) and Artifact Registry
// (<location>-docker.pkg.dev). A service-account key (JSON, an AuthRef) is
// exchanged for an OAuth2 access token (the JWT bearer grant of
// golang.org/x/oauth2/google, at the key's token_uri), which the registry
// takes as the Basic password of the user oauth2accesstoken in its token
// flow. The access token is cached until shortly before it expires; the
// distribution API calls go through the registry.oci connector.
package gcr

import (
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"

	"inthub.dev/pkg/connectors"
	"inthub.dev/pkg/connectors/oci"
	"inthub.dev/pkg/fault"
)

// Type is the integration type id.
const Type = "registry.gcr"

// User is the registry user name that goes with an access token.
const User = "oauth2accesstoken"

// Scope is the OAuth2 scope asked for: Artifact Registry needs
// cloud-platform (GCR would take devstorage.read_only as well).
const Scope = "https://www.googleapis.com/auth/cloud-platform"

func init() {
	oci.Register(connectors.Info{
		Type:         Type,
		Provider:     "gcr",
		DisplayName:  "Google Container Registry / Artifact Registry",
		Description:  "gcr.io or Artifact Registry (<location>-docker.pkg.dev) with a service-account key: access token, repositories, tags, tag → digest, manifests.",
		Capabilities: []string{"auth", "ping", "repos", "tags", "digest", "manifest"},
	}, New)
}

// Interface guards.
var (
	_ connectors.Connector     = (*Connector)(nil)
	_ connectors.ImageRegistry = (*Connector)(nil)
	_ connectors.Discoverer    = (*Connector)(nil)
)

// Config is the integration's config (schemas/config/registry.gcr.json).
type Config struct {
	// Endpoint is the registry root: https://gcr.io, https://eu.gcr.io,
	// https://europe-west1-docker.pkg.dev, ...
	Endpoint string `json:"endpoint"`
	// ServiceAccountKey is the AuthRef URI of the key file's JSON; the
	// integration's AuthRef when empty.
	ServiceAccountKey string `json:"serviceAccountKey,omitempty"`
	// Insecure, the probe repository and tag, the timeouts.
	oci.Settings
}

// Connector is one GCR or Artifact Registry integration. It is safe for
// concurrent use.
type Connector struct {
	oci.Registry
	cfg     connectors.Config
	conf    Config
	timeout time.Duration
	log     *slog.Logger
	now     func() time.Time

	mu  sync.Mutex
	tok token
	sf  singleflight.Group
}

// New builds a connector without I/O; a config that decodes but is wrong
// is reported by Validate and by every call.
func New(cfg connectors.Config) (*Connector, error) {
	var conf Config
	if err := oci.DecodeConfig(cfg, Type, &conf); err != nil {
		return nil, err
	}
	if conf.ServiceAccountKey == "" {
		conf.ServiceAccountKey = cfg.AuthRef
	}
	c := &Connector{cfg: cfg, conf: conf, timeout: oci.Timeout(conf.TimeoutSeconds), log: oci.Logger(cfg, "gcr"), now: cfg.Now}
	if c.now == nil {
		c.now = time.Now
	}
	reg := c.registry(conf.ProbeRepository)
	c.Registry = oci.Embed(oci.Provider{Type: Type, Name: "gcr"}, reg, c.check(reg))
	return c, nil
}

func (c *Connector) registry(probe string) *oci.Connector {
	return oci.NewWithOptions(c.cfg, oci.Config{
		Endpoint: c.conf.Endpoint,
		Settings: c.conf.Probing(probe),
	}, oci.Options{Credentials: c.credentials, Refused: c.dropToken})
}

// ConfigError names the config field that is wrong.
type ConfigError struct {
	Field  string
	Reason string
}

func (e *ConfigError) Error() string { return "registry.gcr: " + e.Field + " " + e.Reason }

func invalid(field, format string, args ...any) error {
	return fault.Permanent(configError(field, fmt.Sprintf(format, args...)))
}

func configError(field, reason string) error { return &ConfigError{Field: field, Reason: reason} }

func (c *Connector) check(reg *oci.Connector) error {
	if err := reg.Validate(); err != nil {
		return oci.Reword(err, configError)
	}
	if c.conf.ServiceAccountKey == "" {
		return invalid("serviceAccountKey", "is required (the AuthRef of the service account's JSON key)")
	}
	if !strings.HasPrefix(c.conf.ServiceAccountKey, "authref://") {
		// Never quote it: it may be the key itself.
		return invalid("serviceAccountKey", "must be an AuthRef URI (authref://...), not the key in clear")
	}
	return nil
}

// Close drops the cached token; the connector stays usable.
func (c *Connector) Close() error {
	c.dropToken()
	return nil
}

func (c *Connector) httpClient() *http.Client { return oci.Client(c.cfg) }
