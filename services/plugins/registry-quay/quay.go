package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"inthub.dev/pkg/connectors"
	"inthub.dev/pkg/fault"
)

// Type is the integration type id.
const Type = "registry.quay"

// Checks reported by test and health.
const (
	CheckHealth = "health" // GET /health/instance: the instance's own services
	CheckAPI    = "api"    // GET /api/v1/discovery with the token
	CheckRepos  = "repos"  // GET /api/v1/repository?namespace=...: what the integration is used for
)

// Config is the integration's config (schema.json).
type Config struct {
	Endpoint       string `json:"endpoint"`
	Namespace      string `json:"namespace"`
	Token          string `json:"token,omitempty"`
	TimeoutSeconds int    `json:"timeoutSeconds,omitempty"`
}

// Connector is one Quay integration.
type Connector struct {
	cfg     connectors.Config
	conf    Config
	base    *url.URL
	invalid error
}

var (
	_ connectors.Connector  = (*Connector)(nil)
	_ connectors.Discoverer = (*Connector)(nil)
)

// New decodes the config without I/O; a config that decodes but is
// wrong is reported by Validate.
func New(cfg connectors.Config) (*Connector, error) {
	var conf Config
	dec := json.NewDecoder(bytes.NewReader(cfg.Config))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&conf); err != nil {
		return nil, fault.Permanent(fmt.Errorf("registry.quay: config: %w", err))
	}
	if conf.Token == "" {
		conf.Token = cfg.AuthRef
	}
	c := &Connector{cfg: cfg, conf: conf}
	u, err := url.Parse(strings.TrimRight(conf.Endpoint, "/"))
	switch {
	case err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "":
		c.invalid = fault.Permanentf("endpoint: must be an http(s) URL such as https://quay.io")
	case u.User != nil || u.RawQuery != "":
		c.invalid = fault.Permanentf("endpoint: must not carry credentials or a query")
	case conf.Namespace == "":
		c.invalid = fault.Permanentf("namespace: is required (an organization or user)")
	case conf.Token == "":
		c.invalid = fault.Permanentf("token: an AuthRef is required (token or the integration's authRef)")
	default:
		c.base = u
	}
	return c, nil
}

func (c *Connector) Type() string     { return Type }
func (c *Connector) Provider() string { return "quay" }
func (c *Connector) Validate() error  { return c.invalid }
func (c *Connector) Close() error     { return nil }

// get sends one GET; auth adds the bearer token.
func (c *Connector) get(ctx context.Context, path string, q url.Values, auth bool, into any) error {
	if c.invalid != nil {
		return c.invalid
	}
	u := *c.base
	u.Path = strings.TrimRight(u.Path, "/") + path
	u.RawQuery = q.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return fault.Permanent(err)
	}
	req.Header.Set("Accept", "application/json")
	if auth {
		tok, err := c.cfg.Secrets.Resolve(ctx, c.conf.Token)
		if err != nil {
			return err
		}
		req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(tok)))
	}
	resp, err := connectors.Do(c.cfg.HTTPClient, req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if into == nil {
		return nil
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 4<<20)).Decode(into); err != nil {
		return fault.Permanent(fmt.Errorf("%s: the answer is not Quay's JSON (is the endpoint a Quay registry?)", u.Host))
	}
	return nil
}

func (c *Connector) health(ctx context.Context) (string, error) {
	var doc struct {
		Data struct {
			Services map[string]bool `json:"services"`
		} `json:"data"`
	}
	if err := c.get(ctx, "/health/instance", nil, false, &doc); err != nil {
		return "", err
	}
	var down []string
	for name, ok := range doc.Data.Services {
		if !ok {
			down = append(down, name)
		}
	}
	if len(down) > 0 {
		return "", fault.Transient(fmt.Errorf("services down: %s", strings.Join(down, ", ")))
	}
	return fmt.Sprintf("%d services up", len(doc.Data.Services)), nil
}

func (c *Connector) api(ctx context.Context) (string, error) {
	var doc struct {
		Info struct {
			Version string `json:"version"`
		} `json:"info"`
	}
	if err := c.get(ctx, "/api/v1/discovery", nil, true, &doc); err != nil {
		return "", err
	}
	if doc.Info.Version == "" {
		return "API reachable", nil
	}
	return "API version " + doc.Info.Version, nil
}

func (c *Connector) repos(ctx context.Context) (string, error) {
	p, err := c.ListRepositories(ctx, connectors.ListOptions{})
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("%d repositories in %s", len(p.Items), c.conf.Namespace), nil
}

func (c *Connector) checks(ctx context.Context) connectors.Result {
	start := time.Now()
	if c.invalid != nil {
		return connectors.FailedResult(start, "config", c.invalid)
	}
	return connectors.NewResult([]connectors.Check{
		connectors.RunCheck(ctx, CheckHealth, c.health),
		connectors.RunCheck(ctx, CheckAPI, c.api),
		connectors.RunCheck(ctx, CheckRepos, c.repos),
	}, start, CheckRepos, CheckAPI)
}

// TestConnection checks the instance, the token against the API, and
// that the namespace's repositories can be listed with it.
func (c *Connector) TestConnection(ctx context.Context) connectors.Result { return c.checks(ctx) }

// CheckHealth runs the same three requests: each is cheap.
func (c *Connector) CheckHealth(ctx context.Context) connectors.Result { return c.checks(ctx) }

// ListRepositories lists the namespace's repositories (Quay pages with
// next_page).
func (c *Connector) ListRepositories(ctx context.Context, o connectors.ListOptions) (connectors.Page[connectors.Repository], error) {
	q := url.Values{"namespace": {c.conf.Namespace}}
	if o.Cursor != "" {
		q.Set("next_page", o.Cursor)
	}
	var doc struct {
		Repositories []struct {
			Namespace string `json:"namespace"`
			Name      string `json:"name"`
			IsPublic  bool   `json:"is_public"`
		} `json:"repositories"`
		NextPage string `json:"next_page"`
	}
	if err := c.get(ctx, "/api/v1/repository", q, true, &doc); err != nil {
		return connectors.Page[connectors.Repository]{}, err
	}
	p := connectors.Page[connectors.Repository]{Items: []connectors.Repository{}, Next: doc.NextPage}
	for _, r := range doc.Repositories {
		full := r.Namespace + "/" + r.Name
		p.Items = append(p.Items, connectors.Repository{ID: full, FullName: full, Private: !r.IsPublic})
	}
	return p, nil
}

var errNoBranches = errors.New("a container registry has no branches")

func (c *Connector) ListBranches(context.Context, string, connectors.ListOptions) (connectors.Page[connectors.Branch], error) {
	return connectors.Page[connectors.Branch]{}, fault.Permanent(errNoBranches)
}

// ListTags is not offered by this example (capabilities do not list it).
func (c *Connector) ListTags(context.Context, string, connectors.ListOptions) (connectors.Page[connectors.Tag], error) {
	return connectors.Page[connectors.Tag]{}, fault.Permanentf("registry.quay: tag listing is not implemented by this plugin")
}
