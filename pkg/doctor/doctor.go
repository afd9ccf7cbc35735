// Package doctor diagnoses one integration: can the hub reach its
// endpoint (TCP), does the endpoint's certificate hold (chain, expiry,
// host name), do the credentials authenticate, do they carry the scopes
// the integration's operations need, is the provider's version supported,
// is there rate-limit headroom left, and how slow is it (p99 of a few
// probes). Each check says what it found, why it matters and, where a
// person can fix it, the commands to run, printed verbatim.
//
// Operators can add declarative checks (packs, pack.go): YAML files whose
// commands are checked against an allow-list of read-only diagnostics when
// they are loaded. The doctor never runs anything else, and never runs a
// fix: how_to_fix commands are shown, not executed.
//
// Every probe leaves one line in the run's JSONL evidence log
// (evidence.go). Nothing the doctor writes holds a secret: the connector
// resolves credentials itself and its messages are already free of them;
// endpoints are recorded as scheme://host:port; pack output is recorded
// as its size and digest, never its text.
package doctor

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"

	"inthub.dev/pkg/connectors"
)

// Status is the outcome of one check.
type Status string

const (
	StatusPass Status = "pass"
	StatusWarn Status = "warn"
	StatusFail Status = "fail"
	// StatusSkip is a check that did not apply or whose prerequisite
	// failed (no TLS check without a TCP connection); it does not count
	// towards the overall status.
	StatusSkip Status = "skip"
)

// Overall is a report's verdict: any failed check makes it unhealthy,
// else any warning degraded.
type Overall string

const (
	Healthy   Overall = "healthy"
	Degraded  Overall = "degraded"
	Unhealthy Overall = "unhealthy"
)

// Check names, in the order a report lists them. Pack checks are named
// "pack:<pack>/<check>".
const (
	CheckConnectivity   = "connectivity"
	CheckTLS            = "tls"
	CheckAuthentication = "authentication"
	CheckAuthorization  = "authorization"
	CheckVersion        = "version"
	CheckRateLimit      = "rate_limit"
	CheckLatency        = "latency"
)

// Thresholds of the built-in checks.
const (
	// CertWarnDays: a certificate that expires sooner warns.
	CertWarnDays = 14
	// MinHeadroom: a rate-limit budget with this share left or less warns.
	MinHeadroom = 0.10
	// MaxP99: a p99 latency at or above this warns.
	MaxP99 = 5 * time.Second
)

// HowToFix is what a person can do about a failed or warning check. The
// commands are printed verbatim and never run by the doctor.
type HowToFix struct {
	Summary  string   `json:"summary,omitempty"`
	Commands []string `json:"commands"`
}

// CheckResult is the outcome of one check.
type CheckResult struct {
	Name        string         `json:"name"`
	Status      Status         `json:"status"`
	Message     string         `json:"message"`
	Details     map[string]any `json:"details,omitempty"`
	Suggestions []string       `json:"suggestions,omitempty"`
	HowToFix    *HowToFix      `json:"how_to_fix,omitempty"`
	DurationMs  int64          `json:"durationMs"`
}

// Report is the outcome of one run.
type Report struct {
	RunID         string        `json:"runId"`
	IntegrationID string        `json:"integrationId,omitempty"`
	Type          string        `json:"type,omitempty"`
	OverallStatus Overall       `json:"overallStatus"`
	Checks        []CheckResult `json:"checks"`
	StartedAt     time.Time     `json:"startedAt"`
	DurationMs    int64         `json:"durationMs"`
}

// Target is the integration to diagnose.
type Target struct {
	IntegrationID string
	TenantID      string
	Type          string
	// Endpoint is the URL the connector calls (its API root is best);
	// empty for a connector that calls nothing (test.inmemory):
	// connectivity and TLS are then skipped.
	Endpoint string
	// Connect builds and provisions the integration's connector; the
	// doctor closes it. An error is reported by the authentication check
	// (a config or a secret that does not resolve).
	Connect func(ctx context.Context) (connectors.Connector, error)
}

