package ghactions_test

import (
	"slices"
	"strings"
	"testing"

	"inthub.dev/pkg/connectors"
	"inthub.dev/pkg/connectors/ghactions"
	"inthub.dev/pkg/connectors/github/githubtest"
	"inthub.dev/pkg/fault"
)

func TestListResources(t *testing.T) {
	srv := githubtest.New(t, githubtest.Options{})
	srv.SetWorkflows("acme/api", []githubtest.Workflow{
		{ID: 11, Name: "CI", Path: ".github/workflows/ci.yml", State: "active"},
		{ID: 12, Name: "Nightly", Path: ".github/workflows/nightly.yml", State: "disabled_manually"},
	}, 1)
	c := newConnector(t, srv, srv.KeyPEM(), nil)

	kinds := connectors.ResourceKindsOf(c, ghactions.Info(nil).Capabilities)
	var names []string
	for _, k := range kinds {
		names = append(names, k.Name)
		if !k.InRepo {
			t.Errorf("kind %s is listed without a repository", k.Name)
		}
		if !slices.Contains(ghactions.Info(nil).Capabilities, k.Name) {
			t.Errorf("kind %s is not among the type's capabilities", k.Name)
		}
	}
	if strings.Join(names, ",") != "workflows,runs" {
		t.Fatalf("kinds %v, want workflows,runs", names)
	}

	for _, tt := range []struct {
		name, kind, repo string
		o                connectors.ListOptions
		want             string // names on the page
		next             bool
		check            func(connectors.Resource) bool
		says             string // a permanent error saying this
	}{
		{name: "workflows", kind: ghactions.CheckWorkflows, repo: "acme/api", want: "CI,Nightly",
			check: func(r connectors.Resource) bool {
				return r.ID != "" && r.URL != "" && strings.HasPrefix(r.Attributes["path"], ".github/workflows/") && r.Attributes["state"] != ""
			}},
		{name: "workflows paged", kind: ghactions.CheckWorkflows, repo: "acme/api", o: connectors.ListOptions{Limit: 1}, want: "CI", next: true},
		{name: "runs", kind: ghactions.CheckRuns, repo: "acme/api", o: connectors.ListOptions{Limit: 1}, next: true,
			check: func(r connectors.Resource) bool {
				a := r.Attributes
				return r.ID != "" && r.URL != "" && a["status"] == "completed" && a["conclusion"] != "" && len(a["headSha"]) == 40 &&
					a["workflowId"] != "" && a["createdAt"] != ""
			}},
		{name: "unknown kind", kind: "pipelines", repo: "acme/api", says: "cannot list"},
		{name: "no repository", kind: ghactions.CheckRuns, says: "owner/name"},
		{name: "bad cursor", kind: ghactions.CheckWorkflows, repo: "acme/api", o: connectors.ListOptions{Cursor: "zz"}, says: "cursor"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p, err := c.ListResources(t.Context(), tt.kind, tt.repo, tt.o)
			if tt.says != "" {
				if fault.ClassOf(err) != fault.ClassPermanent || err == nil || !strings.Contains(err.Error(), tt.says) {
					t.Fatalf("err %v (class %v), want permanent saying %q", err, fault.ClassOf(err), tt.says)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, r := range p.Items {
				got = append(got, r.Name)
				if tt.check != nil && !tt.check(r) {
					t.Errorf("resource %+v lacks its kind's fields", r)
				}
			}
			if (tt.want != "" && strings.Join(got, ",") != tt.want) || len(got) == 0 || (p.Next != "") != tt.next {
				t.Errorf("page %v next %q, want %q (next page: %v)", got, p.Next, tt.want, tt.next)
			}
		})
	}

	t.Run("without actions:read", func(t *testing.T) {
		srv.SetActionsPermission(false)
		defer srv.SetActionsPermission(true)
		_, err := c.ListResources(t.Context(), ghactions.CheckRuns, "acme/api", connectors.ListOptions{})
		if fault.ClassOf(err) != fault.ClassPermanent || !strings.Contains(err.Error(), "actions:read") {
			t.Errorf("%v, want a permanent error naming actions:read", err)
		}
	})
}
