package deadletter

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"

	"inthub.dev/pkg/bus"
)

// ReplayOptions control Replay and SpoolDrain.
type ReplayOptions struct {
	// DryRun selects and reports, and changes nothing.
	DryRun bool
	// Operator names who asked, for the audit record. Required unless
	// DryRun: an audit record without a name answers nothing.
	Operator string
	// Seqs restricts the run to these stream sequences (still narrowed by
	// the filter). A sequence that does not exist fails the whole run
	// before anything changes.
	Seqs []uint64
	// Compact, for SpoolDrain, sees every matching spool entry (oldest
	// first) before anything is published and names those that must not
	// be: entries superseded by a newer one for the same target, with the
	// reason. They are deleted instead of drained, so a drain posts the
	// newest state only. The subject's owner knows what supersedes what
	// (services/annotation: the same repository, head and key).
	Compact func([]Letter) map[uint64]string
}

// ReplayResult reports what a Replay or SpoolDrain did, or would do.
type ReplayResult struct {
	Replayed []Replayed
	// Dropped are spool entries that Compact superseded: deleted, not
	// drained (in a dry run, those that would be).
	Dropped []Dropped
	DryRun  bool
}

// Dropped is a spool entry a drain deleted because a newer one superseded it.
type Dropped struct {
	Seq    uint64
	Reason string
}

// Replayed is one message re-published (or, in a dry run, selected).
type Replayed struct {
	Seq             uint64 // in DLQ or SPOOL
	OriginalSubject string
	// NewMsgID is the Nats-Msg-Id of the re-published message. A dry run of
	// Replay leaves it empty: the real run draws a fresh one.
	NewMsgID string
	// Duplicate is set when JetStream dropped the publish as a duplicate:
	// an earlier, interrupted drain had already delivered it.
	Duplicate bool
}

// PurgeOptions control Purge.
type PurgeOptions struct {
	DryRun   bool
	Operator string // required unless DryRun
	Seqs     []uint64
	// All must be set to purge with an empty filter and no Seqs, so that a
	// forgotten flag cannot empty the DLQ.
	All bool
}

// List returns the dead letters matching f, oldest first.
func (s *Store) List(ctx context.Context, f Filter) ([]Letter, error) {
	return s.list(ctx, kindDLQ, f)
}

func (s *Store) list(ctx context.Context, k kind, f Filter) ([]Letter, error) {
	st, err := s.open(ctx, k, f)
	if err != nil {
		return nil, err
	}
	var out []Letter
	err = s.each(ctx, st, k, f, nil, func(l Letter) error {
		out = append(out, l)
		return nil
	})
	return out, err
}

// Show returns the dead letter with DLQ sequence seq.
func (s *Store) Show(ctx context.Context, seq uint64) (Letter, error) {
	st, err := s.stream(ctx, kindDLQ)
	if err != nil {
		return Letter{}, err
	}
	return getOne(ctx, st, kindDLQ, seq)
}

// Replay re-publishes each matching dead letter to its original subject,
// body untouched, with a new Nats-Msg-Id and Inthub-Replay-Of, and deletes
// the letter once the publish is acknowledged. It stops at the first error
// and returns what it replayed until then. Once the run has started (the
// filter and operator accepted, the stream found), it logs exactly one
// audit record, "dlq replay", whatever the outcome.
func (s *Store) Replay(ctx context.Context, f Filter, opts ReplayOptions) (ReplayResult, error) {
	res := ReplayResult{DryRun: opts.DryRun}
	if err := needOperator(opts.DryRun, opts.Operator); err != nil {
		return res, err
	}
	st, err := s.open(ctx, kindDLQ, f)
	if err != nil {
		return res, err
	}
	err = s.each(ctx, st, kindDLQ, f, opts.Seqs, func(l Letter) error {
		if err := checkTarget(l); err != nil {
			return err
		}
		r := Replayed{Seq: l.Seq, OriginalSubject: l.OriginalSubject}
		if opts.DryRun {
			res.Replayed = append(res.Replayed, r)
			return nil
		}
		r.NewMsgID = uuid.NewString()
		msg := republish(l, r.NewMsgID)
		msg.Header.Set(bus.HeaderReplayOf, strconv.FormatUint(l.Seq, 10))
		if _, err := s.js.PublishMsg(ctx, msg); err != nil {
			return fmt.Errorf("deadletter: replay DLQ seq %d to %s: %w", l.Seq, l.OriginalSubject, err)
		}
		// Reported from here on: it is on the bus even if the delete fails.
		res.Replayed = append(res.Replayed, r)
		return deleteAfterPublish(ctx, st, kindDLQ, l.Seq)
	})
	s.audit(ctx, "dlq replay", opts.Operator, f, opts.Seqs, res, err)
	return res, err
}