// Options configure a Doctor. Zero values get the defaults noted.
type Options struct {
	// Dial opens TCP connections for the connectivity and TLS checks. The
	// caller applies its egress policy here (a net.Dialer whose Control
	// checks the address dialled), as for every call the hub makes for a
	// user. Default: a plain net.Dialer.
	Dial func(ctx context.Context, network, address string) (net.Conn, error)
	// RootCAs verify the endpoint's chain (nil: the system's roots).
	RootCAs *x509.CertPool
	// Probes is how many health checks the latency check times (3).
	Probes int
	// Timeout bounds each network check and each pack command (10 s).
	Timeout time.Duration
	// Packs are the declarative checks to run (LoadPacks).
	Packs []Pack
	// Command is what the operator invoked ("inthubctl doctor <id>", the
	// API route), recorded in the evidence log as doctor_command.
	Command string
	// Now is the clock of certificate expiry and of the report's times
	// (time.Now); durations always use the real clock.
	Now    func() time.Time
	Logger *slog.Logger
}

// Doctor runs the checks. It is safe for concurrent use.
type Doctor struct {
	o Options
}

// New returns a Doctor.
func New(o Options) *Doctor {
	if o.Dial == nil {
		d := &net.Dialer{}
		o.Dial = d.DialContext
	}
	if o.Probes <= 0 {
		o.Probes = 3
	}
	if o.Timeout <= 0 {
		o.Timeout = 10 * time.Second
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return &Doctor{o: o}
}

// run is the state of one Run.
type run struct {
	d      *Doctor
	t      Target
	ev     *Evidence
	host   string // endpoint host, "" for none
	port   string
	scheme string
}

// Run diagnoses t and returns the report and the run's evidence log.
func (d *Doctor) Run(ctx context.Context, t Target) (Report, *Evidence) {
	start := time.Now()
	rep := Report{RunID: uuid.NewString(), IntegrationID: t.IntegrationID, Type: t.Type, StartedAt: d.o.Now().UTC()}
	r := &run{d: d, t: t, ev: newEvidence(rep.RunID, t.IntegrationID, d.o.Command, d.o.Now)}
	endpointErr := r.parseEndpoint()

	// Network first: when nothing answers, every later check would only
	// fail the same way, slower.
	conn := r.connectivity(ctx, endpointErr)
	rep.Checks = append(rep.Checks, conn)
	rep.Checks = append(rep.Checks, r.tls(ctx, conn.Status))

	rep.Checks = append(rep.Checks, r.provider(ctx)...)
	for _, p := range d.o.Packs {
		rep.Checks = append(rep.Checks, r.pack(ctx, p)...)
	}
	rep.OverallStatus = overall(rep.Checks)
	rep.DurationMs = time.Since(start).Milliseconds()
	r.ev.add(evidenceLine{Probe: "summary", Status: string(rep.OverallStatus), DurationMs: rep.DurationMs,
		Message: summaryOf(rep)})
	return rep, r.ev
}

func overall(checks []CheckResult) Overall {
	o := Healthy
	for _, c := range checks {
		switch c.Status {
		case StatusFail:
			return Unhealthy
		case StatusWarn:
			o = Degraded
		}
	}
	return o
}

func summaryOf(rep Report) string {
	counts := map[Status]int{}
	for _, c := range rep.Checks {
		counts[c.Status]++
	}
	return fmt.Sprintf("%s: %d pass, %d warn, %d fail, %d skip", rep.OverallStatus,
		counts[StatusPass], counts[StatusWarn], counts[StatusFail], counts[StatusSkip])
}

// parseEndpoint reads host and port from the target's endpoint.
func (r *run) parseEndpoint() error {
	if strings.TrimSpace(r.t.Endpoint) == "" {
		return nil
	}
	u, err := url.Parse(r.t.Endpoint)
	if err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") {
		return errors.New("the endpoint is not an absolute http(s) URL")
	}
	r.scheme, r.host, r.port = u.Scheme, u.Hostname(), u.Port()
	if r.port == "" {
		r.port = "443"
		if u.Scheme == "http" {
			r.port = "80"
		}
	}
	if _, err := strconv.Atoi(r.port); err != nil {
		return errors.New("the endpoint's port is not a number")
	}
	return nil
}

// where is the endpoint as the evidence and the report name it: scheme,
// host and port, never a path, query or userinfo.
func (r *run) where() string {
	if r.host == "" {
		return ""
	}
	return r.scheme + "://" + net.JoinHostPort(r.host, r.port)
}

func ms(d time.Duration) int64 { return max(d.Milliseconds(), 0) }
