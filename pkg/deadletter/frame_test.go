package deadletter_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"inthub.dev/events"
	"inthub.dev/pkg/bus"
	"inthub.dev/pkg/deadletter"
	"inthub.dev/pkg/fault"
)

// The operator's journey: a message fails for a cause outside the message
// (a missing permission, say), is dead-lettered by the worker frame; the
// cause is fixed; `inthubctl dlq replay` sends it back and it is processed.
func TestReplayAfterFixThroughWorkerFrame(t *testing.T) {
	e := newEnv(t)
	const tenant = "0b5a3bb0-6a43-4d7e-9a39-6f1f9d9a0001"
	const integration = "8f1d2c3e-0000-4000-8000-000000000042"
	ev, err := events.New(events.SubjectIntegrationHealthChecked, "inthub/test", tenant, events.HealthChecked{
		IntegrationID: integration, TenantID: tenant, Type: "test.inmemory",
		Status: events.HealthHealthy, LatencyMs: 1, Message: "m", CheckedAt: time.Now().UTC(),
	})
	if err != nil {
		t.Fatal(err)
	}

	var fixed atomic.Bool
	var processed atomic.Int32
	w, err := bus.NewWorker(e.js, bus.WorkerConfig{Service: "replay-test", Stream: bus.StreamIntegrations})
	if err != nil {
		t.Fatal(err)
	}
	w.Handle(events.SubjectIntegrationHealthChecked, func(ctx context.Context, got events.Event) error {
		if !fixed.Load() {
			return fault.Permanent(errors.New("403 resource not accessible by integration"))
		}
		if got.ID != ev.ID {
			t.Errorf("replayed event id %q, want %q", got.ID, ev.ID)
		}
		processed.Add(1)
		return nil
	})
	ctx, cancel := context.WithCancel(e.ctx)
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})

	pub, err := bus.NewPublisher(e.srv.Connect(), bus.PublisherConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	if err := pub.Publish(e.ctx, ev); err != nil {
		t.Fatal(err)
	}
	poll(t, "dead-lettered", func() bool { return e.streamMsgs(bus.StreamDLQ) == 1 })

	fixed.Store(true)
	res, err := e.store.Replay(e.ctx, deadletter.Filter{IntegrationID: integration}, deadletter.ReplayOptions{Operator: "alice"})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Replayed) != 1 {
		t.Fatalf("replayed %d, want 1", len(res.Replayed))
	}
	poll(t, "processed after replay", func() bool { return processed.Load() == 1 })
	if n := e.streamMsgs(bus.StreamDLQ); n != 0 {
		t.Fatalf("DLQ still has %d", n)
	}

	var audit map[string]any
	for _, r := range e.audit.records(t) {
		if r["msg"] == "dlq replay" {
			audit = r
		}
	}
	if audit == nil {
		t.Fatal("no audit record")
	}
	ids, _ := audit["new_msg_ids"].([]any)
	if audit["operator"] != "alice" || audit["count"] != float64(1) || len(ids) != 1 || ids[0] != res.Replayed[0].NewMsgID {
		t.Fatalf("audit record %v", audit)
	}
	if _, ok := audit["filter"]; !ok {
		t.Fatalf("audit record has no filter: %v", audit)
	}
}

func poll(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within 15s: %s", what)
		}
		<-tick.C
	}
}
