package events

import (
	"encoding/json"
	"strings"
	"time"
)

// The data side of the platform (the plugin framework's pipeline:
// ingestion → validation → mapping → enrichment → routing). Outside data
// arrives on ingest.<provider>.<kind> exactly as the provider sent it, is
// mapped to event.canonical.<category>, and is correlated on request into
// event.enriched. docs/enrichment.md is the human-readable contract.
const (
	SubjectIngestGitHubPush             = "ingest.github.push"
	SubjectIngestGitHubPullRequest      = "ingest.github.pull_request"
	SubjectIngestGitHubDeployment       = "ingest.github.deployment"
	SubjectIngestGitHubDeploymentStatus = "ingest.github.deployment_status"
	SubjectIngestGitHubRelease          = "ingest.github.release"
	SubjectIngestGitLabPush             = "ingest.gitlab.push"
	SubjectIngestGitLabMergeRequest     = "ingest.gitlab.merge_request"
	SubjectIngestGitLabDeployment       = "ingest.gitlab.deployment"
	SubjectIngestGitLabRelease          = "ingest.gitlab.release"
	SubjectIngestCloudWatchAlarm        = "ingest.cloudwatch.alarm"
	SubjectIngestCloudWatchMetric       = "ingest.cloudwatch.metric"

	SubjectCanonicalDelivery = "event.canonical.delivery"
	SubjectCanonicalSystem   = "event.canonical.system"
	SubjectCanonicalSecurity = "event.canonical.security"

	SubjectEnrichmentRequested = "enrichment.requested"
	SubjectEnriched            = "event.enriched"
)

// IngestPrefix starts every ingest subject; ingest.<provider>.<kind>.
const IngestPrefix = "ingest."

// CanonicalPrefix starts every canonical subject; event.canonical.<category>.
const CanonicalPrefix = "event.canonical."

// IngestSubject is the subject raw data of provider and kind arrives on,
// e.g. IngestSubject("github", "push") = "ingest.github.push".
func IngestSubject(provider, kind string) string { return IngestPrefix + provider + "." + kind }

// ParseIngestSubject splits ingest.<provider>.<kind>; ok is false for any
// other subject.
func ParseIngestSubject(subject string) (provider, kind string, ok bool) {
	rest, ok := strings.CutPrefix(subject, IngestPrefix)
	if !ok {
		return "", "", false
	}
	provider, kind, ok = strings.Cut(rest, ".")
	if !ok || provider == "" || kind == "" || strings.Contains(kind, ".") {
		return "", "", false
	}
	return provider, kind, true
}

// CanonicalSubject is the subject of a canonical event of category.
func CanonicalSubject(category string) string { return CanonicalPrefix + category }

// DataSubjects lists the subjects of the data side, each of which has a
// payload schema: the ingest subjects the ingress publishes, the canonical
// categories, enrichment.requested and event.enriched. The slice is new on
// each call.
func DataSubjects() []string {
	return []string{
		SubjectIngestGitHubPush,
		SubjectIngestGitHubPullRequest,
		SubjectIngestGitHubDeployment,
		SubjectIngestGitHubDeploymentStatus,
		SubjectIngestGitHubRelease,
		SubjectIngestGitLabPush,
		SubjectIngestGitLabMergeRequest,
		SubjectIngestGitLabDeployment,
		SubjectIngestGitLabRelease,
		SubjectIngestCloudWatchAlarm,
		SubjectIngestCloudWatchMetric,
		SubjectCanonicalDelivery,
		SubjectCanonicalSystem,
		SubjectCanonicalSecurity,
		SubjectEnrichmentRequested,
		SubjectEnriched,
	}
}

// Ingest channels: how the data reached the hub.
const (
	ViaWebhook = "webhook"
	ViaSNS     = "sns"
	ViaPoll    = "poll"
)

