// Package dockerhub is the registry.dockerhub connector: Docker Hub's
// registry (registry-1.docker.io, token service auth.docker.io, both
// through package oci) with a username and personal access token, or
// anonymously; repositories are discovered through the Hub API
// (hub.docker.com), and the pull budget Docker Hub reports on manifest
// requests is part of every check.
package dockerhub

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
const Type = "registry.dockerhub"

// Defaults: Docker Hub's registry (whose token service, named by its
// challenge, is auth.docker.io) and its API.
const (
	DefaultEndpoint    = "https://registry-1.docker.io"
	DefaultHubEndpoint = "https://hub.docker.com"
)

func init() {
	oci.Register(connectors.Info{
		Type:         Type,
		Provider:     "dockerhub",
		DisplayName:  "Docker Hub",
		Description:  "Docker Hub with a username and personal access token, or anonymously: repositories of a namespace (Hub API), tags, tag → digest, manifests, pull rate-limit headroom.",
		Capabilities: []string{"auth", "repos", "ping", "tags", "digest", "manifest", "rate_limit"},
	}, New)
}

// Interface guards.
var (
	_ connectors.Connector     = (*Connector)(nil)
	_ connectors.Discoverer    = (*Connector)(nil)
	_ connectors.ImageRegistry = (*Connector)(nil)
)

// Config is the integration's config (schemas/config/registry.dockerhub.json).
type Config struct {
	Endpoint    string `json:"endpoint,omitempty"`
	HubEndpoint string `json:"hubEndpoint,omitempty"`
	// Username and Token are both set, or both empty (anonymous). Token
	// is an AuthRef URI; the integration's AuthRef if empty.
	Username string `json:"username,omitempty"`
	Token    string `json:"token,omitempty"`
	// Namespace is the user or organization whose repositories are
	// discovered; the username by default.
	Namespace string `json:"namespace,omitempty"`
	// Insecure, the probe repository and tag, the timeouts.
	oci.Settings
}

// ConfigError names the config field that is wrong.
type ConfigError struct {
	Field  string
	Reason string
}

func (e *ConfigError) Error() string { return "registry.dockerhub: " + e.Field + " " + e.Reason }

// Connector is one Docker Hub integration. It is safe for concurrent use.
type Connector struct {
	// Registry does the distribution calls over a client that reads
	// Docker Hub's rate-limit headers.
	oci.Registry
	cfg     connectors.Config
	conf    Config
	timeout time.Duration
	log     *slog.Logger
	now     func() time.Time
	hubBase *url.URL

	hubSem chan struct{} // guards hubTok, hubExp; one token fetch at a time
	hubTok string
	hubExp time.Time
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
	if conf.HubEndpoint == "" {
		conf.HubEndpoint = DefaultHubEndpoint
	}
	if conf.Username != "" && conf.Token == "" {
		conf.Token = cfg.AuthRef
	}
	if conf.Namespace == "" {
		conf.Namespace = strings.ToLower(conf.Username)
	}
	c := &Connector{cfg: cfg, conf: conf, timeout: oci.Timeout(conf.TimeoutSeconds), log: oci.Logger(cfg, "dockerhub"), now: cfg.Now, hubSem: make(chan struct{}, 1)}
	if c.now == nil {
		c.now = time.Now
	}
	reg := c.registry(conf.ProbeRepository)
	c.Registry = oci.Embed(oci.Provider{Type: Type, Name: "dockerhub"}, reg, c.check(reg))
	return c, nil
}

// registry is the distribution connector for probe.
func (c *Connector) registry(probe string) *oci.Connector {
	cfg := c.cfg
	cfg.HTTPClient = rateClient(c.cfg.HTTPClient)
	return oci.NewWithConfig(cfg, oci.Config{
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
	if conf.Token != "" && conf.Username == "" {
		return invalid("username", "is required with a token")
	}
	if conf.Token != "" && !strings.HasPrefix(conf.Token, "authref://") {
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
	if conf.Namespace == "" {
		return invalid("namespace", "is required without a username (whose repositories to discover, e.g. library)")
	}
	if strings.ContainsAny(conf.Namespace, "/?#% ") {
		return invalid("namespace", "is not a Docker Hub user or organization name")
	}
	u, err := url.Parse(conf.HubEndpoint)
	if err != nil || u.Host == "" || u.User != nil || u.RawQuery != "" || strings.Trim(u.Path, "/") != "" {
		return invalid("hubEndpoint", "must be the Hub API root, e.g. %s", DefaultHubEndpoint)
	}
	if u.Scheme != "https" && !(u.Scheme == "http" && conf.Insecure) {
		return invalid("hubEndpoint", "must be https")
	}
	c.hubBase = &url.URL{Scheme: u.Scheme, Host: u.Host}
	return nil
}

func (c *Connector) httpClient() *http.Client { return oci.Client(c.cfg) }

func (c *Connector) secret(ctx context.Context) ([]byte, error) {
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
