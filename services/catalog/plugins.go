package catalog

import (
	"context"
	"fmt"
	"path/filepath"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"inthub.dev/pkg/connectors"
	"inthub.dev/pkg/plugin"
	"inthub.dev/services/catalog/api"
	"inthub.dev/services/catalog/store"
)

// plugins is the catalog's plugin host: pkg/plugin loads and supervises
// the binaries, the store records them (plugin_metadata, their
// integration types) and announces changes through the outbox.
type plugins struct {
	host  *plugin.Host
	owner *pgxpool.Pool
	st    *store.Store
	wake  func()
}

var _ api.Plugins = (*plugins)(nil)

// startPlugins starts the plugin host when plugin directories are
// configured and runs a first discovery; a discovery that fails is
// logged, not fatal (POST /plugins/discover tries again). The returned
// api.Plugins is nil without directories. stop unloads every plugin.
func (s *Service) startPlugins(ctx context.Context, st *store.Store, wake func()) (_ api.Plugins, stop func(), _ error) {
	if len(s.cfg.PluginDirs) == 0 {
		return nil, func() {}, nil
	}
	host, err := plugin.New(plugin.Config{Dirs: s.cfg.PluginDirs, Allowed: s.cfg.PluginChecksums,
		Registry: connectors.Default(), Egress: s.cfg.Egress, Logger: s.log.With("component", "plugins")})
	if err != nil {
		return nil, nil, fmt.Errorf("catalog: %w", err)
	}
	// Plugin records are global tables that only the owner writes.
	owner, err := pgxpool.New(ctx, s.cfg.DatabaseURL)
	if err != nil {
		_ = host.Close()
		return nil, nil, fmt.Errorf("catalog: owner pool for plugins: %w", err)
	}
	p := &plugins{host: host, owner: owner, st: st, wake: wake}
	if d, err := p.Discover(ctx); err != nil {
		s.log.Error("plugin discovery at start failed; POST /api/v1/plugins/discover retries", "error", err.Error())
	} else {
		s.log.Info("plugins discovered", "loaded", len(d.Plugins), "registered", len(d.Registered),
			"unregistered", len(d.Unregistered), "refused", len(d.Refused))
	}
	return p, func() {
		_ = host.Close()
		owner.Close()
	}, nil
}

// Discover scans, then records what is loaded now and announces the
// difference with the records.
func (p *plugins) Discover(ctx context.Context) (api.PluginDiscovery, error) {
	rep, err := p.host.Discover(ctx)
	if err != nil {
		return api.PluginDiscovery{}, err
	}
	current := make([]store.Plugin, 0, len(rep.Plugins))
	for _, i := range rep.Plugins {
		current = append(current, store.Plugin{ID: i.ID, Type: i.Type, Version: i.Version, Capabilities: i.Capabilities,
			Path: i.Path, Checksum: i.Checksum, Provider: i.Provider, DisplayName: i.DisplayName,
			Description: i.Description, ConfigSchema: i.ConfigSchema})
	}
	ch, err := store.SyncPlugins(ctx, p.owner, current, "", time.Now())
	if err != nil {
		return api.PluginDiscovery{}, err
	}
	if len(ch.Registered)+len(ch.Unregistered) > 0 && p.wake != nil {
		p.wake()
	}
	running := p.running()
	out := api.PluginDiscovery{}
	for _, r := range ch.Registered {
		out.Registered = append(out.Registered, view(r, running))
	}
	for _, r := range ch.Unregistered {
		out.Unregistered = append(out.Unregistered, view(r, running))
	}
	for _, r := range rep.Refused {
		out.Refused = append(out.Refused, api.PluginRefusal{File: filepath.Base(r.Path), Checksum: r.Checksum, Reason: r.Reason})
	}
	out.Plugins, err = p.List(ctx)
	return out, err
}

// List returns the recorded plugins with this replica's process state.
func (p *plugins) List(ctx context.Context) ([]api.Plugin, error) {
	recs, err := p.st.ListPlugins(ctx)
	if err != nil {
		return nil, err
	}
	running := p.running()
	out := make([]api.Plugin, 0, len(recs))
	for _, r := range recs {
		out = append(out, view(r, running))
	}
	return out, nil
}

func (p *plugins) running() map[string]plugin.Info {
	m := map[string]plugin.Info{}
	for _, i := range p.host.Plugins() {
		m[i.ID] = i
	}
	return m
}

func view(r store.Plugin, running map[string]plugin.Info) api.Plugin {
	v := api.Plugin{ID: r.ID, Type: r.Type, Version: r.Version, Capabilities: r.Capabilities, Checksum: r.Checksum,
		File: filepath.Base(r.Path), DiscoveredAt: r.DiscoveredAt}
	if v.Capabilities == nil {
		v.Capabilities = []string{}
	}
	if i, ok := running[r.ID]; ok && i.Checksum == r.Checksum {
		v.Running, v.Restarts, v.Pid = i.Pid != 0, i.Restarts, i.Pid
	}
	return v
}
