package bus

import (
	"testing"
	"testing/quick"
	"time"

	"inthub.dev/pkg/fault"
)

// Error handling, as this design means it (DESIGN §4): whatever the class
// and delivery count, a failed message is redelivered, dead-lettered or
// spooled — never dropped — and only retryable classes are redelivered,
// and only while deliveries remain.
func TestPropertyErrorHandlingDecision(t *testing.T) {
	classes := []fault.Class{fault.ClassUnknown, fault.ClassTransient, fault.ClassPermanent, fault.ClassOffline}
	prop := func(c uint8, delivered, deferred uint16, maxDeliver uint8) bool {
		class := classes[int(c)%len(classes)]
		n := uint64(delivered%50) + 1
		d := &Delivery{NumDelivered: n, Deferrals: uint64(deferred) % n, MaxDeliver: int(maxDeliver%20) + 1}
		got := decide(class, d)
		switch {
		case class == fault.ClassOffline:
			return got == OutcomeSpooled
		case class == fault.ClassPermanent:
			return got == OutcomeDeadLetter
		case d.NumDelivered-d.Deferrals >= uint64(d.MaxDeliver):
			return got == OutcomeDeadLetter
		default:
			return got == OutcomeRedeliver
		}
	}
	if err := quick.Check(prop, &quick.Config{MaxCount: 1000}); err != nil {
		t.Fatal(err)
	}
}

// Redelivery delays grow with the delivery count, stay within the ceiling
// (plus jitter), and are never zero, which would be an immediate Nak.
func TestPropertyExponentialRedelivery(t *testing.T) {
	r := ExponentialRedelivery(100*time.Millisecond, 10*time.Second)
	prop := func(n uint16) bool {
		d := r(uint64(n%64) + 1)
		return d > 0 && d <= 11*time.Second
	}
	if err := quick.Check(prop, &quick.Config{MaxCount: 500}); err != nil {
		t.Fatal(err)
	}
}

// Every subject of the contract is stored by exactly one stream, and dead
// letters and spooled payloads land in their own streams.
func TestPropertyEverySubjectHasOneStream(t *testing.T) {
	tokens := []string{"integration", "plugin", "scm", "ingest", "event", "enrichment", "annotation", "created", "github", "x"}
	prop := func(a, b, c uint8, prefix uint8) bool {
		subject := tokens[int(a)%len(tokens)] + "." + tokens[int(b)%len(tokens)] + "." + tokens[int(c)%len(tokens)]
		switch prefix % 3 {
		case 1:
			subject = DLQSubject(subject)
		case 2:
			subject = SpoolSubject(subject, "i")
		}
		matches := 0
		for _, cfg := range Streams(DefaultStreamSettings()) {
			for _, p := range cfg.Subjects {
				if subjectMatches(p, subject) {
					matches++
				}
			}
		}
		want := 0
		if StreamFor(subject) != "" {
			want = 1
		}
		return matches == want
	}
	if err := quick.Check(prop, &quick.Config{MaxCount: 1000}); err != nil {
		t.Fatal(err)
	}
	for subject, want := range map[string]string{
		"integration.created":                 StreamIntegrations,
		"scm.annotation.requested":            StreamSCM,
		"dlq.scm.annotation.requested":        StreamDLQ,
		"spool.scm.annotation.requested.8f1d": StreamSpool,
		"ingest.github.push":                  StreamIngest,
		"event.canonical.delivery":            StreamEvents,
		"enrichment.requested":                StreamEvents,
		"nothing.here":                        "",
	} {
		if got := StreamFor(subject); got != want {
			t.Errorf("StreamFor(%q) = %q, want %q", subject, got, want)
		}
	}
}
