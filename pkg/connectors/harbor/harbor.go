// Package harbor is the registry.harbor connector: Harbor's own API v2.0
// (health document, projects, repositories) with a user or robot account
// over basic auth, and the registry operations (tags, tag → digest,
// manifests) through the registry.oci connector, since Harbor serves the
// distribution API (/v2/, token flow at /service/token) on the same host.
package harbor

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"inthub.dev/pkg/connectors"
	"inthub.dev/pkg/connectors/oci"
	"inthub.dev/pkg/fault"
)

// Type is the integration type id.
const Type = "registry.harbor"

func init() {
	oci.Register(connectors.Info{
		Type:         Type,
		Provider:     "harbor",
		DisplayName:  "Harbor",
		Description:  "A Harbor registry (API v2.0) with a user or robot account: health, projects, repositories, tags, tag → digest.",
		Capabilities: []string{"health", "projects", "repos", "tags", "digest", "manifest"},
	}, New)
}

// Interface guards.
var (
	_ connectors.Connector     = (*Connector)(nil)
	_ connectors.Discoverer    = (*Connector)(nil)
	_ connectors.ImageRegistry = (*Connector)(nil)
)

// Config is the integration's config (schemas/config/registry.harbor.json).
type Config struct {
	Endpoint string `json:"endpoint"`
	// Username is a user or a robot account ("robot$project+name").
	Username string `json:"username"`
	// Password is the AuthRef URI of the password or robot secret.
	Password string `json:"password"`
	// Project restricts discovery (and the default probe) to one project.
	Project string `json:"project,omitempty"`
	// Insecure, the probe repository and tag, the timeouts.
	oci.Settings
}

// Capabilities reported as Checks, beside oci's ping, tags and digest.
const (
	CheckHealth = "health"       // /api/v2.0/health and its components
	CheckAuth   = "auth"         // the account is accepted by the API
	CheckRepos  = oci.CheckRepos // repositories can be listed
)

// Connector is one Harbor integration. It is safe for concurrent use.
type Connector struct {
	// Registry does the distribution API calls (and checks the shared
	// fields: endpoint, insecure, credentials pairing, probe names).
	oci.Registry
	cfg     connectors.Config
	conf    Config
	base    *url.URL
	timeout time.Duration
	log     *slog.Logger
	now     func() time.Time
}

// New builds a connector without I/O; a config that decodes but is wrong
// is reported by Validate and by every call.
func New(cfg connectors.Config) (*Connector, error) {
	var conf Config
	if err := oci.DecodeConfig(cfg, Type, &conf); err != nil {
		return nil, err
	}
	if conf.Password == "" {
		conf.Password = cfg.AuthRef
	}
	c := &Connector{cfg: cfg, conf: conf, timeout: oci.Timeout(conf.TimeoutSeconds), log: oci.Logger(cfg, "harbor"), now: cfg.Now}
	if c.now == nil {
		c.now = time.Now
	}
	reg := c.registry(conf.ProbeRepository)
	invalid := c.check(reg)
	if invalid == nil {
		u, _ := url.Parse(reg.Endpoint())
		c.base = u
	}
	c.Registry = oci.Embed(oci.Provider{Type: Type, Name: "harbor"}, reg, invalid)
	return c, nil
}

// registry is the distribution connector for probe.
func (c *Connector) registry(probe string) *oci.Connector {
	return oci.NewWithConfig(c.cfg, c.ociConfig(probe))
}

func (c *Connector) ociConfig(probe string) oci.Config {
	return oci.Config{
		Endpoint: c.conf.Endpoint,
		Username: c.conf.Username,
		Password: c.conf.Password,
		Settings: c.conf.Probing(probe),
	}
}

func (c *Connector) check(reg *oci.Connector) error {
	if err := reg.Validate(); err != nil {
		return oci.Reword(err, func(field, reason string) error { return &oci.ConfigError{Field: field, Reason: reason} })
	}
	if c.conf.Username == "" {
		return fault.Permanent(&oci.ConfigError{Field: "username", Reason: "is required (a user or robot account)"})
	}
	if c.conf.Project != "" && strings.ContainsAny(c.conf.Project, "/?#%") {
		return fault.Permanent(&oci.ConfigError{Field: "project", Reason: "is not a Harbor project name"})
	}
	return nil
}

func (c *Connector) httpClient() *http.Client { return oci.Client(c.cfg) }

