package bus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/cenkalti/backoff/v4"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"inthub.dev/events"
	"inthub.dev/pkg/fault"
)

// Handler handles one event. Return nil when its effect is done, or an
// error classified with package fault; the frame does the rest.
type Handler func(ctx context.Context, ev events.Event) error

// WorkerConfig configures a Worker. Service and Stream are required.
type WorkerConfig struct {
	Service string // names the service in dead letters and logs
	Stream  string // the stream to consume, e.g. bus.StreamSCM
	Durable string // durable consumer name, default Service

	AckWait time.Duration // default 30s; in-progress acks extend it while a handler runs
	// MaxDeliver is how many counted deliveries a message gets before a
	// transient failure is dead-lettered, default 5. Deferrals (Defer) do
	// not count; see BucketDeferrals.
	MaxDeliver  int
	Concurrency int // messages handled at once, default 8
	// PullBatch is how many messages the client buffers ahead of the
	// handlers, default 8 per handler slot. Buffered messages age against
	// AckWait before a handler takes them: keep PullBatch/Concurrency times
	// the slowest handler's time below AckWait.
	PullBatch int
	// ConfirmAcks waits for the server to confirm each ack (double ack):
	// slower, but an ack lost on the wire cannot cause a redelivery.
	ConfirmAcks    bool
	HandlerTimeout time.Duration // per handler call, default 30s
	Retry          RetryPolicy
	Breaker        BreakerPolicy
	Redelivery     Redelivery // default ExponentialRedelivery(1s, 1m)
	// Idempotency, when set, skips events whose source+id was already
	// handled (see NewIdempotencyGuard).
	Idempotency *IdempotencyGuard
	// OnFailure is told of every failed delivery and what became of it
	// (annotation uses it to publish scm.annotation.failed).
	OnFailure func(context.Context, Failure)

	Logger         *slog.Logger
	TracerProvider trace.TracerProvider
}

// spareDeliveries are counted deliveries a message may still get after
// MaxDeliver, for a dead letter that could not be written (bus trouble) to
// be tried again with the handler. Past them the worker dead-letters the
// message without calling the handler: deliveries that keep ending without
// an outcome (a message that crashes the process) end in the DLQ.
const spareDeliveries = 10