// Purge deletes the matching dead letters and returns how many it deleted
// (or, in a dry run, would delete). Like Replay, a started run logs exactly
// one audit record, "dlq purge".
func (s *Store) Purge(ctx context.Context, f Filter, opts PurgeOptions) (int, error) {
	if err := needOperator(opts.DryRun, opts.Operator); err != nil {
		return 0, err
	}
	if f.IsZero() && len(opts.Seqs) == 0 && !opts.All {
		return 0, errors.New("deadletter: purge with no filter and no sequences would delete every dead letter; set All to mean it")
	}
	st, err := s.open(ctx, kindDLQ, f)
	if err != nil {
		return 0, err
	}
	res := ReplayResult{DryRun: opts.DryRun}
	err = s.each(ctx, st, kindDLQ, f, opts.Seqs, func(l Letter) error {
		if !opts.DryRun {
			if err := deleteMsg(ctx, st, kindDLQ, l.Seq); err != nil {
				return err
			}
		}
		res.Replayed = append(res.Replayed, Replayed{Seq: l.Seq, OriginalSubject: l.OriginalSubject})
		return nil
	})
	s.audit(ctx, "dlq purge", opts.Operator, f, opts.Seqs, res, err)
	return len(res.Replayed), err
}

func needOperator(dryRun bool, operator string) error {
	if !dryRun && strings.TrimSpace(operator) == "" {
		return errors.New("deadletter: operator is required for the audit record")
	}
	return nil
}

// checkTarget refuses to publish back into the DLQ or SPOOL streams, where
// the run would meet its own output.
func checkTarget(l Letter) error {
	o := l.OriginalSubject
	if o == "" || validSubjectPattern(o) != nil || strings.ContainsAny(o, "*>") {
		return fmt.Errorf("deadletter: seq %d: original subject %q is not a publishable subject", l.Seq, o)
	}
	if strings.HasPrefix(o, bus.DLQPrefix) || strings.HasPrefix(o, bus.SpoolPrefix) {
		return fmt.Errorf("deadletter: seq %d: original subject %q is inside the DLQ or SPOOL stream", l.Seq, o)
	}
	return nil
}

// republish builds the message that goes back to the original subject: the
// body untouched, the original headers (tenant, integration, trace) kept,
// the failure bookkeeping dropped so the consumer sees a normal message.
func republish(l Letter, msgID string) *nats.Msg {
	h := nats.Header{}
	for k, v := range l.Header {
		if dropOnRepublish(k) {
			continue
		}
		h[k] = append([]string(nil), v...)
	}
	if header(h, bus.HeaderOriginalMsgID) == "" && l.MsgID != "" {
		h.Set(bus.HeaderOriginalMsgID, l.MsgID)
	}
	h.Set(bus.HeaderMsgID, msgID)
	return &nats.Msg{Subject: l.OriginalSubject, Header: h, Data: l.Data}
}

// dropOnRepublish drops every Nats-* header: Nats-Msg-Id is replaced,
// stored expectations (Nats-Expected-Stream: DLQ) would make the publish to
// the original stream fail, and server directives (Nats-Rollup, Nats-TTL,
// Nats-Schedule) were meant for the DLQ, not for the original stream, where
// a rollup would purge it.
func dropOnRepublish(k string) bool {
	if len(k) >= 5 && strings.EqualFold(k[:5], "Nats-") {
		return true
	}
	for _, d := range [...]string{
		bus.HeaderOriginalSubject, bus.HeaderStreamSequence, bus.HeaderDeliveryCount,
		bus.HeaderErrorClass, bus.HeaderLastError, bus.HeaderService,
		bus.HeaderFirstFailure, bus.HeaderLastFailure,
		bus.HeaderReplayOf, bus.HeaderSpooledAt,
	} {
		if strings.EqualFold(k, d) {
			return true
		}
	}
	return false
}
