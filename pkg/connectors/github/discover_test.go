package github_test

import (
	"fmt"
	"slices"
	"testing"

	"inthub.dev/pkg/connectors"
	"inthub.dev/pkg/connectors/github/githubtest"
	"inthub.dev/pkg/fault"
)

func manyRepos(n int) []githubtest.Repo {
	out := make([]githubtest.Repo, n)
	for i := range out {
		out[i] = githubtest.Repo{ID: int64(1000 + i), FullName: fmt.Sprintf("acme/repo-%02d", i), DefaultBranch: "main", Branches: []string{"main"}}
	}
	return out
}

// Pages follow GitHub's Link header to the end, in order, without gaps or
// repeats, on github.com and on GHES.
func TestListRepositoriesPagination(t *testing.T) {
	for _, prefix := range []string{"", "/api/v3"} {
		t.Run("prefix="+prefix, func(t *testing.T) {
			srv := githubtest.New(t, githubtest.Options{Prefix: prefix, Repos: manyRepos(7)})
			c, _ := newConn(t, srv, nil)
			var names, cursors []string
			cursor := ""
			for range 10 {
				p, err := c.ListRepositories(t.Context(), connectors.ListOptions{Limit: 3, Cursor: cursor})
				if err != nil {
					t.Fatal(err)
				}
				if len(p.Items) > 3 {
					t.Fatalf("page of %d items for Limit 3", len(p.Items))
				}
				for _, r := range p.Items {
					names = append(names, r.FullName)
					if r.ID == "" || r.DefaultBranch != "main" {
						t.Errorf("repository %+v", r)
					}
				}
				cursors = append(cursors, p.Next)
				if p.Next == "" {
					break
				}
				cursor = p.Next
			}
			want := make([]string, 7)
			for i := range want {
				want[i] = fmt.Sprintf("acme/repo-%02d", i)
			}
			if !slices.Equal(names, want) {
				t.Errorf("names %v, want %v", names, want)
			}
			if !slices.Equal(cursors, []string{"2", "3", ""}) {
				t.Errorf("cursors %v", cursors)
			}
			if v := srv.Violations(); len(v) > 0 {
				t.Errorf("requests outside the API root: %v", v)
			}
		})
	}
}

func TestListRepositoriesDefaultsAndCaps(t *testing.T) {
	srv := githubtest.New(t, githubtest.Options{Repos: manyRepos(150)})
	c, _ := newConn(t, srv, nil)
	p, err := c.ListRepositories(t.Context(), connectors.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Items) != 30 || p.Next != "2" {
		t.Errorf("default page: %d items, next %q; want GitHub's 30 and page 2", len(p.Items), p.Next)
	}
	p, err = c.ListRepositories(t.Context(), connectors.ListOptions{Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Items) != 100 || p.Next != "2" {
		t.Errorf("Limit 1000: %d items, next %q; want GitHub's maximum of 100", len(p.Items), p.Next)
	}
	for _, o := range []connectors.ListOptions{{Cursor: "x"}, {Cursor: "0"}, {Cursor: "-1"}, {Limit: -1}} {
		if _, err := c.ListRepositories(t.Context(), o); fault.ClassOf(err) != fault.ClassPermanent {
			t.Errorf("ListRepositories(%+v) = %v, want a permanent error", o, err)
		}
	}
}

func TestListBranchesAndTags(t *testing.T) {
	srv := githubtest.New(t, githubtest.Options{Prefix: "/api/v3"})
	c, _ := newConn(t, srv, nil)
	ctx := t.Context()

	p, err := c.ListBranches(ctx, "acme/api", connectors.ListOptions{Limit: 2})
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Items) != 2 || p.Next != "2" || p.Items[0] != (connectors.Branch{Name: "main", CommitSHA: githubtest.SHA("acme/api", "main")}) {
		t.Errorf("branches page 1: %+v", p)
	}
	p2, err := c.ListBranches(ctx, "acme/api", connectors.ListOptions{Limit: 2, Cursor: p.Next})
	if err != nil {
		t.Fatal(err)
	}
	if len(p2.Items) != 1 || p2.Items[0].Name != "feature/x" || p2.Next != "" {
		t.Errorf("branches page 2: %+v", p2)
	}

	tags, err := c.ListTags(ctx, "acme/api", connectors.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(tags.Items) != 2 || tags.Items[0].Name != "v1.0.0" || tags.Items[1].Name != "v1.1.0" || tags.Next != "" {
		t.Errorf("tags: %+v", tags)
	}
	empty, err := c.ListTags(ctx, "acme/web", connectors.ListOptions{})
	if err != nil || len(empty.Items) != 0 || empty.Next != "" {
		t.Errorf("tags of a repository without tags: %+v, %v", empty, err)
	}
}

// A repository name reaches the URL path unescaped in go-github: anything
// but owner/name is refused before a request is made.
func TestRepositoryNamesAreChecked(t *testing.T) {
	srv := githubtest.New(t, githubtest.Options{})
	c, _ := newConn(t, srv, nil)
	for _, repo := range []string{
		"acme", "acme/", "/api", "acme/api/extra", "acme/../../app", "../acme/api", "acme/..", "acme/.",
		"acme/api?x=1", "acme/api#x", "acme/a b", "-acme/api", "acme/%2e%2e", "",
	} {
		if _, err := c.ListBranches(t.Context(), repo, connectors.ListOptions{}); fault.ClassOf(err) != fault.ClassPermanent {
			t.Errorf("ListBranches(%q) = %v, want a permanent error", repo, err)
		}
		if _, err := c.ListTags(t.Context(), repo, connectors.ListOptions{}); fault.ClassOf(err) != fault.ClassPermanent {
			t.Errorf("ListTags(%q) = %v, want a permanent error", repo, err)
		}
	}
	if n := srv.Exchanges() + srv.Requests(githubtest.RouteBranches) + srv.Requests(githubtest.RouteTags) + len(srv.Violations()); n != 0 {
		t.Errorf("invalid names made %d requests", n)
	}
}

func TestOrganizationRestriction(t *testing.T) {
	srv := githubtest.New(t, githubtest.Options{})
	c, _ := newConn(t, srv, func(s *setup) { s.conf["organization"] = "acme" })
	p, err := c.ListRepositories(t.Context(), connectors.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, r := range p.Items {
		names = append(names, r.FullName)
	}
	if !slices.Equal(names, []string{"acme/api", "acme/web"}) {
		t.Errorf("repositories %v, want acme's only", names)
	}
	if _, err := c.ListBranches(t.Context(), "other/lib", connectors.ListOptions{}); fault.ClassOf(err) != fault.ClassPermanent {
		t.Errorf("a repository of another owner: %v", err)
	}
	if _, err := c.ListTags(t.Context(), "ACME/api", connectors.ListOptions{}); err != nil {
		t.Errorf("owner matching is case-insensitive, as GitHub's logins: %v", err)
	}
}
