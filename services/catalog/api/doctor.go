package api

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"time"

	"github.com/danielgtaylor/huma/v2"

	"inthub.dev/services/catalog/store"
)

// Doctor runs the doctor for one integration and keeps its reports
// (*DoctorService in production, NewDoctor).
type Doctor interface {
	// Run diagnoses it on behalf of actor and stores the run. It wraps
	// connect.ErrNoConnector for a type without a connector, and
	// ErrDoctorBusy when too many runs are in progress.
	Run(ctx context.Context, it store.Integration, actor string) (DoctorReport, error)
	// Reports are the integration's latest runs, newest first.
	Reports(ctx context.Context, tenantID, integrationID string, limit int, withEvidence bool) ([]DoctorReport, error)
}

// ErrDoctorBusy is wrapped when a run is refused because the catalog is
// running as many as it allows at once.
var ErrDoctorBusy = errors.New("too many doctor runs in progress")

// DoctorHowToFix says how a person can fix what a check found.
type DoctorHowToFix struct {
	Summary  string   `json:"summary,omitempty"`
	Commands []string `json:"commands" doc:"Shell commands to print verbatim; the doctor never runs them."`
}

// DoctorCheck is the outcome of one check.
type DoctorCheck struct {
	Name        string          `json:"name" doc:"connectivity, tls, authentication, authorization, version, rate_limit, latency, or pack:<pack>/<check>."`
	Status      string          `json:"status" enum:"pass,warn,fail,skip" doc:"skip: the check did not apply or its prerequisite failed; it does not count towards the overall status."`
	Message     string          `json:"message"`
	Details     map[string]any  `json:"details,omitempty"`
	Suggestions []string        `json:"suggestions,omitempty"`
	HowToFix    *DoctorHowToFix `json:"how_to_fix,omitempty"`
	DurationMs  int64           `json:"durationMs" minimum:"0"`
}

// DoctorReport is one doctor run of an integration.
type DoctorReport struct {
	RunID         string        `json:"runId" format:"uuid"`
	IntegrationID string        `json:"integrationId" format:"uuid"`
	Type          string        `json:"type"`
	OverallStatus string        `json:"overallStatus" enum:"healthy,degraded,unhealthy" doc:"unhealthy if any check failed, else degraded if any warned."`
	Checks        []DoctorCheck `json:"checks"`
	StartedAt     time.Time     `json:"startedAt"`
	DurationMs    int64         `json:"durationMs" minimum:"0"`
	RunBy         string        `json:"runBy" doc:"Who asked for the run (the token's subject)."`
	Evidence      string        `json:"evidence,omitempty" doc:"The run's evidence log: JSON lines, one per probe (what was asked of whom and what came back; no credentials, no response bodies). In the answer to a run, and in listings with ?evidence=true."`
	Signature     *DSSEEnvelope `json:"dsse,omitempty" doc:"A DSSE envelope signing the run's summary, when the catalog has a signing key."`
}

// DSSEEnvelope is a Dead Simple Signing Envelope.
type DSSEEnvelope struct {
	PayloadType string          `json:"payloadType"`
	Payload     string          `json:"payload" doc:"Base64 of the signed summary (JSON)."`
	Signatures  []DSSESignature `json:"signatures"`
}

// DSSESignature is one signature of a DSSE envelope.
type DSSESignature struct {
	KeyID string `json:"keyid"`
	Sig   string `json:"sig"`
}

// DoctorReports lists an integration's latest doctor runs.
type DoctorReports struct {
	IntegrationID string         `json:"integrationId" format:"uuid"`
	Reports       []DoctorReport `json:"reports" doc:"Newest first."`
}

type doctorInput struct {
	ID string `path:"id" doc:"Integration id; another tenant's id answers 404."`
}

type doctorOutput struct {
	Body DoctorReport
}

type doctorReportsInput struct {
	ID       string `path:"id" doc:"Integration id; another tenant's id answers 404."`
	Limit    int    `query:"limit" minimum:"1" maximum:"100" default:"10" doc:"How many runs, newest first."`
	Evidence bool   `query:"evidence" doc:"Include each run's JSONL evidence log."`
}

