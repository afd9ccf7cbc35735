// Package ghcr is the registry.ghcr connector: GitHub Container Registry
// (ghcr.io) through the OCI distribution API (package oci; the registry's
// token endpoint takes the username and a classic personal access token
// as Basic credentials), with repositories discovered through the GitHub
// packages API (api.github.com, or a GHES API root). The PAT needs
// read:packages; one without it is reported as a permanent authorization
// error that says so, whether the API or the registry found out.
package ghcr

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"inthub.dev/pkg/connectors"
	"inthub.dev/pkg/connectors/oci"
	"inthub.dev/pkg/fault"
)

// Type is the integration type id.
const Type = "registry.ghcr"

// Defaults of github.com.
const (
	DefaultEndpoint    = "https://ghcr.io"
	DefaultAPIEndpoint = "https://api.github.com"
)

// Owner types.
const (
	OwnerUser = "user"
	OwnerOrg  = "org"
)

func init() {
	oci.Register(connectors.Info{
		Type:         Type,
		Provider:     "ghcr",
		DisplayName:  "GitHub Container Registry",
		Description:  "ghcr.io with a username and a classic personal access token (read:packages): container packages of a user or organization, tags, tag → digest, manifests.",
		Capabilities: []string{"auth", "repos", "ping", "tags", "digest", "manifest"},
	}, New)
}

// Interface guards.
var (
	_ connectors.Connector     = (*Connector)(nil)
	_ connectors.Discoverer    = (*Connector)(nil)
	_ connectors.ImageRegistry = (*Connector)(nil)
)

// Config is the integration's config (schemas/config/registry.ghcr.json).
type Config struct {
	Endpoint    string `json:"endpoint,omitempty"`
	APIEndpoint string `json:"apiEndpoint,omitempty"`
	Username    string `json:"username"`
	// Token is the AuthRef URI of the PAT; the integration's AuthRef if
	// empty.
	Token string `json:"token,omitempty"`
	// Owner is the user or organization whose packages are discovered;
	// the username by default.
	Owner     string `json:"owner,omitempty"`
	OwnerType string `json:"ownerType,omitempty"`
	// Insecure, the probe repository and tag, the timeouts.
	oci.Settings
}

// ConfigError names the config field that is wrong.
type ConfigError struct {
	Field  string
	Reason string
}

func (e *ConfigError) Error() string { return "registry.ghcr: " + e.Field + " " + e.Reason }

// Connector is one GHCR integration. It is safe for concurrent use.
type Connector struct {
	oci.Registry
	cfg     connectors.Config
	conf    Config
	timeout time.Duration
	log     *slog.Logger
	apiBase *url.URL
}

// New builds a connector without I/O; a config that decodes but is wrong
// is reported by Validate and by every call.
func New(cfg connectors.Config) (*Connector, error) {
	var conf Config
	if err := oci.DecodeConfig(cfg, Type, &conf); err != nil {
		return nil, err
	}
	if conf.Endpoint == "" {
		conf.Endpoint = DefaultEndpoint
	}
	if conf.APIEndpoint == "" {
		conf.APIEndpoint = DefaultAPIEndpoint
	}
	if conf.Token == "" {
		conf.Token = cfg.AuthRef
	}
	if conf.Owner == "" {
		conf.Owner = conf.Username
	}
	if conf.OwnerType == "" {
		conf.OwnerType = OwnerUser
	}
	c := &Connector{cfg: cfg, conf: conf, timeout: oci.Timeout(conf.TimeoutSeconds), log: oci.Logger(cfg, "ghcr")}
	reg := c.registry(conf.ProbeRepository)
	// The distribution calls (ListTags, ResolveTag, FetchManifest,
	// VerifyDigest; repo is the image path "owner/package") explain a
	// 403 on the way out.
	c.Registry = oci.Embed(oci.Provider{Type: Type, Name: "ghcr", Wrap: registryDenied}, reg, c.check(reg))
	return c, nil
}

func (c *Connector) registry(probe string) *oci.Connector {
	return oci.NewWithConfig(c.cfg, oci.Config{
		Endpoint: c.conf.Endpoint,
		Username: c.conf.Username,
		Password: c.conf.Token,
		Settings: c.conf.Probing(probe),
	})
}

func (c *Connector) check(reg *oci.Connector) error {
	conf := c.conf
	invalid := func(field, format string, args ...any) error {
		return fault.Permanent(&ConfigError{Field: field, Reason: fmt.Sprintf(format, args...)})
	}
	if conf.Username == "" {
		return invalid("username", "is required (the GitHub user the token belongs to)")
	}
	if conf.Token == "" {
		return invalid("token", "is required (a classic personal access token with read:packages), or the integration's AuthRef")
	}
	if !strings.HasPrefix(conf.Token, "authref://") {
		// Never quote the value: it may be the secret itself.
		return invalid("token", "must be an AuthRef URI (authref://...), not a secret in clear")
	}
	if err := reg.Validate(); err != nil {
		return oci.Reword(err, func(field, reason string) error {
			if field == "password" {
				field = "token"
			}
			return &ConfigError{Field: field, Reason: reason}
		})
	}
	if conf.OwnerType != OwnerUser && conf.OwnerType != OwnerOrg {
		return invalid("ownerType", "must be %s or %s", OwnerUser, OwnerOrg)
	}
	if conf.Owner == "" || strings.ContainsAny(conf.Owner, "/?#% ") {
		return invalid("owner", "is not a GitHub user or organization name")
	}
	u, err := url.Parse(conf.APIEndpoint)
	if err != nil || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return invalid("apiEndpoint", "must be the API root, e.g. %s or https://ghe.example.com/api/v3", DefaultAPIEndpoint)
	}
	if u.Scheme != "https" && !(u.Scheme == "http" && conf.Insecure) {
		return invalid("apiEndpoint", "must be https")
	}
	c.apiBase = &url.URL{Scheme: u.Scheme, Host: u.Host, Path: strings.TrimSuffix(u.Path, "/")}
	return nil
}

func (c *Connector) httpClient() *http.Client { return oci.Client(c.cfg) }

func (c *Connector) token(ctx context.Context) ([]byte, error) {
	if c.cfg.Secrets == nil {
		return nil, fault.Permanent(errors.New("cannot resolve the token AuthRef: no secret resolver configured"))
	}
	b, err := c.cfg.Secrets.Resolve(ctx, c.conf.Token)
	if err != nil {
		if fault.ClassOf(err) == fault.ClassUnknown {
			err = fault.Permanent(err)
		}
		return nil, fmt.Errorf("cannot resolve the token AuthRef: %w", err)
	}
	return b, nil
}

// registryDenied explains a 403 of the registry or its token endpoint:
// GHCR answers DENIED both to a PAT without read:packages and to a user
// without access to the package.
func registryDenied(err error) error {
	var re *connectors.RequestError
	if err == nil || !errors.As(err, &re) || re.StatusCode != http.StatusForbidden {
		return err
	}
	return fmt.Errorf("%w (GHCR needs a classic personal access token with the read:packages scope, and read access to the package for its user)", err)
}
