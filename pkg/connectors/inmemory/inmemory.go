// Package inmemory is the test.inmemory provider: a deterministic double
// that calls nothing and behaves as its config says (healthy or not, a
// latency, a failure class, a script of outcomes), so tests and `make run`
// show health changes without credentials.
//
// Its data is fixed: three repositories, two branches and three tags each,
// commit SHAs and digests hashed from the names, manifests that hash to
// their digests.
package inmemory

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"inthub.dev/pkg/connectors"
	"inthub.dev/pkg/connectors/strictjson"
	"inthub.dev/pkg/fault"
	"inthub.dev/schemas"
)

// Type is the integration type id.
const Type = "test.inmemory"

func init() {
	schema, err := schemas.ConfigSchema(Type)
	if err != nil {
		panic(fmt.Sprintf("inmemory: %v", err))
	}
	connectors.Default().Register(Info(schema), New)
}

// Info describes the type; schema is its config schema.
func Info(schema []byte) connectors.Info {
	return connectors.Info{
		Type:         Type,
		Provider:     "inmemory",
		DisplayName:  "In-memory (test double)",
		Description:  "Deterministic double for tests and offline development: calls nothing, behaves as configured.",
		Capabilities: []string{"repos", "branches", "tags", "digest", "manifest", "annotations"},
		ConfigSchema: schema,
	}
}

// Outcomes a script step or failWith can name.
const (
	stepHealthy   = "healthy"
	stepDegraded  = "degraded"
	stepUnhealthy = "unhealthy"
	stepTransient = "transient"
	stepPermanent = "permanent"
	stepOffline   = "offline"
)

// config mirrors schemas/config/test.inmemory.json.
type config struct {
	Healthy               *bool    `json:"healthy"`
	LatencyMs             int      `json:"latencyMs"`
	FailWith              string   `json:"failWith"`
	RetryAfterSeconds     int      `json:"retryAfterSeconds"`
	Script                []string `json:"script"`
	ScriptStepSeconds     int      `json:"scriptStepSeconds"`
	Token                 string   `json:"token"`
	TimeoutSeconds        int      `json:"timeoutSeconds"`
	HealthIntervalSeconds int      `json:"healthIntervalSeconds"`
}

// Connector is the test.inmemory connector.
type Connector struct {
	cfg  connectors.Config
	conf config
	// checks counts test connections and health checks, to step the
	// script when it is not clock-driven.
	checks atomic.Uint64
	sticky stickies
}

var (
	_ connectors.Connector     = (*Connector)(nil)
	_ connectors.Discoverer    = (*Connector)(nil)
	_ connectors.ImageRegistry = (*Connector)(nil)
)

