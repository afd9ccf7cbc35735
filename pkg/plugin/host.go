// Package plugin runs connectors that live outside the binary: separate
// executables that speak gRPC through github.com/hashicorp/go-plugin.
//
// A Host scans its directories for executables (Discover), refuses every
// binary whose SHA-256 is not on its allow-list (logged, and reported), and
// starts each allowed one: go-plugin's handshake (a magic cookie, then the
// highest protocol version both sides speak, see wire.VersionedPlugins)
// checks it is a connector plugin, and go-plugin verifies the checksum
// again as it starts the file, so a binary swapped after the scan does not
// run. The host then asks the plugin's metadata (id, type, version,
// capabilities, config schema) and registers a factory under its type in
// a connectors.Registry: from there the plugin's type is used like a
// built-in one (connect.Builder, /test, the health poller).
//
// Failures stay on the plugin's side of the wire. A plugin that crashes
// fails the call in flight with a transient error (the worker frame
// retries it; the user sees "try again"), and the host restarts it with
// exponential backoff while the next calls wait for it, bounded by their
// context. A binary removed from the directory is unregistered at the
// next Discover; a binary replaced by another allowed one is unregistered
// and registered again.
//
// Plugins run with none of the host's environment (go-plugin's
// SkipHostEnv): AuthRefs are resolved, and audited, by the host, and only
// the secrets of the integration a call is for travel with that call.
package plugin

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"crypto/sha256"

	"github.com/cenkalti/backoff/v4"
	goplugin "github.com/hashicorp/go-plugin"

	"inthub.dev/pkg/connectors"
	"inthub.dev/pkg/egress"
	"inthub.dev/pkg/plugin/internal/pluginpb"
	"inthub.dev/pkg/plugin/internal/wire"
)

// ProtocolVersion is the newest plugin protocol this host speaks.
const ProtocolVersion = wire.ProtocolVersion

// RemoteError is a failure a plugin reported; its class (transient,
// permanent, offline) is restored around it, so fault.ClassOf and
// errors.As(err, **fault.Error) work as they did in the plugin.
type RemoteError = wire.RemoteError

// Config configures a Host.
type Config struct {
	// Dirs are scanned for plugin executables (not recursively). A
	// directory that does not exist holds no plugin.
	Dirs []string
	// Allowed are the SHA-256 sums (hex) of the binaries allowed to run;
	// see ParseChecksums. A binary not listed is refused.
	Allowed []string
	// Registry receives the plugins' types (connectors.Default() in a
	// service, connectors.NewRegistry() in tests).
	Registry *connectors.Registry
	// Egress is sent to the plugins with every call; the sdk's HTTP client
	// enforces it at dial time, as connect.Builder does for built-ins.
	Egress egress.Policy
	Logger *slog.Logger
	// StartTimeout bounds a plugin's start and handshake (default 10 s).
	StartTimeout time.Duration
	// Backoff paces restarts of a crashed plugin (default: exponential
	// from 250 ms to 30 s with jitter, without end).
	Backoff func() backoff.BackOff
	// PollInterval is how often a plugin process is checked for having
	// exited while no call is in flight (default 500 ms).
	PollInterval time.Duration
}

// Info describes a loaded plugin.
type Info struct {
	ID           string          `json:"id"`
	Type         string          `json:"type"`
	Version      string          `json:"version"`
	Provider     string          `json:"provider"`
	DisplayName  string          `json:"displayName"`
	Description  string          `json:"description"`
	Capabilities []string        `json:"capabilities"`
	ConfigSchema json.RawMessage `json:"configSchema"`
	Path         string          `json:"path"`
	Checksum     string          `json:"checksum"`
	// Pid is the plugin's process, 0 while it is being restarted.
	Pid int `json:"pid"`
	// Restarts counts restarts after crashes since it was loaded.
	Restarts int `json:"restarts"`
}

// ConnectorInfo is the type's description for a connectors.Registry.
func (i Info) ConnectorInfo() connectors.Info {
	return connectors.Info{Type: i.Type, Provider: i.Provider, DisplayName: i.DisplayName,
		Description: i.Description, Capabilities: i.Capabilities, ConfigSchema: i.ConfigSchema}
}

// Refusal is a binary that Discover did not load, and why.
type Refusal struct {
	Path     string `json:"path"`
	Checksum string `json:"checksum"`
	Reason   string `json:"reason"`
}

// Report is the outcome of one Discover.
type Report struct {
	// Plugins are the plugins loaded after the scan, by type.
	Plugins []Info
	// Registered are the plugins this scan loaded (new or replaced).
	Registered []Info
	// Unregistered are the plugins this scan unloaded (removed, replaced,
	// or no longer allowed).
	Unregistered []Info
	Refused      []Refusal
}

