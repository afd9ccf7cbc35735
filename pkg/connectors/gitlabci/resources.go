package gitlabci

import (
	"context"
	"strconv"
	"time"

	"inthub.dev/pkg/connectors"
	"inthub.dev/pkg/fault"
)

var _ connectors.ResourceLister = (*Connector)(nil)

// ResourceKinds: a project's pipelines (the kind is named as its check).
func (c *Connector) ResourceKinds() []connectors.ResourceKind {
	return []connectors.ResourceKind{
		{Name: CheckPipelines, InRepo: true, Description: "pipelines of a project (full path or numeric id), newest first"},
	}
}

// ListResources lists the pipelines of project (repo): the id is the
// pipeline's global id, the name its number within the project (#iid).
func (c *Connector) ListResources(ctx context.Context, kind, project string, o connectors.ListOptions) (connectors.Page[connectors.Resource], error) {
	var out connectors.Page[connectors.Resource]
	if kind != CheckPipelines {
		return out, fault.Permanentf("ci.gitlab_ci: cannot list %q (it lists %s)", kind, CheckPipelines)
	}
	p, err := c.ListPipelines(ctx, project, o)
	if err != nil {
		return out, err
	}
	out.Next = p.Next
	out.Items = make([]connectors.Resource, 0, len(p.Items))
	for _, pl := range p.Items {
		attrs := map[string]string{"iid": strconv.FormatInt(pl.IID, 10), "projectId": strconv.FormatInt(pl.ProjectID, 10),
			"ref": pl.Ref, "sha": pl.SHA, "status": pl.Status}
		if pl.Source != "" {
			attrs["source"] = pl.Source
		}
		if !pl.CreatedAt.IsZero() {
			attrs["createdAt"] = pl.CreatedAt.UTC().Format(time.RFC3339)
		}
		out.Items = append(out.Items, connectors.Resource{ID: strconv.FormatInt(pl.ID, 10), Name: "#" + strconv.FormatInt(pl.IID, 10),
			URL: pl.URL, Attributes: attrs})
	}
	return out, nil
}
