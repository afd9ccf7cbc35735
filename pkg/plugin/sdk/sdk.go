// Package sdk is what a connector plugin imports: it serves a connector
// (the same connectors.Connector a built-in implements) to the inthub host
// over go-plugin's gRPC transport.
//
//	func main() {
//		sdk.Serve(sdk.Plugin{
//			ID: "quay", Version: "1.0.0",
//			Info: connectors.Info{Type: "registry.quay", Provider: "quay", ...},
//			New:  func(cfg connectors.Config) (connectors.Connector, error) { return quay.New(cfg) },
//		})
//	}
//
// For every call the host sends the integration, the secrets its AuthRefs
// resolve to (resolved and audited by the host: the plugin never sees a
// vault token or the host's environment) and the host's egress policy,
// which the sdk's HTTP client enforces at dial time. The connector is built
// per call and closed after it; its errors keep their class (transient,
// permanent, offline) across the wire.
package sdk

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"regexp"
	"time"

	goplugin "github.com/hashicorp/go-plugin"

	"inthub.dev/pkg/connectors"
	"inthub.dev/pkg/egress"
	"inthub.dev/pkg/fault"
	"inthub.dev/pkg/plugin/internal/pluginpb"
	"inthub.dev/pkg/plugin/internal/wire"
)

// Plugin describes a connector plugin.
type Plugin struct {
	// ID names the plugin, stable across its versions ("quay").
	ID string
	// Version is the plugin's own version ("1.0.0").
	Version string
	// Info is the connector type it provides; Info.Type is the
	// integration type id ("registry.quay"), Info.ConfigSchema its JSON
	// Schema (x-secret: true on AuthRef fields).
	Info connectors.Info
	// New builds a connector for one integration, without I/O.
	New connectors.Factory
}

var idPattern = regexp.MustCompile(`^[a-z][a-z0-9_.-]{0,62}$`)

// Check reports what is missing from p.
func (p Plugin) Check() error {
	var errs []error
	if !idPattern.MatchString(p.ID) {
		errs = append(errs, fmt.Errorf("sdk.Plugin: ID %q: lower-case letters, digits, '.', '_' or '-'", p.ID))
	}
	if p.Version == "" {
		errs = append(errs, errors.New("sdk.Plugin: Version is empty"))
	}
	if p.Info.Type == "" || p.Info.Provider == "" {
		errs = append(errs, errors.New("sdk.Plugin: Info.Type and Info.Provider are required"))
	}
	if len(p.Info.ConfigSchema) == 0 {
		errs = append(errs, errors.New("sdk.Plugin: Info.ConfigSchema is empty"))
	}
	if p.New == nil {
		errs = append(errs, errors.New("sdk.Plugin: New is nil"))
	}
	return errors.Join(errs...)
}

// Serve serves p until the host ends the process. Run by hand (not by a
// host), it prints a message and exits with status 1.
func Serve(p Plugin) {
	if err := p.Check(); err != nil {
		fmt.Fprintln(os.Stderr, "plugin:", err)
		os.Exit(1)
	}
	goplugin.Serve(&goplugin.ServeConfig{
		HandshakeConfig:  wire.Handshake,
		VersionedPlugins: wire.VersionedPlugins(NewServer(p)),
		GRPCServer:       goplugin.DefaultGRPCServer,
	})
}

// NewServer returns the gRPC service of p, for tests that serve it in
// process (goplugin.TestPluginGRPCConn) instead of through Serve.
func NewServer(p Plugin) pluginpb.ConnectorServer {
	// Written to stderr, which go-plugin forwards to the host's log.
	log := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	return &server{p: p, log: log.With("plugin", p.ID)}
}

type server struct {
	pluginpb.UnimplementedConnectorServer
	p   Plugin
	log *slog.Logger
}

func (s *server) Metadata(context.Context, *pluginpb.MetadataRequest) (*pluginpb.MetadataResponse, error) {
	i := s.p.Info
	return &pluginpb.MetadataResponse{
		PluginId: s.p.ID, Type: i.Type, Version: s.p.Version, Provider: i.Provider,
		DisplayName: i.DisplayName, Description: i.Description, Capabilities: i.Capabilities,
		ConfigSchema: i.ConfigSchema,
	}, nil
}

