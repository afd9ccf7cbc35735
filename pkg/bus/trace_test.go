package bus

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

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

// A traced publisher adds a producer span between the caller's span and
// the consumer's; a prepared message whose traceparent header names
// another trace (an outbox row written by an earlier request) continues
// that trace, not the caller's.
func TestPublishIsAProducerSpan(t *testing.T) {
	e := newEnv(t)
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })

	cfg := testConfig("trace-producer")
	cfg.TracerProvider = tp
	got := make(chan events.Event, 2)
	w := newWorker(t, e.js, cfg, events.SubjectIntegrationHealthChecked, func(ctx context.Context, ev events.Event) error {
		got <- ev
		return nil
	})
	start(t, w)
	p := e.publisher(PublisherConfig{TracerProvider: tp})
	tracer := tp.Tracer("test")

	// Publish: caller → producer → consumer.
	ctx, caller := tracer.Start(context.Background(), "health check")
	if err := p.Publish(ctx, healthEvent(t, 1, "direct")); err != nil {
		t.Fatal(err)
	}
	caller.End()

	// PublishMsg of a message carrying another trace's context, from a
	// context with a span of its own (the forwarder's pass).
	_, origin := tracer.Start(context.Background(), "POST /api/v1/integrations")
	origin.End()
	ev := healthEvent(t, 2, "prepared")
	ev.TraceParent = fmt.Sprintf("00-%s-%s-01", origin.SpanContext().TraceID(), origin.SpanContext().SpanID())
	body, err := ev.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	msg := &nats.Msg{Subject: ev.Type, Header: nats.Header{}, Data: body}
	msg.Header.Set(HeaderMsgID, ev.ID)
	msg.Header.Set(HeaderTraceParent, ev.TraceParent)
	pass, passSpan := tracer.Start(context.Background(), "outbox pass")
	if err := p.PublishMsg(pass, msg); err != nil {
		t.Fatal(err)
	}
	passSpan.End()

	for range 2 {
		select {
		case <-got:
		case <-time.After(10 * time.Second):
			t.Fatal("not handled")
		}
	}
	spans := func(name string) []sdktrace.ReadOnlySpan {
		var out []sdktrace.ReadOnlySpan
		for _, s := range rec.Ended() {
			if s.Name() == name {
				out = append(out, s)
			}
		}
		return out
	}
	eventually(t, 5*time.Second, "two consumer spans ended", func() bool {
		return len(spans(events.SubjectIntegrationHealthChecked+" process")) == 2
	})
	producers := spans(events.SubjectIntegrationHealthChecked + " publish")
	if len(producers) != 2 {
		t.Fatalf("%d producer spans, want 2", len(producers))
	}
	for _, prod := range producers {
		if prod.SpanKind() != trace.SpanKindProducer {
			t.Errorf("%s is a %s span, want producer", prod.Name(), prod.SpanKind())
		}
		var want trace.SpanContext
		switch prod.Parent().SpanID() {
		case caller.SpanContext().SpanID():
			want = caller.SpanContext()
		case origin.SpanContext().SpanID():
			want = origin.SpanContext()
		default:
			t.Fatalf("producer span's parent %s is neither the caller's span nor the message's origin (the pass's span is %s)",
				prod.Parent().SpanID(), passSpan.SpanContext().SpanID())
		}
		if prod.SpanContext().TraceID() != want.TraceID() {
			t.Errorf("producer span in trace %s, want %s", prod.SpanContext().TraceID(), want.TraceID())
		}
		var consumer sdktrace.ReadOnlySpan
		for _, c := range spans(events.SubjectIntegrationHealthChecked + " process") {
			if c.Parent().SpanID() == prod.SpanContext().SpanID() {
				consumer = c
			}
		}
		if consumer == nil {
			t.Fatalf("no consumer span is a child of the producer span %s", prod.SpanContext().SpanID())
		}
		if consumer.SpanContext().TraceID() != want.TraceID() {
			t.Errorf("consumer span in trace %s, want %s", consumer.SpanContext().TraceID(), want.TraceID())
		}
	}
}
