package github

import (
	"context"
	"fmt"
	"regexp"
	"strconv"
	"strings"

	gh "github.com/google/go-github/v62/github"

	"inthub.dev/pkg/connectors"
	"inthub.dev/pkg/fault"
)

// maxPerPage is GitHub's largest page.
const maxPerPage = 100

var (
	ownerName = regexp.MustCompile(`^[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})$`)
	repoName  = regexp.MustCompile(`^[A-Za-z0-9._-]{1,100}$`)
)

// ListRepositories lists the repositories the installation can see, in
// GitHub's order, one page per call. Page.Next is the next page's cursor,
// taken from GitHub's Link header. With an organization configured, other
// owners' repositories are left out, so a page may hold fewer items than
// the limit (or none) while Next is still set.
func (c *Connector) ListRepositories(ctx context.Context, o connectors.ListOptions) (connectors.Page[connectors.Repository], error) {
	var out connectors.Page[connectors.Repository]
	lo, err := listOptions(o)
	if err != nil {
		return out, err
	}
	err = c.call(ctx, op{kind: opInstallation, name: "list the installation's repositories"}, func(ctx context.Context) error {
		list, resp, err := c.inst.Apps.ListRepos(ctx, lo)
		if err != nil {
			return err
		}
		out.Items = make([]connectors.Repository, 0, len(list.Repositories))
		for _, r := range list.Repositories {
			if c.conf.Organization != "" && !strings.EqualFold(r.GetOwner().GetLogin(), c.conf.Organization) {
				continue
			}
			out.Items = append(out.Items, connectors.Repository{
				ID:            strconv.FormatInt(r.GetID(), 10),
				FullName:      r.GetFullName(),
				DefaultBranch: r.GetDefaultBranch(),
				Private:       r.GetPrivate(),
			})
		}
		out.Next = next(resp)
		return nil
	})
	return out, err
}

// ListBranches lists a repository's branches ("owner/name").
func (c *Connector) ListBranches(ctx context.Context, repo string, o connectors.ListOptions) (connectors.Page[connectors.Branch], error) {
	var out connectors.Page[connectors.Branch]
	owner, name, err := c.splitRepo(repo)
	if err != nil {
		return out, err
	}
	lo, err := listOptions(o)
	if err != nil {
		return out, err
	}
	err = c.call(ctx, op{kind: opRepo, name: "list the branches of " + repo, repo: repo}, func(ctx context.Context) error {
		branches, resp, err := c.inst.Repositories.ListBranches(ctx, owner, name, &gh.BranchListOptions{ListOptions: *lo})
		if err != nil {
			return err
		}
		out.Items = make([]connectors.Branch, 0, len(branches))
		for _, b := range branches {
			out.Items = append(out.Items, connectors.Branch{Name: b.GetName(), CommitSHA: b.GetCommit().GetSHA()})
		}
		out.Next = next(resp)
		return nil
	})
	return out, err
}

// ListTags lists a repository's git tags ("owner/name"). Tag.Digest stays
// empty: it means an OCI digest, which a git tag does not have.
func (c *Connector) ListTags(ctx context.Context, repo string, o connectors.ListOptions) (connectors.Page[connectors.Tag], error) {
	var out connectors.Page[connectors.Tag]
	owner, name, err := c.splitRepo(repo)
	if err != nil {
		return out, err
	}
	lo, err := listOptions(o)
	if err != nil {
		return out, err
	}
	err = c.call(ctx, op{kind: opRepo, name: "list the tags of " + repo, repo: repo}, func(ctx context.Context) error {
		tags, resp, err := c.inst.Repositories.ListTags(ctx, owner, name, lo)
		if err != nil {
			return err
		}
		out.Items = make([]connectors.Tag, 0, len(tags))
		for _, t := range tags {
			out.Items = append(out.Items, connectors.Tag{Name: t.GetName()})
		}
		out.Next = next(resp)
		return nil
	})
	return out, err
}

// splitRepo checks "owner/name" strictly: go-github puts both parts into
// the URL path unescaped, so "acme/../../app" would reach another
// endpoint with the installation token.
func (c *Connector) splitRepo(repo string) (owner, name string, err error) {
	owner, name, ok := strings.Cut(repo, "/")
	if !ok || !ownerName.MatchString(owner) || !repoName.MatchString(name) || name == "." || name == ".." {
		return "", "", fault.Permanentf("scm.github: repository %q must be \"owner/name\" with a GitHub login and a repository name", repo)
	}
	if c.conf.Organization != "" && !strings.EqualFold(owner, c.conf.Organization) {
		return "", "", fault.Permanentf("scm.github: repository %q is outside the organisation %s this integration is restricted to", repo, c.conf.Organization)
	}
	return owner, name, nil
}

// listOptions turns a connectors cursor into GitHub's page number. The
// cursor is the next page's number; it is opaque to callers.
func listOptions(o connectors.ListOptions) (*gh.ListOptions, error) {
	lo := &gh.ListOptions{}
	if o.Limit < 0 {
		return nil, fault.Permanentf("scm.github: a negative page size (%d)", o.Limit)
	}
	if o.Limit > 0 {
		lo.PerPage = min(o.Limit, maxPerPage)
	}
	if o.Cursor != "" {
		p, err := strconv.Atoi(o.Cursor)
		if err != nil || p < 1 {
			return nil, fault.Permanentf("scm.github: cursor %q was not issued by this connector", o.Cursor)
		}
		lo.Page = p
	}
	return lo, nil
}

func next(resp *gh.Response) string {
	if resp == nil || resp.NextPage == 0 {
		return ""
	}
	return fmt.Sprint(resp.NextPage)
}