// New is the Factory: it decodes the config (rejecting unknown fields) and
// does nothing else.
func New(cfg connectors.Config) (connectors.Connector, error) {
	var conf config
	// A JSON null decodes to the zero config.
	if err := strictjson.Decode(cfg.Config, &conf); err != nil {
		return nil, fault.Permanentf("test.inmemory config: %w", err)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Connector{cfg: cfg, conf: conf}, nil
}

func (c *Connector) Type() string     { return Type }
func (c *Connector) Provider() string { return "inmemory" }
func (c *Connector) Close() error     { return nil }

// Validate checks the config's values, as the schema bounds them.
func (c *Connector) Validate() error {
	f := c.conf
	switch {
	case f.LatencyMs < 0 || f.LatencyMs > 60_000:
		return fault.Permanentf("test.inmemory config: latencyMs must be within 0..60000")
	case !slices.Contains([]string{"", stepTransient, stepPermanent, stepOffline}, f.FailWith):
		return fault.Permanentf("test.inmemory config: failWith must be one of transient, permanent, offline")
	case f.RetryAfterSeconds < 0 || f.RetryAfterSeconds > 3600:
		return fault.Permanentf("test.inmemory config: retryAfterSeconds must be within 0..3600")
	case len(f.Script) > 100:
		return fault.Permanentf("test.inmemory config: script has at most 100 steps")
	case f.ScriptStepSeconds < 0 || f.ScriptStepSeconds > 86400:
		return fault.Permanentf("test.inmemory config: scriptStepSeconds must be within 1..86400")
	case f.TimeoutSeconds != 0 && (f.TimeoutSeconds < 1 || f.TimeoutSeconds > 300):
		return fault.Permanentf("test.inmemory config: timeoutSeconds must be within 1..300")
	case f.HealthIntervalSeconds != 0 && (f.HealthIntervalSeconds < 30 || f.HealthIntervalSeconds > 86400):
		return fault.Permanentf("test.inmemory config: healthIntervalSeconds must be within 30..86400")
	case f.Token != "" && !strings.HasPrefix(f.Token, "authref://"):
		return fault.Permanentf("test.inmemory config: token must be an authref:// URI")
	}
	for i, s := range f.Script {
		if !slices.Contains([]string{stepHealthy, stepDegraded, stepUnhealthy, stepTransient, stepPermanent, stepOffline}, s) {
			return fault.Permanentf("test.inmemory config: script[%d] must be one of healthy, degraded, unhealthy, transient, permanent, offline", i)
		}
	}
	return nil
}

func (c *Connector) timeout() time.Duration {
	if c.conf.TimeoutSeconds > 0 {
		return time.Duration(c.conf.TimeoutSeconds) * time.Second
	}
	return 30 * time.Second
}

// TestConnection runs every capability: repos, branches, tags, digest.
func (c *Connector) TestConnection(ctx context.Context) connectors.Result {
	return c.check(ctx, []string{"repos", "branches", "tags", "digest"})
}

// CheckHealth runs the cheaper pair: repos and tags.
func (c *Connector) CheckHealth(ctx context.Context) connectors.Result {
	return c.check(ctx, []string{"repos", "tags"})
}

// check takes the configured latency once (the double's one round trip),
// then reports each capability as the script step says.
func (c *Connector) check(ctx context.Context, caps []string) connectors.Result {
	start := time.Now()
	step := c.step()
	if err := c.enter(ctx); err != nil {
		return connectors.FailedResult(start, caps[0], err)
	}
	checks := make([]connectors.Check, 0, len(caps))
	for i, capability := range caps {
		checks = append(checks, connectors.RunCheck(ctx, capability, func(context.Context) (string, error) {
			return c.capability(capability, step, i == len(caps)-1)
		}))
	}
	return connectors.NewResult(checks, start, "repos")
}

// step picks this check's outcome: failWith, else the script's step, else
// healthy or unhealthy.
func (c *Connector) step() string {
	n := c.checks.Add(1) - 1
	switch {
	case c.conf.FailWith != "":
		return c.conf.FailWith
	case len(c.conf.Script) > 0:
		if s := c.conf.ScriptStepSeconds; s > 0 {
			n = uint64(c.cfg.Now().Unix() / int64(s))
		}
		return c.conf.Script[n%uint64(len(c.conf.Script))]
	case c.conf.Healthy != nil && !*c.conf.Healthy:
		return stepUnhealthy
	default:
		return stepHealthy
	}
}

// capability runs one check under the step: degraded fails the last
// capability only, so the critical "repos" passes.
func (c *Connector) capability(capability, step string, last bool) (string, error) {
	switch step {
	case stepHealthy:
	case stepDegraded:
		if last {
			return "", c.failure(stepTransient)
		}
	case stepUnhealthy:
		return "", c.failure(stepTransient)
	default:
		return "", c.failure(step)
	}
	switch capability {
	case "repos":
		return fmt.Sprintf("%d repositories", len(repositories)), nil
	case "branches":
		return fmt.Sprintf("%d branches in %s", len(branches), repositories[0]), nil
	case "tags":
		return fmt.Sprintf("%d tags in %s", len(tags), repositories[0]), nil
	default: // digest
		d, _ := manifestOf(repositories[0], tags[0])
		return "resolved " + repositories[0] + ":" + tags[0] + " to " + d.Digest, nil
	}
}

// failure is the error of a class, worded as the real API would say it.
func (c *Connector) failure(class string) error {
	re := &connectors.RequestError{Host: "inmemory"}
	switch class {
	case stepPermanent:
		re.StatusCode, re.Reason = 401, "401 Unauthorized: the credentials were refused (scripted)"
		return fault.Permanent(re)
	case stepOffline:
		re.Reason = "connection refused (scripted)"
		return fault.Offline(re)
	default:
		wait := time.Duration(c.conf.RetryAfterSeconds) * time.Second
		re.StatusCode, re.Reason = 503, "503 Service Unavailable: the server failed (scripted)"
		if wait > 0 {
			re.StatusCode, re.Reason = 429, fmt.Sprintf("429 Too Many Requests: rate limited; retry after %s (scripted)", wait)
		}
		return fault.RetryAfter(re, wait)
	}
}

// enter is the start of every operation: the credentials resolve at call
// time, then the latency passes, within the operation's timeout.
func (c *Connector) enter(ctx context.Context) error {
	if c.conf.Token != "" {
		if c.cfg.Secrets == nil {
			return fault.Permanentf("test.inmemory: no secret resolver for the token")
		}
		secret, err := c.cfg.Secrets.Resolve(ctx, c.conf.Token)
		if err != nil {
			if fault.ClassOf(err) == fault.ClassUnknown {
				err = fault.Permanent(err)
			}
			return fmt.Errorf("test.inmemory: resolving the token: %w", err)
		}
		clear(secret)
	}
	return c.wait(ctx)
}

// wait lets the configured latency pass on a timer, giving up at the
// operation's timeout or when ctx ends; nothing sleeps past either.
func (c *Connector) wait(ctx context.Context) error {
	timeout := c.timeout()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	start := time.Now()
	if c.conf.LatencyMs > 0 {
		t := time.NewTimer(time.Duration(c.conf.LatencyMs) * time.Millisecond)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
		}
	}
	if err := ctx.Err(); err != nil {
		re := &connectors.RequestError{Host: "inmemory", Reason: "the request was cancelled", Err: err}
		if errors.Is(err, context.DeadlineExceeded) {
			re.Reason = "timed out after " + time.Since(start).Round(time.Millisecond).String()
		}
		return fault.Transient(re)
	}
	return nil
}

