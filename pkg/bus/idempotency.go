package bus

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"inthub.dev/events"
	"inthub.dev/pkg/fault"
)

// IdempotencyGuard remembers which events (CloudEvents source + id) a
// consumer has handled, in a JetStream KV bucket whose entries expire after
// a TTL, so a redelivered or replayed event does not repeat an effect that
// is not idempotent by itself (a PR comment, a commit status).
//
// It records an event after its handler succeeded. Two deliveries of one
// event at the same time are prevented by the frame's in-progress acks, not
// by the guard.
type IdempotencyGuard struct {
	kv jetstream.KeyValue
}

// NewIdempotencyGuard creates or opens the bucket. ttl should cover the
// longest time between a first delivery and a replay you want suppressed.
// The bucket is laid out by topo, like the fleet's streams.
func NewIdempotencyGuard(ctx context.Context, js jetstream.JetStream, bucket string, ttl time.Duration, topo Topology) (*IdempotencyGuard, error) {
	kv, err := ProvisionKeyValue(ctx, js, topo, jetstream.KeyValueConfig{
		Bucket:      bucket,
		Description: "processed event ids (source+id)",
		TTL:         ttl,
		Storage:     jetstream.FileStorage,
	})
	if err != nil {
		return nil, fmt.Errorf("bus: idempotency bucket %s: %w", bucket, err)
	}
	return &IdempotencyGuard{kv: kv}, nil
}

func idempotencyKey(ev events.Event) string {
	sum := sha256.Sum256([]byte(ev.Source + "\x00" + ev.ID))
	return hex.EncodeToString(sum[:16])
}

// Seen reports whether ev was handled already.
func (g *IdempotencyGuard) Seen(ctx context.Context, ev events.Event) (bool, error) {
	_, err := g.kv.Get(ctx, idempotencyKey(ev))
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, jetstream.ErrKeyNotFound):
		return false, nil
	default:
		return false, fault.Transient(fmt.Errorf("bus: idempotency lookup: %w", err))
	}
}

// Do runs h unless ev was handled before, and records it when h succeeds.
func (g *IdempotencyGuard) Do(ctx context.Context, ev events.Event, h Handler) error {
	seen, err := g.Seen(ctx, ev)
	if err != nil {
		return err
	}
	if seen {
		return nil
	}
	if err := h(ctx, ev); err != nil {
		return err
	}
	if _, err := g.kv.Put(context.WithoutCancel(ctx), idempotencyKey(ev), []byte(time.Now().UTC().Format(time.RFC3339Nano))); err != nil {
		// The effect happened; failing now would redo it. A redelivery
		// after a lost ack will repeat it, which the log makes visible.
		return nil
	}
	return nil
}
