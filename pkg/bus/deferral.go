package bus

import (
	"errors"
	"time"

	"inthub.dev/pkg/fault"
)

// Defer is what a handler returns when it must not act yet and nothing
// failed: a write budget is spent, the provider asked to wait. The
// message is redelivered after about d like any transient error, but the
// in-process retry does not sleep for it (waiting is redelivery, never a
// sleeping handler) and the circuit breaker does not count it: a budget
// that runs short says nothing about the downstream's health.
//
// Each deferral is still a delivery: a handler that defers must make sure
// the message gets its turn within a few deliveries (for example by
// reserving a slot in the future, see services/annotation).
func Defer(d time.Duration, reason string) error {
	return fault.RetryAfter(&Deferral{After: d, Reason: reason}, max(d, time.Millisecond))
}

// Deferral is the error Defer returns.
type Deferral struct {
	After  time.Duration
	Reason string
}

func (d *Deferral) Error() string {
	return "deferred " + d.After.Round(time.Millisecond).String() + ": " + d.Reason
}

// IsDeferral reports whether err is, or wraps, a Deferral.
func IsDeferral(err error) bool {
	var d *Deferral
	return errors.As(err, &d)
}
