package deadletter

import (
	"context"
	"log/slog"
)

// audit writes the one record an operation leaves, also after a failure
// part-way: what was changed must be on record whether or not the rest
// went through. The record's time comes from the Store's clock.
func (s *Store) audit(ctx context.Context, msg, operator string, f Filter, reqSeqs []uint64, res ReplayResult, err error) {
	h := s.logger.Handler()
	if !h.Enabled(ctx, slog.LevelInfo) {
		return
	}
	seqs := make([]uint64, 0, len(res.Replayed))
	ids := make([]string, 0, len(res.Replayed))
	for _, r := range res.Replayed {
		seqs = append(seqs, r.Seq)
		if r.NewMsgID != "" {
			ids = append(ids, r.NewMsgID)
		}
	}
	rec := slog.NewRecord(s.now().UTC(), slog.LevelInfo, msg, 0)
	rec.AddAttrs(
		slog.String("operator", operator),
		slog.Any("filter", f),
		slog.Int("count", len(res.Replayed)),
		slog.Bool("dry_run", res.DryRun),
		slog.Any("seqs", seqs),
	)
	if len(res.Dropped) > 0 {
		rec.AddAttrs(slog.Int("dropped", len(res.Dropped)))
	}
	if msg != "dlq purge" {
		rec.AddAttrs(slog.Any("new_msg_ids", ids))
	}
	if len(reqSeqs) > 0 {
		rec.AddAttrs(slog.Any("requested_seqs", reqSeqs))
	}
	if err != nil {
		rec.AddAttrs(slog.String("error", err.Error()))
	}
	// A failing log sink must not turn a completed replay into an error.
	_ = h.Handle(ctx, rec)
}