// operation is the frame of a discovery or registry call: failWith
// applies to it, scripts and healthy do not (they are about checks).
func (c *Connector) operation(ctx context.Context) error {
	if err := c.enter(ctx); err != nil {
		return err
	}
	if c.conf.FailWith != "" {
		return c.failure(c.conf.FailWith)
	}
	return nil
}

// The fixed data.
var (
	repositories = []string{"acme/api", "acme/web", "library/nginx"}
	branches     = []string{"develop", "main"}
	tags         = []string{"1.0.0", "1.1.0", "latest"}
)

func hashHex(parts ...string) string {
	sum := sha256.Sum256([]byte(strings.Join(parts, "\x00")))
	return hex.EncodeToString(sum[:])
}

func knownRepo(repo string) error {
	if slices.Contains(repositories, repo) {
		return nil
	}
	return fault.Permanent(&connectors.RequestError{Host: "inmemory", StatusCode: 404,
		Reason: fmt.Sprintf("404 Not Found: repository %q does not exist", repo)})
}

func page[T any](items []T, o connectors.ListOptions) (connectors.Page[T], error) {
	off := 0
	if o.Cursor != "" {
		n, err := strconv.Atoi(o.Cursor)
		if err != nil || n < 0 || n > len(items) {
			return connectors.Page[T]{}, fault.Permanentf("test.inmemory: invalid cursor %q", o.Cursor)
		}
		off = n
	}
	limit := o.Limit
	if limit <= 0 {
		limit = 100
	}
	end := min(off+limit, len(items))
	p := connectors.Page[T]{Items: slices.Clone(items[off:end])}
	if end < len(items) {
		p.Next = strconv.Itoa(end)
	}
	return p, nil
}

func (c *Connector) ListRepositories(ctx context.Context, o connectors.ListOptions) (connectors.Page[connectors.Repository], error) {
	if err := c.operation(ctx); err != nil {
		return connectors.Page[connectors.Repository]{}, err
	}
	all := make([]connectors.Repository, len(repositories))
	for i, r := range repositories {
		all[i] = connectors.Repository{ID: hashHex("repo", r)[:12], FullName: r, DefaultBranch: "main", Private: strings.HasPrefix(r, "acme/")}
	}
	return page(all, o)
}

