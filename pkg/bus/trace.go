package bus

import (
	"strings"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

const tracerName = "inthub.dev/pkg/bus"

// propagator is the W3C trace context: what the CloudEvents traceparent
// extension and the traceparent header carry.
var propagator = propagation.TraceContext{}

// Trace continues the trace the publisher started (traceparent header) with
// a consumer span around everything the frame does with the message, so a
// dead letter or a redelivery shows up in the same trace.
func Trace(tp trace.TracerProvider) message.HandlerMiddleware {
	tracer := tp.Tracer(tracerName)
	return func(h message.HandlerFunc) message.HandlerFunc {
		return func(msg *message.Message) ([]*message.Message, error) {
			d := DeliveryFrom(msg.Context())
			orig := msg.Context()
			ctx := orig
			subject := ""
			if d != nil {
				subject = d.Subject
				ctx = propagator.Extract(ctx, headerCarrier(d.Header))
			}
			ctx, span := tracer.Start(ctx, subject+" process", trace.WithSpanKind(trace.SpanKindConsumer))
			defer span.End()
			// Attributes cost allocations; build them only for a span
			// that is recorded.
			if span.IsRecording() {
				span.SetAttributes(
					attribute.String("messaging.system", "nats"),
					attribute.String("messaging.destination.name", subject),
					attribute.String("messaging.message.id", msg.UUID),
				)
				if d != nil {
					span.SetAttributes(
						attribute.Int64("messaging.nats.stream_sequence", int64(d.StreamSeq)),
						attribute.Int64("messaging.nats.num_delivered", int64(d.NumDelivered)),
					)
				}
			}
			msg.SetContext(ctx)
			defer msg.SetContext(orig)
			out, err := h(msg)
			if err != nil {
				span.RecordError(err)
				span.SetStatus(codes.Error, err.Error())
			}
			return out, err
		}
	}
}

// headerCarrier lets the W3C propagator read and write NATS headers. NATS
// header keys are case-sensitive; W3C names are lower-case, and a header
// set by another client in any case is still found.
type headerCarrier nats.Header

func (c headerCarrier) Get(key string) string {
	if v := nats.Header(c).Get(key); v != "" {
		return v
	}
	for k, v := range c {
		if len(v) > 0 && strings.EqualFold(k, key) {
			return v[0]
		}
	}
	return ""
}

func (c headerCarrier) Set(key, value string) { nats.Header(c).Set(key, value) }

func (c headerCarrier) Keys() []string {
	keys := make([]string, 0, len(c))
	for k := range c {
		keys = append(keys, k)
	}
	return keys
}
