package outbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"inthub.dev/events"
	"inthub.dev/pkg/bus"
)

// Snapshot walks the database's integrations (every tenant, deleted ones
// included) and calls fn for each: store.StateSnapshot, adapted.
type Snapshot func(ctx context.Context, fn func(in events.Integration, deleted bool) error) error

// RebuildStats says what Rebuild changed in the bucket.
type RebuildStats struct {
	Seen     int // integrations in the database
	Restored int // live integrations written (missing or older in the bucket)
	Deleted  int // deleted integrations still live in the bucket, removed
	Removed  int // bucket keys the database does not know, removed
}

// Rebuild makes the integrations bucket agree with the database, for when
// the bus lost it or never had it: a new NATS store, a move to a cluster,
// a bucket purged by hand. The outbox keeps the bucket current as events
// go out, but only for changes made since; without this, workers reading
// the bucket would take existing integrations for unknown ones.
//
// It uses the forwarder's own compare-and-set rules, so it never
// overwrites a newer version or revives a deleted integration, and runs
// safely beside the forwarder and on every replica. A key the database
// does not know is removed only if it was written before the rebuild
// began (a create racing the walk is not a stray).
func (f *Forwarder) Rebuild(ctx context.Context, walk Snapshot) (RebuildStats, error) {
	var st RebuildStats
	kv := f.cfg.State
	began := time.Now()
	seen := map[string]bool{}
	err := walk(ctx, func(in events.Integration, deleted bool) error {
		st.Seen++
		key := bus.IntegrationKey(in.TenantID, in.ID)
		seen[key] = true
		if deleted {
			if _, err := kv.Get(ctx, key); err == nil {
				if err := kv.Delete(ctx, key); err != nil {
					return classifyState(err)
				}
				st.Deleted++
			} else if !errors.Is(err, jetstream.ErrKeyNotFound) {
				return classifyState(err)
			}
			return nil
		}
		value, err := json.Marshal(in)
		if err != nil {
			return err
		}
		wrote, err := f.putIntegration(ctx, key, in.Version, value)
		if err != nil {
			return err
		}
		if wrote {
			st.Restored++
		}
		return nil
	})
	if err != nil {
		return st, fmt.Errorf("outbox: rebuild the integrations bucket: %w", err)
	}
	keys, err := kv.ListKeys(ctx)
	if err != nil {
		return st, fmt.Errorf("outbox: rebuild: list keys: %w", classifyState(err))
	}
	defer func() { _ = keys.Stop() }()
	for key := range keys.Keys() {
		if seen[key] {
			continue
		}
		e, err := kv.Get(ctx, key)
		if err != nil || e.Created().After(began) {
			continue
		}
		if err := kv.Delete(ctx, key, jetstream.LastRevision(e.Revision())); err == nil {
			st.Removed++
			f.log.Warn("integrations bucket: removed a key the database does not know", "key", key)
		}
	}
	return st, nil
}
