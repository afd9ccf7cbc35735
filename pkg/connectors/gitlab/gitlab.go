// Package gitlab is the scm.gitlab connector: gitlab.com or a self-managed
// GitLab through its REST API v4, with a personal, project or group access
// token (PRIVATE-TOKEN) or a CI job token (JOB-TOKEN).
//
// It talks plain net/http rather than gitlab.com/gitlab-org/api/client-go.
// The connector needs six GET endpoints; client-go would bring
// hashicorp/go-retryablehttp, which retries 429 and 5xx inside the call,
// and a client-side rate limiter that waits: drivers here must classify and
// return, never retry or sleep (the worker frame does that), so both would
// have to be switched off and kept off. It would also add oauth2,
// go-querystring and go-cleanhttp to pkg for what is ~300 lines here, and
// its redirect and header handling would be one more thing to audit for
// the token leaking across hosts (see guardRedirects).
package gitlab

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"inthub.dev/pkg/connectors"
	"inthub.dev/pkg/connectors/strictjson"
	"inthub.dev/pkg/fault"
	"inthub.dev/schemas"
)

// Type is the integration type id.
const Type = "scm.gitlab"

// DefaultEndpoint is used when the config names none.
const DefaultEndpoint = "https://gitlab.com"

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
		Provider:     "gitlab",
		DisplayName:  "GitLab",
		Description:  "gitlab.com or a self-managed GitLab, with an access token or a CI job token",
		Capabilities: []string{"repos", "branches", "tags", "comment", "status", "check_run"},
		ConfigSchema: schema,
	}
}

// config is the integration's config, as in schemas/config/scm.gitlab.json.
type config struct {
	Endpoint              string `json:"endpoint"`
	Token                 string `json:"token"`
	JobToken              string `json:"jobToken"`
	WebhookSecret         string `json:"webhookSecret"`
	Group                 string `json:"group"`
	TimeoutSeconds        int    `json:"timeoutSeconds"`
	HealthIntervalSeconds int    `json:"healthIntervalSeconds"`
}

// Connector is one GitLab integration.
type Connector struct {
	cfg     connectors.Config
	conf    config
	confErr error // from decoding, reported by Validate and every call

	root    *url.URL // API root, ".../api/v4"
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
		return conf, fault.Permanentf("gitlab: config: %w", err)
	}
	return conf, nil
}

// check validates the decoded config and derives the API root.
func (c *Connector) check() error {
	root, err := APIRoot(c.conf.Endpoint)
	if err != nil {
		return err
	}
	c.root = root
	switch {
	case c.conf.Token != "" && c.conf.JobToken != "":
		return fault.Permanentf("gitlab: config: token and jobToken are alternatives: set only one")
	case c.conf.Token == "" && c.conf.JobToken == "" && c.cfg.AuthRef == "":
		return fault.Permanentf("gitlab: config: set token (an access token's AuthRef) or jobToken (a CI job token's AuthRef)")
	}
	for field, ref := range map[string]string{"token": c.conf.Token, "jobToken": c.conf.JobToken, "webhookSecret": c.conf.WebhookSecret} {
		if ref != "" && !strings.HasPrefix(ref, "authref://") {
			return fault.Permanentf("gitlab: config: %s must be an AuthRef URI (authref://...), never the secret itself", field)
		}
	}
	if c.conf.Group != "" {
		if err := checkPath("group", c.conf.Group, 1); err != nil {
			return fmt.Errorf("gitlab: config: %w", err)
		}
	}
	if t := c.conf.TimeoutSeconds; t != 0 {
		if t < 1 || t > 300 {
			return fault.Permanentf("gitlab: config: timeoutSeconds must be between 1 and 300")
		}
		c.timeout = time.Duration(t) * time.Second
	}
	if h := c.conf.HealthIntervalSeconds; h != 0 && (h < 30 || h > 86400) {
		return fault.Permanentf("gitlab: config: healthIntervalSeconds must be between 30 and 86400")
	}
	return nil
}

// APIRoot derives the REST API root from an instance root:
// https://gitlab.com → https://gitlab.com/api/v4; a self-managed root,
// possibly under a relative URL (https://example.com/gitlab), gets /api/v4
// appended; an explicit /api/v4 is kept. An empty endpoint is gitlab.com.
func APIRoot(endpoint string) (*url.URL, error) {
	if endpoint == "" {
		endpoint = DefaultEndpoint
	}
	u, err := url.Parse(endpoint)
	if err != nil {
		return nil, fault.Permanentf("gitlab: config: endpoint is not a URL")
	}
	switch {
	case u.Scheme != "http" && u.Scheme != "https", u.Host == "", u.Opaque != "":
		return nil, fault.Permanentf("gitlab: config: endpoint must be an absolute http(s) URL such as https://gitlab.example.com")
	case u.User != nil:
		return nil, fault.Permanentf("gitlab: config: endpoint must not contain credentials; put them in an AuthRef")
	case u.RawQuery != "" || u.Fragment != "" || u.ForceQuery:
		return nil, fault.Permanentf("gitlab: config: endpoint must not have a query or fragment")
	}
	p := strings.TrimRight(u.Path, "/")
	switch {
	case strings.HasSuffix(p, "/api/v4"):
	case strings.HasSuffix(p, "/api/v3"):
		return nil, fault.Permanentf("gitlab: config: GitLab removed API v3 in 11.0; set the endpoint to the instance root")
	default:
		p += "/api/v4"
	}
	root := &url.URL{Scheme: u.Scheme, Host: strings.ToLower(u.Host), Path: p}
	return root, nil
}

// Type implements connectors.Connector.
func (c *Connector) Type() string { return Type }

// Provider implements connectors.Connector.
func (c *Connector) Provider() string { return "gitlab" }

// Validate checks the config without network calls.
func (c *Connector) Validate() error { return c.confErr }

// Close releases nothing: the HTTP client is the caller's.
func (c *Connector) Close() error { return nil }

// credential resolves the configured token now. Its value lives for one
// call; it is never logged and never part of an error.
func (c *Connector) credential(ctx context.Context) (credential, error) {
	if c.confErr != nil {
		return credential{}, c.confErr
	}
	if c.cfg.Secrets == nil {
		return credential{}, fault.Permanentf("gitlab: no secret resolver configured")
	}
	ref, header, field := c.conf.Token, "PRIVATE-TOKEN", "token"
	switch {
	case c.conf.JobToken != "":
		ref, header, field = c.conf.JobToken, "JOB-TOKEN", "jobToken"
	case ref == "":
		// The integration's own AuthRef, when the config names no
		// token field, is an access token.
		ref, field = c.cfg.AuthRef, "authRef"
	}
	b, err := c.cfg.Secrets.Resolve(ctx, ref)
	if err != nil {
		if fault.ClassOf(err) == fault.ClassUnknown {
			err = fault.Transient(err)
		}
		return credential{}, fmt.Errorf("gitlab: resolve %s: %w", field, err)
	}
	v := strings.TrimSpace(string(b))
	if v == "" {
		return credential{}, fault.Permanentf("gitlab: the secret that %s points at is empty", field)
	}
	for i := 0; i < len(v); i++ {
		if v[i] < 0x21 || v[i] > 0x7e {
			return credential{}, fault.Permanentf("gitlab: the secret that %s points at holds characters no GitLab token has", field)
		}
	}
	return credential{header: header, value: v}, nil
}

func (c *Connector) jobToken() bool { return c.conf.JobToken != "" }
