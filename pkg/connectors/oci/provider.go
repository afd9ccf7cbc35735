package oci

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"inthub.dev/pkg/connectors"
	"inthub.dev/pkg/connectors/strictjson"
	"inthub.dev/pkg/fault"
	"inthub.dev/schemas"
)

// CheckRepos is the capability of the repository listing a provider's
// check runs to find (and, when full, to prove) its probe repository.
const CheckRepos = "repos"

// Register registers a registry connector with connectors.Default(),
// with its config schema (schemas/config/<type>.json) as ConfigSchema.
// Call it from init().
func Register[C connectors.Connector](info connectors.Info, build func(connectors.Config) (C, error)) {
	schema, err := schemas.ConfigSchema(info.Type)
	if err != nil {
		// The schema is embedded: its absence is a broken build.
		panic(err)
	}
	info.ConfigSchema = schema
	connectors.Default().Register(info, func(cfg connectors.Config) (connectors.Connector, error) {
		c, err := build(cfg)
		if err != nil {
			// Not c: a nil *T in the interface would not be nil.
			return nil, err
		}
		return c, nil
	})
}

// Registry is the part of a registry provider (ECR, GCR, ACR, Docker Hub,
// GHCR, Harbor) that is this connector: the provider embeds it and keeps
// only its config, its credential flow and its own checks. It answers
// Type, Provider, Validate and Close, and the Discoverer and ImageRegistry
// calls through the inner connector, each refused first with the
// provider's config error: a provider validates more than oci does, and a
// call on an integration it finds wrong must not reach the network.
type Registry struct {
	typ, provider string
	inner         *Connector
	invalid       error
	wrap          func(error) error
}

// Provider names a provider to Embed.
type Provider struct {
	// Type is the integration type id ("registry.ecr"); Name the provider
	// ("ecr").
	Type, Name string
	// Wrap, when set, rewrites the errors of the registry calls; GHCR
	// explains its 403 this way. It must return nil for nil.
	Wrap func(error) error
}

// Embed builds the piece a provider embeds: inner does the distribution
// API calls; invalid is the provider's verdict on its config (nil when
// good).
func Embed(p Provider, inner *Connector, invalid error) Registry {
	return Registry{typ: p.Type, provider: p.Name, inner: inner, invalid: invalid, wrap: p.Wrap}
}

func (g *Registry) Type() string     { return g.typ }
func (g *Registry) Provider() string { return g.provider }

// Validate returns the provider's config error, if any.
func (g *Registry) Validate() error { return g.invalid }

// Close closes the inner connector; a provider with cached tokens drops
// them in its own Close.
func (g *Registry) Close() error { return g.inner.Close() }

// Inner is the distribution connector built from the configured probe
// repository.
func (g *Registry) Inner() *Connector { return g.inner }

func (g *Registry) wrapped(err error) error {
	if g.wrap == nil || err == nil {
		return err
	}
	return g.wrap(err)
}

// ListRepositories lists one page of the registry's catalog. Providers
// with an API of their own for discovery (Docker Hub, GHCR, Harbor) list
// through it instead.
func (g *Registry) ListRepositories(ctx context.Context, o connectors.ListOptions) (connectors.Page[connectors.Repository], error) {
	if g.invalid != nil {
		return connectors.Page[connectors.Repository]{}, g.invalid
	}
	p, err := g.inner.ListRepositories(ctx, o)
	return p, g.wrapped(err)
}

// ListBranches is not a registry concept.
func (g *Registry) ListBranches(context.Context, string, connectors.ListOptions) (connectors.Page[connectors.Branch], error) {
	return connectors.Page[connectors.Branch]{}, fault.Permanent(fmt.Errorf("%s: branches: %w", g.typ, errors.ErrUnsupported))
}

// ListTags lists one page of a repository's tags.
func (g *Registry) ListTags(ctx context.Context, repo string, o connectors.ListOptions) (connectors.Page[connectors.Tag], error) {
	if g.invalid != nil {
		return connectors.Page[connectors.Tag]{}, g.invalid
	}
	p, err := g.inner.ListTags(ctx, repo, o)
	return p, g.wrapped(err)
}