// Ingested is the payload of every ingest.<provider>.<kind> subject: the
// provider's document untouched, and how it was delivered. It has no
// Subject method because one shape serves a family of subjects; the schema
// of each subject pins Provider and Kind.
type Ingested struct {
	IntegrationID string `json:"integrationId"`
	TenantID      string `json:"tenantId"`
	Provider      string `json:"provider"` // github, gitlab, cloudwatch
	Kind          string `json:"kind"`     // the provider's event name: push, pull_request, alarm, ...
	// DeliveryID is the provider's id of this delivery (X-GitHub-Delivery,
	// GitLab's Idempotency-Key, the SNS MessageId), the same on a
	// redelivery.
	DeliveryID string    `json:"deliveryId"`
	Via        string    `json:"via"`
	ReceivedAt time.Time `json:"receivedAt"`
	// Headers are the provider's delivery headers that describe the event
	// (X-GitHub-Event, X-GitHub-Hook-ID, X-Gitlab-Event, ...), never a
	// signature or token.
	Headers map[string]string `json:"headers,omitempty"`
	// BodySHA256 is the hex SHA-256 of the body exactly as received (the
	// bytes the signature covered); Payload is that body as a JSON value.
	BodySHA256 string          `json:"bodySha256"`
	Payload    json.RawMessage `json:"payload"`
}

// Categories of canonical events.
const (
	CategoryDelivery = "delivery"
	CategorySystem   = "system"
	CategorySecurity = "security"
)

// Correlation hint types (the seed's CorrelationHint.type).
const (
	HintResourceID = "resource_id"
	HintTemporal   = "temporal"
	HintMetadata   = "metadata"
)

// Evidence link types (the seed's EvidenceLink.type).
const (
	LinkCommit     = "commit"
	LinkPR         = "pr"
	LinkDeployment = "deployment"
	LinkMetric     = "metric"
	LinkLog        = "log"
)

// Canonical is the payload of event.canonical.<category>: one platform
// event mapped from outside data. It has no Subject method because one
// shape serves the three categories; the schema of each pins Category.
type Canonical struct {
	TenantID string `json:"tenantId"`
	Category string `json:"category"`
	// Kind names what happened, dot-separated: commit.pushed,
	// pull_request.merged, deployment.success, alarm.alarm.
	Kind     string `json:"kind"`
	Provider string `json:"provider"`
	Severity string `json:"severity,omitempty"` // info, warning, error, critical
	Summary  string `json:"summary"`
	// Attributes are the mapped fields of the event (repository, ref,
	// environment, service, ...): strings, numbers and booleans only.
	Attributes map[string]any `json:"attributes,omitempty"`
	// IngestID is the CloudEvents id of the ingest event this was mapped
	// from, whose body is the provider's original document.
	IngestID string             `json:"ingestId"`
	Context  IntegrationContext `json:"context"`
}

// IntegrationContext is the seed's extension of a canonical event with
// where it came from and what it can be correlated by.
type IntegrationContext struct {
	SourceIntegration  string              `json:"sourceIntegration"` // integration id
	ExternalID         string              `json:"externalId"`        // the provider's id of the thing (commit SHA, PR id, alarm ARN + time, ...)
	OriginalTimestamp  time.Time           `json:"originalTimestamp"` // when it happened, by the provider's clock, UTC
	CorrelationHints   []CorrelationHint   `json:"correlationHints"`
	EvidenceLinks      []EvidenceLink      `json:"evidenceLinks"`
	EnrichmentMetadata *EnrichmentMetadata `json:"enrichmentMetadata,omitempty"`
}

// CorrelationHint is a value an event can be correlated by. Key says what
// the value is (commit, repository, deployment, resource, service,
// environment, tag); Confidence is in [0, 1]. SourceIntegration attributes
// a hint added by enrichment.
type CorrelationHint struct {
	Type              string  `json:"type"`
	Key               string  `json:"key"`
	Value             string  `json:"value"`
	Confidence        float64 `json:"confidence"`
	SourceIntegration string  `json:"sourceIntegration,omitempty"`
}

