package bus

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"inthub.dev/pkg/fault"
)

// Outcome is what the frame did with a message whose handler failed.
type Outcome int

const (
	OutcomeRedeliver  Outcome = iota // nacked with a delay
	OutcomeDeadLetter                // written to dlq.<subject>, acked
	OutcomeSpooled                   // written to spool.<subject>.<integration>, acked
)

func (o Outcome) String() string {
	switch o {
	case OutcomeDeadLetter:
		return "dead_letter"
	case OutcomeSpooled:
		return "spooled"
	default:
		return "redeliver"
	}
}

// Failure describes a failed delivery to an OnFailure hook.
type Failure struct {
	Delivery *Delivery
	Outcome  Outcome
	Class    fault.Class
	Err      error
	Body     []byte
}

// Redelivery returns the delay before the next delivery of a message that
// failed transiently on its n-th delivery.
type Redelivery func(n uint64) time.Duration

// ExponentialRedelivery doubles from base up to ceiling, with ±20% jitter so
// that messages failing together do not come back together.
func ExponentialRedelivery(base, ceiling time.Duration) Redelivery {
	return func(n uint64) time.Duration {
		d := base
		for i := uint64(1); i < n && d < ceiling; i++ {
			d *= 2
		}
		d = min(d, ceiling)
		jitter := time.Duration(rand.Int64N(int64(d)/5+1)) - d/10
		return max(d+jitter, time.Millisecond)
	}
}

// outcome is the one place that decides what happens to a failed message:
//
//   - permanent error, or the last counted delivery failed: dead letter, ack;
//   - offline error: spool subject, ack;
//   - a deferral: nack until its slot is due, recorded in the ledger so
//     that it does not count toward MaxDeliver;
//   - anything else: nack with a delay that grows with the counted
//     deliveries, so a slow key never blocks the others.
//
// A dead letter or spool write that fails leaves the message unacked: it is
// redelivered, never dropped.
type outcome struct {
	js         jetstream.JetStream
	service    string
	redelivery Redelivery
	timeout    time.Duration
	log        *slog.Logger
	onFailure  func(context.Context, Failure)
	firstSeen  *failureTimes
	// ledger counts deferrals; set by Run before the first message.
	ledger *ledger
	// deferFor bounds how long after it was stored a message may still be
	// deferred (half its stream's MaxAge; 0: no bound): past it a deferral
	// is dead-lettered, since the stream would soon drop the message
	// unannounced.
	deferFor time.Duration
}

func (o *outcome) Middleware(h message.HandlerFunc) message.HandlerFunc {
	return func(msg *message.Message) ([]*message.Message, error) {
		d := DeliveryFrom(msg.Context())
		if d == nil {
			return h(msg)
		}
		if d.NumDelivered > 1 {
			// A first delivery was never deferred: only redeliveries
			// read the ledger.
			n, err := o.ledger.count(msg.Context(), d.StreamSeq)
			if err != nil {
				d.deferralsUnknown = true
				o.log.Warn("cannot read the deferral count; this delivery is not dead-lettered for exhaustion",
					"subject", d.Subject, "seq", d.StreamSeq, "error", err.Error())
			}
			d.Deferrals = n
		}
		if d.MaxDeliver > 0 && !d.deferralsUnknown && d.Counted() > uint64(d.MaxDeliver+spareDeliveries) {
			// The consumer has no server-side limit: a message whose
			// deliveries keep ending without an outcome (it crashes the
			// process, its acks are lost) stops here, in the DLQ.
			err := fault.Transient(fmt.Errorf("gave up after %d counted deliveries without an outcome (the handler never returned: a crash, lost acks, or dead letters that could not be written)", d.Counted()))
			return o.failed(msg, d, err, OutcomeDeadLetter)
		}
		out, err := h(msg)
		if err == nil {
			o.firstSeen.forget(d.StreamSeq)
			return out, nil
		}
		oc := decide(fault.ClassOf(err), d)
		if IsDeferral(err) {
			oc = OutcomeRedeliver
			if age := time.Since(d.Stored); o.deferFor > 0 && !d.Stored.IsZero() && age+fault.RetryAfterOf(err) > o.deferFor {
				// No longer a deferral: the message ends here, reported.
				err = fault.Permanent(fmt.Errorf("%v, still %s after the message was stored; its stream keeps messages for %s",
					err, age.Round(time.Second), 2*o.deferFor))
				oc = OutcomeDeadLetter
			}
		}
		return o.failed(msg, d, err, oc)
	}
}