func (c *WorkerConfig) defaults() error {
	if c.Service == "" {
		return errors.New("bus: WorkerConfig.Service is required (it names the service in dead letters)")
	}
	if c.Stream == "" {
		return errors.New("bus: WorkerConfig.Stream is required, e.g. bus.StreamSCM")
	}
	if c.Durable == "" {
		c.Durable = c.Service
	}
	if c.AckWait <= 0 {
		c.AckWait = 30 * time.Second
	}
	if c.MaxDeliver <= 0 {
		c.MaxDeliver = 5
	}
	if c.Concurrency <= 0 {
		c.Concurrency = 8
	}
	if c.PullBatch <= 0 {
		c.PullBatch = 8 * c.Concurrency
	}
	if c.HandlerTimeout <= 0 {
		c.HandlerTimeout = 30 * time.Second
	}
	if c.Redelivery == nil {
		c.Redelivery = ExponentialRedelivery(time.Second, time.Minute)
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.TracerProvider == nil {
		c.TracerProvider = noop.NewTracerProvider()
	}
	c.Logger = c.Logger.With("service", c.Service)
	return nil
}

// Worker consumes one durable pull consumer and runs every message through
// the middleware stack into the handler registered for its subject.
type Worker struct {
	js       jetstream.JetStream
	cfg      WorkerConfig
	handlers map[string]Handler
	breakers *Breakers
	outcome  *outcome
	running  chan struct{}

	// layers is the middleware stack, outermost first. Tests reorder it
	// to prove the order matters.
	layers []message.HandlerMiddleware
	// innermost is dispatch; benchmarks swap it to time the stack alone.
	innermost message.NoPublishHandlerFunc
}

// NewWorker returns a worker; register handlers with Handle, then Run.
func NewWorker(js jetstream.JetStream, cfg WorkerConfig) (*Worker, error) {
	if js == nil {
		return nil, errors.New("bus: NewWorker needs a JetStream context")
	}
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	w := &Worker{js: js, cfg: cfg, handlers: map[string]Handler{}, running: make(chan struct{})}
	w.breakers = NewBreakers(cfg.Breaker, cfg.Logger)
	w.outcome = &outcome{js: js, service: cfg.Service, redelivery: cfg.Redelivery,
		timeout: 10 * time.Second, log: cfg.Logger, onFailure: cfg.OnFailure,
		firstSeen: &failureTimes{m: map[uint64]time.Time{}}}
	w.innermost = w.dispatch
	w.layers = Stack(cfg.TracerProvider, w.outcome.Middleware, w.breakers.Middleware, cfg.Retry, cfg.HandlerTimeout)
	return w, nil
}

// Stack is the middleware stack of every service, outermost first:
// trace → outcome → retry → breaker → timeout → recover.
func Stack(tp trace.TracerProvider, outcome, breaker message.HandlerMiddleware, retry RetryPolicy, timeout time.Duration) []message.HandlerMiddleware {
	return []message.HandlerMiddleware{
		Trace(tp),
		outcome,
		Retry(retry),
		breaker,
		Timeout(timeout),
		Recover,
	}
}

// Handle registers h for events on subject (exact subject, no wildcards).
// Call before Run.
func (w *Worker) Handle(subject string, h Handler) {
	w.handlers[subject] = h
}

// Breakers exposes the per-key breakers (state for health and metrics).
func (w *Worker) Breakers() *Breakers { return w.breakers }

// Running is closed once the worker consumes.
func (w *Worker) Running() <-chan struct{} { return w.running }

// Consumer is the durable consumer's configuration as the worker creates it.
func (w *Worker) Consumer() jetstream.ConsumerConfig {
	subjects := make([]string, 0, len(w.handlers))
	for s := range w.handlers {
		subjects = append(subjects, s)
	}
	return jetstream.ConsumerConfig{
		Durable:        w.cfg.Durable,
		Description:    "inthub " + w.cfg.Service,
		FilterSubjects: subjects,
		AckPolicy:      jetstream.AckExplicitPolicy,
		AckWait:        w.cfg.AckWait,
		// No server-side limit: the server counts a deferral (a delayed
		// nak) as a delivery, and at its limit it stops delivering the
		// message with no more than an advisory. The worker enforces
		// MaxDeliver on the deliveries that count (BucketDeferrals).
		MaxDeliver:    -1,
		MaxAckPending: max(1000, 4*w.cfg.Concurrency),
		DeliverPolicy: jetstream.DeliverAllPolicy,
	}
}

// Run creates or updates the durable consumer and handles messages until
// ctx is cancelled. Messages in flight are finished or nacked for
// redelivery; none is lost.
func (w *Worker) Run(ctx context.Context) error {
	if len(w.handlers) == 0 {
		return errors.New("bus: worker has no handlers; call Handle before Run")
	}
	cons, err := w.createConsumer(ctx)
	if err != nil {
		return err
	}
	if w.outcome.ledger == nil {
		// Tests may set a ledger of their own before Run.
		if err := w.openLedger(ctx); err != nil {
			return err
		}
	}
	sub := &subscriber{
		consumer: cons, stream: w.cfg.Stream, name: w.cfg.Durable,
		concurrency: w.cfg.Concurrency, pullBatch: w.cfg.PullBatch, maxDeliver: w.cfg.MaxDeliver,
		ackWait: w.cfg.AckWait, confirmAcks: w.cfg.ConfirmAcks,
		log: w.cfg.Logger, closing: make(chan struct{}), ledger: w.outcome.ledger,
		recreate: w.createConsumer,
	}
	// The router logs at trace level twice per message; building those
	// records costs a few percent of throughput even when filtered out.
	var wmLog watermill.LoggerAdapter = watermill.NopLogger{}
	if w.cfg.Logger.Enabled(ctx, slog.LevelDebug) {
		wmLog = watermill.NewSlogLoggerWithLevelMapping(w.cfg.Logger, map[slog.Level]slog.Level{
			// The outcome layer logs every failure with its decision; the
			// router's own error line would say it twice.
			slog.LevelError: slog.LevelDebug,
			slog.LevelInfo:  slog.LevelDebug,
		})
	}
	router, err := message.NewRouter(message.RouterConfig{CloseTimeout: w.cfg.HandlerTimeout + 5*time.Second}, wmLog)
	if err != nil {
		return fmt.Errorf("bus: router: %w", err)
	}
	for _, m := range w.layers {
		router.AddMiddleware(m)
	}
	router.AddConsumerHandler(w.cfg.Durable, w.cfg.Durable, sub, w.innermost)
	go func() {
		select {
		case <-router.Running():
			close(w.running)
		case <-ctx.Done():
		}
	}()
	// The router closes the subscriber only on some shutdown paths.
	defer sub.Close()
	if err := router.Run(ctx); err != nil {
		return fmt.Errorf("bus: worker %s: %w", w.cfg.Service, err)
	}
	return nil
}

// createConsumer creates or updates the durable consumer, waiting for the
// bus if it is down: a worker started during a NATS outage (or a restart
// of the server) must begin once it is back, not fail its service.
func (w *Worker) createConsumer(ctx context.Context) (jetstream.Consumer, error) {
	b := backoff.WithContext(backoff.NewExponentialBackOff(
		backoff.WithInitialInterval(250*time.Millisecond),
		backoff.WithMaxInterval(5*time.Second),
		backoff.WithMaxElapsedTime(0),
	), ctx)
	attempt := 0
	var cons jetstream.Consumer
	err := backoff.Retry(func() error {
		attempt++
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		var err error
		cons, err = w.js.CreateOrUpdateConsumer(cctx, w.cfg.Stream, w.Consumer())
		if err != nil && ctx.Err() == nil {
			w.cfg.Logger.Warn("cannot create the consumer yet; retrying", "durable", w.cfg.Durable,
				"stream", w.cfg.Stream, "attempt", attempt, "error", err.Error())
		}
		return err
	}, b)
	if err != nil {
		return nil, fmt.Errorf("bus: consumer %s on %s: %w", w.cfg.Durable, w.cfg.Stream, err)
	}
	return cons, nil
}

// openLedger opens the deferral counts and reads how long the stream keeps
// a message (deferrals must end well before), waiting for the bus like
// createConsumer.
func (w *Worker) openLedger(ctx context.Context) error {
	b := backoff.WithContext(backoff.NewExponentialBackOff(
		backoff.WithInitialInterval(250*time.Millisecond),
		backoff.WithMaxInterval(5*time.Second),
		backoff.WithMaxElapsedTime(0),
	), ctx)
	err := backoff.Retry(func() error {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		l, err := openLedger(cctx, w.js, w.cfg.Stream, w.cfg.Durable)
		if err != nil {
			if ctx.Err() == nil {
				w.cfg.Logger.Warn("cannot open the deferrals bucket yet; retrying", "error", err.Error())
			}
			return err
		}
		st, err := w.js.Stream(cctx, w.cfg.Stream)
		if err != nil {
			return err
		}
		w.outcome.ledger = l
		w.outcome.deferFor = st.CachedInfo().Config.MaxAge / 2
		return nil
	}, b)
	if err != nil {
		return fmt.Errorf("bus: worker %s: %w", w.cfg.Service, err)
	}
	return nil
}

// dispatch is the innermost layer: it decodes and validates the event (a
// failure is poison: permanent, dead-lettered, never retried) and calls the
// handler registered for the subject.
func (w *Worker) dispatch(msg *message.Message) error {
	ctx := msg.Context()
	d := DeliveryFrom(ctx)
	subject := ""
	if d != nil {
		subject = d.Subject
	}
	h, ok := w.handlers[subject]
	if !ok {
		return fault.Permanentf("no handler for subject %q in %s", subject, w.cfg.Service)
	}
	ev, err := events.Parse(msg.Payload)
	if err != nil {
		return fault.Permanentf("undecodable or invalid event: %w", err)
	}
	if ev.Type != subject {
		return fault.Permanentf("event type %q does not match subject %q", ev.Type, subject)
	}
	if w.cfg.Idempotency != nil {
		return w.cfg.Idempotency.Do(ctx, ev, h)
	}
	return h(ctx, ev)
}
