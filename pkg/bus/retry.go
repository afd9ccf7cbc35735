package bus

import (
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/cenkalti/backoff/v4"

	"inthub.dev/pkg/fault"
)

// RetryPolicy bounds the short in-process retry. It must stay well below the
// consumer's AckWait: longer waits belong to delayed redelivery, which frees
// the worker slot for other keys.
type RetryPolicy struct {
	Attempts   int           // total tries per delivery, default 3
	Initial    time.Duration // first wait, default 100ms
	Max        time.Duration // longest single wait, default 1s
	MaxElapsed time.Duration // whole budget per delivery, default 3s
}

func (p RetryPolicy) withDefaults() RetryPolicy {
	if p.Attempts <= 0 {
		p.Attempts = 3
	}
	if p.Initial <= 0 {
		p.Initial = 100 * time.Millisecond
	}
	if p.Max <= 0 {
		p.Max = time.Second
	}
	if p.MaxElapsed <= 0 {
		p.MaxElapsed = 3 * time.Second
	}
	return p
}

// Retry retries transient and unclassified errors with exponential backoff
// and jitter. Permanent and offline errors, and transient ones whose
// Retry-After exceeds the policy, go straight out to the outcome layer.
func Retry(p RetryPolicy) message.HandlerMiddleware {
	p = p.withDefaults()
	return func(h message.HandlerFunc) message.HandlerFunc {
		return func(msg *message.Message) ([]*message.Message, error) {
			d := DeliveryFrom(msg.Context())
			out, err := h(msg)
			d.attempt()
			if err == nil || !retryable(err, p) || p.Attempts == 1 {
				return out, err
			}
			// Allocated only on failure: the success path stays cheap.
			b := backoff.WithContext(backoff.WithMaxRetries(backoff.NewExponentialBackOff(
				backoff.WithInitialInterval(p.Initial),
				backoff.WithMaxInterval(p.Max),
				backoff.WithMaxElapsedTime(p.MaxElapsed),
			), uint64(p.Attempts-2)), msg.Context())
			last := err
			err = backoff.Retry(func() error {
				out, last = h(msg)
				d.attempt()
				if last != nil && !retryable(last, p) {
					return backoff.Permanent(last)
				}
				return last
			}, b)
			if err != nil {
				// backoff reports the context's error when it gave up
				// waiting; the handler's error says more.
				return out, last
			}
			return out, nil
		}
	}
}

func retryable(err error, p RetryPolicy) bool {
	return fault.Retryable(err) && fault.RetryAfterOf(err) <= p.Max && !IsDeferral(err)
}
