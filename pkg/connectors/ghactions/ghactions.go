// Package ghactions is the ci.github_actions connector: the GitHub Actions
// of a GitHub App installation (github.com, GHE.com or GitHub Enterprise
// Server). It authenticates exactly as scm.github does, through that
// connector (the app JWT, the installation token, the API root, the
// redirect and body rules), and adds what a CI integration is used for:
// the workflows of a repository and its recent runs, which need the
// installation permission actions:read.
package ghactions

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"

	gh "github.com/google/go-github/v62/github"

	"inthub.dev/pkg/connectors"
	"inthub.dev/pkg/connectors/github"
	"inthub.dev/pkg/connectors/strictjson"
	"inthub.dev/pkg/fault"
	"inthub.dev/schemas"
)

const (
	// Type is the integration type id.
	Type = "ci.github_actions"
	// Provider names the provider.
	Provider = "github_actions"
	// Permission is the installation permission the connector needs.
	Permission = "actions:read"

	maxPerPage = 100
)

// Capabilities reported as Checks, beside scm.github's (app,
// installation, repos, rate_limit).
const (
	CheckWorkflows = "workflows"
	CheckRuns      = "runs"
)

func init() {
	schema, err := schemas.ConfigSchema(Type)
	if err != nil {
		// The schema is embedded: its absence is a broken build.
		panic(fmt.Sprintf("ghactions: %v", err))
	}
	connectors.Default().Register(Info(schema), func(cfg connectors.Config) (connectors.Connector, error) { return New(cfg) })
}

// Info describes the type, for registries other than the default one.
func Info(schema []byte) connectors.Info {
	return connectors.Info{
		Type:         Type,
		Provider:     Provider,
		DisplayName:  "GitHub Actions",
		Description:  "The GitHub Actions of a GitHub App installation (actions:read): workflows and recent runs of its repositories.",
		Capabilities: []string{CheckWorkflows, CheckRuns},
		ConfigSchema: schema,
	}
}

// config is schemas/config/ci.github_actions.json: scm.github's fields
// that authenticate, and the probe repository.
type config struct {
	Endpoint              string `json:"endpoint,omitempty"`
	AppID                 int64  `json:"appId"`
	InstallationID        int64  `json:"installationId"`
	PrivateKey            string `json:"privateKey,omitempty"`
	Organization          string `json:"organization,omitempty"`
	ProbeRepository       string `json:"probeRepository,omitempty"`
	TimeoutSeconds        int    `json:"timeoutSeconds,omitempty"`
	HealthIntervalSeconds int    `json:"healthIntervalSeconds,omitempty"`
}

var (
	ownerName = regexp.MustCompile(`^[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})$`)
	repoName  = regexp.MustCompile(`^[A-Za-z0-9._-]{1,100}$`)
)

// Connector is one GitHub Actions integration. It is safe for concurrent
// use.
type Connector struct {
	conf    config
	invalid error
	gh      *github.Connector
}

var (
	_ connectors.Connector   = (*Connector)(nil)
	_ connectors.Provisioner = (*Connector)(nil)
)