// failed carries out oc for a message whose handler returned err.
func (o *outcome) failed(msg *message.Message, d *Delivery, err error, oc Outcome) ([]*message.Message, error) {
	now := time.Now().UTC()
	first := o.firstSeen.note(d.StreamSeq, now)
	class := fault.ClassOf(err)
	f := Failure{Delivery: d, Class: class, Err: err, Body: msg.Payload, Outcome: oc}
	switch f.Outcome {
	case OutcomeSpooled:
		if werr := o.write(msg, d, SpoolSubject(d.Subject, d.Header.Get(HeaderIntegrationID)), class, err, first, now); werr != nil {
			return nil, o.redeliver(d, fmt.Errorf("%w (and spooling failed: %v)", err, werr))
		}
	case OutcomeDeadLetter:
		if werr := o.write(msg, d, DLQSubject(d.Subject), class, err, first, now); werr != nil {
			return nil, o.redeliver(d, fmt.Errorf("%w (and dead-lettering failed: %v)", err, werr))
		}
	default:
		if IsDeferral(err) {
			// A reserved slot: come back when it is due, not on the
			// failure backoff. Recorded before the nak, so that a crash
			// in between still leaves the delivery counted as a deferral.
			d.setNakDelay(fault.RetryAfterOf(err))
			if _, lerr := o.ledger.add(msg.Context(), d.StreamSeq); lerr != nil {
				o.log.Warn("deferral not recorded; this delivery will count toward MaxDeliver",
					"subject", d.Subject, "seq", d.StreamSeq, "error", lerr.Error())
			}
		} else {
			d.setNakDelay(max(o.redelivery(d.Counted()), fault.RetryAfterOf(err)))
		}
	}
	o.log.LogAttrs(msg.Context(), levelOf(f.Outcome), "message failed",
		slog.String("subject", d.Subject), slog.Uint64("seq", d.StreamSeq),
		slog.Uint64("delivery", d.NumDelivered), slog.Uint64("deferrals", d.Deferrals),
		slog.String("class", class.String()),
		slog.String("outcome", f.Outcome.String()), slog.String("error", err.Error()),
		slog.String("tenantId", d.Header.Get(HeaderTenantID)),
		slog.String("integrationId", d.Header.Get(HeaderIntegrationID)))
	if o.onFailure != nil {
		o.onFailure(msg.Context(), f)
	}
	if f.Outcome == OutcomeRedeliver {
		return nil, err
	}
	o.firstSeen.forget(d.StreamSeq)
	return nil, nil
}

// decide maps an error class and the counted deliveries to what happens
// next. A deferral is not decided here: it is redelivered whatever the
// count (see outcome.Middleware).
func decide(class fault.Class, d *Delivery) Outcome {
	switch {
	case class == fault.ClassOffline:
		return OutcomeSpooled
	case class == fault.ClassPermanent || d.LastAttempt():
		return OutcomeDeadLetter
	default:
		return OutcomeRedeliver
	}
}

func (o *outcome) redeliver(d *Delivery, err error) error {
	d.setNakDelay(o.redelivery(d.Counted()))
	return err
}

func levelOf(o Outcome) slog.Level {
	if o == OutcomeRedeliver {
		return slog.LevelInfo
	}
	return slog.LevelWarn
}

// write stores the untouched body on subject with the failure in headers,
// and waits for JetStream's ack before the original is acked.
func (o *outcome) write(msg *message.Message, d *Delivery, subject string, class fault.Class, cause error, first, last time.Time) error {
	h := make(nats.Header, len(d.Header)+10)
	for k, v := range d.Header {
		h[k] = v
	}
	// The same failure written twice (ack lost, redelivered) is dropped by
	// the duplicate window.
	h.Set(HeaderMsgID, fmt.Sprintf("%s:%s:%d", subject, d.Stream, d.StreamSeq))
	// A replayed message that fails again keeps naming the event it began as.
	if d.Header.Get(HeaderOriginalMsgID) == "" {
		h.Set(HeaderOriginalMsgID, d.Header.Get(HeaderMsgID))
	}
	h.Set(HeaderOriginalSubject, d.Subject)
	h.Set(HeaderStreamSequence, strconv.FormatUint(d.StreamSeq, 10))
	h.Set(HeaderDeliveryCount, strconv.FormatUint(d.NumDelivered, 10))
	if d.Deferrals > 0 {
		h.Set(HeaderDeferralCount, strconv.FormatUint(d.Deferrals, 10))
	}
	h.Set(HeaderErrorClass, class.String())
	h.Set(HeaderLastError, truncate(cause.Error(), 2048))
	h.Set(HeaderService, o.service)
	h.Set(HeaderFirstFailure, first.Format(time.RFC3339Nano))
	h.Set(HeaderLastFailure, last.Format(time.RFC3339Nano))
	if class == fault.ClassOffline {
		h.Set(HeaderSpooledAt, last.Format(time.RFC3339Nano))
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(msg.Context()), o.timeout)
	defer cancel()
	_, err := o.js.PublishMsg(ctx, &nats.Msg{Subject: subject, Header: h, Data: msg.Payload})
	return err
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// failureTimes remembers when a message first failed, for the dead letter's
// first-failure header. It is per process: after a restart the first
// failure seen by the new process is reported.
type failureTimes struct {
	mu sync.Mutex
	m  map[uint64]time.Time
	// n mirrors len(m) so the success path skips the lock when nothing
	// is failing.
	n atomic.Int64
}

const maxFailureTimes = 100_000

func (f *failureTimes) note(seq uint64, now time.Time) time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	if t, ok := f.m[seq]; ok {
		return t
	}
	if len(f.m) >= maxFailureTimes {
		clear(f.m)
	}
	f.m[seq] = now
	f.n.Store(int64(len(f.m)))
	return now
}

func (f *failureTimes) forget(seq uint64) {
	if f.n.Load() == 0 {
		return
	}
	f.mu.Lock()
	delete(f.m, seq)
	f.n.Store(int64(len(f.m)))
	f.mu.Unlock()
}
