package connectors

import (
	"fmt"
	"slices"
	"sync"
)

// Factory builds a connector for one integration. It must not do I/O.
type Factory func(Config) (Connector, error)

// Info describes a connector type.
type Info struct {
	Type         string // "scm.github"
	Provider     string // "github"
	DisplayName  string // "GitHub App"
	Description  string
	Capabilities []string // "repos", "branches", "tags", "digest", "status", "comment", "check_run", ...
	// ConfigSchema is the JSON Schema of the type's config (x-secret marks
	// secret fields). Usually from inthub.dev/schemas.
	ConfigSchema []byte
}

// Registry maps integration types to factories.
type Registry struct {
	mu    sync.RWMutex
	types map[string]entry
}

type entry struct {
	info Info
	new  Factory
}

// NewRegistry returns an empty registry, for tests.
func NewRegistry() *Registry { return &Registry{types: map[string]entry{}} }

var defaultRegistry = NewRegistry()

// Default is the registry the built-in providers register with in init().
// Services use it; tests use NewRegistry.
func Default() *Registry { return defaultRegistry }

// Register adds a type. A duplicate type id is a programming error and
// panics, as two providers claiming one type must not start at all.
func (r *Registry) Register(info Info, f Factory) {
	if info.Type == "" || f == nil {
		panic("connectors: Register needs a type and a factory")
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, dup := r.types[info.Type]; dup {
		panic(fmt.Sprintf("connectors: type %q registered twice", info.Type))
	}
	r.types[info.Type] = entry{info: info, new: f}
}

// Unregister removes a type, reporting whether it was there. Out-of-process
// plugins (pkg/plugin) come and go at run time; built-ins never leave.
func (r *Registry) Unregister(typ string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	_, ok := r.types[typ]
	delete(r.types, typ)
	return ok
}

// New builds the connector of cfg.Type.
func (r *Registry) New(cfg Config) (Connector, error) {
	r.mu.RLock()
	e, ok := r.types[cfg.Type]
	r.mu.RUnlock()
	if !ok {
		return nil, &UnknownTypeError{Type: cfg.Type}
	}
	return e.new(cfg)
}

// Lookup returns a type's description.
func (r *Registry) Lookup(typ string) (Info, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	e, ok := r.types[typ]
	return e.info, ok
}

// Types lists the registered types, sorted by id.
func (r *Registry) Types() []Info {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([]Info, 0, len(r.types))
	for _, e := range r.types {
		out = append(out, e.info)
	}
	slices.SortFunc(out, func(a, b Info) int {
		if a.Type < b.Type {
			return -1
		}
		if a.Type > b.Type {
			return 1
		}
		return 0
	})
	return out
}

// UnknownTypeError is returned by New for a type nobody registered.
type UnknownTypeError struct{ Type string }

func (e *UnknownTypeError) Error() string {
	return fmt.Sprintf("connectors: no connector for type %q (is its package imported?)", e.Type)
}
