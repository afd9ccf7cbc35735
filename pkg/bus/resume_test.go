package bus

import (
	"context"
	"testing"
	"time"

	"inthub.dev/events"
)

// A worker whose durable consumer disappears (deleted by hand, or lost by
// the cluster) used to run on and never see another message: the client
// ends its Consume for good on "Consumer Deleted". It must create the
// consumer again and go on.
func TestWorkerRecreatesItsDeletedConsumer(t *testing.T) {
	e := newEnv(t)
	got := make(chan string, 10)
	cfg := testConfig("resume")
	w := newWorker(t, e.js, cfg, events.SubjectIntegrationHealthChecked, func(_ context.Context, ev events.Event) error {
		got <- messageOf(t, ev)
		return nil
	})
	start(t, w)
	e.publish(healthEvent(t, 1, "before"))
	if m := <-got; m != "before" {
		t.Fatalf("first message %q", m)
	}
	eventually(t, 10*time.Second, "the first message acked", func() bool { return e.settled(cfg.Stream, cfg.Service) })

	if err := e.js.DeleteConsumer(context.Background(), cfg.Stream, cfg.Service); err != nil {
		t.Fatal(err)
	}
	e.publish(healthEvent(t, 2, "after"))
	// The re-created consumer starts from the stream's beginning, as a
	// worker started against a missing durable does: "before" comes again
	// (handlers are idempotent or guarded), then "after".
	deadline := time.After(15 * time.Second)
	for {
		select {
		case m := <-got:
			if m == "after" {
				return
			}
		case <-deadline:
			t.Fatal("the worker handled nothing within 15s of its consumer's deletion")
		}
	}
}
