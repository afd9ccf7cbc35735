package plugin

import (
	"context"
	"encoding/json"
	"strings"
	"time"

	"inthub.dev/pkg/connectors"
	"inthub.dev/pkg/fault"
	"inthub.dev/pkg/plugin/internal/pluginpb"
	"inthub.dev/pkg/plugin/internal/wire"
)

// remote is the host's view of a plugin's connector for one integration.
type remote struct {
	in      *instance
	cfg     connectors.Config
	secrets map[string][]byte
}

// Interface guards.
var (
	_ connectors.Connector   = (*remote)(nil)
	_ connectors.Provisioner = (*remote)(nil)
	_ connectors.Discoverer  = (*remote)(nil)
)

func (r *remote) Type() string     { return r.in.meta.GetType() }
func (r *remote) Provider() string { return r.in.meta.GetProvider() }

// validateTimeout bounds Validate, which has no context: it makes no
// network call in the plugin, only the local round trip.
const validateTimeout = 10 * time.Second

func (r *remote) integration() *pluginpb.Integration {
	i := &pluginpb.Integration{
		IntegrationId: r.cfg.IntegrationID,
		TenantId:      r.cfg.TenantID,
		Type:          r.cfg.Type,
		Config:        r.cfg.Config,
		AuthRef:       r.cfg.AuthRef,
		Secrets:       r.secrets,
		Egress:        wire.EgressToPB(r.in.h.cfg.Egress),
	}
	if r.cfg.HTTPClient != nil && r.cfg.HTTPClient.Timeout > 0 {
		i.TimeoutMs = r.cfg.HTTPClient.Timeout.Milliseconds()
	}
	return i
}

func (r *remote) Validate() error {
	ctx, cancel := context.WithTimeout(context.Background(), validateTimeout)
	defer cancel()
	var verr error
	err := r.in.call(ctx, func(c pluginpb.ConnectorClient) error {
		resp, err := c.Validate(ctx, &pluginpb.CallRequest{Integration: r.integration()})
		if err != nil {
			return err
		}
		verr = wire.ErrorFromPB(resp.GetError())
		return nil
	})
	if err != nil {
		return err
	}
	return verr
}

// Provision resolves, through the host's resolver (audited), the AuthRef
// and every authref:// value of the config: the plugin gets those secrets
// with each call and nothing else.
func (r *remote) Provision(ctx context.Context) error {
	refs := authRefs(r.cfg)
	if len(refs) == 0 {
		return nil
	}
	if r.cfg.Secrets == nil {
		return fault.Permanent(errNoSecrets)
	}
	r.secrets = make(map[string][]byte, len(refs))
	for _, ref := range refs {
		v, err := r.cfg.Secrets.Resolve(ctx, ref)
		if err != nil {
			return err
		}
		r.secrets[ref] = v
	}
	return nil
}

// authRefs lists the AuthRef and the authref:// strings anywhere in the
// config, without duplicates.
func authRefs(cfg connectors.Config) []string {
	seen := map[string]bool{}
	var out []string
	add := func(s string) {
		if strings.HasPrefix(s, "authref://") && !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	add(cfg.AuthRef)
	var doc any
	if json.Unmarshal(cfg.Config, &doc) == nil {
		var walk func(any)
		walk = func(v any) {
			switch x := v.(type) {
			case string:
				add(x)
			case []any:
				for _, e := range x {
					walk(e)
				}
			case map[string]any:
				for _, e := range x {
					walk(e)
				}
			}
		}
		walk(doc)
	}
	return out
}

func (r *remote) result(ctx context.Context, op func(context.Context, pluginpb.ConnectorClient, *pluginpb.CallRequest) (*pluginpb.ResultResponse, error)) connectors.Result {
	start := time.Now()
	var res connectors.Result
	err := r.in.call(ctx, func(c pluginpb.ConnectorClient) error {
		resp, err := op(ctx, c, &pluginpb.CallRequest{Integration: r.integration()})
		if err != nil {
			return err
		}
		res = wire.ResultFromPB(resp)
		return nil
	})
	if err != nil {
		return connectors.FailedResult(start, "plugin", err)
	}
	return res
}

func (r *remote) TestConnection(ctx context.Context) connectors.Result {
	return r.result(ctx, func(ctx context.Context, c pluginpb.ConnectorClient, req *pluginpb.CallRequest) (*pluginpb.ResultResponse, error) {
		return c.TestConnection(ctx, req)
	})
}

func (r *remote) CheckHealth(ctx context.Context) connectors.Result {
	return r.result(ctx, func(ctx context.Context, c pluginpb.ConnectorClient, req *pluginpb.CallRequest) (*pluginpb.ResultResponse, error) {
		return c.CheckHealth(ctx, req)
	})
}

type listCall func(context.Context, pluginpb.ConnectorClient, *pluginpb.ListRequest) (*pluginpb.ListResponse, error)

func (r *remote) list(ctx context.Context, repo string, o connectors.ListOptions, call listCall) ([]*pluginpb.Item, string, error) {
	var resp *pluginpb.ListResponse
	err := r.in.call(ctx, func(c pluginpb.ConnectorClient) error {
		var err error
		resp, err = call(ctx, c, &pluginpb.ListRequest{Integration: r.integration(), Repository: repo,
			Limit: int32(o.Limit), Cursor: o.Cursor})
		return err
	})
	if err != nil {
		return nil, "", err
	}
	if e := resp.GetError(); e != nil {
		return nil, "", wire.ErrorFromPB(e)
	}
	return resp.GetItems(), resp.GetNext(), nil
}

func (r *remote) ListRepositories(ctx context.Context, o connectors.ListOptions) (connectors.Page[connectors.Repository], error) {
	items, next, err := r.list(ctx, "", o, func(ctx context.Context, c pluginpb.ConnectorClient, req *pluginpb.ListRequest) (*pluginpb.ListResponse, error) {
		return c.ListRepositories(ctx, req)
	})
	p := connectors.Page[connectors.Repository]{Items: []connectors.Repository{}, Next: next}
	for _, it := range items {
		p.Items = append(p.Items, connectors.Repository{ID: it.Id, FullName: it.Name, DefaultBranch: it.DefaultBranch, Private: it.Private})
	}
	return p, err
}

func (r *remote) ListBranches(ctx context.Context, repo string, o connectors.ListOptions) (connectors.Page[connectors.Branch], error) {
	items, next, err := r.list(ctx, repo, o, func(ctx context.Context, c pluginpb.ConnectorClient, req *pluginpb.ListRequest) (*pluginpb.ListResponse, error) {
		return c.ListBranches(ctx, req)
	})
	p := connectors.Page[connectors.Branch]{Items: []connectors.Branch{}, Next: next}
	for _, it := range items {
		p.Items = append(p.Items, connectors.Branch{Name: it.Name, CommitSHA: it.CommitSha})
	}
	return p, err
}

func (r *remote) ListTags(ctx context.Context, repo string, o connectors.ListOptions) (connectors.Page[connectors.Tag], error) {
	items, next, err := r.list(ctx, repo, o, func(ctx context.Context, c pluginpb.ConnectorClient, req *pluginpb.ListRequest) (*pluginpb.ListResponse, error) {
		return c.ListTags(ctx, req)
	})
	p := connectors.Page[connectors.Tag]{Items: []connectors.Tag{}, Next: next}
	for _, it := range items {
		p.Items = append(p.Items, connectors.Tag{Name: it.Name, Digest: it.Digest})
	}
	return p, err
}

// Close forgets the call's secrets.
func (r *remote) Close() error {
	clear(r.secrets)
	r.secrets = nil
	return nil
}
