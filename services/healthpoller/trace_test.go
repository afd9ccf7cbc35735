package healthpoller_test

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"inthub.dev/events"
	"inthub.dev/pkg/bus"
	"inthub.dev/services/healthpoller"
)

// The first check after a change continues the change's trace (the
// catalog stores its traceparent beside the record in the bucket), and
// publishes its result in it; the checks after that are traces of their
// own.
func TestFirstCheckAfterAChangeContinuesItsTrace(t *testing.T) {
	e := newEnv(t)
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	e.start(t.TempDir(), func(c *healthpoller.Config) { c.TracerProvider = tp })

	_, change := tp.Tracer("test").Start(context.Background(), "POST /api/v1/integrations")
	change.End()
	in := integration(1, `{"script":["healthy"]}`)
	value, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]json.RawMessage
	_ = json.Unmarshal(value, &m)
	m["traceparent"], _ = json.Marshal(fmt.Sprintf("00-%s-%s-01", change.SpanContext().TraceID(), change.SpanContext().SpanID()))
	value, _ = json.Marshal(m)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := e.kv.Put(ctx, bus.IntegrationKey(in.TenantID, in.ID), value); err != nil {
		t.Fatal(err)
	}

	checks := func() []sdktrace.ReadOnlySpan {
		var out []sdktrace.ReadOnlySpan
		for _, s := range rec.Ended() {
			if s.Name() == "health check" {
				out = append(out, s)
			}
		}
		sort.Slice(out, func(i, j int) bool { return out[i].StartTime().Before(out[j].StartTime()) })
		return out
	}
	waitFor(t, 15*time.Second, "three checks", func() bool { return len(checks()) >= 3 })
	cs := checks()
	first := cs[0]
	if first.SpanContext().TraceID() != change.SpanContext().TraceID() || first.Parent().SpanID() != change.SpanContext().SpanID() {
		t.Fatalf("first check in trace %s under %s, want trace %s under the change's span %s",
			first.SpanContext().TraceID(), first.Parent().SpanID(), change.SpanContext().TraceID(), change.SpanContext().SpanID())
	}
	for _, later := range cs[1:] {
		if later.SpanContext().TraceID() == change.SpanContext().TraceID() || later.Parent().IsValid() {
			t.Fatalf("a later check is in trace %s under %s, want a trace of its own", later.SpanContext().TraceID(), later.Parent().SpanID())
		}
	}
	attrs := map[string]string{}
	for _, kv := range first.Attributes() {
		attrs[string(kv.Key)] = kv.Value.String()
	}
	if attrs["inthub.integration_id"] != in.ID || attrs["inthub.health.status"] != "healthy" {
		t.Errorf("check span attributes %v, want the integration id and status healthy", attrs)
	}

	// The result's publish is a child of the check that measured it, and
	// the event on the bus names the check's span.
	var published bool
	for _, s := range rec.Ended() {
		if s.Name() == events.SubjectIntegrationHealthChecked+" publish" && s.Parent().SpanID() == first.SpanContext().SpanID() {
			published = s.SpanContext().TraceID() == change.SpanContext().TraceID() && s.SpanKind() == trace.SpanKindProducer
		}
	}
	if !published {
		t.Fatal("no producer span of integration.health_checked under the first check, in the change's trace")
	}
	cons, err := e.js.OrderedConsumer(ctx, bus.StreamIntegrations, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{events.SubjectIntegrationHealthChecked},
	})
	if err != nil {
		t.Fatal(err)
	}
	msg, err := cons.Next(jetstream.FetchMaxWait(5 * time.Second))
	if err != nil {
		t.Fatal(err)
	}
	ev, err := events.Parse(msg.Data())
	if err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprintf("00-%s-%s-01", first.SpanContext().TraceID(), first.SpanContext().SpanID()); ev.TraceParent != want {
		t.Fatalf("first health_checked names %q, want the first check's span %q", ev.TraceParent, want)
	}
}
