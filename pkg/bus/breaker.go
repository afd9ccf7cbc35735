package bus

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/nats-io/nats.go"
	"github.com/sony/gobreaker/v2"

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
	// OfflineAfter, when set, turns the rejection of a breaker that has
	// been open (trials failing) for longer than this into an offline
	// error, which the outcome layer spools instead of redelivering: a
	// downstream that stays down must not burn the messages' deliveries
	// into the DLQ. Zero keeps every rejection transient.
	OfflineAfter time.Duration
}

func (p BreakerPolicy) withDefaults() BreakerPolicy {
	if p.Key == nil {
		p.Key = IntegrationKeyOf
	}
	if p.Failures == 0 {
		p.Failures = 5
	}
	if p.OpenFor <= 0 {
		p.OpenFor = 10 * time.Second
	}
	return p
}

// IntegrationKeyOf is the default breaker key: the message's
// Inthub-Integration-Id header, else data.integrationId of its body (a
// publisher outside inthub, such as Scanner, may not set the header). It
// records what it found in the header, so the outcome layer spools under
// the right integration.
func IntegrationKeyOf(m *message.Message) string {
	d := DeliveryFrom(m.Context())
	if d == nil {
		return ""
	}
	if id := d.Header.Get(HeaderIntegrationID); id != "" {
		return id
	}
	var body struct {
		Data struct {
			IntegrationID string `json:"integrationId"`
		} `json:"data"`
	}
	if json.Unmarshal(m.Payload, &body) != nil || body.Data.IntegrationID == "" {
		return ""
	}
	if d.Header == nil {
		d.Header = nats.Header{}
	}
	d.Header.Set(HeaderIntegrationID, body.Data.IntegrationID)
	return body.Data.IntegrationID
}

// breaker is the circuit breaker of one key.
type breaker = gobreaker.CircuitBreaker[[]*message.Message]

// Breakers holds a circuit breaker per key, never one for all: a failing
// integration must not stop the others.
type Breakers struct {
	policy BreakerPolicy
	log    *slog.Logger

	mu        sync.Mutex
	m         map[string]*breaker
	openSince map[string]time.Time // since when a key's breaker has not been closed
	now       func() time.Time
}

// NewBreakers returns an empty set of breakers.
func NewBreakers(p BreakerPolicy, log *slog.Logger) *Breakers {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Breakers{policy: p.withDefaults(), log: log, m: map[string]*breaker{},
		openSince: map[string]time.Time{}, now: time.Now}
}

func (b *Breakers) get(key string) *breaker {
	b.mu.Lock()
	defer b.mu.Unlock()
	cb, ok := b.m[key]
	if !ok {
		cb = gobreaker.NewCircuitBreaker[[]*message.Message](gobreaker.Settings{
			Name:        key,
			MaxRequests: 1,
			Timeout:     b.policy.OpenFor,
			ReadyToTrip: func(c gobreaker.Counts) bool { return c.ConsecutiveFailures >= b.policy.Failures },
			// A permanent error says the request was bad, not that the
			// downstream is sick.
			IsSuccessful: func(err error) bool {
				return err == nil || fault.ClassOf(err) == fault.ClassPermanent
			},
			// A deferral (a budget decision) and an error decided without
			// a call (NotCalled) say nothing about the downstream either
			// way: counted as failures they would open the breaker of an
			// integration nobody called; counted as successes they would
			// reset a run of real failures, or close a half-open breaker
			// without its trial.
			IsExcluded: func(err error) bool { return IsDeferral(err) || IsNotCalled(err) },
			OnStateChange: func(name string, from, to gobreaker.State) {
				// gobreaker calls this inside Execute or State, both of
				// which run without b.mu held.
				b.noteState(name, to)
				b.log.Warn("circuit breaker", "key", name, "from", from.String(), "to", to.String())
			},
		})
		b.m[key] = cb
	}
	return cb
}

func (b *Breakers) noteState(key string, to gobreaker.State) {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch to {
	case gobreaker.StateOpen:
		if _, ok := b.openSince[key]; !ok {
			b.openSince[key] = b.now()
		}
	case gobreaker.StateClosed:
		delete(b.openSince, key)
	}
}

// OpenFor reports how long key's breaker has been open or half-open
// without closing again; zero when it is closed.
func (b *Breakers) OpenFor(key string) time.Duration {
	b.mu.Lock()
	defer b.mu.Unlock()
	since, ok := b.openSince[key]
	if !ok {
		return 0
	}
	return b.now().Sub(since)
}

// Reset closes key's breaker, for when the downstream is known to be back
// (a health check said so) before the breaker's own trial would find out.
func (b *Breakers) Reset(key string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.m, key)
	delete(b.openSince, key)
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
		out, err := b.get(key).Execute(func() ([]*message.Message, error) { return h(msg) })
		if errors.Is(err, gobreaker.ErrOpenState) || errors.Is(err, gobreaker.ErrTooManyRequests) {
			err = fmt.Errorf("circuit breaker for %s: %w", key, err)
			if off := b.policy.OfflineAfter; off > 0 {
				if open := b.OpenFor(key); open >= off {
					return nil, fault.Offline(fmt.Errorf("%w (open for %s, offline after %s)", err, open.Round(time.Second), off))
				}
			}
			return nil, fault.RetryAfter(err, b.policy.OpenFor)
		}
		return out, err
	}
}

// NotCalled marks err as decided without calling the downstream behind the
// message's breaker key: the integration is marked offline or disabled,
// the request was refused before any call. The breaker counts it neither
// as a success nor as a failure. err keeps its class (package fault) and
// everything it wraps.
func NotCalled(err error) error {
	if err == nil {
		return nil
	}
	return &notCalled{err}
}

type notCalled struct{ err error }

func (n *notCalled) Error() string { return n.err.Error() }
func (n *notCalled) Unwrap() error { return n.err }

// IsNotCalled reports whether err is, or wraps, an error marked NotCalled.
func IsNotCalled(err error) bool {
	var n *notCalled
	return errors.As(err, &n)
}
