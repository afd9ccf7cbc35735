package gitlabci_test

import (
	"slices"
	"strings"
	"testing"

	"inthub.dev/pkg/connectors"
	"inthub.dev/pkg/connectors/gitlabci"
	"inthub.dev/pkg/fault"
)

func TestListResources(t *testing.T) {
	f := seeded(t)
	c := newConn(t, f.URL(), map[string]any{"token": patRef})
	job := newConn(t, f.URL(), map[string]any{"jobToken": jobRef})

	kinds := connectors.ResourceKindsOf(c, gitlabci.Info(nil).Capabilities)
	if len(kinds) != 1 || kinds[0].Name != gitlabci.CheckPipelines || !kinds[0].InRepo ||
		!slices.Contains(gitlabci.Info(nil).Capabilities, kinds[0].Name) {
		t.Fatalf("kinds %+v, want pipelines, within a project, among the capabilities", kinds)
	}

	for _, tt := range []struct {
		name    string
		c       *gitlabci.Connector
		kind    string
		project string
		o       connectors.ListOptions
		items   int
		next    bool
		says    string // a permanent error saying this
	}{
		{name: "a page", c: c, kind: gitlabci.CheckPipelines, project: "acme/api", o: connectors.ListOptions{Limit: 20}, items: 20, next: true},
		{name: "by numeric id", c: c, kind: gitlabci.CheckPipelines, project: "1", o: connectors.ListOptions{Limit: 100, Cursor: "page=2"}, items: 30},
		{name: "a project without pipelines", c: c, kind: gitlabci.CheckPipelines, project: "acme/web"},
		{name: "job token, own project", c: job, kind: gitlabci.CheckPipelines, project: "2"},
		{name: "job token, another project", c: job, kind: gitlabci.CheckPipelines, project: "1", says: "own job's project"},
		{name: "unknown kind", c: c, kind: "workflows", project: "acme/api", says: "cannot list"},
		{name: "no project", c: c, kind: gitlabci.CheckPipelines, says: "project"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p, err := tt.c.ListResources(t.Context(), tt.kind, tt.project, tt.o)
			if tt.says != "" {
				if fault.ClassOf(err) != fault.ClassPermanent || err == nil || !strings.Contains(err.Error(), tt.says) {
					t.Fatalf("err %v (class %v), want permanent saying %q", err, fault.ClassOf(err), tt.says)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(p.Items) != tt.items || (p.Next != "") != tt.next {
				t.Fatalf("%d items next %q, want %d (next page: %v)", len(p.Items), p.Next, tt.items, tt.next)
			}
			for _, r := range p.Items {
				a := r.Attributes
				if r.ID == "" || r.Name != "#"+a["iid"] || r.URL == "" || a["ref"] != "main" || len(a["sha"]) != 40 ||
					(a["status"] != "success" && a["status"] != "failed") || a["projectId"] != "1" || a["createdAt"] == "" {
					t.Errorf("resource %+v lacks a pipeline's fields", r)
				}
			}
		})
	}
}
