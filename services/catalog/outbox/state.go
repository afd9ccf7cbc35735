package outbox

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"inthub.dev/events"
	"inthub.dev/pkg/bus"
)

// casAttempts bounds the read-compare-write loop of one bucket update. Only
// one forwarder writes a key at a time (the partition's advisory lock), so
// a conflict is rare; past the bound the row is retried with the pass.
const casAttempts = 8

// errSkip marks a row whose state update is refused for good (its payload
// does not decode, or the bucket will never take the value): retrying
// would block the partition, so the forwarder logs it and goes on.
var errSkip = errors.New("state update skipped")

// applyState brings the integrations bucket (bus.BucketIntegrations) up
// to date with row r, just published. created/updated put data.integration
// unless the bucket already holds that version or a later one, or a delete
// marker (a delete wins: an integration id is never reused); deleted puts
// a delete marker; health_changed sets healthStatus on the stored record.
// Every write is a compare-and-set on the key's revision. wrote reports
// whether the bucket changed.
func (f *Forwarder) applyState(ctx context.Context, r row) (wrote bool, err error) {
	switch r.subject {
	case events.SubjectIntegrationCreated, events.SubjectIntegrationUpdated:
		var ev struct {
			TraceParent string `json:"traceparent"`
			Data        struct {
				Integration json.RawMessage `json:"integration"`
			} `json:"data"`
		}
		var in events.Integration
		if err := json.Unmarshal(r.payload, &ev); err != nil {
			return false, fmt.Errorf("%w: payload: %w", errSkip, err)
		}
		if err := json.Unmarshal(ev.Data.Integration, &in); err != nil {
			return false, fmt.Errorf("%w: data.integration: %w", errSkip, err)
		}
		if in.ID != r.aggregateID || in.TenantID != r.tenantID {
			return false, fmt.Errorf("%w: data.integration names %s of tenant %s, the row %s of tenant %s",
				errSkip, in.ID, in.TenantID, r.aggregateID, r.tenantID)
		}
		return f.putIntegration(ctx, bus.IntegrationKey(in.TenantID, in.ID), in.Version,
			withTraceParent(ev.Data.Integration, ev.TraceParent))
	case events.SubjectIntegrationDeleted:
		if err := f.cfg.State.Delete(ctx, bus.IntegrationKey(r.tenantID, r.aggregateID)); err != nil {
			return false, classifyState(err)
		}
		return true, nil
	case events.SubjectIntegrationHealthChanged:
		var ev struct {
			Data events.HealthChanged `json:"data"`
		}
		if err := json.Unmarshal(r.payload, &ev); err != nil {
			return false, fmt.Errorf("%w: payload: %w", errSkip, err)
		}
		return f.setHealth(ctx, bus.IntegrationKey(r.tenantID, r.aggregateID), ev.Data.Status)
	}
	return false, nil
}

// putIntegration writes value (an events.Integration at version) unless
// the key holds a later or equal version or a delete marker.
func (f *Forwarder) putIntegration(ctx context.Context, key string, version int64, value []byte) (bool, error) {
	kv := f.cfg.State
	for range casAttempts {
		cur, err := kv.Get(ctx, key)
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound):
			// Revision 0 = only if the key has no entry at all: a key
			// whose last entry is a delete marker also reads as not found,
			// and this write must not bring it back.
			_, err = kv.Update(ctx, key, value, 0)
			if isConflict(err) {
				if _, gerr := kv.Get(ctx, key); errors.Is(gerr, jetstream.ErrKeyNotFound) {
					return false, nil // a delete marker: the integration is gone
				}
				continue // someone else wrote it meanwhile: compare again
			}
		case err != nil:
			return false, classifyState(err)
		default:
			var stored struct {
				Version int64 `json:"version"`
			}
			// An undecodable stored value is overwritten: the bucket's
			// readers skip it anyway.
			if json.Unmarshal(cur.Value(), &stored) == nil && stored.Version >= version {
				return false, nil // a replayed or redelivered older event
			}
			_, err = kv.Update(ctx, key, value, cur.Revision())
			if isConflict(err) {
				continue
			}
		}
		if err != nil {
			return false, classifyState(err)
		}
		return true, nil
	}
	return false, fmt.Errorf("bucket key %s: still conflicting after %d attempts", key, casAttempts)
}

// setHealth sets healthStatus on the stored record of a live integration.
// It keeps the record's version: health is not a change of the
// integration (the catalog does not bump version for it either), and an
// integration.updated of that version carries the same health or older.
func (f *Forwarder) setHealth(ctx context.Context, key string, status events.HealthStatus) (bool, error) {
	kv := f.cfg.State
	for range casAttempts {
		cur, err := kv.Get(ctx, key)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			return false, nil // deleted, or not in the bucket: nothing to annotate
		}
		if err != nil {
			return false, classifyState(err)
		}
		// Decoded into a map so that fields this version does not know
		// survive the rewrite.
		var rec map[string]json.RawMessage
		if err := json.Unmarshal(cur.Value(), &rec); err != nil {
			return false, fmt.Errorf("%w: stored value: %w", errSkip, err)
		}
		want, _ := json.Marshal(status)
		if string(rec["healthStatus"]) == string(want) {
			return false, nil
		}
		rec["healthStatus"] = want
		// The trace of the change that wrote the record ends here: a health
		// transition is no change the watchers react to with new work.
		delete(rec, "traceparent")
		value, err := json.Marshal(rec)
		if err != nil {
			return false, fmt.Errorf("%w: encode: %w", errSkip, err)
		}
		_, err = kv.Update(ctx, key, value, cur.Revision())
		if isConflict(err) {
			continue
		}
		if err != nil {
			return false, classifyState(err)
		}
		return true, nil
	}
	return false, fmt.Errorf("bucket key %s: still conflicting after %d attempts", key, casAttempts)
}

// withTraceParent stores the event's trace context beside the record's
// fields, so that a watcher of the bucket (the health poller) continues
// the trace of the change. record is a JSON object that decoded.
func withTraceParent(record json.RawMessage, traceparent string) json.RawMessage {
	body := bytes.TrimSpace(record)
	if traceparent == "" || len(body) < 2 || body[0] != '{' {
		return record
	}
	q, err := json.Marshal(traceparent)
	if err != nil {
		return record
	}
	out := make([]byte, 0, len(body)+len(q)+16)
	out = append(out, `{"traceparent":`...)
	out = append(out, q...)
	if rest := bytes.TrimSpace(body[1:]); len(rest) > 0 && rest[0] != '}' {
		out = append(out, ',')
	}
	return append(out, body[1:]...)
}

func isConflict(err error) bool {
	return errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch)
}

// classifyState marks the bucket errors that no retry cures (a value over
// the server's payload limit, a key the bucket refuses); everything else —
// NATS down, no answer in time, the bucket full or missing — is retried
// with the pass, like a failed publish.
func classifyState(err error) error {
	if errors.Is(err, nats.ErrMaxPayload) || errors.Is(err, jetstream.ErrInvalidKey) {
		return fmt.Errorf("%w: %w", errSkip, err)
	}
	return err
}
