package bus

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
)

// Delivery describes the JetStream delivery behind a message in a handler:
// how often it was delivered, where it sits in its stream, and a way to
// tell the server the handler is still working on it.
type Delivery struct {
	Subject      string
	Stream       string
	Consumer     string
	StreamSeq    uint64
	NumDelivered uint64
	// Deferrals is how many earlier deliveries of this message were no
	// attempt: a handler deferred them (Defer), or a stopping worker
	// handed them back unhandled. The worker's ledger (BucketDeferrals)
	// counts them; they do not count toward MaxDeliver.
	Deferrals uint64
	// MaxDeliver is the worker's limit of counted deliveries (Counted): a
	// failure on the delivery that reaches it is dead-lettered. The server
	// itself sets no limit (see BucketDeferrals).
	MaxDeliver int
	Stored     time.Time
	Header     nats.Header

	inProgress func() error
	// deferralsUnknown: the ledger could not be read, so Counted may be too
	// high; such a delivery is never dead-lettered for exhaustion.
	deferralsUnknown bool
	nakDelay         atomic.Int64
	attempts         atomic.Int32
}

type deliveryKey struct{}

// DeliveryFrom returns the delivery of the message whose context ctx is, or
// nil outside a worker.
func DeliveryFrom(ctx context.Context) *Delivery {
	d, _ := ctx.Value(deliveryKey{}).(*Delivery)
	return d
}

func withDelivery(ctx context.Context, d *Delivery) context.Context {
	return context.WithValue(ctx, deliveryKey{}, d)
}

// InProgress resets the server's ack timer. The frame already does this on
// a ticker while a handler runs; call it yourself only before a step that
// may block longer than the ack wait without returning control.
func (d *Delivery) InProgress() error {
	if d == nil || d.inProgress == nil {
		return nil
	}
	return d.inProgress()
}

// Counted is the number of deliveries of this message that count toward
// MaxDeliver, this one included: the deliveries that were not deferred.
// It is the attempt number a handler should report.
func (d *Delivery) Counted() uint64 {
	if d == nil {
		return 0
	}
	if d.Deferrals >= d.NumDelivered {
		return min(d.NumDelivered, 1)
	}
	return d.NumDelivered - d.Deferrals
}

// LastAttempt reports whether a failure of this delivery is dead-lettered
// rather than redelivered: the counted deliveries reached MaxDeliver.
func (d *Delivery) LastAttempt() bool {
	return d.MaxDeliver > 0 && !d.deferralsUnknown && d.Counted() >= uint64(d.MaxDeliver)
}

// setNakDelay is how the outcome layer tells the subscriber how long to wait
// before the redelivery of a message it is about to nack.
func (d *Delivery) setNakDelay(delay time.Duration) { d.nakDelay.Store(int64(delay)) }

func (d *Delivery) getNakDelay() time.Duration { return time.Duration(d.nakDelay.Load()) }

// Attempts counts the handler calls made for this delivery so far (the
// in-process retry makes several per delivery).
func (d *Delivery) Attempts() int {
	if d == nil {
		return 0
	}
	return int(d.attempts.Load())
}

func (d *Delivery) attempt() {
	if d != nil {
		d.attempts.Add(1)
	}
}
