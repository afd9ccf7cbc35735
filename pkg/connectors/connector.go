// Package connectors is the contract every provider implements (the Go CDK
// split: a portable API here, one driver package per provider) and the
// registry that maps integration types ("scm.github") to providers (the
// Caddy way: each provider registers itself in init(); a package of blank
// imports picks the built-ins; this package names none of them).
//
// Drivers classify their errors with package fault and never retry, sleep,
// spool or dead-letter: the worker frame does that. Every network failure
// comes back as a Result or an error, never as a panic or a hang.
package connectors

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"time"

	"inthub.dev/pkg/fault"
)

// Status is a health status, as in integration.health_checked.
type Status string

const (
	StatusHealthy   Status = "healthy"
	StatusDegraded  Status = "degraded"
	StatusUnhealthy Status = "unhealthy"
	StatusUnknown   Status = "unknown"
)

// SecretResolver turns an AuthRef URI into the secret at call time.
// Connectors never store what it returns beyond the call that needs it.
type SecretResolver interface {
	Resolve(ctx context.Context, ref string) ([]byte, error)
}

// Config is what a connector is built from: one integration.
type Config struct {
	IntegrationID string
	TenantID      string
	Type          string
	// Config is the integration's config (validated against the type's
	// schema by the catalog; Validate checks it again, fast).
	Config  json.RawMessage
	AuthRef string
	// Secrets resolves AuthRefs (the integration's AuthRef and any x-secret
	// field of Config).
	Secrets SecretResolver
	// HTTPClient is the client for every outbound call. The caller builds
	// it with the egress policy's dial-time control and no proxy; a nil
	// client means http.DefaultClient, for tests only.
	HTTPClient *http.Client
	// HubIdentity allows the connector to sign with the hub's own
	// credentials (egress.Policy.AllowHubIdentity); a connector that
	// offers such a mode refuses it, permanently, when false.
	HubIdentity bool
	Logger      *slog.Logger
	Now         func() time.Time
}

// Connector is one provider's view of one integration. Constructors have
// no side effects; Provision (if implemented) does the setup; Close works
// even after a failed Provision.
type Connector interface {
	// Type is the integration type id, e.g. "scm.github".
	Type() string
	// Provider names the provider, e.g. "github".
	Provider() string
	// Validate checks the config without network calls.
	Validate() error
	// TestConnection exercises the operations the integration is used for
	// (list tags, read the installation's repositories), each reported
	// as a Check, not only a ping.
	TestConnection(ctx context.Context) Result
	// CheckHealth is the periodic check: cheaper than TestConnection,
	// still touching what the integration is for.
	CheckHealth(ctx context.Context) Result
	Close() error
}

// Provisioner is implemented by connectors that need setup (a token
// exchange, a client) before the first call.
type Provisioner interface {
	Provision(ctx context.Context) error
}

// Result is the outcome of a test or health check.
type Result struct {
	Status  Status
	Message string
	Latency time.Duration
	// Class says why it failed (zero when it did not).
	Class fault.Class
	// Err is the failure for logs; it never holds a secret. Not sent over
	// the wire: Message is what users read.
	Err     error             `json:"-"`
	Checks  []Check           `json:"checks,omitempty"`
	Details map[string]string `json:"details,omitempty"`
	// CredentialExpiry is when the credentials stop working, where the
	// provider tells (an installation token, a robot account).
	CredentialExpiry *time.Time `json:"credentialExpiry,omitempty"`
	RateLimit        *RateLimit `json:"rateLimit,omitempty"`
}

// OK reports whether the integration can be used.
func (r Result) OK() bool { return r.Status == StatusHealthy || r.Status == StatusDegraded }

// Check is the result of one capability.
type Check struct {
	Capability string        `json:"capability"` // "repos", "tags", "digest", "app", "rate_limit", ...
	OK         bool          `json:"ok"`
	Message    string        `json:"message"`
	Latency    time.Duration `json:"latency"`
	Class      fault.Class   `json:"-"`
	// Err is the classified failure, for logs and for Result.Err (its
	// retry hint); never a secret.
	Err error `json:"-"`
}

// RateLimit is the provider's budget as it last reported it.
type RateLimit struct {
	Limit     int       `json:"limit"`
	Remaining int       `json:"remaining"`
	Reset     time.Time `json:"reset"`
}

// Headroom is the fraction of the budget left, 1 when unknown.
func (r *RateLimit) Headroom() float64 {
	if r == nil || r.Limit <= 0 {
		return 1
	}
	return float64(r.Remaining) / float64(r.Limit)
}

// Capability interfaces. A connector implements those it supports; the
// conformance suite asks its harness which to expect.

// Repository is a source repository or a registry repository.
type Repository struct {
	ID            string `json:"id"`
	FullName      string `json:"fullName"` // "acme/api", "group/sub/project", "library/nginx"
	DefaultBranch string `json:"defaultBranch,omitempty"`
	Private       bool   `json:"private,omitempty"`
}

// Branch of a source repository.
type Branch struct {
	Name      string `json:"name"`
	CommitSHA string `json:"commitSha"`
}

// Tag of a registry repository (or a source tag).
type Tag struct {
	Name   string `json:"name"`
	Digest string `json:"digest,omitempty"`
}

// ListOptions pages discovery calls.
type ListOptions struct {
	Limit  int    // 0 = provider default
	Cursor string // opaque, from a previous Page
}

// Page is one page of a listing.
type Page[T any] struct {
	Items []T    `json:"items"`
	Next  string `json:"next,omitempty"`
}

// Discoverer lists resources.
type Discoverer interface {
	ListRepositories(ctx context.Context, o ListOptions) (Page[Repository], error)
	ListBranches(ctx context.Context, repo string, o ListOptions) (Page[Branch], error)
	ListTags(ctx context.Context, repo string, o ListOptions) (Page[Tag], error)
}

// Manifest is a registry manifest or index as stored.
type Manifest struct {
	MediaType string `json:"mediaType"`
	Digest    string `json:"digest"`
	Size      int64  `json:"size"`
	Body      []byte `json:"-"`
}

// ImageRegistry is the container registry capability.
type ImageRegistry interface {
	// ResolveTag returns the digest a tag points at (the index's digest
	// for a multi-platform image).
	ResolveTag(ctx context.Context, repo, tag string) (string, error)
	FetchManifest(ctx context.Context, repo, reference string) (Manifest, error)
	// VerifyDigest fetches the manifest by digest and checks the content
	// hashes to it.
	VerifyDigest(ctx context.Context, repo, digest string) error
}
