package authref

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sync/singleflight"

	"inthub.dev/pkg/fault"
)

// MaxFileSize bounds what a file reference may hold: a credential is a few
// kilobytes at most, and a reference to a huge file (or to /dev/zero) must
// not exhaust the worker's memory.
const MaxFileSize = 1 << 20

const (
	defaultTTL        = 60 * time.Second
	defaultMaxEntries = 1000
)

// Resolution is one call of Resolve, as the audit hook sees it. It names
// the reference, never the secret.
type Resolution struct {
	// Ref is the AuthRef URI in canonical form, or "" when the string given
	// to Resolve was not a valid AuthRef: such a string may be a secret
	// pasted in the wrong place, so it is not passed on.
	Ref    string
	Scheme Scheme
	// Cached says the secret came from the cache, without reading the store.
	Cached bool
	// Shared says the caller joined a read that another caller had started
	// for the same reference (one read of the store served both).
	Shared bool
	Err    error
	At     time.Time
}

// Resolver turns AuthRef URIs into secrets: env and file references on the
// worker itself, vault references through Vault's (or OpenBao's) KV v2 HTTP
// API. Secrets are cached per reference for a short TTL in a bounded cache;
// concurrent callers of the same uncached reference share one read. Every
// call is reported to the hook, cached or not. A Resolver is safe for
// concurrent use; it implements connectors.SecretResolver.
type Resolver struct {
	ttl        time.Duration
	maxEntries int
	fileRoot   string
	now        func() time.Time
	log        *slog.Logger
	hook       func(context.Context, Resolution)
	vaultCfg   *VaultConfig
	vault      *vaultClient
	vaultErr   error
	cache      *cache
	flight     singleflight.Group
}

// Option configures a Resolver.
type Option func(*Resolver)

// WithTTL sets how long a secret stays cached (60s by default). Zero
// disables the cache: every call reads the store.
func WithTTL(d time.Duration) Option { return func(r *Resolver) { r.ttl = max(d, 0) } }

// WithMaxEntries bounds the cache (1,000 references by default); the least
// recently used entry goes first. n < 1 keeps the default.
func WithMaxEntries(n int) Option {
	return func(r *Resolver) {
		if n > 0 {
			r.maxEntries = n
		}
	}
}

// WithVault enables authref://vault references.
func WithVault(cfg VaultConfig) Option { return func(r *Resolver) { r.vaultCfg = &cfg } }

// WithHook sets the function told of every resolution (the catalog audits
// and counts them). It runs synchronously in the caller's goroutine, after
// the secret was read, so it should be quick.
func WithHook(h func(ctx context.Context, ev Resolution)) Option {
	return func(r *Resolver) { r.hook = h }
}

// WithFileRoot confines file references to dir: a reference outside it is
// refused, and symbolic links that lead out of it are not followed. Without
// it any absolute path that the worker can read is allowed.
func WithFileRoot(dir string) Option { return func(r *Resolver) { r.fileRoot = dir } }

// WithNow sets the clock (for tests).
func WithNow(now func() time.Time) Option { return func(r *Resolver) { r.now = now } }

// WithLogger sets the logger. Nothing the Resolver logs contains a secret.
func WithLogger(l *slog.Logger) Option { return func(r *Resolver) { r.log = l } }

// NewResolver builds a Resolver. It does no I/O: an AppRole login happens
// at the first vault read. A Vault configuration error is reported by
// Validate and by every vault resolution.
func NewResolver(opts ...Option) *Resolver {
	r := &Resolver{ttl: defaultTTL, maxEntries: defaultMaxEntries, now: time.Now}
	for _, o := range opts {
		o(r)
	}
	if r.log == nil {
		r.log = slog.New(slog.DiscardHandler)
	}
	if r.fileRoot != "" {
		r.fileRoot = filepath.Clean(r.fileRoot)
	}
	r.cache = newCache(r.maxEntries)
	if r.vaultCfg != nil {
		r.vault, r.vaultErr = newVaultClient(*r.vaultCfg, r.now, r.log)
	}
	return r
}

