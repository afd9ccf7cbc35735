package bitbucket

import (
	"context"
	"encoding/json"
	"net/url"
	"regexp"
	"strconv"
	"strings"

	"inthub.dev/pkg/connectors"
	"inthub.dev/pkg/fault"
)

// Page size caps: Cloud refuses a pagelen above 100 with a 400; Data
// Center lowers a limit above its page.max (1,000 by default) without a
// word, so asking for more would only hide the truth.
const (
	maxCloudPageLen = 100
	maxDCLimit      = 1000
)

// repo is either flavour's repository.
type repo struct {
	// Cloud
	UUID       string `json:"uuid"`
	FullName   string `json:"full_name"`
	IsPrivate  bool   `json:"is_private"`
	MainBranch *struct {
		Name string `json:"name"`
	} `json:"mainbranch"`
	Workspace *struct {
		Slug string `json:"slug"`
	} `json:"workspace"`
	// Data Center
	ID      json.Number `json:"id"`
	Public  bool        `json:"public"`
	Project *struct {
		Key string `json:"key"`
	} `json:"project"`
	// both
	Slug string `json:"slug"`
}

// branch is either flavour's branch or tag.
type branch struct {
	Name   string `json:"name"` // Cloud
	Target struct {
		Hash string `json:"hash"`
	} `json:"target"`
	DisplayID    string `json:"displayId"`    // Data Center
	LatestCommit string `json:"latestCommit"` // Data Center
}

func (b branch) name() string {
	if b.Name != "" {
		return b.Name
	}
	return b.DisplayID
}

func (b branch) sha() string {
	if b.Target.Hash != "" {
		return b.Target.Hash
	}
	return b.LatestCommit
}

func (c *Connector) pageQuery(q url.Values, o connectors.ListOptions) error {
	if o.Limit > 0 {
		lim := min(o.Limit, maxDCLimit)
		if c.cloud() {
			lim = min(o.Limit, maxCloudPageLen)
		}
		q.Set(c.limitKey(), strconv.Itoa(lim))
	}
	return c.applyCursor(q, o.Cursor)
}

// ListRepositories lists the workspace's (Cloud) or project's (Data
// Center) repositories, one page at a time, by slug.
func (c *Connector) ListRepositories(ctx context.Context, o connectors.ListOptions) (connectors.Page[connectors.Repository], error) {
	var out connectors.Page[connectors.Repository]
	cred, err := c.credential(ctx)
	if err != nil {
		return out, err
	}
	cl := c.reposCall()
	if err := c.pageQuery(cl.query, o); err != nil {
		return out, err
	}
	var p page[repo]
	if _, err := c.get(ctx, cred, cl, &p); err != nil {
		return out, err
	}
	out.Items = make([]connectors.Repository, 0, len(p.Values))
	for _, r := range p.Values {
		item := connectors.Repository{FullName: c.owner + "/" + r.Slug}
		if c.cloud() {
			item.ID, item.Private = r.UUID, r.IsPrivate
			if r.Workspace != nil && r.Workspace.Slug != "" {
				item.FullName = r.Workspace.Slug + "/" + r.Slug
			}
			if r.MainBranch != nil {
				item.DefaultBranch = r.MainBranch.Name
			}
		} else {
			item.ID, item.Private = r.ID.String(), !r.Public
			if r.Project != nil && r.Project.Key != "" {
				item.FullName = r.Project.Key + "/" + r.Slug
			}
		}
		out.Items = append(out.Items, item)
	}
	out.Next = c.cursor(p.Next, p.IsLastPage, p.NextPageStart)
	return out, nil
}

// ListBranches lists a repository's branches by name. repo is
// "owner/slug" (owner the workspace or project key) or a slug of the
// configured workspace or project.
func (c *Connector) ListBranches(ctx context.Context, repo string, o connectors.ListOptions) (connectors.Page[connectors.Branch], error) {
	var out connectors.Page[connectors.Branch]
	owner, slug, err := c.splitRepo(repo)
	if err != nil {
		return out, err
	}
	bs, next, err := c.listRefs(ctx, c.branchesCall(owner, slug), o)
	if err != nil {
		return out, err
	}
	out.Items = make([]connectors.Branch, 0, len(bs))
	for _, b := range bs {
		out.Items = append(out.Items, connectors.Branch{Name: b.name(), CommitSHA: b.sha()})
	}
	out.Next = next
	return out, nil
}

// ListTags lists a repository's git tags by name. Tag.Digest stays empty:
// it means an OCI digest, which a git tag does not have.
func (c *Connector) ListTags(ctx context.Context, repo string, o connectors.ListOptions) (connectors.Page[connectors.Tag], error) {
	var out connectors.Page[connectors.Tag]
	owner, slug, err := c.splitRepo(repo)
	if err != nil {
		return out, err
	}
	cl := call{op: "list tags of " + owner + "/" + slug, elems: []string{"repositories", owner, slug, "refs", "tags"},
		query: url.Values{"sort": {"name"}}, scope: "repository"}
	if !c.cloud() {
		cl = call{op: cl.op, elems: []string{"projects", owner, "repos", slug, "tags"},
			query: url.Values{"orderBy": {"ALPHABETICAL"}}, perm: "REPO_READ"}
	}
	ts, next, err := c.listRefs(ctx, cl, o)
	if err != nil {
		return out, err
	}
	out.Items = make([]connectors.Tag, 0, len(ts))
	for _, t := range ts {
		out.Items = append(out.Items, connectors.Tag{Name: t.name()})
	}
	out.Next = next
	return out, nil
}

func (c *Connector) listRefs(ctx context.Context, cl call, o connectors.ListOptions) ([]branch, string, error) {
	cred, err := c.credential(ctx)
	if err != nil {
		return nil, "", err
	}
	if err := c.pageQuery(cl.query, o); err != nil {
		return nil, "", err
	}
	var p page[branch]
	if _, err := c.get(ctx, cred, cl, &p); err != nil {
		return nil, "", err
	}
	return p.Values, c.cursor(p.Next, p.IsLastPage, p.NextPageStart), nil
}

// slugRE is what a repository slug may hold on either flavour.
var slugRE = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,128}$`)

// splitRepo reads "owner/slug" or "slug" (of the configured owner),
// refusing before any call what could not name a repository: a "..",
// a slash too many.
func (c *Connector) splitRepo(full string) (owner, slug string, err error) {
	if c.confErr != nil {
		return "", "", c.confErr
	}
	owner, slug, found := strings.Cut(full, "/")
	if !found {
		owner, slug = c.owner, full
	}
	ownerOK := workspaceRE.MatchString(owner)
	if !c.cloud() {
		ownerOK = projectKeyRE.MatchString(owner)
	}
	if !ownerOK || !slugRE.MatchString(slug) || slug == "." || slug == ".." {
		return "", "", fault.Permanentf("bitbucket: repository %q is not owner/slug (the workspace or project key, then the repository's slug)", full)
	}
	return owner, slug, nil
}
