package events

import (
	"encoding/json"
	"time"
)

// Payload is implemented by every payload type of this package, so that
// [New] and [Event.Decode] can refuse a payload sent under another subject
// (integration.created and integration.updated have the same shape).
type Payload interface {
	Subject() string
}

// HealthStatus is the health of an integration as its last check saw it.
type HealthStatus string

const (
	HealthHealthy   HealthStatus = "healthy"
	HealthDegraded  HealthStatus = "degraded"
	HealthUnhealthy HealthStatus = "unhealthy"
	HealthUnknown   HealthStatus = "unknown"
)

// Operations of scm.annotation.requested; one per message.
const (
	OpComment  = "comment"
	OpStatus   = "status"
	OpCheckRun = "check_run"
)

// Integration is the catalog's record as carried by integration.created and
// integration.updated. Times are UTC.
type Integration struct {
	ID       string `json:"id"`
	TenantID string `json:"tenantId"`
	Type     string `json:"type"` // e.g. "scm.github"
	Name     string `json:"name"`
	// Config is the type's settings as stored, kept raw so that a consumer
	// decodes it into its own type. It never holds a secret, only AuthRef
	// URIs in the fields the type's schema marks secret.
	Config       json.RawMessage `json:"config"`
	AuthRef      string          `json:"authRef,omitempty"`
	Status       string          `json:"status"`
	HealthStatus HealthStatus    `json:"healthStatus"`
	// Version grows by one per change: a consumer that has seen a higher
	// version drops the event.
	Version   int64     `json:"version"`
	CreatedAt time.Time `json:"createdAt"`
	UpdatedAt time.Time `json:"updatedAt"`
}

// IntegrationCreated is the payload of integration.created.
type IntegrationCreated struct {
	Integration Integration `json:"integration"`
}

// IntegrationUpdated is the payload of integration.updated.
type IntegrationUpdated struct {
	Integration Integration `json:"integration"`
}

// IntegrationDeleted is the payload of integration.deleted.
type IntegrationDeleted struct {
	ID        string    `json:"id"`
	TenantID  string    `json:"tenantId"`
	Type      string    `json:"type"`
	Name      string    `json:"name"`
	DeletedAt time.Time `json:"deletedAt"`
}

// HealthChecked is the payload of integration.health_checked, published on
// every check.
type HealthChecked struct {
	IntegrationID string       `json:"integrationId"`
	TenantID      string       `json:"tenantId"`
	Type          string       `json:"type"`
	Status        HealthStatus `json:"status"`
	LatencyMs     int64        `json:"latencyMs"`
	Message       string       `json:"message"`
	CheckedAt     time.Time    `json:"checkedAt"`
}

// HealthChanged is the payload of integration.health_changed, published only
// on a transition: PreviousStatus differs from Status.
type HealthChanged struct {
	IntegrationID  string       `json:"integrationId"`
	TenantID       string       `json:"tenantId"`
	Type           string       `json:"type"`
	Status         HealthStatus `json:"status"`
	PreviousStatus HealthStatus `json:"previousStatus"`
	LatencyMs      int64        `json:"latencyMs"`
	Message        string       `json:"message"`
	CheckedAt      time.Time    `json:"checkedAt"`
}

// AnnotationRequested is the payload of scm.annotation.requested. Exactly
// one of Comment, Status and CheckRun is set, the one Operation names.
// A comment needs PullRequest; a status or check run needs CommitSHA.
type AnnotationRequested struct {
	IntegrationID string        `json:"integrationId"`
	Operation     string        `json:"operation"`
	Repository    Repository    `json:"repository"`
	PullRequest   int           `json:"pullRequest,omitempty"`
	CommitSHA     string        `json:"commitSha,omitempty"` // 40 lowercase hex
	Comment       *Comment      `json:"comment,omitempty"`
	Status        *CommitStatus `json:"status,omitempty"`
	CheckRun      *CheckRun     `json:"checkRun,omitempty"`
}

// Repository names a repository; on GitLab Owner is the full group path.
type Repository struct {
	Owner string `json:"owner"`
	Name  string `json:"name"`
}

// Comment is a pull (merge) request comment. With UpdateExisting, the
// comment marked with Key is edited instead of adding another, so Key is
// then required.
type Comment struct {
	Body           string `json:"body"`
	Key            string `json:"key,omitempty"`
	UpdateExisting bool   `json:"updateExisting"`
}

// CommitStatus is a commit status. State is pending, success, failure or
// error.
type CommitStatus struct {
	State       string `json:"state"`
	Context     string `json:"context"`
	Description string `json:"description,omitempty"`
	TargetURL   string `json:"targetUrl,omitempty"`
}

// CheckRun is a check run. Status is queued, in_progress or completed; a
// completed run needs Conclusion, and a Conclusion implies completed.
type CheckRun struct {
	Name        string       `json:"name"`
	Status      string       `json:"status,omitempty"`
	Conclusion  string       `json:"conclusion,omitempty"`
	ExternalID  string       `json:"externalId,omitempty"`
	Summary     string       `json:"summary,omitempty"`
	Text        string       `json:"text,omitempty"`
	Annotations []Annotation `json:"annotations,omitempty"`
}

// Annotation is a check run annotation; Level is notice, warning or failure.
type Annotation struct {
	Path      string `json:"path"`
	StartLine int    `json:"startLine"`
	EndLine   int    `json:"endLine"`
	Level     string `json:"level"`
	Message   string `json:"message"`
	Title     string `json:"title,omitempty"`
}

// AnnotationCompleted is the payload of scm.annotation.completed. RequestID
// is the CloudEvents id of the request.
type AnnotationCompleted struct {
	RequestID     string `json:"requestId"`
	IntegrationID string `json:"integrationId"`
	Operation     string `json:"operation"`
	Provider      string `json:"provider"`
	URL           string `json:"url,omitempty"`
	ExternalID    string `json:"externalId,omitempty"`
	Attempts      int    `json:"attempts"`
}

// AnnotationFailed is the payload of scm.annotation.failed. RequestID is the
// CloudEvents id of the request; ErrorClass is transient, permanent or
// offline. A request ends in one place, so DeadLettered and Spooled are
// never both true.
type AnnotationFailed struct {
	RequestID     string `json:"requestId"`
	IntegrationID string `json:"integrationId"`
	Operation     string `json:"operation"`
	Provider      string `json:"provider"`
	ErrorClass    string `json:"errorClass"`
	Error         string `json:"error"`
	Attempts      int    `json:"attempts"`
	DeadLettered  bool   `json:"deadLettered"`
	Spooled       bool   `json:"spooled"`
}

func (IntegrationCreated) Subject() string  { return SubjectIntegrationCreated }
func (IntegrationUpdated) Subject() string  { return SubjectIntegrationUpdated }
func (IntegrationDeleted) Subject() string  { return SubjectIntegrationDeleted }
func (HealthChecked) Subject() string       { return SubjectIntegrationHealthChecked }
func (HealthChanged) Subject() string       { return SubjectIntegrationHealthChanged }
func (AnnotationRequested) Subject() string { return SubjectAnnotationRequested }
func (AnnotationCompleted) Subject() string { return SubjectAnnotationCompleted }
func (AnnotationFailed) Subject() string    { return SubjectAnnotationFailed }
