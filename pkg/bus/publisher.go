package bus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"inthub.dev/events"
	"inthub.dev/pkg/fault"
	"inthub.dev/pkg/spool"
)

// PublisherConfig configures a Publisher.
type PublisherConfig struct {
	// Spool keeps events while the bus is unreachable and replays them in
	// order when it is back. Without one, a publish while the bus is down
	// fails with an offline error and the caller must keep the event.
	Spool *spool.Spool
	// SkipValidation turns off the schema check. Only for re-publishing
	// bodies that were validated before (replay) and for benchmarks.
	SkipValidation bool
	// Timeout bounds one publish, ack included (default 5s).
	Timeout time.Duration
	// RetryEvery is how often the spool is retried while the bus stays
	// down (default 1s); a reconnect retries at once.
	RetryEvery time.Duration
	Logger     *slog.Logger
	// TracerProvider makes the producer span of each publish (default: no
	// tracing; the trace context is still carried).
	TracerProvider trace.TracerProvider
}

// Publisher publishes events to JetStream: it validates each against its
// schema, sets Nats-Msg-Id to the event id so JetStream drops duplicates,
// carries the trace context, and, when the bus is down, keeps the event in
// a local fsync'd spool instead of failing. Publish returns once the event
// is durable: acknowledged by JetStream, or on disk in the spool.
type Publisher struct {
	nc     *nats.Conn
	js     jetstream.JetStream
	cfg    PublisherConfig
	log    *slog.Logger
	tracer trace.Tracer

	// mu orders direct publishes against the spool: while anything is
	// spooled, every publish goes to the spool too, so one publisher's
	// events reach the stream in the order it published them.
	mu       sync.RWMutex
	spooling atomic.Bool
	kick     chan struct{}
	stop     chan struct{}
	done     chan struct{}
	closed   atomic.Bool
}

