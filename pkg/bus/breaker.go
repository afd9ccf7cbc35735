package bus

import (
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/sony/gobreaker"

	"inthub.dev/pkg/fault"
)

// BreakerPolicy configures one circuit breaker per downstream key.
type BreakerPolicy struct {
	// Key names the downstream a message goes to (integration id, API
	// host). Messages with an empty key pass without a breaker. Default:
	// the Inthub-Integration-Id header.
	Key func(*message.Message) string
	// Failures in a row that open a key's breaker, default 5.
	Failures uint32
	// OpenFor is how long an open breaker rejects before it lets one trial
	// call through (half-open), default 10s.
	OpenFor time.Duration
}

func (p BreakerPolicy) withDefaults() BreakerPolicy {
	if p.Key == nil {
		p.Key = func(m *message.Message) string {
			if d := DeliveryFrom(m.Context()); d != nil {
				return d.Header.Get(HeaderIntegrationID)
			}
			return ""
		}
	}
	if p.Failures == 0 {
		p.Failures = 5
	}
	if p.OpenFor <= 0 {
		p.OpenFor = 10 * time.Second
	}
	return p
}

// Breakers holds a circuit breaker per key, never one for all: a failing
// integration must not stop the others.
type Breakers struct {
	policy BreakerPolicy
	log    *slog.Logger

	mu sync.Mutex
	m  map[string]*gobreaker.CircuitBreaker
}

// NewBreakers returns an empty set of breakers.
func NewBreakers(p BreakerPolicy, log *slog.Logger) *Breakers {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Breakers{policy: p.withDefaults(), log: log, m: map[string]*gobreaker.CircuitBreaker{}}
}

func (b *Breakers) get(key string) *gobreaker.CircuitBreaker {
	b.mu.Lock()
	defer b.mu.Unlock()
	cb, ok := b.m[key]
	if !ok {
		cb = gobreaker.NewCircuitBreaker(gobreaker.Settings{
			Name:        key,
			MaxRequests: 1,
			Timeout:     b.policy.OpenFor,
			ReadyToTrip: func(c gobreaker.Counts) bool { return c.ConsecutiveFailures >= b.policy.Failures },
			// A permanent error says the request was bad, not that the
			// downstream is sick.
			IsSuccessful: func(err error) bool { return err == nil || fault.ClassOf(err) == fault.ClassPermanent },
			OnStateChange: func(name string, from, to gobreaker.State) {
				b.log.Warn("circuit breaker", "key", name, "from", from.String(), "to", to.String())
			},
		})
		b.m[key] = cb
	}
	return cb
}

// State returns the state of key's breaker: "closed", "half-open" or "open".
func (b *Breakers) State(key string) string {
	b.mu.Lock()
	cb, ok := b.m[key]
	b.mu.Unlock()
	if !ok {
		return gobreaker.StateClosed.String()
	}
	return cb.State().String()
}

// Middleware runs the handler through the breaker of the message's key. An
// open breaker fails fast with a transient error, so the message is retried
// later without calling the downstream.
func (b *Breakers) Middleware(h message.HandlerFunc) message.HandlerFunc {
	return func(msg *message.Message) ([]*message.Message, error) {
		key := b.policy.Key(msg)
		if key == "" {
			return h(msg)
		}
		res, err := b.get(key).Execute(func() (any, error) { return h(msg) })
		if errors.Is(err, gobreaker.ErrOpenState) || errors.Is(err, gobreaker.ErrTooManyRequests) {
			return nil, fault.RetryAfter(fmt.Errorf("circuit breaker for %s: %w", key, err), b.policy.OpenFor)
		}
		out, _ := res.([]*message.Message)
		return out, err
	}
}