// ResolveTag returns the digest a tag points at.
func (g *Registry) ResolveTag(ctx context.Context, repo, tag string) (string, error) {
	if g.invalid != nil {
		return "", g.invalid
	}
	d, err := g.inner.ResolveTag(ctx, repo, tag)
	return d, g.wrapped(err)
}

// FetchManifest GETs a manifest or index by tag or digest.
func (g *Registry) FetchManifest(ctx context.Context, repo, reference string) (connectors.Manifest, error) {
	if g.invalid != nil {
		return connectors.Manifest{}, g.invalid
	}
	m, err := g.inner.FetchManifest(ctx, repo, reference)
	return m, g.wrapped(err)
}

// VerifyDigest fetches the manifest by digest and checks its hash.
func (g *Registry) VerifyDigest(ctx context.Context, repo, digest string) error {
	if g.invalid != nil {
		return g.invalid
	}
	return g.wrapped(g.inner.VerifyDigest(ctx, repo, digest))
}

// DecodeConfig decodes an integration's config into v, refusing unknown
// fields (a misspelt field would otherwise be a silently ignored one).
// typ prefixes the error.
func DecodeConfig(cfg connectors.Config, typ string, v any) error {
	if err := strictjson.Decode(cfg.Config, v); err != nil {
		return fault.Permanent(fmt.Errorf("%s: config: %w", typ, err))
	}
	return nil
}

// Logger is the integration's logger (a discarding one when none is
// given) with the provider and the integration's ids attached.
func Logger(cfg connectors.Config, provider string) *slog.Logger {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return log.With("provider", provider, "integrationId", cfg.IntegrationID, "tenantId", cfg.TenantID)
}

// Timeout is a config's timeoutSeconds, or the default when unset.
func Timeout(seconds int) time.Duration {
	if seconds > 0 {
		return time.Duration(seconds) * time.Second
	}
	return defaultTimeout
}

// Client is the caller's egress-controlled client, for every call whose
// address the config can steer.
func Client(cfg connectors.Config) *http.Client {
	if cfg.HTTPClient != nil {
		return cfg.HTTPClient
	}
	return http.DefaultClient
}

// Reword re-expresses oci's config error as the provider's own (mk
// builds it from the field and reason, and may rename a field the
// provider calls otherwise); other errors pass unchanged.
func Reword(err error, mk func(field, reason string) error) error {
	var ce *ConfigError
	if errors.As(err, &ce) {
		return fault.Permanent(mk(ce.Field, ce.Reason))
	}
	return err
}

// Check is one run of a provider's TestConnection (Full) or CheckHealth.
type Check struct {
	Full bool
	// Details start the result's details.
	Details map[string]string
	// First is the capability a config error is reported under.
	First string
	// Steps adds the provider's own checks (its credential flow) to r and
	// returns the first failure; it runs only on a valid config.
	Steps func(ctx context.Context, r *connectors.Result) error
	// Probe is the registry half, run after Steps.
	Probe Probe
	// Healthy is the result's message when every check passes.
	Healthy string
	// Adjust, when set, may degrade a result whose checks all passed
	// (a spent rate-limit budget, an unhealthy component).
	Adjust func(r *connectors.Result)
}

// Probe is the registry half of a provider's check: the repository
// listing, then this connector's ping, tags and digest checks on the
// probe repository.
type Probe struct {
	// Repository is the configured probe repository. When it is empty,
	// or the check is full, List runs (a CheckRepos check, reported when
	// full) and an empty Repository takes its first item.
	Repository string
	List       func(context.Context, connectors.ListOptions) (connectors.Page[connectors.Repository], error)
	// Listed is the repos check's message; None goes to Details["probe"]
	// when there is no repository to probe.
	Listed, None string
	// For builds the distribution connector for a repository List found.
	For func(repo string) *Connector
}