func (c *Connector) ListBranches(ctx context.Context, repo string, o connectors.ListOptions) (connectors.Page[connectors.Branch], error) {
	if err := c.operation(ctx); err != nil {
		return connectors.Page[connectors.Branch]{}, err
	}
	if err := knownRepo(repo); err != nil {
		return connectors.Page[connectors.Branch]{}, err
	}
	all := make([]connectors.Branch, len(branches))
	for i, b := range branches {
		all[i] = connectors.Branch{Name: b, CommitSHA: hashHex("commit", repo, b)[:40]}
	}
	return page(all, o)
}

func (c *Connector) ListTags(ctx context.Context, repo string, o connectors.ListOptions) (connectors.Page[connectors.Tag], error) {
	if err := c.operation(ctx); err != nil {
		return connectors.Page[connectors.Tag]{}, err
	}
	if err := knownRepo(repo); err != nil {
		return connectors.Page[connectors.Tag]{}, err
	}
	all := make([]connectors.Tag, len(tags))
	for i, t := range tags {
		m, _ := manifestOf(repo, t)
		all[i] = connectors.Tag{Name: t, Digest: m.Digest}
	}
	return page(all, o)
}

// ManifestMediaType is the media type of every manifest the double holds.
const ManifestMediaType = "application/vnd.oci.image.manifest.v1+json"

// manifestOf builds the manifest of repo:tag; its digest is the sha256 of
// its body, as in a real registry.
func manifestOf(repo, tag string) (connectors.Manifest, bool) {
	if !slices.Contains(repositories, repo) || !slices.Contains(tags, tag) {
		return connectors.Manifest{}, false
	}
	body := fmt.Sprintf(`{"schemaVersion":2,"mediaType":%q,"config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":2},"layers":[],"annotations":{"org.opencontainers.image.ref.name":%q}}`,
		ManifestMediaType, hashHex("config", repo, tag), repo+":"+tag)
	sum := sha256.Sum256([]byte(body))
	return connectors.Manifest{MediaType: ManifestMediaType, Digest: "sha256:" + hex.EncodeToString(sum[:]), Size: int64(len(body)), Body: []byte(body)}, true
}

// lookup finds a manifest by tag or by digest.
func lookup(repo, reference string) (connectors.Manifest, error) {
	if err := knownRepo(repo); err != nil {
		return connectors.Manifest{}, err
	}
	for _, t := range tags {
		if m, _ := manifestOf(repo, t); t == reference || m.Digest == reference {
			return m, nil
		}
	}
	return connectors.Manifest{}, fault.Permanent(&connectors.RequestError{Host: "inmemory", StatusCode: 404,
		Reason: fmt.Sprintf("404 Not Found: manifest %s@%s does not exist", repo, reference)})
}

func (c *Connector) ResolveTag(ctx context.Context, repo, tag string) (string, error) {
	if err := c.operation(ctx); err != nil {
		return "", err
	}
	m, err := lookup(repo, tag)
	return m.Digest, err
}

func (c *Connector) FetchManifest(ctx context.Context, repo, reference string) (connectors.Manifest, error) {
	if err := c.operation(ctx); err != nil {
		return connectors.Manifest{}, err
	}
	return lookup(repo, reference)
}

func (c *Connector) VerifyDigest(ctx context.Context, repo, digest string) error {
	if err := c.operation(ctx); err != nil {
		return err
	}
	if !strings.HasPrefix(digest, "sha256:") {
		return fault.Permanentf("test.inmemory: digest %q is not a sha256 digest", digest)
	}
	m, err := lookup(repo, digest)
	if err != nil {
		return err
	}
	sum := sha256.Sum256(m.Body)
	if got := "sha256:" + hex.EncodeToString(sum[:]); got != digest {
		return fault.Permanentf("test.inmemory: manifest of %s hashes to %s, not %s", repo, got, digest)
	}
	return nil
}