// Host discovers, runs and supervises plugins. It is safe for concurrent
// use; Discover calls are serialised.
type Host struct {
	cfg     Config
	log     *slog.Logger
	allowed map[string]bool

	discoverMu sync.Mutex // one scan at a time
	mu         sync.Mutex
	byPath     map[string]*instance
	closed     bool
}

// New checks cfg; nothing starts before Discover.
func New(cfg Config) (*Host, error) {
	if cfg.Registry == nil {
		return nil, errors.New("plugin: Config.Registry is nil: pass connectors.Default()")
	}
	allowed := map[string]bool{}
	for _, s := range cfg.Allowed {
		s = strings.ToLower(strings.TrimSpace(s))
		if err := checkSum(s); err != nil {
			return nil, fmt.Errorf("plugin: allow-list: %w", err)
		}
		allowed[s] = true
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.StartTimeout <= 0 {
		cfg.StartTimeout = 10 * time.Second
	}
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = 500 * time.Millisecond
	}
	if cfg.Backoff == nil {
		cfg.Backoff = func() backoff.BackOff {
			b := backoff.NewExponentialBackOff()
			b.InitialInterval = 250 * time.Millisecond
			b.MaxInterval = 30 * time.Second
			b.MaxElapsedTime = 0
			return b
		}
	}
	return &Host{cfg: cfg, log: cfg.Logger, allowed: allowed, byPath: map[string]*instance{}}, nil
}

// Plugins lists the loaded plugins, by type.
func (h *Host) Plugins() []Info {
	h.mu.Lock()
	ins := slices.Collect(maps.Values(h.byPath))
	h.mu.Unlock()
	out := make([]Info, 0, len(ins))
	for _, in := range ins {
		out = append(out, in.info())
	}
	slices.SortFunc(out, func(a, b Info) int { return strings.Compare(a.Type, b.Type) })
	return out
}

// ErrClosed is returned by Discover after Close.
var ErrClosed = errors.New("plugin: host closed")

// Discover scans the directories and brings the loaded plugins in line
// with them. Only a failure to scan at all is an error; a binary that is
// refused or does not start is reported in Report.Refused and logged.
func (h *Host) Discover(ctx context.Context) (Report, error) {
	h.discoverMu.Lock()
	defer h.discoverMu.Unlock()
	h.mu.Lock()
	closed := h.closed
	h.mu.Unlock()
	if closed {
		return Report{}, ErrClosed
	}
	var rep Report
	found := map[string]string{} // path → checksum, allowed binaries only
	for _, dir := range h.cfg.Dirs {
		if err := h.scan(dir, found, &rep); err != nil {
			return Report{}, err
		}
	}

	h.mu.Lock()
	var gone []*instance
	for path, in := range h.byPath {
		if sum, ok := found[path]; !ok || sum != in.sum {
			gone = append(gone, in)
			delete(h.byPath, path)
		}
	}
	h.mu.Unlock()
	slices.SortFunc(gone, func(a, b *instance) int { return strings.Compare(a.path, b.path) })
	for _, in := range gone {
		info := in.info()
		in.unload()
		h.log.Info("plugin unregistered", "plugin", info.ID, "type", info.Type, "path", info.Path)
		rep.Unregistered = append(rep.Unregistered, info)
	}

	for _, path := range slices.Sorted(maps.Keys(found)) {
		sum := found[path]
		h.mu.Lock()
		_, loaded := h.byPath[path]
		h.mu.Unlock()
		if loaded {
			continue
		}
		in, err := h.load(ctx, path, sum)
		if err != nil {
			h.log.Warn("plugin refused", "path", path, "checksum", sum, "reason", err.Error())
			rep.Refused = append(rep.Refused, Refusal{Path: path, Checksum: sum, Reason: err.Error()})
			continue
		}
		info := in.info()
		h.log.Info("plugin registered", "plugin", info.ID, "type", info.Type, "version", info.Version,
			"path", path, "checksum", sum)
		rep.Registered = append(rep.Registered, info)
	}
	rep.Plugins = h.Plugins()
	return rep, nil
}

// scan lists dir's executables; those not on the allow-list are refused.
func (h *Host) scan(dir string, found map[string]string, rep *Report) error {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		h.log.Warn("plugin directory does not exist", "dir", dir)
		return nil
	}
	if err != nil {
		return fmt.Errorf("plugin: scan %s: %w", dir, err)
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".") {
			continue // editors' and installers' temporary files
		}
		path := filepath.Join(dir, e.Name())
		abs, err := filepath.Abs(path)
		if err == nil {
			path = abs
		}
		st, err := os.Stat(path) // follows a symlink to the binary
		if err != nil || !st.Mode().IsRegular() || st.Mode().Perm()&0o111 == 0 {
			continue
		}
		sum, err := FileChecksum(path)
		if err != nil {
			rep.Refused = append(rep.Refused, Refusal{Path: path, Reason: "cannot read: " + err.Error()})
			continue
		}
		if !h.allowed[sum] {
			const reason = "its SHA-256 is not on the plugin allow-list"
			h.log.Warn("plugin refused", "path", path, "checksum", sum, "reason", reason)
			rep.Refused = append(rep.Refused, Refusal{Path: path, Checksum: sum, Reason: reason})
			continue
		}
		found[path] = sum
	}
	return nil
}