type doctorReportsOutput struct {
	Body DoctorReports
}

func (s *server) registerDoctor() {
	run := operation("run-integration-doctor", http.MethodPost, "/integrations/{id}/doctor",
		"Diagnose an integration now", ScopeWrite, http.StatusNotFound, http.StatusConflict,
		http.StatusTooManyRequests, http.StatusNotImplemented)
	run.Description = "Checks connectivity (TCP), TLS (chain, expiry: under 14 days warns, expired fails; host name), " +
		"authentication, authorization (the scopes the integration's writes need), the provider's version, " +
		"rate-limit headroom (more than 10 % left) and latency (p99 of a few health probes under 5 s), then the " +
		"operator's declarative packs if the catalog loaded any. Each check has a status (pass, warn, fail, skip), " +
		"a message, details, suggestions and how_to_fix commands printed verbatim (never run). The run is stored " +
		"with its JSONL evidence log and audited. A failed check is a report, not an error of the API. " +
		"409: the integration's type has no connector. 429: too many runs in progress; retry later. " +
		"501: this catalog runs no doctor."
	run.DefaultStatus = http.StatusOK
	huma.Register(s.api, run, s.runDoctor)

	// GET /integrations/{id}/doctor shares its ServeMux pattern with GET
	// /integrations/by-type/{type} (see recordingMux).
	list := operation("list-integration-doctor-reports", http.MethodGet, "/integrations/{id}/doctor",
		"Latest doctor reports of an integration", ScopeRead, http.StatusNotFound, http.StatusNotImplemented)
	list.Description = "The integration's latest doctor runs, newest first, with each run's evidence log on ?evidence=true. " +
		"501: this catalog runs no doctor."
	huma.Register(s.api, list, s.doctorReports)

	// The listing's first address, kept for the clients that use it.
	alias := operation("list-integration-doctor-runs", http.MethodGet, "/integrations/{id}/doctor/runs",
		"Latest doctor reports of an integration (old address)", ScopeRead, http.StatusNotFound, http.StatusNotImplemented)
	alias.Description = "The same listing as GET /integrations/{id}/doctor, at its first address; use that one."
	alias.Deprecated = true
	huma.Register(s.api, alias, s.doctorReports)
}

func (s *server) doctorUnavailable() error {
	return problem(http.StatusNotImplemented, "this catalog runs no doctor", "path.id",
		"the catalog was started without a doctor")
}

func (s *server) runDoctor(ctx context.Context, in *doctorInput) (*doctorOutput, error) {
	if s.doctor == nil {
		return nil, s.doctorUnavailable()
	}
	p, err := principal(ctx)
	if err != nil {
		return nil, err
	}
	ctx, it, err := s.integrationFor(ctx, in.ID)
	if err != nil {
		return nil, err
	}
	rep, err := s.doctor.Run(ctx, it, p.Subject)
	if errors.Is(err, ErrDoctorBusy) {
		return nil, huma.ErrorWithHeaders(
			problem(http.StatusTooManyRequests, "too many doctor runs in progress", "path.id", "retry in a few seconds"),
			http.Header{"Retry-After": {"5"}})
	}
	if err != nil {
		return nil, s.connectFail(ctx, it, err)
	}
	return &doctorOutput{Body: rep}, nil
}

func (s *server) doctorReports(ctx context.Context, in *doctorReportsInput) (*doctorReportsOutput, error) {
	if s.doctor == nil {
		return nil, s.doctorUnavailable()
	}
	p, err := principal(ctx)
	if err != nil {
		return nil, err
	}
	reps, err := s.doctor.Reports(ctx, p.TenantID, in.ID, in.Limit, in.Evidence)
	if err != nil {
		return nil, s.fail(ctx, err, slog.String("tenantId", p.TenantID), slog.String("integrationId", in.ID))
	}
	out := &doctorReportsOutput{Body: DoctorReports{IntegrationID: in.ID, Reports: reps}}
	if out.Body.Reports == nil {
		out.Body.Reports = []DoctorReport{}
	}
	if len(reps) > 0 {
		out.Body.IntegrationID = reps[0].IntegrationID
	}
	return out, nil
}
