// Package gitlabci is the ci.gitlab_ci connector: the CI/CD pipelines of
// gitlab.com or a self-managed GitLab. It authenticates exactly as
// scm.gitlab does, through that connector (an access token with read_api,
// or a CI job token), and adds what a CI integration is used for: a
// project's pipelines and whether it has a .gitlab-ci.yml.
//
// A CI job token reaches the pipelines of its own job's project only:
// GitLab answers 404 for any other project, so the connector refuses such
// a call before sending it when it can tell, and explains the 404 when it
// cannot.
package gitlabci

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"inthub.dev/pkg/connectors"
	"inthub.dev/pkg/connectors/gitlab"
	"inthub.dev/pkg/connectors/strictjson"
	"inthub.dev/pkg/fault"
	"inthub.dev/schemas"
)

const (
	// Type is the integration type id.
	Type = "ci.gitlab_ci"
	// Provider names the provider.
	Provider = "gitlab_ci"
	// CIConfigPath is the pipeline configuration GitLab reads by default.
	CIConfigPath = ".gitlab-ci.yml"
)

// Capabilities reported as Checks, beside scm.gitlab's.
const (
	CheckPipelines = "pipelines"
	CheckCIConfig  = "ci_config"
)

func init() {
	schema, err := schemas.ConfigSchema(Type)
	if err != nil {
		// The schema is embedded: its absence is a broken build.
		panic(fmt.Sprintf("gitlabci: %v", err))
	}
	connectors.Default().Register(Info(schema), func(cfg connectors.Config) (connectors.Connector, error) { return New(cfg) })
}

// Info describes the type, for registries other than the default one.
func Info(schema []byte) connectors.Info {
	return connectors.Info{
		Type:         Type,
		Provider:     Provider,
		DisplayName:  "GitLab CI/CD",
		Description:  "The CI/CD pipelines of gitlab.com or a self-managed GitLab, with an access token (read_api) or a CI job token (its own project only): pipelines and .gitlab-ci.yml presence.",
		Capabilities: []string{CheckPipelines, CheckCIConfig},
		ConfigSchema: schema,
	}
}

// config is schemas/config/ci.gitlab_ci.json: scm.gitlab's fields that
// authenticate, and the project to probe.
type config struct {
	Endpoint              string `json:"endpoint,omitempty"`
	Token                 string `json:"token,omitempty"`
	JobToken              string `json:"jobToken,omitempty"`
	Project               string `json:"project,omitempty"`
	TimeoutSeconds        int    `json:"timeoutSeconds,omitempty"`
	HealthIntervalSeconds int    `json:"healthIntervalSeconds,omitempty"`
}

// Connector is one GitLab CI integration. It is safe for concurrent use.
type Connector struct {
	conf    config
	invalid error
	gl      *gitlab.Connector
	log     *slog.Logger
}

var _ connectors.Connector = (*Connector)(nil)

// New builds the connector without I/O; a config that is wrong is
// reported by Validate and by every call.
func New(cfg connectors.Config) (*Connector, error) {
	c := &Connector{log: cfg.Logger}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	c.log = c.log.With(slog.String("provider", Provider), slog.String("integrationId", cfg.IntegrationID),
		slog.String("tenantId", cfg.TenantID))
	if err := strictjson.Decode(cfg.Config, &c.conf); err != nil {
		c.invalid = fault.Permanent(fmt.Errorf("ci.gitlab_ci: config: %w", err))
	}
	// scm.gitlab gets its own fields only (it refuses unknown ones).
	glConf := c.conf
	glConf.Project = ""
	raw, _ := json.Marshal(glConf)
	glCfg := cfg
	glCfg.Type, glCfg.Config = gitlab.Type, raw
	inner, err := gitlab.New(glCfg)
	if err != nil {
		return nil, fmt.Errorf("ci.gitlab_ci: %w", err)
	}
	c.gl = inner.(*gitlab.Connector)
	if c.invalid == nil && c.conf.Project != "" {
		if err := gitlab.CheckProject(c.conf.Project); err != nil {
			c.invalid = fmt.Errorf("ci.gitlab_ci: config: project: %w", err)
		}
	}
	return c, nil
}

func (c *Connector) Type() string     { return Type }
func (c *Connector) Provider() string { return Provider }

// Validate checks the config without network calls.
func (c *Connector) Validate() error {
	if c.invalid != nil {
		return c.invalid
	}
	if err := c.gl.Validate(); err != nil {
		return fmt.Errorf("ci.gitlab_ci: %w", err)
	}
	return nil
}

// Close releases nothing: the HTTP client is the caller's.
func (c *Connector) Close() error { return c.gl.Close() }

// Pipeline is a CI/CD pipeline.
type Pipeline struct {
	ID        int64     `json:"id"`
	IID       int64     `json:"iid"`
	ProjectID int64     `json:"projectId"`
	Ref       string    `json:"ref"`
	SHA       string    `json:"sha"`
	Status    string    `json:"status"` // created, pending, running, success, failed, canceled, skipped, manual, scheduled
	Source    string    `json:"source,omitempty"`
	CreatedAt time.Time `json:"createdAt"`
	URL       string    `json:"url,omitempty"`
}

