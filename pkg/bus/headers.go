package bus

// Message headers. Every event carries Nats-Msg-Id (the CloudEvents id), so
// JetStream drops a re-publish inside the duplicate window, plus tenant and
// integration id so operators can filter without decoding bodies.
//
// Dead letters keep the original body untouched and add the Dlq* headers;
// `nats stream view DLQ` or `nats sub 'dlq.>'` shows them as they are.
const (
	HeaderMsgID         = "Nats-Msg-Id"
	HeaderTenantID      = "Inthub-Tenant-Id"
	HeaderIntegrationID = "Inthub-Integration-Id"
	HeaderTraceParent   = "traceparent"
	HeaderTraceState    = "tracestate"

	HeaderOriginalSubject = "Inthub-Original-Subject"
	HeaderStreamSequence  = "Inthub-Stream-Sequence"
	HeaderDeliveryCount   = "Inthub-Delivery-Count"
	HeaderErrorClass      = "Inthub-Error-Class"
	HeaderLastError       = "Inthub-Last-Error"
	HeaderService         = "Inthub-Service"
	HeaderFirstFailure    = "Inthub-First-Failure" // RFC 3339, UTC
	HeaderLastFailure     = "Inthub-Last-Failure"  // RFC 3339, UTC
	HeaderOriginalMsgID   = "Inthub-Original-Msg-Id"

	// HeaderDeferralCount is how many of the deliveries in
	// HeaderDeliveryCount were deferrals (Defer); set only when some were.
	HeaderDeferralCount = "Inthub-Deferral-Count"

	// HeaderReplayOf names the dead letter (stream sequence in DLQ) that a
	// replayed message came from.
	HeaderReplayOf = "Inthub-Replay-Of"
	// HeaderSpooledAt is set on messages kept in the SPOOL stream.
	HeaderSpooledAt = "Inthub-Spooled-At"
)

// Subject prefixes of the dead-letter and spool streams.
const (
	DLQPrefix   = "dlq."
	SpoolPrefix = "spool."
)

// DLQSubject is where a dead letter of a message on subject goes.
func DLQSubject(subject string) string { return DLQPrefix + subject }

// SpoolSubject is where a payload for an offline integration waits.
func SpoolSubject(subject, integrationID string) string {
	if integrationID == "" {
		integrationID = "_"
	}
	return SpoolPrefix + subject + "." + integrationID
}
