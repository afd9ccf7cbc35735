// Package deadletter reads and acts on the two places where inthub keeps
// messages it could not deliver: the DLQ stream (dead letters, written by
// the worker frame with the failure in Inthub-* headers) and the SPOOL
// stream (payloads held while their integration is offline).
//
// Reading never changes server state: messages are fetched one by one with
// "get next message by subject" requests, so listing creates no consumer,
// durable or not, and leaves no trace for a concurrent operator to trip on.
//
// Every mutating operation (Replay, Purge, SpoolDrain) publishes first,
// waits for the JetStream ack, and only then deletes the source message. A
// crash in between replays a message twice, never loses one: consumers are
// idempotent, and SpoolDrain's derived message ids let the duplicate window
// drop the second copy. Each operation ends with exactly one audit record.
package deadletter

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"inthub.dev/pkg/bus"
)

// ErrNotFound is wrapped by the errors of Show, Replay and Purge when a
// sequence asked for is not (or no longer) in the stream.
var ErrNotFound = errors.New("deadletter: message not found")

// Filter selects letters. Zero fields do not filter.
type Filter struct {
	// Subject is the original subject, NATS wildcards allowed ("scm.>",
	// "integration.*"). It is applied by the server as a subject filter on
	// "dlq.<Subject>" (or "spool.<Subject>.<integration>"), exactly what
	// `nats stream view DLQ --subject 'dlq.<Subject>'` would show.
	Subject       string
	TenantID      string
	IntegrationID string
	// ErrorContains is a case-insensitive substring of the last error (on
	// spool entries: the offline error the worker frame recorded, if any).
	ErrorContains string
	// Since (inclusive) and Until (exclusive) bound the last failure time of
	// a dead letter or the spooled time of a spool entry. A message without
	// that header is judged by the time the stream stored it.
	Since, Until time.Time
	// Limit stops after that many matches, oldest first; 0 means no limit.
	Limit int
}

// IsZero reports whether the filter selects everything.
func (f Filter) IsZero() bool {
	return f.Subject == "" && f.TenantID == "" && f.IntegrationID == "" &&
		f.ErrorContains == "" && f.Since.IsZero() && f.Until.IsZero() && f.Limit == 0
}

// LogValue makes a Filter a structured group in audit records, so an audit
// pipeline can query "filter.tenant" rather than parse a string.
func (f Filter) LogValue() slog.Value {
	var as []slog.Attr
	add := func(k, v string) {
		if v != "" {
			as = append(as, slog.String(k, v))
		}
	}
	add("subject", f.Subject)
	add("tenant", f.TenantID)
	add("integration", f.IntegrationID)
	add("error_contains", f.ErrorContains)
	if !f.Since.IsZero() {
		as = append(as, slog.Time("since", f.Since.UTC()))
	}
	if !f.Until.IsZero() {
		as = append(as, slog.Time("until", f.Until.UTC()))
	}
	if f.Limit != 0 {
		as = append(as, slog.Int("limit", f.Limit))
	}
	return slog.GroupValue(as...)
}

func (f Filter) validate(k kind) error {
	var errs []error
	if f.Subject != "" {
		if err := validSubjectPattern(f.Subject); err != nil {
			errs = append(errs, fmt.Errorf("subject: %w", err))
		}
		for _, p := range []string{bus.DLQPrefix, bus.SpoolPrefix} {
			if strings.HasPrefix(f.Subject, p) {
				errs = append(errs, fmt.Errorf("subject: %q is already prefixed with %q; give the original subject", f.Subject, p))
			}
		}
	}
	if strings.ContainsAny(f.IntegrationID, " \t\r\n.*>") && k == kindSpool {
		errs = append(errs, fmt.Errorf("integration: %q cannot be a subject token", f.IntegrationID))
	}
	if !f.Since.IsZero() && !f.Until.IsZero() && !f.Since.Before(f.Until) {
		errs = append(errs, fmt.Errorf("time range: since %s is not before until %s", f.Since.Format(time.RFC3339), f.Until.Format(time.RFC3339)))
	}
	if f.Limit < 0 {
		errs = append(errs, fmt.Errorf("limit: %d is negative", f.Limit))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("deadletter: invalid filter: %w", err)
	}
	return nil
}

// Letter is one message of the DLQ or SPOOL stream with its Inthub headers
// decoded. A field whose header is absent is left zero; spool entries have
// the failure fields only when the worker frame spooled them (class offline).
type Letter struct {
	Seq             uint64 // sequence in the DLQ or SPOOL stream
	Subject         string // subject in that stream: dlq.<orig> or spool.<orig>.<integration>
	OriginalSubject string
	MsgID           string // the original message's Nats-Msg-Id
	TenantID        string
	IntegrationID   string
	ErrorClass      string
	LastError       string
	Service         string
	DeliveryCount   int
	FirstFailure    time.Time
	LastFailure     time.Time
	// SpooledAt is when a spool entry was spooled; zero for dead letters.
	SpooledAt time.Time
	// StoredAt is when the stream stored the message.
	StoredAt time.Time
	Header   nats.Header
	Data     []byte
}

// Store operates on the DLQ and SPOOL streams. It is safe for concurrent
// use; concurrent mutating operations on the same letters may replay one
// twice, which consumers tolerate.
type Store struct {
	js     jetstream.JetStream
	logger *slog.Logger
	now    func() time.Time
}

// Option configures New.
type Option func(*Store)

// WithLogger sets where audit records go. The default is slog.Default(),
// because an audit record dropped silently is worse than one in the
// process's ordinary log.
func WithLogger(l *slog.Logger) Option {
	return func(s *Store) {
		if l != nil {
			s.logger = l
		}
	}
}

// WithClock sets the clock that timestamps audit records.
func WithClock(now func() time.Time) Option {
	return func(s *Store) {
		if now != nil {
			s.now = now
		}
	}
}

// New returns a Store on js. It does not touch the server: the streams are
// looked up by each operation, so a Store made before provisioning works.
func New(js jetstream.JetStream, opts ...Option) (*Store, error) {
	if js == nil {
		return nil, errors.New("deadletter: nil JetStream")
	}
	s := &Store{js: js, logger: slog.Default(), now: time.Now}
	for _, o := range opts {
		o(s)
	}
	return s, nil
}