// build makes the connector of one call. stage names the capability a
// failure is reported under, as connect.Builder does for built-ins.
func (s *server) build(ctx context.Context, in *pluginpb.Integration, provision bool) (c connectors.Connector, stage string, err error) {
	cfg := connectors.Config{
		IntegrationID: in.GetIntegrationId(),
		TenantID:      in.GetTenantId(),
		Type:          in.GetType(),
		Config:        in.GetConfig(),
		AuthRef:       in.GetAuthRef(),
		Secrets:       secrets(in.GetSecrets()),
		HTTPClient:    httpClient(wire.EgressFromPB(in.GetEgress()), time.Duration(in.GetTimeoutMs())*time.Millisecond),
		Logger:        s.log.With("integrationId", in.GetIntegrationId(), "tenantId", in.GetTenantId()),
		Now:           time.Now,
	}
	c, err = s.p.New(cfg)
	if err != nil {
		return nil, "config", permanentIfUnknown(err)
	}
	if err := c.Validate(); err != nil {
		_ = c.Close()
		return nil, "config", permanentIfUnknown(err)
	}
	if p, ok := c.(connectors.Provisioner); ok && provision {
		if err := p.Provision(ctx); err != nil {
			_ = c.Close()
			return nil, "auth", err
		}
	}
	return c, "", nil
}

func permanentIfUnknown(err error) error {
	if fault.ClassOf(err) == fault.ClassUnknown {
		return fault.Permanent(err)
	}
	return err
}

func (s *server) Validate(ctx context.Context, req *pluginpb.CallRequest) (*pluginpb.ValidateResponse, error) {
	c, _, err := s.build(ctx, req.GetIntegration(), false)
	if err != nil {
		return &pluginpb.ValidateResponse{Error: wire.ErrorToPB(err)}, nil
	}
	_ = c.Close()
	return &pluginpb.ValidateResponse{}, nil
}

func (s *server) run(ctx context.Context, req *pluginpb.CallRequest, op func(context.Context, connectors.Connector) connectors.Result) (res *pluginpb.ResultResponse, err error) {
	start := time.Now()
	c, stage, err := s.build(ctx, req.GetIntegration(), true)
	if err != nil {
		return wire.ResultToPB(connectors.FailedResult(start, stage, err)), nil
	}
	defer func() {
		// A panicking connector fails its call, not the plugin process.
		if p := recover(); p != nil {
			s.log.Error("connector panicked", "panic", fmt.Sprint(p))
			res = wire.ResultToPB(connectors.FailedResult(start, "connector",
				fault.Permanentf("the plugin's connector failed unexpectedly; see the plugin's log")))
		}
		_ = c.Close()
	}()
	return wire.ResultToPB(op(ctx, c)), nil
}

func (s *server) TestConnection(ctx context.Context, req *pluginpb.CallRequest) (*pluginpb.ResultResponse, error) {
	return s.run(ctx, req, func(ctx context.Context, c connectors.Connector) connectors.Result { return c.TestConnection(ctx) })
}

func (s *server) CheckHealth(ctx context.Context, req *pluginpb.CallRequest) (*pluginpb.ResultResponse, error) {
	return s.run(ctx, req, func(ctx context.Context, c connectors.Connector) connectors.Result { return c.CheckHealth(ctx) })
}

func (s *server) list(ctx context.Context, req *pluginpb.ListRequest, fn func(connectors.Discoverer, connectors.ListOptions) ([]*pluginpb.Item, string, error)) (*pluginpb.ListResponse, error) {
	c, _, err := s.build(ctx, req.GetIntegration(), true)
	if err != nil {
		return &pluginpb.ListResponse{Error: wire.ErrorToPB(err)}, nil
	}
	defer c.Close()
	d, ok := c.(connectors.Discoverer)
	if !ok {
		return &pluginpb.ListResponse{Error: wire.ErrorToPB(fault.Permanentf("%s cannot list resources", s.p.Info.Type))}, nil
	}
	items, next, err := fn(d, connectors.ListOptions{Limit: int(req.GetLimit()), Cursor: req.GetCursor()})
	if err != nil {
		return &pluginpb.ListResponse{Error: wire.ErrorToPB(err)}, nil
	}
	return &pluginpb.ListResponse{Items: items, Next: next}, nil
}