// Validate reports a configuration error (of WithVault or WithFileRoot),
// for a service to fail at start rather than at the first resolution.
func (r *Resolver) Validate() error {
	if r.vaultErr != nil {
		return r.vaultErr
	}
	if r.fileRoot != "" && !filepath.IsAbs(r.fileRoot) {
		return fault.Permanentf("authref: the file root must be an absolute path")
	}
	return nil
}

// Resolve returns the secret that ref names, as a fresh copy that the
// caller may zero. Errors are classified with package fault (a store that
// is down or rate-limiting is transient; a missing or forbidden secret is
// permanent) and never contain the secret.
func (r *Resolver) Resolve(ctx context.Context, ref string) ([]byte, error) {
	parsed, err := Parse(ref)
	if err != nil {
		err = fault.Permanent(fmt.Errorf("authref: %w", err))
		r.report(ctx, Resolution{Err: err, At: r.now()})
		return nil, err
	}
	key := parsed.String()
	ev := Resolution{Ref: key, Scheme: parsed.Scheme}

	if r.ttl > 0 {
		if v, ok := r.cache.get(key, r.now()); ok {
			ev.Cached, ev.At = true, r.now()
			r.report(ctx, ev)
			return v, nil
		}
	}

	gen := r.cache.generation()
	// Only the caller whose function runs reads the store; the others
	// joined it. (singleflight's Shared is true for all of them.) The
	// channel receive below orders these writes before the reads.
	var leader, fromCache bool
	ch := r.flight.DoChan(key, func() (any, error) {
		leader = true
		// A caller that missed the cache just before another one's read
		// filled it must not read the store a second time.
		if r.ttl > 0 {
			if v, ok := r.cache.get(key, r.now()); ok {
				fromCache = true
				return v, nil
			}
		}
		// The read outlives the caller that started it if other callers
		// wait for it too, so it is bounded by the store's own timeout
		// (vault) rather than by that first caller's context.
		v, err := r.fetch(context.WithoutCancel(ctx), parsed)
		if err != nil {
			return nil, err
		}
		if r.ttl > 0 {
			r.cache.put(key, v, r.now().Add(r.ttl), gen)
		}
		return v, nil
	})
	var res singleflight.Result
	select {
	case res = <-ch:
	case <-ctx.Done():
		err := fault.Transient(fmt.Errorf("authref: resolving %s: %w", key, ctx.Err()))
		ev.Err, ev.At = err, r.now()
		r.report(ctx, ev)
		return nil, err
	}
	ev.Shared, ev.Cached, ev.At, ev.Err = !leader, fromCache, r.now(), res.Err
	r.report(ctx, ev)
	if res.Err != nil {
		return nil, res.Err
	}
	// Every caller, the sharing ones included, gets its own copy: one of
	// them zeroing its slice must not blank the others' or the cache's.
	return bytes.Clone(res.Val.([]byte)), nil
}

// Forget drops ref from the cache (after the secret was rotated). A read
// in flight when Forget is called is not cached.
func (r *Resolver) Forget(ref string) {
	key := ref
	if p, err := Parse(ref); err == nil {
		key = p.String()
	}
	r.flight.Forget(key)
	r.cache.forget(key)
}

// Purge empties the cache and makes the next AppRole-authenticated vault
// read log in again.
func (r *Resolver) Purge() {
	r.cache.purge()
	if r.vault != nil {
		r.vault.dropToken()
	}
}

// Close releases the idle connections to Vault. The Resolver stays usable.
func (r *Resolver) Close() {
	if r.vault != nil && r.vaultCfg.HTTPClient == nil {
		r.vault.hc.CloseIdleConnections()
	}
}

func (r *Resolver) report(ctx context.Context, ev Resolution) {
	lvl := slog.LevelDebug
	attrs := []slog.Attr{slog.String("authRef", ev.Ref), slog.String("scheme", string(ev.Scheme)),
		slog.Bool("cached", ev.Cached)}
	if ev.Err != nil {
		lvl = slog.LevelWarn
		attrs = append(attrs, slog.String("errorClass", fault.ClassOf(ev.Err).String()),
			slog.String("error", ev.Err.Error()))
	}
	r.log.LogAttrs(ctx, lvl, "authref resolution", attrs...)
	if r.hook != nil {
		r.hook(ctx, ev)
	}
}