// Report runs a provider's check and turns its outcome into the Result
// (see Finish), logged with log.
func Report(ctx context.Context, g *Registry, log *slog.Logger, ch Check) connectors.Result {
	start := time.Now()
	r := connectors.Result{Details: ch.Details}
	if r.Details == nil {
		r.Details = map[string]string{}
	}
	err := g.run(ctx, ch, &r)
	r = Finish(r, start, err, ch.Healthy)
	if err == nil && ch.Adjust != nil {
		ch.Adjust(&r)
	}
	if r.Status != connectors.StatusHealthy {
		log.WarnContext(ctx, g.provider+" check not healthy", "operation", operation(ch.Full), "status", r.Status, "class", r.Class.String(), "error", r.Message)
	} else {
		log.DebugContext(ctx, g.provider+" check passed", "operation", operation(ch.Full), "latencyMs", r.Latency.Milliseconds())
	}
	return r
}

func (g *Registry) run(ctx context.Context, ch Check, r *connectors.Result) error {
	if g.invalid != nil {
		r.Checks = append(r.Checks, Failed(ch.First, 0, g.invalid))
		return g.invalid
	}
	if ch.Steps != nil {
		if err := ch.Steps(ctx, r); err != nil {
			return err
		}
	}
	p := ch.Probe
	probe := p.Repository
	if ch.Full || probe == "" {
		t := time.Now()
		page, err := p.List(ctx, connectors.ListOptions{Limit: 1})
		if err != nil {
			r.Checks = append(r.Checks, Failed(CheckRepos, time.Since(t), err))
			return err
		}
		if ch.Full {
			r.Checks = append(r.Checks, Passed(CheckRepos, time.Since(t), p.Listed))
		}
		if probe == "" && len(page.Items) > 0 {
			probe = page.Items[0].FullName
		}
	}
	reg := g.inner
	if probe != p.Repository {
		reg = p.For(probe)
	}
	if err := reg.Run(ctx, ch.Full, r); err != nil {
		if w := g.wrapped(err); w != err {
			last := &r.Checks[len(r.Checks)-1]
			last.Message, last.Err = w.Error(), w
			return w
		}
		return err
	}
	if probe == "" {
		r.Details["probe"] = p.None
	}
	return nil
}

// Passed is a check that passed; its latency is at least a nanosecond,
// so that a check is never reported as not timed.
func Passed(capability string, d time.Duration, msg string) connectors.Check {
	return connectors.Check{Capability: capability, OK: true, Message: msg, Latency: max(d, time.Nanosecond)}
}

// Failed is a check that failed with err, classified (an unclassified
// error counts as transient).
func Failed(capability string, d time.Duration, err error) connectors.Check {
	return connectors.Check{Capability: capability, Message: err.Error(), Latency: d, Class: classOf(err), Err: err}
}

// Page-numbered discovery APIs (Docker Hub's, GitHub's packages API) hold
// the page in a cursor the way this connector's own cursors hold a query:
// base64url of p=<n>, never a URL.

// NextPage is the cursor of page n.
func NextPage(n int) string {
	return base64.RawURLEncoding.EncodeToString([]byte(url.Values{"p": {strconv.Itoa(n)}}.Encode()))
}

// PageOf reads a NextPage cursor: page 1 when it is empty. typ prefixes
// the error of a malformed one.
func PageOf(typ, cursor string) (int, error) {
	if cursor == "" {
		return 1, nil
	}
	bad := fault.Permanent(errors.New(typ + ": malformed page cursor"))
	raw, err := base64.RawURLEncoding.DecodeString(cursor)
	if err != nil {
		return 0, bad
	}
	v, err := url.ParseQuery(string(raw))
	if err != nil {
		return 0, bad
	}
	n, err := strconv.Atoi(v.Get("p"))
	if err != nil || n < 1 || n > 100_000 {
		return 0, bad
	}
	return n, nil
}