func (s *server) ListRepositories(ctx context.Context, req *pluginpb.ListRequest) (*pluginpb.ListResponse, error) {
	return s.list(ctx, req, func(d connectors.Discoverer, o connectors.ListOptions) ([]*pluginpb.Item, string, error) {
		p, err := d.ListRepositories(ctx, o)
		items := make([]*pluginpb.Item, 0, len(p.Items))
		for _, r := range p.Items {
			items = append(items, &pluginpb.Item{Id: r.ID, Name: r.FullName, DefaultBranch: r.DefaultBranch, Private: r.Private})
		}
		return items, p.Next, err
	})
}

func (s *server) ListBranches(ctx context.Context, req *pluginpb.ListRequest) (*pluginpb.ListResponse, error) {
	return s.list(ctx, req, func(d connectors.Discoverer, o connectors.ListOptions) ([]*pluginpb.Item, string, error) {
		p, err := d.ListBranches(ctx, req.GetRepository(), o)
		items := make([]*pluginpb.Item, 0, len(p.Items))
		for _, b := range p.Items {
			items = append(items, &pluginpb.Item{Name: b.Name, CommitSha: b.CommitSHA})
		}
		return items, p.Next, err
	})
}

func (s *server) ListTags(ctx context.Context, req *pluginpb.ListRequest) (*pluginpb.ListResponse, error) {
	return s.list(ctx, req, func(d connectors.Discoverer, o connectors.ListOptions) ([]*pluginpb.Item, string, error) {
		p, err := d.ListTags(ctx, req.GetRepository(), o)
		items := make([]*pluginpb.Item, 0, len(p.Items))
		for _, t := range p.Items {
			items = append(items, &pluginpb.Item{Name: t.Name, Digest: t.Digest})
		}
		return items, p.Next, err
	})
}

// secrets resolves the AuthRefs the host resolved for this call; any
// other reference is refused, permanently: the host sends every authref://
// value of the config, so an unknown one is a reference the integration
// does not hold.
type secrets map[string][]byte

func (m secrets) Resolve(_ context.Context, ref string) ([]byte, error) {
	if v, ok := m[ref]; ok {
		return v, nil
	}
	return nil, fault.Permanentf("the secret reference is not one of the integration's (the host resolves only the integration's AuthRefs)")
}

// httpClient is the plugin's client for one call: the host's egress
// policy checked at dial time, no proxy (through a proxy the check would
// see only the proxy), http only where the policy allows it, at most five
// redirects.
func httpClient(p egress.Policy, timeout time.Duration) *http.Client {
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	d := &net.Dialer{Timeout: 10 * time.Second, Control: p.DialControl()}
	tr := &http.Transport{
		Proxy:                 nil,
		DialContext:           d.DialContext,
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: timeout,
		MaxIdleConns:          4,
		IdleConnTimeout:       30 * time.Second,
		DisableKeepAlives:     true,
	}
	return &http.Client{
		Transport: schemeGuard{base: tr, allowHTTP: p.AllowHTTP},
		Timeout:   timeout,
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if len(via) >= 5 {
				return fault.Permanentf("stopped after 5 redirects")
			}
			return nil
		},
	}
}

type schemeGuard struct {
	base      http.RoundTripper
	allowHTTP bool
}

func (g schemeGuard) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Scheme != "https" && !(g.allowHTTP && req.URL.Scheme == "http") {
		return nil, &egress.DeniedError{Reason: "only https endpoints are allowed by the egress policy"}
	}
	return g.base.RoundTrip(req)
}