// NewPublisher returns a publisher on nc. Close it to stop its spool replay.
func NewPublisher(nc *nats.Conn, cfg PublisherConfig) (*Publisher, error) {
	if nc == nil {
		return nil, errors.New("bus: NewPublisher needs a NATS connection")
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("bus: jetstream: %w", err)
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 5 * time.Second
	}
	if cfg.RetryEvery <= 0 {
		cfg.RetryEvery = time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.TracerProvider == nil {
		cfg.TracerProvider = noop.NewTracerProvider()
	}
	p := &Publisher{nc: nc, js: js, cfg: cfg, log: cfg.Logger, tracer: cfg.TracerProvider.Tracer(tracerName),
		kick: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
	if cfg.Spool != nil {
		// Events spooled by an earlier process go out before new ones.
		p.spooling.Store(cfg.Spool.Len() > 0)
		go p.replayLoop()
	} else {
		close(p.done)
	}
	return p, nil
}

// Publish publishes ev on the subject named by its type.
func (p *Publisher) Publish(ctx context.Context, ev events.Event) error {
	return p.PublishTo(ctx, ev.Type, ev)
}

// PublishTo publishes ev on subject. A validation failure is permanent.
func (p *Publisher) PublishTo(ctx context.Context, subject string, ev events.Event) error {
	msg, err := p.message(ctx, subject, ev)
	if err != nil {
		return err
	}
	return p.PublishMsg(ctx, msg)
}

// Message builds the NATS message Publish would send, headers included.
func (p *Publisher) message(ctx context.Context, subject string, ev events.Event) (*nats.Msg, error) {
	h := make(nats.Header, 4)
	if ev.TraceParent == "" {
		propagator.Inject(ctx, headerCarrier(h))
		ev.TraceParent = h.Get(HeaderTraceParent)
	} else {
		h.Set(HeaderTraceParent, ev.TraceParent)
	}
	if !p.cfg.SkipValidation {
		if err := ev.Validate(); err != nil {
			return nil, fault.Permanent(fmt.Errorf("bus: publish %s: %w", subject, err))
		}
	}
	body, err := ev.Marshal()
	if err != nil {
		return nil, fault.Permanent(fmt.Errorf("bus: publish %s: %w", subject, err))
	}
	h.Set(HeaderMsgID, ev.ID)
	if ev.TenantID != "" {
		h.Set(HeaderTenantID, ev.TenantID)
	}
	if id := ev.IntegrationID(); id != "" {
		h.Set(HeaderIntegrationID, id)
	}
	return &nats.Msg{Subject: subject, Header: h, Data: body}, nil
}

// PublishMsg publishes a prepared message (its Nats-Msg-Id set by the
// caller) with the same durability as Publish.
//
// The publish is a producer span. Its parent is the trace context the
// message's traceparent header names, else ctx's: a message prepared
// elsewhere (an outbox row, a spooled or replayed message) continues the
// trace it was made in. The header then names the producer span, so the
// consumer's span is its child.
func (p *Publisher) PublishMsg(ctx context.Context, msg *nats.Msg) error {
	if msg.Header == nil {
		msg.Header = nats.Header{}
	}
	if msg.Header.Get(HeaderTraceParent) != "" {
		ctx = propagator.Extract(ctx, headerCarrier(msg.Header))
	}
	ctx, span := p.tracer.Start(ctx, msg.Subject+" publish", trace.WithSpanKind(trace.SpanKindProducer))
	defer span.End()
	propagator.Inject(ctx, headerCarrier(msg.Header))
	if span.IsRecording() {
		span.SetAttributes(
			attribute.String("messaging.system", "nats"),
			attribute.String("messaging.operation.type", "send"),
			attribute.String("messaging.destination.name", msg.Subject),
			attribute.String("messaging.message.id", msg.Header.Get(HeaderMsgID)),
		)
	}
	err := p.publishMsg(ctx, msg)
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
	return err
}

func (p *Publisher) publishMsg(ctx context.Context, msg *nats.Msg) error {
	p.mu.RLock()
	if !p.spooling.Load() && p.nc.Status() == nats.CONNECTED {
		err := p.send(ctx, msg)
		if err == nil || !busDown(err) || p.cfg.Spool == nil {
			p.mu.RUnlock()
			return classify(msg.Subject, err)
		}
		p.log.Warn("bus unreachable, spooling", "subject", msg.Subject, "error", err)
	}
	p.mu.RUnlock()
	if p.cfg.Spool == nil {
		return fault.Offline(fmt.Errorf("bus: publish %s: not connected (%s) and no spool", msg.Subject, p.nc.Status()))
	}
	return p.spoolMsg(ctx, msg)
}

func (p *Publisher) send(ctx context.Context, msg *nats.Msg) error {
	ctx, cancel := context.WithTimeout(ctx, p.cfg.Timeout)
	defer cancel()
	_, err := p.js.PublishMsg(ctx, msg)
	return err
}

func (p *Publisher) spoolMsg(ctx context.Context, msg *nats.Msg) error {
	p.mu.Lock()
	p.spooling.Store(true)
	err := p.cfg.Spool.Append(ctx, spool.Record{Subject: msg.Subject, Header: msg.Header, Data: msg.Data})
	p.mu.Unlock()
	if err != nil {
		return fault.Offline(fmt.Errorf("bus: publish %s: bus down and spool failed: %w", msg.Subject, err))
	}
	select {
	case p.kick <- struct{}{}:
	default:
	}
	return nil
}

// Spooled is the number of events waiting in the spool.
func (p *Publisher) Spooled() int {
	if p.cfg.Spool == nil {
		return 0
	}
	return p.cfg.Spool.Len()
}

// Close stops the spool replay. What is still spooled stays on disk and is
// replayed by the next publisher that opens the spool.
func (p *Publisher) Close() error {
	if p.closed.Swap(true) {
		return nil
	}
	close(p.stop)
	<-p.done
	return nil
}

func (p *Publisher) replayLoop() {
	defer close(p.done)
	status := p.nc.StatusChanged(nats.CONNECTED)
	defer p.nc.RemoveStatusListener(status)
	tick := time.NewTicker(p.cfg.RetryEvery)
	defer tick.Stop()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		<-p.stop
		cancel()
	}()
	for {
		if p.spooling.Load() && p.nc.Status() == nats.CONNECTED {
			p.replay(ctx)
		}
		select {
		case <-p.stop:
			return
		case <-status:
		case <-p.kick:
		case <-tick.C:
		}
	}
}

// replay sends the spool in order. The last records go out under the write
// lock so no direct publish can overtake them; then direct publishing
// resumes.
func (p *Publisher) replay(ctx context.Context) {
	send := func(ctx context.Context, e spool.Entry) error {
		return p.send(ctx, &nats.Msg{Subject: e.Subject, Header: e.Header, Data: e.Data})
	}
	n, err := p.cfg.Spool.Drain(ctx, send)
	if err != nil {
		p.log.Debug("spool replay paused", "replayed", n, "left", p.cfg.Spool.Len(), "error", err)
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	m, err := p.cfg.Spool.Drain(ctx, send)
	if err != nil {
		p.log.Debug("spool replay paused", "replayed", n+m, "error", err)
		return
	}
	if p.cfg.Spool.Len() == 0 {
		p.spooling.Store(false)
		if n+m > 0 {
			p.log.Info("spool replayed", "count", n+m)
		}
	}
}

// busDown tells a bus that cannot take the message now (disconnected,
// JetStream unavailable, no ack in time) from one that refused it.
func busDown(err error) bool {
	// A message over the server's max_payload is refused whatever the
	// bus's state: spooling it would replay it, refused, forever.
	if errors.Is(err, nats.ErrMaxPayload) {
		return false
	}
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		return apiErr.Code == 503
	}
	return true
}

func classify(subject string, err error) error {
	if err == nil {
		return nil
	}
	if busDown(err) {
		return fault.Offline(fmt.Errorf("bus: publish %s: %w", subject, err))
	}
	return fault.Permanent(fmt.Errorf("bus: publish %s: %w", subject, err))
}