func (r *Resolver) fetch(ctx context.Context, ref Ref) ([]byte, error) {
	switch ref.Scheme {
	case Env:
		return resolveEnv(ref.Path)
	case File:
		return r.resolveFile(ref.Path)
	case Vault:
		if r.vaultCfg == nil {
			return nil, fault.Permanentf("authref: %s: no Vault is configured for this worker", ref)
		}
		if r.vaultErr != nil {
			return nil, r.vaultErr
		}
		return r.vault.read(ctx, ref)
	}
	return nil, fault.Permanentf("authref: unknown store %q", ref.Scheme)
}

func resolveEnv(name string) ([]byte, error) {
	v, ok := os.LookupEnv(name)
	if !ok {
		return nil, fault.Permanentf("authref: environment variable %s is not set on this worker", name)
	}
	if v == "" {
		// An empty credential is always a deployment mistake, and one that
		// the provider would report far less clearly.
		return nil, fault.Permanentf("authref: environment variable %s is empty", name)
	}
	return []byte(v), nil
}

func (r *Resolver) resolveFile(path string) ([]byte, error) {
	f, err := r.openFile(path)
	if err != nil {
		return nil, fileError(path, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fileError(path, err)
	}
	if !st.Mode().IsRegular() {
		return nil, fault.Permanentf("authref: %s is not a regular file", path)
	}
	if st.Size() > MaxFileSize {
		return nil, fault.Permanentf("authref: %s is larger than %d bytes", path, MaxFileSize)
	}
	// The size may change between Stat and the read: the limit is
	// enforced on what is read too.
	b, err := io.ReadAll(io.LimitReader(f, MaxFileSize+1))
	if err != nil {
		return nil, fileError(path, err)
	}
	if len(b) > MaxFileSize {
		clear(b)
		return nil, fault.Permanentf("authref: %s is larger than %d bytes", path, MaxFileSize)
	}
	// Editors and `echo` end files with a newline that is no part of the
	// credential. Only one is removed: the rest of the bytes are the
	// secret's.
	b = bytes.TrimSuffix(b, []byte("\n"))
	b = bytes.TrimSuffix(b, []byte("\r"))
	return b, nil
}

// openFile opens path without blocking (a FIFO would otherwise hang the
// caller until a writer appears) and, with a file root, through os.Root so
// that neither the path nor a symbolic link leaves the root.
func (r *Resolver) openFile(path string) (*os.File, error) {
	const flags = os.O_RDONLY | syscall.O_NONBLOCK
	if r.fileRoot == "" {
		return os.OpenFile(path, flags, 0)
	}
	rel, err := filepath.Rel(r.fileRoot, path)
	if err != nil || rel == ".." || strings.HasPrefix(rel, "../") || filepath.IsAbs(rel) {
		return nil, errOutsideRoot
	}
	root, err := os.OpenRoot(r.fileRoot)
	if err != nil {
		return nil, fmt.Errorf("opening the file root: %w", err)
	}
	defer root.Close()
	return root.OpenFile(rel, flags, 0)
}

var errOutsideRoot = errors.New("outside the directory that file references may read")

func fileError(path string, err error) error {
	switch {
	case errors.Is(err, errOutsideRoot):
		return fault.Permanentf("authref: %s is %w", path, err)
	case errors.Is(err, fs.ErrNotExist):
		return fault.Permanentf("authref: file %s does not exist on this worker", path)
	case errors.Is(err, fs.ErrPermission):
		return fault.Permanentf("authref: file %s is not readable by this worker", path)
	}
	var pe *fs.PathError
	if errors.As(err, &pe) {
		// os.Root reports a symbolic link out of the root as a PathError.
		if strings.Contains(pe.Err.Error(), "escapes") {
			return fault.Permanentf("authref: %s is %w", path, errOutsideRoot)
		}
		err = pe.Err
	}
	return fault.Transient(fmt.Errorf("authref: reading %s: %w", path, err))
}
