package healthpoller

import (
	"context"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"inthub.dev/services/healthpoller/schedule"
)

// traceBook carries trace context across the two hand-offs of the
// poller that are not function calls: from a change of an integration
// (seen in the integrations bucket) to the check that follows it, and
// from a check to the report of its result (the scheduler calls Check and
// Report separately). Each map holds at most one entry per integration.
type traceBook struct {
	mu      sync.Mutex
	seen    map[string]string            // id → traceparent of the last change seen
	pending map[string]trace.SpanContext // id → the change its next check continues
	checks  map[string]checkSpan         // id → its last check's span, for the report
}

type checkSpan struct {
	at time.Time // the result's CheckedAt: pairs the report with its check
	sc trace.SpanContext
}

func newTraceBook() *traceBook {
	return &traceBook{seen: map[string]string{}, pending: map[string]trace.SpanContext{}, checks: map[string]checkSpan{}}
}

// changed notes that integration id changed in the trace traceparent. The
// same traceparent twice (a Resync, a repeated watch entry) is one change.
func (b *traceBook) changed(id, traceparent string) {
	if traceparent == "" {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.seen[id] == traceparent {
		return
	}
	b.seen[id] = traceparent
	ctx := propagation.TraceContext{}.Extract(context.Background(), propagation.MapCarrier{"traceparent": traceparent})
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
		b.pending[id] = sc
	}
}

// take returns the change that id's next check continues, once.
func (b *traceBook) take(id string) (trace.SpanContext, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	sc, ok := b.pending[id]
	delete(b.pending, id)
	return sc, ok
}

// checked keeps the span of id's check whose result is dated at.
func (b *traceBook) checked(id string, at time.Time, sc trace.SpanContext) {
	if !sc.IsValid() {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.checks[id] = checkSpan{at: at, sc: sc}
}

// report returns the span of the check whose result is dated at. A result
// the scheduler made itself (a check past its deadline) matches none and
// is published in a trace of its own.
func (b *traceBook) report(id string, at time.Time) (trace.SpanContext, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	c, ok := b.checks[id]
	if !ok || !c.at.Equal(at) {
		return trace.SpanContext{}, false
	}
	delete(b.checks, id)
	return c.sc, true
}

func (b *traceBook) forget(id string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.seen, id)
	delete(b.pending, id)
	delete(b.checks, id)
}

// startCheck starts the span of one check: a child of the change the check
// follows, if it follows one, else the root of a trace of its own.
func (s *Service) startCheck(ctx context.Context, t schedule.Target) (context.Context, trace.Span) {
	if sc, ok := s.traces.take(t.ID); ok {
		ctx = trace.ContextWithRemoteSpanContext(ctx, sc)
	}
	ctx, span := s.tracer.Start(ctx, "health check")
	// Built only for a recorded span: a poller checks thousands of
	// integrations a minute, most of them untraced.
	if span.IsRecording() {
		span.SetAttributes(
			attribute.String("inthub.integration_id", t.ID),
			attribute.String("inthub.tenant_id", t.TenantID),
			attribute.String("inthub.integration_type", t.Type),
			attribute.String("inthub.provider", t.Provider),
		)
	}
	return ctx, span
}