// Close unloads every plugin (their types leave the registry) and stops
// their processes.
func (h *Host) Close() error {
	h.discoverMu.Lock()
	defer h.discoverMu.Unlock()
	h.mu.Lock()
	h.closed = true
	ins := slices.Collect(maps.Values(h.byPath))
	clear(h.byPath)
	h.mu.Unlock()
	for _, in := range ins {
		in.unload()
	}
	return nil
}

var (
	typePattern = regexp.MustCompile(`^[a-z][a-z0-9]*\.[a-z][a-z0-9_]*$`)
	idPattern   = regexp.MustCompile(`^[a-z][a-z0-9_.-]{0,62}$`)
)

// load starts a plugin, checks its metadata and registers its type.
func (h *Host) load(ctx context.Context, path, sum string) (*instance, error) {
	c, rpc, meta, err := h.start(ctx, path, sum)
	if err != nil {
		return nil, err
	}
	if _, taken := h.cfg.Registry.Lookup(meta.Type); taken {
		c.Kill()
		return nil, fmt.Errorf("type %s is already provided (by a built-in connector or another plugin)", meta.Type)
	}
	in := &instance{h: h, path: path, sum: sum, meta: meta, client: c, rpc: rpc,
		ready: closedChan(), kick: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
	h.cfg.Registry.Register(in.info().ConnectorInfo(), func(cfg connectors.Config) (connectors.Connector, error) {
		return &remote{in: in, cfg: cfg}, nil
	})
	h.mu.Lock()
	h.byPath[path] = in
	h.mu.Unlock()
	go in.supervise()
	return in, nil
}

func closedChan() chan struct{} {
	c := make(chan struct{})
	close(c)
	return c
}

// start runs the binary and asks its metadata.
func (h *Host) start(ctx context.Context, path, sum string) (*goplugin.Client, pluginpb.ConnectorClient, *pluginpb.MetadataResponse, error) {
	want, err := hex.DecodeString(sum)
	if err != nil {
		return nil, nil, nil, err
	}
	c := goplugin.NewClient(&goplugin.ClientConfig{
		HandshakeConfig:  wire.Handshake,
		VersionedPlugins: wire.VersionedPlugins(nil),
		Cmd:              exec.Command(path),
		// go-plugin hashes the file again right before it runs it.
		SecureConfig:     &goplugin.SecureConfig{Checksum: want, Hash: sha256.New()},
		AllowedProtocols: []goplugin.Protocol{goplugin.ProtocolGRPC},
		StartTimeout:     h.cfg.StartTimeout,
		SkipHostEnv:      true,
		Logger:           hclogger(h.log, path),
	})
	rpcc, err := c.Client()
	if err != nil {
		c.Kill()
		return nil, nil, nil, fmt.Errorf("does not start as a connector plugin: %w", err)
	}
	raw, err := rpcc.Dispense(wire.PluginName)
	if err != nil {
		c.Kill()
		return nil, nil, nil, fmt.Errorf("serves no connector: %w", err)
	}
	rpc, ok := raw.(pluginpb.ConnectorClient)
	if !ok {
		c.Kill()
		return nil, nil, nil, fmt.Errorf("serves no connector (got %T)", raw)
	}
	mctx, cancel := context.WithTimeout(ctx, h.cfg.StartTimeout)
	defer cancel()
	meta, err := rpc.Metadata(mctx, &pluginpb.MetadataRequest{})
	if err != nil {
		c.Kill()
		return nil, nil, nil, fmt.Errorf("metadata: %w", err)
	}
	if err := checkMetadata(meta); err != nil {
		c.Kill()
		return nil, nil, nil, err
	}
	return c, rpc, meta, nil
}

func checkMetadata(m *pluginpb.MetadataResponse) error {
	var errs []error
	if !idPattern.MatchString(m.GetPluginId()) {
		errs = append(errs, fmt.Errorf("plugin id %q is not a lower-case name", m.GetPluginId()))
	}
	if !typePattern.MatchString(m.GetType()) {
		errs = append(errs, fmt.Errorf("type %q is not an integration type id (kind.name)", m.GetType()))
	}
	if m.GetVersion() == "" {
		errs = append(errs, errors.New("no version"))
	}
	if m.GetProvider() == "" {
		errs = append(errs, errors.New("no provider"))
	}
	var schema map[string]any
	if err := json.Unmarshal(m.GetConfigSchema(), &schema); err != nil {
		errs = append(errs, fmt.Errorf("config schema is not a JSON object: %w", err))
	}
	if len(errs) > 0 {
		return fmt.Errorf("metadata: %w", errors.Join(errs...))
	}
	return nil
}
