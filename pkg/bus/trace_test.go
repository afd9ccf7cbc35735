package bus

import (
	"context"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"inthub.dev/events"
)

// A trace started by the publisher's caller continues in the worker: the
// consumer span is a child of the publishing span, in the same trace.
func TestTraceContinuesFromPublisherToHandler(t *testing.T) {
	e := newEnv(t)
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })

	cfg := testConfig("trace")
	cfg.TracerProvider = tp
	got := make(chan events.Event, 1)
	w := newWorker(t, e.js, cfg, events.SubjectIntegrationHealthChecked, func(ctx context.Context, ev events.Event) error {
		got <- ev
		return nil
	})
	start(t, w)

	ctx, span := tp.Tracer("test").Start(context.Background(), "POST /api/v1/integrations")
	p := e.publisher(PublisherConfig{})
	if err := p.Publish(ctx, healthEvent(t, 1, "traced")); err != nil {
		t.Fatal(err)
	}
	span.End()
	var ev events.Event
	select {
	case ev = <-got:
	case <-time.After(10 * time.Second):
		t.Fatal("not handled")
	}
	if ev.TraceParent == "" {
		t.Fatal("envelope has no traceparent")
	}
	var consumer sdktrace.ReadOnlySpan
	eventually(t, 5*time.Second, "consumer span ended", func() bool {
		for _, s := range rec.Ended() {
			if s.Name() == events.SubjectIntegrationHealthChecked+" process" {
				consumer = s
				return true
			}
		}
		return false
	})
	if consumer.SpanContext().TraceID() != span.SpanContext().TraceID() {
		t.Fatalf("consumer span in trace %s, want %s", consumer.SpanContext().TraceID(), span.SpanContext().TraceID())
	}
	if consumer.Parent().SpanID() != span.SpanContext().SpanID() {
		t.Fatalf("consumer span's parent %s, want the publishing span %s", consumer.Parent().SpanID(), span.SpanContext().SpanID())
	}
}