// New builds the connector without I/O. A config that is not a JSON
// object of known fields is refused here; the rest is for Validate.
func New(cfg connectors.Config) (*Connector, error) {
	var conf config
	if len(bytes.TrimSpace(cfg.Config)) == 0 {
		return nil, fault.Permanentf("ci.github_actions: the config is empty: appId, installationId and privateKey are required")
	}
	if err := strictjson.Decode(cfg.Config, &conf); err != nil {
		return nil, fault.Permanent(fmt.Errorf("ci.github_actions: config: %w", err))
	}
	// scm.github gets its own fields only (it refuses unknown ones).
	ghConf := conf
	ghConf.ProbeRepository = ""
	raw, _ := json.Marshal(ghConf)
	ghCfg := cfg
	ghCfg.Type, ghCfg.Config = github.Type, raw
	inner, err := github.New(ghCfg)
	if err != nil {
		return nil, fmt.Errorf("ci.github_actions: %w", err)
	}
	c := &Connector{conf: conf, gh: inner.(*github.Connector)}
	if p := conf.ProbeRepository; p != "" {
		if _, _, err := c.splitRepo(p); err != nil {
			c.invalid = fault.Permanentf("ci.github_actions: config: probeRepository: %w", err)
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
	if err := c.gh.Validate(); err != nil {
		return fmt.Errorf("ci.github_actions: %w", err)
	}
	return nil
}

// Provision checks that the app's private key resolves and parses.
func (c *Connector) Provision(ctx context.Context) error {
	if c.invalid != nil {
		return c.invalid
	}
	return c.gh.Provision(ctx)
}

// Close releases nothing (the HTTP client is the caller's).
func (c *Connector) Close() error { return c.gh.Close() }

// splitRepo checks "owner/name" strictly: the parts go into the URL path.
func (c *Connector) splitRepo(repo string) (string, string, error) {
	owner, name, ok := strings.Cut(repo, "/")
	if !ok || !ownerName.MatchString(owner) || !repoName.MatchString(name) || name == "." || name == ".." {
		return "", "", fault.Permanentf("repository %q must be \"owner/name\" with a GitHub login and a repository name", repo)
	}
	if o := c.conf.Organization; o != "" && !strings.EqualFold(owner, o) {
		return "", "", fault.Permanentf("repository %q is outside the organisation %s this integration is restricted to", repo, o)
	}
	return owner, name, nil
}

// Workflow is a workflow of a repository.
type Workflow struct {
	ID    int64  `json:"id"`
	Name  string `json:"name"`
	Path  string `json:"path"`  // ".github/workflows/ci.yml"
	State string `json:"state"` // "active", "disabled_manually", ...
	URL   string `json:"url,omitempty"`
}

// Run is a workflow run.
type Run struct {
	ID         int64     `json:"id"`
	WorkflowID int64     `json:"workflowId"`
	Name       string    `json:"name"`
	Branch     string    `json:"branch,omitempty"`
	Event      string    `json:"event,omitempty"`
	Status     string    `json:"status"`               // queued, in_progress, completed, ...
	Conclusion string    `json:"conclusion,omitempty"` // success, failure, ... once completed
	HeadSHA    string    `json:"headSha,omitempty"`
	CreatedAt  time.Time `json:"createdAt"`
	URL        string    `json:"url,omitempty"`
}

// listOptions turns a connectors cursor into GitHub's page number.
func listOptions(o connectors.ListOptions) (gh.ListOptions, error) {
	var lo gh.ListOptions
	if o.Limit < 0 {
		return lo, fault.Permanentf("ci.github_actions: a negative page size (%d)", o.Limit)
	}
	if o.Limit > 0 {
		lo.PerPage = min(o.Limit, maxPerPage)
	}
	if o.Cursor != "" {
		p, err := strconv.Atoi(o.Cursor)
		if err != nil || p < 1 {
			return lo, fault.Permanentf("ci.github_actions: cursor %q was not issued by this connector", o.Cursor)
		}
		lo.Page = p
	}
	return lo, nil
}

func next(resp *gh.Response) string {
	if resp == nil || resp.NextPage == 0 {
		return ""
	}
	return strconv.Itoa(resp.NextPage)
}

// ListWorkflows lists a repository's workflows ("owner/name"), one page
// per call (GET /repos/{o}/{r}/actions/workflows; per_page at most 100).
func (c *Connector) ListWorkflows(ctx context.Context, repo string, o connectors.ListOptions) (connectors.Page[Workflow], error) {
	var out connectors.Page[Workflow]
	if err := c.Validate(); err != nil {
		return out, err
	}
	owner, name, err := c.splitRepo(repo)
	if err != nil {
		return out, fmt.Errorf("ci.github_actions: %w", err)
	}
	lo, err := listOptions(o)
	if err != nil {
		return out, err
	}
	err = c.gh.Installation(ctx, "list the workflows of "+repo, repo, Permission, func(ctx context.Context, cl *gh.Client) error {
		wfs, resp, err := cl.Actions.ListWorkflows(ctx, owner, name, &lo)
		if err != nil {
			return err
		}
		out.Items = make([]Workflow, 0, len(wfs.Workflows))
		for _, w := range wfs.Workflows {
			out.Items = append(out.Items, Workflow{ID: w.GetID(), Name: w.GetName(), Path: w.GetPath(), State: w.GetState(), URL: w.GetHTMLURL()})
		}
		out.Next = next(resp)
		return nil
	})
	return out, err
}

// ListRuns lists a repository's workflow runs, newest first, one page per
// call (GET /repos/{o}/{r}/actions/runs).
func (c *Connector) ListRuns(ctx context.Context, repo string, o connectors.ListOptions) (connectors.Page[Run], error) {
	var out connectors.Page[Run]
	if err := c.Validate(); err != nil {
		return out, err
	}
	owner, name, err := c.splitRepo(repo)
	if err != nil {
		return out, fmt.Errorf("ci.github_actions: %w", err)
	}
	lo, err := listOptions(o)
	if err != nil {
		return out, err
	}
	err = c.gh.Installation(ctx, "list the workflow runs of "+repo, repo, Permission, func(ctx context.Context, cl *gh.Client) error {
		runs, resp, err := cl.Actions.ListRepositoryWorkflowRuns(ctx, owner, name, &gh.ListWorkflowRunsOptions{ListOptions: lo})
		if err != nil {
			return err
		}
		out.Items = make([]Run, 0, len(runs.WorkflowRuns))
		for _, r := range runs.WorkflowRuns {
			out.Items = append(out.Items, Run{
				ID: r.GetID(), WorkflowID: r.GetWorkflowID(), Name: r.GetName(), Branch: r.GetHeadBranch(),
				Event: r.GetEvent(), Status: r.GetStatus(), Conclusion: r.GetConclusion(), HeadSHA: r.GetHeadSHA(),
				CreatedAt: r.GetCreatedAt().Time.UTC(), URL: r.GetHTMLURL(),
			})
		}
		out.Next = next(resp)
		return nil
	})
	return out, err
}