// EvidenceLink points at evidence outside the hub. SourceIntegration and
// Confidence attribute a link added by enrichment.
type EvidenceLink struct {
	Type              string            `json:"type"`
	URL               string            `json:"url"`
	Description       string            `json:"description"`
	Metadata          map[string]string `json:"metadata,omitempty"`
	SourceIntegration string            `json:"sourceIntegration,omitempty"`
	Confidence        *float64          `json:"confidence,omitempty"`
}

// EnrichmentMetadata says how an enrichment was made.
type EnrichmentMetadata struct {
	EnrichedAt    time.Time `json:"enrichedAt"`
	WindowSeconds int64     `json:"windowSeconds"`
	Candidates    int       `json:"candidates"` // events of the tenant the scoring looked at
}

// EnrichmentRequested is the payload of enrichment.requested: find what
// the tenant's other events say about EventID, by Keys and by time around
// At.
type EnrichmentRequested struct {
	TenantID  string            `json:"tenantId"`
	EventID   string            `json:"eventId"`             // the CloudEvents id of the event to enrich
	EventType string            `json:"eventType,omitempty"` // its subject, for consumers of event.enriched
	At        time.Time         `json:"at"`
	Keys      []CorrelationHint `json:"keys"`
	// WindowSeconds narrows the service's window (never widens it).
	WindowSeconds int64 `json:"windowSeconds,omitempty"`
	MaxMatches    int   `json:"maxMatches,omitempty"`
}

// Match modes of an enrichment match, strongest first.
const (
	MatchKey  = "key"  // a resource id in common (commit, deployment, service, ...)
	MatchTag  = "tag"  // metadata in common (tag, environment)
	MatchTime = "time" // close in time only
)

// Enriched is the payload of event.enriched: the evidence links and hints
// that the tenant's other events add to EventID, each attributed to the
// integration it came from, best first.
type Enriched struct {
	TenantID           string             `json:"tenantId"`
	RequestID          string             `json:"requestId"` // the CloudEvents id of the enrichment.requested
	EventID            string             `json:"eventId"`
	EventType          string             `json:"eventType,omitempty"`
	At                 time.Time          `json:"at"`
	Matches            []EnrichmentMatch  `json:"matches"`
	EvidenceLinks      []EvidenceLink     `json:"evidenceLinks"`
	CorrelationHints   []CorrelationHint  `json:"correlationHints"`
	EnrichmentMetadata EnrichmentMetadata `json:"enrichmentMetadata"`
}

// EnrichmentMatch is one canonical event found for the request, with its
// score in [0, 1] and why it matched.
type EnrichmentMatch struct {
	EventID           string    `json:"eventId"`
	Category          string    `json:"category"`
	Kind              string    `json:"kind"`
	Summary           string    `json:"summary"`
	SourceIntegration string    `json:"sourceIntegration"`
	OccurredAt        time.Time `json:"occurredAt"`
	Score             float64   `json:"score"`
	Match             string    `json:"match"`          // key, tag or time
	Keys              []string  `json:"keys,omitempty"` // key=value pairs in common
}

func (EnrichmentRequested) Subject() string { return SubjectEnrichmentRequested }
func (Enriched) Subject() string            { return SubjectEnriched }

// The schemas require the lists below to be arrays; a nil slice would
// marshal as null, so these write [] for it.

func (c IntegrationContext) MarshalJSON() ([]byte, error) {
	type plain IntegrationContext
	p := plain(c)
	p.CorrelationHints = orEmpty(p.CorrelationHints)
	p.EvidenceLinks = orEmpty(p.EvidenceLinks)
	return marshal(p)
}

func (r EnrichmentRequested) MarshalJSON() ([]byte, error) {
	type plain EnrichmentRequested
	p := plain(r)
	p.Keys = orEmpty(p.Keys)
	return marshal(p)
}

func (e Enriched) MarshalJSON() ([]byte, error) {
	type plain Enriched
	p := plain(e)
	p.Matches = orEmpty(p.Matches)
	p.EvidenceLinks = orEmpty(p.EvidenceLinks)
	p.CorrelationHints = orEmpty(p.CorrelationHints)
	return marshal(p)
}

func orEmpty[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}
