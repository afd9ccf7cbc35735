package ghactions

import (
	"context"
	"strconv"
	"time"

	"inthub.dev/pkg/connectors"
	"inthub.dev/pkg/fault"
)

var _ connectors.ResourceLister = (*Connector)(nil)

// ResourceKinds: a repository's workflows and its runs (the kinds are
// named as their checks).
func (c *Connector) ResourceKinds() []connectors.ResourceKind {
	return []connectors.ResourceKind{
		{Name: CheckWorkflows, InRepo: true, Description: "workflows of a repository (owner/name)"},
		{Name: CheckRuns, InRepo: true, Description: "workflow runs of a repository, newest first"},
	}
}

// ListResources lists workflows or runs of repo ("owner/name").
func (c *Connector) ListResources(ctx context.Context, kind, repo string, o connectors.ListOptions) (connectors.Page[connectors.Resource], error) {
	var out connectors.Page[connectors.Resource]
	switch kind {
	case CheckWorkflows:
		p, err := c.ListWorkflows(ctx, repo, o)
		if err != nil {
			return out, err
		}
		out.Next = p.Next
		out.Items = make([]connectors.Resource, 0, len(p.Items))
		for _, w := range p.Items {
			out.Items = append(out.Items, connectors.Resource{ID: strconv.FormatInt(w.ID, 10), Name: w.Name, URL: w.URL,
				Attributes: nonEmpty(map[string]string{"path": w.Path, "state": w.State})})
		}
	case CheckRuns:
		p, err := c.ListRuns(ctx, repo, o)
		if err != nil {
			return out, err
		}
		out.Next = p.Next
		out.Items = make([]connectors.Resource, 0, len(p.Items))
		for _, r := range p.Items {
			attrs := map[string]string{
				"workflowId": strconv.FormatInt(r.WorkflowID, 10), "branch": r.Branch, "event": r.Event,
				"status": r.Status, "conclusion": r.Conclusion, "headSha": r.HeadSHA,
			}
			if !r.CreatedAt.IsZero() {
				attrs["createdAt"] = r.CreatedAt.UTC().Format(time.RFC3339)
			}
			out.Items = append(out.Items, connectors.Resource{ID: strconv.FormatInt(r.ID, 10), Name: r.Name, URL: r.URL,
				Attributes: nonEmpty(attrs)})
		}
	default:
		return out, fault.Permanentf("ci.github_actions: cannot list %q (it lists %s and %s)", kind, CheckWorkflows, CheckRuns)
	}
	return out, nil
}

// nonEmpty drops the attributes GitHub left empty (a run's conclusion
// before it completes).
func nonEmpty(m map[string]string) map[string]string {
	for k, v := range m {
		if v == "" {
			delete(m, k)
		}
	}
	return m
}
