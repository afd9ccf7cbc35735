package outbox_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"inthub.dev/events"
	"inthub.dev/pkg/bus"
	"inthub.dev/services/catalog/outbox"
)

// The trace of the transaction that wrote a row goes on through the
// outbox: the row's traceparent is the writer's span, the forwarder's
// publish is a producer span in that trace, and the integrations bucket
// holds the traceparent beside a created record until a health change
// rewrites it.
func TestTraceContinuesThroughTheOutbox(t *testing.T) {
	e := newEnv(t)
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	pub, err := bus.NewPublisher(e.srv.Connect(), bus.PublisherConfig{Timeout: 2 * time.Second, TracerProvider: tp})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pub.Close() })
	kv := e.bucket()
	f := e.forwarder(outbox.Config{State: kv, Publisher: pub})
	e.afterCommit = f.Poke
	run(t, f)

	reqCtx, req := tp.Tracer("test").Start(context.Background(), "POST /api/v1/integrations", trace.WithSpanKind(trace.SpanKindServer))
	in, err := e.create(reqCtx, tenants[0], "traced")
	req.End()
	if err != nil {
		t.Fatal(err)
	}
	e.waitDelivered(30 * time.Second)
	want := req.SpanContext()

	// The event on the bus: its envelope names the request's span, its
	// header the forwarder's producer span in the same trace.
	msgs := e.readAll(bus.StreamIntegrations)
	if len(msgs) != 1 {
		t.Fatalf("%d messages, want 1", len(msgs))
	}
	ev, err := events.Parse(msgs[0].Data())
	if err != nil {
		t.Fatal(err)
	}
	if got := spanContextOf(ev.TraceParent); got.TraceID() != want.TraceID() || got.SpanID() != want.SpanID() {
		t.Fatalf("envelope traceparent %q, want the request's span %s/%s", ev.TraceParent, want.TraceID(), want.SpanID())
	}
	var producer sdktrace.ReadOnlySpan
	for _, s := range rec.Ended() {
		if s.Name() == events.SubjectIntegrationCreated+" publish" {
			producer = s
		}
	}
	if producer == nil {
		t.Fatal("no producer span for the forwarded row")
	}
	if producer.SpanContext().TraceID() != want.TraceID() || producer.Parent().SpanID() != want.SpanID() {
		t.Fatalf("producer span in trace %s under %s, want trace %s under the request's span %s",
			producer.SpanContext().TraceID(), producer.Parent().SpanID(), want.TraceID(), want.SpanID())
	}
	if got := spanContextOf(msgs[0].Headers().Get(bus.HeaderTraceParent)); got.SpanID() != producer.SpanContext().SpanID() {
		t.Fatalf("header traceparent names span %s, want the producer span %s", got.SpanID(), producer.SpanContext().SpanID())
	}

	// The bucket: the record with the traceparent beside it.
	key := bus.IntegrationKey(in.tenant, in.id)
	stored := func() map[string]json.RawMessage {
		t.Helper()
		entry, err := kv.Get(context.Background(), key)
		if err != nil {
			t.Fatal(err)
		}
		var m map[string]json.RawMessage
		if err := json.Unmarshal(entry.Value(), &m); err != nil {
			t.Fatalf("stored value does not decode: %v", err)
		}
		return m
	}
	var tpStored string
	_ = json.Unmarshal(stored()["traceparent"], &tpStored)
	if tpStored != ev.TraceParent {
		t.Fatalf("bucket traceparent %q, want the event's %q", tpStored, ev.TraceParent)
	}
	var record events.Integration
	if b, _ := json.Marshal(stored()); json.Unmarshal(b, &record) != nil || record.ID != in.id || record.Version != 1 {
		t.Fatalf("stored record %+v does not read as integration %s v1", record, in.id)
	}

	// A health change rewrites the record without it.
	hc, err := events.New(events.SubjectIntegrationHealthChanged, "inthub/catalog", in.tenant, events.HealthChanged{
		IntegrationID: in.id, TenantID: in.tenant, Type: testType, Status: events.HealthHealthy,
		PreviousStatus: events.HealthUnknown, Message: "ok", CheckedAt: time.Now().UTC()})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.inTenant(context.Background(), in.tenant, func(tx pgx.Tx) error {
		return outbox.Insert(context.Background(), tx, hc, in.id)
	}); err != nil {
		t.Fatal(err)
	}
	e.record(hc, in.tenant, in.id, time.Now().UnixNano())
	e.waitDelivered(30 * time.Second)
	eventually(t, 10*time.Second, func() string { return "health written to the bucket" }, func() bool {
		return string(stored()["healthStatus"]) == `"healthy"`
	})
	if v, ok := stored()["traceparent"]; ok {
		t.Fatalf("bucket still holds traceparent %s after a health change", v)
	}
}

// An event written without a span in the context (the staleness sweep)
// carries no traceparent.
func TestNoSpanNoTraceParent(t *testing.T) {
	e := newEnv(t)
	f := e.forwarder(outbox.Config{})
	e.afterCommit = f.Poke
	run(t, f)
	if _, err := e.create(context.Background(), tenants[0], "untraced"); err != nil {
		t.Fatal(err)
	}
	e.waitDelivered(30 * time.Second)
	for _, m := range e.readAll(bus.StreamIntegrations) {
		ev, err := events.Parse(m.Data())
		if err != nil {
			t.Fatal(err)
		}
		if ev.TraceParent != "" || m.Headers().Get(bus.HeaderTraceParent) != "" {
			t.Fatalf("traceparent %q / header %q without a span", ev.TraceParent, m.Headers().Get(bus.HeaderTraceParent))
		}
	}
}

func spanContextOf(traceparent string) trace.SpanContext {
	ctx := propagation.TraceContext{}.Extract(context.Background(), propagation.MapCarrier{"traceparent": traceparent})
	return trace.SpanContextFromContext(ctx)
}
