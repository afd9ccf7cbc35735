package gitlab

import (
	"context"
	"net/url"
	"strconv"

	"inthub.dev/pkg/connectors"
)

// maxPerPage is GitLab's cap on per_page; larger values are silently
// lowered by GitLab, so asking for more would only hide the truth.
const maxPerPage = 100

type project struct {
	ID                int64  `json:"id"`
	PathWithNamespace string `json:"path_with_namespace"`
	DefaultBranch     string `json:"default_branch"`
	Visibility        string `json:"visibility"`
}

type branch struct {
	Name   string `json:"name"`
	Commit struct {
		ID string `json:"id"`
	} `json:"commit"`
}

type tag struct {
	Name string `json:"name"`
}

// projectsCall is the project listing: the config's group (with its
// subgroups) or every project the token's user is a member of. Ordered by
// id so that pages are stable while projects are created.
func (c *Connector) projectsCall() (string, []string, url.Values) {
	q := url.Values{"order_by": {"id"}, "sort": {"asc"}}
	if c.conf.Group != "" {
		q.Set("include_subgroups", "true")
		return "list projects of group " + c.conf.Group, []string{"groups", c.conf.Group, "projects"}, q
	}
	q.Set("membership", "true")
	return "list projects", []string{"projects"}, q
}

func pageQuery(q url.Values, o connectors.ListOptions) error {
	if o.Limit > 0 {
		q.Set("per_page", strconv.Itoa(min(o.Limit, maxPerPage)))
	}
	return applyCursor(q, o.Cursor)
}

// ListRepositories lists the projects the token can see as a member (or
// those of the configured group), one page at a time.
func (c *Connector) ListRepositories(ctx context.Context, o connectors.ListOptions) (connectors.Page[connectors.Repository], error) {
	var page connectors.Page[connectors.Repository]
	cred, err := c.credential(ctx)
	if err != nil {
		return page, err
	}
	op, elems, q := c.projectsCall()
	if err := pageQuery(q, o); err != nil {
		return page, err
	}
	var ps []project
	resp, err := c.get(ctx, cred, call{op: op, elems: elems, query: q}, &ps)
	if err != nil {
		return page, err
	}
	page.Items = make([]connectors.Repository, 0, len(ps))
	for _, p := range ps {
		page.Items = append(page.Items, connectors.Repository{
			ID:            strconv.FormatInt(p.ID, 10),
			FullName:      p.PathWithNamespace,
			DefaultBranch: p.DefaultBranch,
			Private:       p.Visibility == "private",
		})
	}
	page.Next = resp.next
	return page, nil
}

// ListBranches lists a project's branches (GitLab sorts them by name).
// repo is the project's full path ("group/sub/project") or numeric id.
func (c *Connector) ListBranches(ctx context.Context, repo string, o connectors.ListOptions) (connectors.Page[connectors.Branch], error) {
	var page connectors.Page[connectors.Branch]
	if err := checkPath("project", repo, 2); err != nil {
		return page, err
	}
	cred, err := c.credential(ctx)
	if err != nil {
		return page, err
	}
	q := url.Values{}
	if err := pageQuery(q, o); err != nil {
		return page, err
	}
	var bs []branch
	resp, err := c.get(ctx, cred, call{
		op:    "list branches of " + repo,
		elems: []string{"projects", repo, "repository", "branches"},
		query: q,
	}, &bs)
	if err != nil {
		return page, err
	}
	page.Items = make([]connectors.Branch, 0, len(bs))
	for _, b := range bs {
		page.Items = append(page.Items, connectors.Branch{Name: b.Name, CommitSHA: b.Commit.ID})
	}
	page.Next = resp.next
	return page, nil
}

// ListTags lists a project's git tags by name. Tag.Digest stays empty:
// it means an OCI digest, which a git tag does not have (as scm.github).
func (c *Connector) ListTags(ctx context.Context, repo string, o connectors.ListOptions) (connectors.Page[connectors.Tag], error) {
	var page connectors.Page[connectors.Tag]
	if err := checkPath("project", repo, 2); err != nil {
		return page, err
	}
	cred, err := c.credential(ctx)
	if err != nil {
		return page, err
	}
	q := url.Values{"order_by": {"name"}, "sort": {"asc"}}
	if err := pageQuery(q, o); err != nil {
		return page, err
	}
	var ts []tag
	resp, err := c.get(ctx, cred, call{
		op:    "list tags of " + repo,
		elems: []string{"projects", repo, "repository", "tags"},
		query: q,
	}, &ts)
	if err != nil {
		return page, err
	}
	page.Items = make([]connectors.Tag, 0, len(ts))
	for _, t := range ts {
		page.Items = append(page.Items, connectors.Tag{Name: t.Name})
	}
	page.Next = resp.next
	return page, nil
}
