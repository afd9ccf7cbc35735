package deadletter

import (
	"cmp"
	"context"
	"fmt"
)

// SpoolList returns the spooled payloads matching f, oldest first, with
// SpooledAt set (the time Since and Until look at).
func (s *Store) SpoolList(ctx context.Context, f Filter) ([]Letter, error) {
	return s.list(ctx, kindSpool, f)
}

// SpoolDrain re-publishes each matching spooled payload to its original
// subject, in spool order, waiting for each ack before the next publish, so
// the order per integration (indeed overall) is kept. It stops at the first
// error, so a later payload never overtakes one that failed.
//
// The new Nats-Msg-Id is derived from the entry ("<original id>:drain:<spool
// seq>"), not drawn at random: a drain interrupted between publish and
// delete, and run again within the duplicate window, publishes the same id
// and JetStream drops the second copy. The original id cannot be reused: it
// was already published once, and may still be inside the window.
//
// With opts.Compact, entries it names are deleted instead (ReplayResult.Dropped).
//
// Like Replay, a started run logs exactly one audit record, "spool drain".
func (s *Store) SpoolDrain(ctx context.Context, f Filter, opts ReplayOptions) (ReplayResult, error) {
	res := ReplayResult{DryRun: opts.DryRun}
	if err := needOperator(opts.DryRun, opts.Operator); err != nil {
		return res, err
	}
	st, err := s.open(ctx, kindSpool, f)
	if err != nil {
		return res, err
	}
	var drop map[uint64]string
	if opts.Compact != nil {
		var all []Letter
		if err := s.each(ctx, st, kindSpool, f, opts.Seqs, func(l Letter) error {
			all = append(all, l)
			return nil
		}); err != nil {
			return res, err
		}
		drop = opts.Compact(all)
	}
	err = s.each(ctx, st, kindSpool, f, opts.Seqs, func(l Letter) error {
		if reason, ok := drop[l.Seq]; ok {
			res.Dropped = append(res.Dropped, Dropped{Seq: l.Seq, Reason: reason})
			if opts.DryRun {
				return nil
			}
			return deleteMsg(ctx, st, kindSpool, l.Seq)
		}
		if err := checkTarget(l); err != nil {
			return err
		}
		r := Replayed{Seq: l.Seq, OriginalSubject: l.OriginalSubject, NewMsgID: DrainMsgID(l)}
		if opts.DryRun {
			res.Replayed = append(res.Replayed, r)
			return nil
		}
		ack, err := s.js.PublishMsg(ctx, republish(l, r.NewMsgID))
		if err != nil {
			return fmt.Errorf("deadletter: drain SPOOL seq %d to %s: %w", l.Seq, l.OriginalSubject, err)
		}
		r.Duplicate = ack.Duplicate
		res.Replayed = append(res.Replayed, r)
		return deleteAfterPublish(ctx, st, kindSpool, l.Seq)
	})
	s.audit(ctx, "spool drain", opts.Operator, f, opts.Seqs, res, err)
	return res, err
}

// DrainMsgID is the Nats-Msg-Id SpoolDrain gives the payload it
// re-publishes from spool entry l.
func DrainMsgID(l Letter) string {
	return fmt.Sprintf("%s:drain:%d", cmp.Or(l.MsgID, "spool"), l.Seq)
}
