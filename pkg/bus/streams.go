package bus

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Stream names. Subjects never overlap between streams.
const (
	StreamIntegrations = "INTEGRATIONS"
	StreamSCM          = "SCM"
	StreamIngest       = "INGEST"
	StreamEvents       = "EVENTS"
	StreamDLQ          = "DLQ"
	StreamSpool        = "SPOOL"
)

// StreamSettings are the knobs that differ between a laptop and a cluster.
// Everything else about the streams is fixed in Streams.
type StreamSettings struct {
	// Topology lays out every stream and KV bucket: replicas (1 on a
	// single server, 3 on a cluster) and placement.
	Topology
	// MaxAge bounds how long ordinary streams keep messages (default 7 days);
	// DLQ and SPOOL keep theirs four times as long, since a person has to
	// look at them.
	MaxAge time.Duration
	// MaxBytes bounds each stream (default 1 GiB; -1 unlimited).
	MaxBytes int64
	// Duplicates is the window in which a repeated Nats-Msg-Id is dropped.
	// At least 2 minutes: outbox retries and spool replays rely on it.
	Duplicates time.Duration
}

// DefaultStreamSettings suit one embedded server.
func DefaultStreamSettings() StreamSettings {
	return StreamSettings{Topology: Topology{Replicas: 1}, MaxAge: 7 * 24 * time.Hour, MaxBytes: 1 << 30, Duplicates: 2 * time.Minute}
}

func (s StreamSettings) withDefaults() StreamSettings {
	d := DefaultStreamSettings()
	if s.Replicas == 0 {
		s.Replicas = d.Replicas
	}
	if s.MaxAge == 0 {
		s.MaxAge = d.MaxAge
	}
	if s.MaxBytes == 0 {
		s.MaxBytes = d.MaxBytes
	}
	if s.Duplicates == 0 {
		s.Duplicates = d.Duplicates
	}
	return s
}

// Validate rejects settings that would break the delivery guarantees.
func (s StreamSettings) Validate() error {
	s = s.withDefaults()
	var errs []error
	if err := s.Topology.Validate(); err != nil {
		errs = append(errs, err)
	}
	if s.Duplicates < 2*time.Minute {
		errs = append(errs, fmt.Errorf("duplicates: %s is below 2m, spool replays and outbox retries could be applied twice", s.Duplicates))
	}
	if s.Duplicates > s.MaxAge {
		errs = append(errs, fmt.Errorf("duplicates: %s exceeds max age %s", s.Duplicates, s.MaxAge))
	}
	return errors.Join(errs...)
}

// Streams returns the configuration of every inthub stream.
func Streams(s StreamSettings) []jetstream.StreamConfig {
	s = s.withDefaults()
	mk := func(name, desc string, age time.Duration, subjects ...string) jetstream.StreamConfig {
		return s.Topology.Stream(jetstream.StreamConfig{
			Name:        name,
			Description: desc,
			Subjects:    subjects,
			Storage:     jetstream.FileStorage,
			Retention:   jetstream.LimitsPolicy,
			MaxAge:      age,
			MaxBytes:    s.MaxBytes,
			Duplicates:  s.Duplicates,
			Discard:     jetstream.DiscardOld,
		})
	}
	long := 4 * s.MaxAge
	return []jetstream.StreamConfig{
		mk(StreamIntegrations, "integration lifecycle and plugin events", s.MaxAge, "integration.>", "plugin.>"),
		mk(StreamSCM, "annotation requests and results", s.MaxAge, "scm.>"),
		mk(StreamIngest, "raw data from webhooks and pollers", s.MaxAge, "ingest.>"),
		mk(StreamEvents, "canonical and enriched platform events", s.MaxAge, "event.>", "enrichment.>"),
		dlq(mk(StreamDLQ, "dead letters: original body, failure in headers", long, DLQPrefix+">")),
		mk(StreamSpool, "payloads held while their integration is offline", long, SpoolPrefix+">"),
	}
}

// A dead letter must never be dropped to make room: refuse new ones instead,
// so the failing message stays in its own stream and an alert fires.
func dlq(c jetstream.StreamConfig) jetstream.StreamConfig {
	c.Discard = jetstream.DiscardNew
	return c
}

// Provision creates or updates every stream and KV bucket (ProvisionKV).
// It is idempotent and safe to call from every service at start, so
// whichever service starts first, the bucket its peers watch exists. It
// never lowers a stream's replicas nor drops its placement (see
// keepLayout).
func Provision(ctx context.Context, js jetstream.JetStream, s StreamSettings) error {
	if err := s.Validate(); err != nil {
		return fmt.Errorf("bus: stream settings: %w", err)
	}
	for _, cfg := range Streams(s) {
		if err := provisionStream(ctx, js, cfg); err != nil {
			return err
		}
	}
	return ProvisionKV(ctx, js, s)
}

// StreamFor names the stream that stores subject, or "" if none does.
func StreamFor(subject string) string {
	for _, c := range Streams(DefaultStreamSettings()) {
		for _, pattern := range c.Subjects {
			if subjectMatches(pattern, subject) {
				return c.Name
			}
		}
	}
	return ""
}

// subjectMatches implements NATS wildcard matching for the fixed patterns
// above ("a.>" and literal tokens).
func subjectMatches(pattern, subject string) bool {
	for {
		pt, prest, pmore := cut(pattern)
		st, srest, smore := cut(subject)
		switch {
		case pt == ">":
			return st != ""
		case pt == "*":
			if st == "" {
				return false
			}
		case pt != st:
			return false
		}
		if !pmore || !smore {
			return pmore == smore
		}
		pattern, subject = prest, srest
	}
}

func cut(s string) (head, rest string, more bool) {
	for i := 0; i < len(s); i++ {
		if s[i] == '.' {
			return s[:i], s[i+1:], true
		}
	}
	return s, "", false
}