// api GETs path under /api/v2.0 and decodes the JSON answer into v. With
// auth it sends the account's basic credentials, resolved now; Harbor
// accepts basic auth for users and robot accounts on its API.
func (c *Connector) api(ctx context.Context, path string, query url.Values, withAuth bool, v any) (http.Header, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	// path arrives escaped (a project name is one segment).
	u, err := url.Parse(c.base.String() + "/api/v2.0" + path)
	if err != nil {
		return nil, fault.Permanent(fmt.Errorf("registry.harbor: %w", err))
	}
	u.RawQuery = query.Encode()
	op := "GET /api/v2.0" + path
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, fault.Permanent(fmt.Errorf("%s: %w", op, err))
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "inthub-connector")
	// Project names that look like numbers are ids unless we say so.
	req.Header.Set("X-Is-Resource-Name", "true")
	if withAuth {
		secret, err := c.password(ctx)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", op, err)
		}
		req.SetBasicAuth(c.conf.Username, string(secret))
	}
	resp, err := c.httpClient().Do(req)
	if err != nil {
		return nil, oci.ClassifyTransport(ctx, op, c.timeout, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return nil, oci.ClassifyStatus(op, resp)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return nil, oci.ClassifyTransport(ctx, op, c.timeout, err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return nil, fault.Transient(fmt.Errorf("%s: malformed JSON answer: %w", op, err))
	}
	return resp.Header, nil
}

func (c *Connector) password(ctx context.Context) ([]byte, error) {
	if c.cfg.Secrets == nil {
		return nil, fault.Permanent(errors.New("cannot resolve the password AuthRef: no secret resolver configured"))
	}
	b, err := c.cfg.Secrets.Resolve(ctx, c.conf.Password)
	if err != nil {
		if fault.ClassOf(err) == fault.ClassUnknown {
			err = fault.Permanent(err)
		}
		return nil, fmt.Errorf("cannot resolve the password AuthRef: %w", err)
	}
	return b, nil
}

// Health is Harbor's health document.
type Health struct {
	Status     string            `json:"status"`
	Components []HealthComponent `json:"components"`
}

// HealthComponent is one component (core, database, registry, redis,
// jobservice, portal, registryctl, trivy, ...).
type HealthComponent struct {
	Name   string `json:"name"`
	Status string `json:"status"`
	Error  string `json:"error,omitempty"`
}

// Unhealthy names the components that are not healthy.
func (h Health) Unhealthy() []string {
	var out []string
	for _, comp := range h.Components {
		if comp.Status != "healthy" {
			out = append(out, comp.Name)
		}
	}
	return out
}

// Health reads /api/v2.0/health (no credentials needed).
func (c *Connector) Health(ctx context.Context) (Health, error) {
	var h Health
	_, err := c.api(ctx, "/health", nil, false, &h)
	if err == nil && h.Status == "" && len(h.Components) == 0 {
		err = fault.Permanent(errors.New("GET /api/v2.0/health: not a Harbor health document (is the endpoint a Harbor instance?)"))
	}
	return h, err
}

// Project is a Harbor project.
type Project struct {
	ID        int64  `json:"id"`
	Name      string `json:"name"`
	Public    bool   `json:"public"`
	RepoCount int    `json:"repoCount"`
}

// harborProject is the API's shape of a project.
type harborProject struct {
	ID       int64  `json:"project_id"`
	Name     string `json:"name"`
	Metadata struct {
		Public string `json:"public"` // "true" / "false"
	} `json:"metadata"`
	RepoCount int `json:"repo_count"`
}

type harborRepo struct {
	ID   int64  `json:"id"`
	Name string `json:"name"` // "project/repo"
}

const (
	defaultPageSize = 50
	maxPageSize     = 100 // Harbor's page_size maximum
)

func pageSize(limit int) int {
	if limit <= 0 {
		return defaultPageSize
	}
	return min(limit, maxPageSize)
}

// more reads X-Total-Count; without it, a full page may have a successor.
func more(h http.Header, page, size, got int) bool {
	if total, err := strconv.Atoi(h.Get("X-Total-Count")); err == nil {
		return page*size < total
	}
	return got == size
}

// ListProjects lists one page of the projects the account can see.
func (c *Connector) ListProjects(ctx context.Context, o connectors.ListOptions) (connectors.Page[Project], error) {
	var out connectors.Page[Project]
	page, err := cursorInt(o.Cursor, "p")
	if err != nil {
		return out, err
	}
	size := pageSize(o.Limit)
	items, next, err := c.projects(ctx, page, size)
	if err != nil {
		return out, err
	}
	out.Items = items
	if next {
		out.Next = encodeCursor(url.Values{"p": {strconv.Itoa(page + 1)}})
	}
	return out, nil
}

func (c *Connector) projects(ctx context.Context, page, size int) ([]Project, bool, error) {
	var raw []harborProject
	q := url.Values{"page": {strconv.Itoa(page)}, "page_size": {strconv.Itoa(size)}, "sort": {"name"}}
	h, err := c.api(ctx, "/projects", q, true, &raw)
	if err != nil {
		return nil, false, err
	}
	items := make([]Project, 0, len(raw))
	for _, p := range raw {
		items = append(items, Project{ID: p.ID, Name: p.Name, Public: p.Metadata.Public == "true", RepoCount: p.RepoCount})
	}
	return items, more(h, page, size, len(raw)), nil
}

func (c *Connector) repositories(ctx context.Context, project string, page, size int) ([]connectors.Repository, bool, error) {
	var items []harborRepo
	q := url.Values{"page": {strconv.Itoa(page)}, "page_size": {strconv.Itoa(size)}, "sort": {"name"}}
	h, err := c.api(ctx, "/projects/"+url.PathEscape(project)+"/repositories", q, true, &items)
	if err != nil {
		return nil, false, err
	}
	out := make([]connectors.Repository, 0, len(items))
	for _, r := range items {
		out = append(out, connectors.Repository{ID: strconv.FormatInt(r.ID, 10), FullName: r.Name})
	}
	return out, more(h, page, size, len(items)), nil
}

// ListRepositories lists one page of repositories: of the configured
// project, or of every project the account sees, project by project (the
// cursor holds the project page, the project's index in it and the
// repository page).
func (c *Connector) ListRepositories(ctx context.Context, o connectors.ListOptions) (connectors.Page[connectors.Repository], error) {
	var out connectors.Page[connectors.Repository]
	size := pageSize(o.Limit)
	if c.conf.Project != "" {
		page, err := cursorInt(o.Cursor, "r")
		if err != nil {
			return out, err
		}
		items, next, err := c.repositories(ctx, c.conf.Project, page, size)
		if err != nil {
			return out, err
		}
		out.Items = items
		if next {
			out.Next = encodeCursor(url.Values{"r": {strconv.Itoa(page + 1)}})
		}
		return out, nil
	}
	pp, err := cursorInt(o.Cursor, "pp")
	if err != nil {
		return out, err
	}
	pi, err := cursorInt(o.Cursor, "pi")
	if err != nil {
		return out, err
	}
	pi-- // stored 1-based like the pages
	rp, err := cursorInt(o.Cursor, "r")
	if err != nil {
		return out, err
	}
	const projectPage = maxPageSize
	// Empty projects are skipped within one call, boundedly, so that a
	// page is rarely empty while more exist.
	for hops := 0; hops < 20; hops++ {
		projects, moreProjects, err := c.projects(ctx, pp, projectPage)
		if err != nil {
			return out, err
		}
		if pi >= len(projects) {
			if !moreProjects || len(projects) == 0 {
				return out, nil
			}
			pp, pi, rp = pp+1, 0, 1
			continue
		}
		items, moreRepos, err := c.repositories(ctx, projects[pi].Name, rp, size)
		if err != nil {
			return out, err
		}
		next := url.Values{}
		switch {
		case moreRepos:
			next = url.Values{"pp": {strconv.Itoa(pp)}, "pi": {strconv.Itoa(pi + 1)}, "r": {strconv.Itoa(rp + 1)}}
		case pi+1 < len(projects):
			next = url.Values{"pp": {strconv.Itoa(pp)}, "pi": {strconv.Itoa(pi + 2)}, "r": {"1"}}
		case moreProjects:
			next = url.Values{"pp": {strconv.Itoa(pp + 1)}, "pi": {"1"}, "r": {"1"}}
		}
		if len(items) == 0 && len(next) > 0 {
			pp, _ = strconv.Atoi(next.Get("pp"))
			pi, _ = strconv.Atoi(next.Get("pi"))
			pi--
			rp, _ = strconv.Atoi(next.Get("r"))
			continue
		}
		out.Items = items
		if len(next) > 0 {
			out.Next = encodeCursor(next)
		}
		return out, nil
	}
	// Many empty projects in a row: hand back an empty page that goes on.
	out.Items = []connectors.Repository{}
	out.Next = encodeCursor(url.Values{"pp": {strconv.Itoa(pp)}, "pi": {strconv.Itoa(pi + 1)}, "r": {strconv.Itoa(rp)}})
	return out, nil
}

// ListTags, ResolveTag, FetchManifest and VerifyDigest come from
// oci.Registry, through the distribution API; repo is Harbor's full name
// ("project/repo").

// Cursors are opaque to callers: base64url of a small query.
var base64URL = base64.RawURLEncoding

func encodeCursor(v url.Values) string {
	return base64URL.EncodeToString([]byte(v.Encode()))
}

// cursorInt reads a positive counter from a cursor; 1 when absent.
func cursorInt(cursor, key string) (int, error) {
	if cursor == "" {
		return 1, nil
	}
	raw, err := base64URL.DecodeString(cursor)
	if err != nil {
		return 0, fault.Permanent(errors.New("registry.harbor: malformed page cursor"))
	}
	v, err := url.ParseQuery(string(raw))
	if err != nil {
		return 0, fault.Permanent(errors.New("registry.harbor: malformed page cursor"))
	}
	s := v.Get(key)
	if s == "" {
		return 1, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > 1_000_000 {
		return 0, fault.Permanent(errors.New("registry.harbor: malformed page cursor"))
	}
	return n, nil
}
