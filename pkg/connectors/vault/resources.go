package vault

import (
	"context"
	"strconv"

	"inthub.dev/pkg/connectors"
	"inthub.dev/pkg/fault"
)

var _ connectors.ResourceLister = (*Connector)(nil)

// ResourceKinds: the KV mounts (the kind is named as their check).
func (c *Connector) ResourceKinds() []connectors.ResourceKind {
	return []connectors.ResourceKind{{Name: CheckKVMounts, Description: "KV secrets engines (path, KV version)"}}
}

// ListResources lists the KV mounts as resources: the path is id and
// name, the KV version and the description are attributes.
func (c *Connector) ListResources(ctx context.Context, kind, _ string, o connectors.ListOptions) (connectors.Page[connectors.Resource], error) {
	var out connectors.Page[connectors.Resource]
	if kind != CheckKVMounts {
		return out, fault.Permanentf("vault.hashicorp: cannot list %q (it lists %s)", kind, CheckKVMounts)
	}
	p, err := c.ListKVMounts(ctx, o)
	if err != nil {
		return out, err
	}
	out.Next = p.Next
	out.Items = make([]connectors.Resource, 0, len(p.Items))
	for _, m := range p.Items {
		attrs := map[string]string{"version": strconv.Itoa(m.Version)}
		if m.Description != "" {
			attrs["description"] = m.Description
		}
		out.Items = append(out.Items, connectors.Resource{ID: m.Path, Name: m.Path, Attributes: attrs})
	}
	return out, nil
}
