package bus

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// BucketDeferrals is the KV bucket in which workers count the deferrals
// (Defer) of each message per consumer.
//
// Why it exists: JetStream counts every delivery, and a deferral is a
// delivery (a delayed Nak), so a consumer's MaxDeliver would dead-letter a
// message that only ever waited for its turn. The workers' consumers
// therefore have no server-side limit (MaxDeliver -1) and the worker
// enforces its own on the deliveries that count:
//
//	counted = NumDelivered - deferrals
//
// NumDelivered is the server's; the deferrals come from here (with the
// deliveries a stopping worker handed back unhandled), so the count
// survives a restart of the worker and holds across its replicas. Only a
// deferral writes (one small value); a first delivery reads nothing, a
// redelivery reads one key. A delivery that ended without an outcome (a
// crash, a lost ack) was not recorded as a deferral, so it counts: the
// worker errs towards the dead letter, never towards a message held for
// ever.
//
// Alternatives weighed and refused: re-publishing a deferred message with a
// deferral-count header moves it behind newer messages for the same target
// (an older commit status posted over a newer one), changes its stream
// sequence and shows every other consumer of the subject a copy; a
// counter kept in memory is lost with the process and differs between
// replicas.
//
// Key: <stream>.<durable>.<stream sequence>; value: the count in decimal.
// Entries expire with the bucket's TTL (the streams' MaxAge: a message
// older than that is gone from its stream), so nothing deletes them: a
// redelivery after a lost ack must still find the count.
const BucketDeferrals = "BUS_DEFERRALS"

func deferralsBucket(s StreamSettings) jetstream.KeyValueConfig {
	return s.Topology.KeyValue(jetstream.KeyValueConfig{
		Bucket:      BucketDeferrals,
		Description: "deferrals per consumer and stream sequence: deferred deliveries do not count toward a worker's MaxDeliver",
		History:     1,
		TTL:         s.MaxAge,
		Storage:     jetstream.FileStorage,
		MaxBytes:    s.MaxBytes,
	})
}

// ledger reads and counts the deferrals of one consumer's messages. A nil
// ledger counts nothing (a worker whose middleware runs outside Run).
type ledger struct {
	kv     jetstream.KeyValue
	prefix string
}

var kvToken = regexp.MustCompile(`^[-_=a-zA-Z0-9]+$`)

func newLedger(kv jetstream.KeyValue, stream, durable string) *ledger {
	tok := func(s string) string {
		if kvToken.MatchString(s) {
			return s
		}
		return "x" + hex.EncodeToString([]byte(s))
	}
	return &ledger{kv: kv, prefix: tok(stream) + "." + tok(durable) + "."}
}

// openLedger opens the bucket; a worker started before any service
// provisioned the fleet's buckets creates it with the defaults (a later
// Provision lays it out by the fleet's topology).
func openLedger(ctx context.Context, js jetstream.JetStream, stream, durable string) (*ledger, error) {
	kv, err := js.KeyValue(ctx, BucketDeferrals)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		s := DefaultStreamSettings()
		kv, err = ProvisionKeyValue(ctx, js, s.Topology, deferralsBucket(s))
	}
	if err != nil {
		return nil, fmt.Errorf("bus: deferrals bucket %s: %w", BucketDeferrals, err)
	}
	return newLedger(kv, stream, durable), nil
}

func (l *ledger) key(seq uint64) string { return l.prefix + strconv.FormatUint(seq, 10) }

const ledgerTimeout = 5 * time.Second

// count returns the recorded deferrals of the message at seq.
func (l *ledger) count(ctx context.Context, seq uint64) (uint64, error) {
	if l == nil || l.kv == nil {
		return 0, nil
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), ledgerTimeout)
	defer cancel()
	n, _, err := l.get(ctx, seq)
	return n, err
}

func (l *ledger) get(ctx context.Context, seq uint64) (n, rev uint64, err error) {
	e, err := l.kv.Get(ctx, l.key(seq))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return 0, 0, nil
	}
	if err != nil {
		return 0, 0, err
	}
	n, err = strconv.ParseUint(string(e.Value()), 10, 64)
	if err != nil {
		return 0, 0, fmt.Errorf("deferral count %q of %s: %w", e.Value(), e.Key(), err)
	}
	return n, e.Revision(), nil
}

// add records one more deferral of the message at seq and returns the new
// count. Two deliveries of one message at once are rare (an ack wait that
// expired under a handler); a compare-and-set keeps either from losing the
// other's count.
func (l *ledger) add(ctx context.Context, seq uint64) (uint64, error) {
	if l == nil || l.kv == nil {
		return 0, errors.New("no deferrals bucket")
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), ledgerTimeout)
	defer cancel()
	var err error
	for range 3 {
		var n, rev uint64
		if n, rev, err = l.get(ctx, seq); err != nil {
			return 0, err
		}
		val := []byte(strconv.FormatUint(n+1, 10))
		if rev == 0 {
			_, err = l.kv.Create(ctx, l.key(seq), val)
		} else {
			_, err = l.kv.Update(ctx, l.key(seq), val, rev)
		}
		if err == nil {
			return n + 1, nil
		}
		if !errors.Is(err, jetstream.ErrKeyExists) && !errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			return 0, err
		}
	}
	return 0, err
}
