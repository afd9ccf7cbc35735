package api

import (
	"context"
	"net/http"
	"time"

	"github.com/danielgtaylor/huma/v2"
)

// Plugins discovers and lists out-of-process connector plugins
// (pkg/plugin behind the catalog's recording of them).
type Plugins interface {
	// Discover scans the plugin directories, loads and unloads plugins,
	// records the outcome and announces the changes.
	Discover(ctx context.Context) (PluginDiscovery, error)
	// List returns the recorded plugins, by type.
	List(ctx context.Context) ([]Plugin, error)
}

// Plugin is a connector plugin the catalog has loaded.
type Plugin struct {
	ID           string    `json:"id" doc:"The plugin's stable name, e.g. quay."`
	Type         string    `json:"type" doc:"The integration type it provides, e.g. registry.quay."`
	Version      string    `json:"version"`
	Capabilities []string  `json:"capabilities"`
	Checksum     string    `json:"checksum" doc:"SHA-256 of the binary (hex), as on the allow-list."`
	File         string    `json:"file" doc:"The binary's file name in its plugin directory."`
	DiscoveredAt time.Time `json:"discoveredAt"`
	// Running and Restarts describe this replica's process of the plugin.
	Running  bool `json:"running" doc:"Whether this catalog replica has the plugin's process up."`
	Restarts int  `json:"restarts" doc:"Restarts after crashes in this replica since it loaded the plugin."`
	Pid      int  `json:"pid" doc:"The plugin's process id in this replica, 0 when it is not running."`
}

// PluginRefusal is a binary that discovery did not load.
type PluginRefusal struct {
	File     string `json:"file"`
	Checksum string `json:"checksum,omitempty"`
	Reason   string `json:"reason"`
}

// PluginDiscovery is the outcome of one discovery.
type PluginDiscovery struct {
	Registered   []Plugin        `json:"registered" doc:"Plugins loaded by this discovery (announced as plugin.registered)."`
	Unregistered []Plugin        `json:"unregistered" doc:"Plugins unloaded by this discovery (announced as plugin.unregistered)."`
	Refused      []PluginRefusal `json:"refused" doc:"Binaries not loaded: not on the checksum allow-list, not a connector plugin, or a type already provided."`
	Plugins      []Plugin        `json:"plugins" doc:"Every plugin loaded after this discovery."`
}

// PluginList is every loaded plugin, by type.
type PluginList struct {
	Items []Plugin `json:"items"`
}

type pluginDiscoveryOutput struct {
	Body PluginDiscovery
}

type pluginListOutput struct {
	Body PluginList
}

func (s *server) registerPlugins() {
	huma.Register(s.api, operation("discover-plugins", http.MethodPost, "/plugins/discover",
		"Scan the plugin directories: load new plugins, unload removed ones", ScopeAdmin,
		http.StatusConflict, http.StatusUnprocessableEntity, http.StatusNotImplemented), s.discoverPlugins)
	huma.Register(s.api, operation("list-plugins", http.MethodGet, "/plugins",
		"List the loaded connector plugins", ScopeRead, http.StatusNotImplemented), s.listPlugins)
}

func errNoPlugins() error {
	return huma.Error501NotImplemented("this catalog runs no plugin host (start it with --plugin-dir)")
}

func (s *server) discoverPlugins(ctx context.Context, _ *struct{}) (*pluginDiscoveryOutput, error) {
	if s.plugins == nil {
		return nil, errNoPlugins()
	}
	d, err := s.plugins.Discover(ctx)
	if err != nil {
		return nil, s.fail(ctx, err)
	}
	for _, l := range []*[]Plugin{&d.Registered, &d.Unregistered, &d.Plugins} {
		if *l == nil {
			*l = []Plugin{}
		}
	}
	if d.Refused == nil {
		d.Refused = []PluginRefusal{}
	}
	return &pluginDiscoveryOutput{Body: d}, nil
}

func (s *server) listPlugins(ctx context.Context, _ *struct{}) (*pluginListOutput, error) {
	if s.plugins == nil {
		return nil, errNoPlugins()
	}
	ps, err := s.plugins.List(ctx)
	if err != nil {
		return nil, s.fail(ctx, err)
	}
	if ps == nil {
		ps = []Plugin{}
	}
	return &pluginListOutput{Body: PluginList{Items: ps}}, nil
}
