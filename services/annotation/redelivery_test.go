package annotation_test

import (
	"errors"
	"testing"
	"time"

	"inthub.dev/events"
	"inthub.dev/pkg/bus"
	"inthub.dev/pkg/connectors"
	"inthub.dev/pkg/fault"
	"inthub.dev/services/annotation"
)

// A worker that dead-letters a request and dies, or is cut off from NATS,
// before its ack gets the request again: it dead-letters it again (the DLQ
// keeps one copy) and must announce it once, as a completed request is.
// Seen in services/e2e TestClusterReplicas: a worker on a partitioned NATS
// server dead-lettered a request, its ack was lost, another worker
// dead-lettered the redelivery, and scm.annotation.failed was stored twice
// under two ids. A replay of the request is a new message, announced
// again.
func TestRedeliveredFailureIsAnnouncedOnce(t *testing.T) {
	e := newEnv(t)
	id := newID()
	e.put(integration(id, tenantA, "test.recorder", "active"))
	e.rec.setFail(func(connectors.AnnotationRequest, int) error {
		return fault.Permanent(errors.New("404 Not Found"))
	})
	svc := e.start(annotation.Config{})
	rid := e.request(tenantA, status(id, "c"))
	eventually(t, 20*time.Second, "dead-lettered", func() bool { return len(e.dlq()) == 1 })
	eventually(t, 10*time.Second, "failed event", func() bool { _, f := e.results(); return len(f) == 1 })

	st, err := e.js.Stream(e.ctx, bus.StreamSCM)
	if err != nil {
		t.Fatal(err)
	}
	msg, err := st.GetLastMsgForSubject(e.ctx, events.SubjectAnnotationRequested)
	if err != nil {
		t.Fatal(err)
	}
	failure := func(seq, delivered uint64) bus.Failure {
		return bus.Failure{
			Delivery: &bus.Delivery{Subject: msg.Subject, Stream: bus.StreamSCM, StreamSeq: seq, NumDelivered: delivered,
				Header: msg.Header},
			Outcome: bus.OutcomeDeadLetter, Class: fault.ClassPermanent,
			Err: fault.Permanent(errors.New("404 Not Found")), Body: msg.Data,
		}
	}
	// The redelivery: the same message, delivered a second time. Publishing
	// waits for the stream's ack, so what it stored is there on return.
	svc.ReportFailure(e.ctx, failure(msg.Sequence, 2))
	if _, failed := e.results(); len(failed) != 1 {
		t.Fatalf("after a redelivery dead-lettered again: %d failed events for %s, want 1: %+v", len(failed), rid, failed)
	}
	// A replay: the same request as a new message.
	svc.ReportFailure(e.ctx, failure(msg.Sequence+100, 1))
	if _, failed := e.results(); len(failed) != 2 {
		t.Fatalf("after a replay dead-lettered: %d failed events for %s, want 2", len(failed), rid)
	}
}
