// Package acr is the registry.acr connector: Azure Container Registry
// through the OCI distribution API (package oci), with a service principal
// or the registry's admin user.
//
// A service principal authenticates in three steps, as `az acr login`
// does: an AAD access token from the client-credentials grant
// (POST {authorityHost}/{tenantId}/oauth2/v2.0/token), exchanged at the
// registry for an ACR refresh token (POST /oauth2/exchange), which is the
// password, beside the user 00000000-0000-0000-0000-000000000000, of the
// distribution token flow. Both tokens are cached until shortly before
// they expire; a refresh token the registry refuses is dropped, so the
// next call exchanges again. The admin user is plain basic credentials.
package acr

import (
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
const Type = "registry.acr"

// Authentication modes.
const (
	ModeServicePrincipal = "service_principal"
	ModeAdmin            = "admin"
)

// Defaults of the public Azure cloud.
const (
	DefaultAuthorityHost = "https://login.microsoftonline.com"
	// ScopeManagement and ScopeACR are the audiences the exchange accepts.
	ScopeManagement = "https://management.azure.com/.default"
	ScopeACR        = "https://containerregistry.azure.net/.default"
)

func init() {
	oci.Register(connectors.Info{
		Type:         Type,
		Provider:     "acr",
		DisplayName:  "Azure Container Registry",
		Description:  "Azure Container Registry with a service principal (AAD token → ACR refresh token) or the admin user: tags, tag → digest, manifests, repositories.",
		Capabilities: []string{"auth", "ping", "repos", "tags", "digest", "manifest"},
	}, New)
}

// Interface guards.
var (
	_ connectors.Connector     = (*Connector)(nil)
	_ connectors.Discoverer    = (*Connector)(nil)
	_ connectors.ImageRegistry = (*Connector)(nil)
)

// Config is the integration's config (schemas/config/registry.acr.json).
type Config struct {
	// Endpoint is the registry's login server, https://<name>.azurecr.io.
	Endpoint string `json:"endpoint"`
	AuthMode string `json:"authMode,omitempty"`
	// Service principal.
	TenantID string `json:"tenantId,omitempty"`
	ClientID string `json:"clientId,omitempty"`
	// ClientSecret is an AuthRef URI; the integration's AuthRef if empty.
	ClientSecret  string `json:"clientSecret,omitempty"`
	Scope         string `json:"scope,omitempty"`
	AuthorityHost string `json:"authorityHost,omitempty"`
	// Admin user.
	Username string `json:"username,omitempty"`
	// Password is an AuthRef URI; the integration's AuthRef if empty.
	Password string `json:"password,omitempty"`
	// Insecure, the probe repository and tag, the timeouts.
	oci.Settings
}

// ConfigError names the config field that is wrong.
type ConfigError struct {
	Field  string
	Reason string
}

func (e *ConfigError) Error() string { return "registry.acr: " + e.Field + " " + e.Reason }

// Connector is one ACR integration. It is safe for concurrent use.
type Connector struct {
	oci.Registry
	cfg  connectors.Config
	conf Config
	log  *slog.Logger
	// tokens is the service principal's chain; nil in admin mode.
	tokens *tokens
}

// New builds a connector without I/O; a config that decodes but is wrong
// is reported by Validate and by every call.
func New(cfg connectors.Config) (*Connector, error) {
	var conf Config
	if err := oci.DecodeConfig(cfg, Type, &conf); err != nil {
		return nil, err
	}
	if conf.AuthMode == "" {
		conf.AuthMode = ModeServicePrincipal
	}
	if conf.Scope == "" {
		conf.Scope = ScopeManagement
	}
	if conf.AuthorityHost == "" {
		conf.AuthorityHost = DefaultAuthorityHost
	}
	switch conf.AuthMode {
	case ModeServicePrincipal:
		if conf.ClientSecret == "" {
			conf.ClientSecret = cfg.AuthRef
		}
	case ModeAdmin:
		if conf.Password == "" {
			conf.Password = cfg.AuthRef
		}
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	c := &Connector{cfg: cfg, conf: conf, log: oci.Logger(cfg, "acr")}
	invalid := c.check()
	if invalid == nil && conf.AuthMode == ModeServicePrincipal {
		c.tokens = c.newTokens(cfg.Now)
	}
	reg := c.registry(conf.ProbeRepository)
	if invalid == nil {
		invalid = oci.Reword(reg.Validate(), func(field, reason string) error {
			return &ConfigError{Field: field, Reason: reason}
		})
	}
	c.Registry = oci.Embed(oci.Provider{Type: Type, Name: "acr"}, reg, invalid)
	return c, nil
}

func (c *Connector) newTokens(now func() time.Time) *tokens {
	timeout := 30 * time.Second
	if c.conf.TimeoutSeconds > 0 {
		timeout = time.Duration(c.conf.TimeoutSeconds) * time.Second
	}
	authority, _ := url.Parse(strings.TrimSuffix(c.conf.AuthorityHost, "/"))
	endpoint, _ := url.Parse(c.conf.Endpoint)
	return &tokens{
		client:    c.httpClient,
		secrets:   c.cfg.Secrets,
		now:       now,
		timeout:   timeout,
		authority: &url.URL{Scheme: authority.Scheme, Host: authority.Host, Path: authority.Path},
		registry:  &url.URL{Scheme: endpoint.Scheme, Host: endpoint.Host},
		tenant:    c.conf.TenantID,
		clientID:  c.conf.ClientID,
		secretRef: c.conf.ClientSecret,
		scope:     c.conf.Scope,
		sem:       make(chan struct{}, 1),
	}
}

// check validates what is ACR's own; oci checks the endpoint, the probe
// names and the timeout.
func (c *Connector) check() error {
	conf := c.conf
	invalid := func(field, format string, args ...any) error {
		return fault.Permanent(&ConfigError{Field: field, Reason: fmt.Sprintf(format, args...)})
	}
	authref := func(field, v string) error {
		if !strings.HasPrefix(v, "authref://") {
			// Never quote the value: it may be the secret itself.
			return invalid(field, "must be an AuthRef URI (authref://...), not a secret in clear")
		}
		return nil
	}
	if conf.Endpoint == "" {
		return invalid("endpoint", "is required (the login server, https://<name>.azurecr.io)")
	}
	if u, err := url.Parse(conf.Endpoint); err != nil || u.Host == "" {
		return invalid("endpoint", "must be an absolute http(s) URL")
	}
	switch conf.AuthMode {
	case ModeServicePrincipal:
		if conf.Username != "" || conf.Password != "" {
			return invalid("username", "belongs to authMode admin; a service principal uses tenantId, clientId and clientSecret")
		}
		if conf.TenantID == "" || strings.ContainsAny(conf.TenantID, "/?#% ") {
			return invalid("tenantId", "is required (the directory's id or domain)")
		}
		if conf.ClientID == "" {
			return invalid("clientId", "is required (the service principal's application id)")
		}
		if conf.ClientSecret == "" {
			return invalid("clientSecret", "is required (or the integration's AuthRef)")
		}
		if err := authref("clientSecret", conf.ClientSecret); err != nil {
			return err
		}
		if !strings.HasPrefix(conf.Scope, "https://") || !strings.HasSuffix(conf.Scope, "/.default") {
			return invalid("scope", "must be an AAD resource scope ending in /.default, e.g. %s", ScopeManagement)
		}
		u, err := url.Parse(conf.AuthorityHost)
		if err != nil || u.Host == "" || u.RawQuery != "" || u.User != nil {
			return invalid("authorityHost", "must be an absolute https URL")
		}
		if u.Scheme != "https" && !(u.Scheme == "http" && conf.Insecure) {
			return invalid("authorityHost", "must be https")
		}
	case ModeAdmin:
		if conf.TenantID != "" || conf.ClientID != "" || conf.ClientSecret != "" {
			return invalid("authMode", "is admin, so tenantId, clientId and clientSecret must be empty")
		}
		if conf.Username == "" {
			return invalid("username", "is required for authMode admin (the registry's admin user name)")
		}
		if conf.Password == "" {
			return invalid("password", "is required for authMode admin (or the integration's AuthRef)")
		}
		if err := authref("password", conf.Password); err != nil {
			return err
		}
	default:
		return invalid("authMode", "must be %s or %s", ModeServicePrincipal, ModeAdmin)
	}
	return nil
}

func (c *Connector) httpClient() *http.Client { return oci.Client(c.cfg) }