// jobProject is the project of a job token's job (GET /job).
func (c *Connector) jobProject(ctx context.Context) (int64, error) {
	var j struct {
		Pipeline struct {
			ProjectID int64 `json:"project_id"`
		} `json:"pipeline"`
	}
	if _, _, err := c.gl.Get(ctx, "read the job token's job", []string{"job"}, nil, connectors.ListOptions{}, &j); err != nil {
		return 0, err
	}
	if j.Pipeline.ProjectID == 0 {
		return 0, fault.Permanentf("gitlab: read the job token's job: the answer names no project")
	}
	return j.Pipeline.ProjectID, nil
}

// jobTokenHint explains a refusal to a job token.
func jobTokenHint(project string, own int64) string {
	s := "a CI job token can list the pipelines of its own job's project only"
	if own != 0 {
		s += " (project " + strconv.FormatInt(own, 10) + ")"
	}
	return s + ", not those of " + project + ": use an access token with read_api for other projects"
}

// ListPipelines lists a project's pipelines (full path or numeric id),
// newest first, one page per call (GET /projects/:id/pipelines; per_page
// at most 100, X-Next-Page).
func (c *Connector) ListPipelines(ctx context.Context, project string, o connectors.ListOptions) (connectors.Page[Pipeline], error) {
	var page connectors.Page[Pipeline]
	if err := c.Validate(); err != nil {
		return page, err
	}
	if err := gitlab.CheckProject(project); err != nil {
		return page, fmt.Errorf("ci.gitlab_ci: %w", err)
	}
	var own int64
	if c.gl.UsesJobToken() {
		id, err := c.jobProject(ctx)
		if err != nil {
			return page, fmt.Errorf("ci.gitlab_ci: %w", err)
		}
		own = id
		if n, err := strconv.ParseInt(project, 10, 64); err == nil && n != own {
			return page, fault.Permanentf("ci.gitlab_ci: %s", jobTokenHint(project, own))
		}
	}
	var ps []struct {
		ID        int64     `json:"id"`
		IID       int64     `json:"iid"`
		ProjectID int64     `json:"project_id"`
		Ref       string    `json:"ref"`
		SHA       string    `json:"sha"`
		Status    string    `json:"status"`
		Source    string    `json:"source"`
		CreatedAt time.Time `json:"created_at"`
		WebURL    string    `json:"web_url"`
	}
	q := url.Values{"order_by": {"id"}, "sort": {"desc"}}
	next, _, err := c.gl.Get(ctx, "list pipelines of "+project, []string{"projects", project, "pipelines"}, q, o, &ps)
	if err != nil {
		if c.gl.UsesJobToken() {
			if code := gitlab.StatusOf(err); code == http.StatusNotFound || code == http.StatusForbidden {
				return page, fmt.Errorf("ci.gitlab_ci: %w (%s)", err, jobTokenHint(project, own))
			}
		}
		return page, fmt.Errorf("ci.gitlab_ci: %w", err)
	}
	page.Items = make([]Pipeline, 0, len(ps))
	for _, p := range ps {
		page.Items = append(page.Items, Pipeline{ID: p.ID, IID: p.IID, ProjectID: p.ProjectID, Ref: p.Ref, SHA: p.SHA,
			Status: p.Status, Source: p.Source, CreatedAt: p.CreatedAt.UTC(), URL: p.WebURL})
	}
	page.Next = next
	return page, nil
}

// CIConfig says whether a project has a .gitlab-ci.yml on its default
// branch.
type CIConfig struct {
	Present bool   `json:"present"`
	Ref     string `json:"ref"`
	Path    string `json:"path"`
	Size    int    `json:"size,omitempty"`
}

// CIConfigOf reads the project (for its default branch), then the
// metadata of .gitlab-ci.yml on it. A missing file is an answer, not an
// error. GitLab does not let a CI job token read either: with one, the
// call fails permanently and says so.
func (c *Connector) CIConfigOf(ctx context.Context, project string) (CIConfig, error) {
	out := CIConfig{Path: CIConfigPath}
	if err := c.Validate(); err != nil {
		return out, err
	}
	if err := gitlab.CheckProject(project); err != nil {
		return out, fmt.Errorf("ci.gitlab_ci: %w", err)
	}
	if c.gl.UsesJobToken() {
		return out, fault.Permanentf("ci.gitlab_ci: a CI job token cannot read a project or its repository files: use an access token with read_api to check %s", CIConfigPath)
	}
	var p struct {
		DefaultBranch string `json:"default_branch"`
	}
	if _, _, err := c.gl.Get(ctx, "read project "+project, []string{"projects", project}, nil, connectors.ListOptions{}, &p); err != nil {
		return out, fmt.Errorf("ci.gitlab_ci: %w", err)
	}
	if p.DefaultBranch == "" {
		// An empty repository has no default branch and no file.
		return out, nil
	}
	out.Ref = p.DefaultBranch
	var f struct {
		Size int `json:"size"`
	}
	_, _, err := c.gl.Get(ctx, "read "+CIConfigPath+" of "+project, []string{"projects", project, "repository", "files", CIConfigPath},
		url.Values{"ref": {p.DefaultBranch}}, connectors.ListOptions{}, &f)
	switch {
	case err == nil:
		out.Present, out.Size = true, f.Size
	case gitlab.StatusOf(err) == http.StatusNotFound:
	default:
		return out, fmt.Errorf("ci.gitlab_ci: %w", err)
	}
	return out, nil
}
