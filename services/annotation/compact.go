package annotation

import (
	"cmp"
	"fmt"
	"slices"
	"strconv"
	"time"

	"inthub.dev/events"
	"inthub.dev/pkg/bus"
	"inthub.dev/pkg/deadletter"
)

// Compact is the spool's merge rule for scm.annotation.requested, given to
// deadletter.SpoolDrain (by the worker when an integration is healthy
// again, and by `inthubctl spool drain`): of the entries for the same
// target only the newest is posted, so a replay shows the latest state,
// never a stale one after a fresh one.
//
//   - the same (repository, pull request, key) sticky comment, the same
//     (repository, commit, context) status, the same (repository, commit,
//     external id or name) check run: the newest entry (by the request's
//     CloudEvents time) wins;
//   - an entry for a pull request whose newer entries name another head
//     commit is for a superseded head: dropped.
//
// Comments without a key (or without updateExisting) are each their own
// target and never dropped. Entries that do not decode are kept: the
// worker dead-letters them with the reason when they are drained.
func Compact(letters []deadletter.Letter) map[uint64]string {
	type entry struct {
		seq  uint64
		time time.Time
		orig uint64 // sequence of the request in its own stream (SCM): publish order
		req  events.AnnotationRequested
	}
	var es []entry
	for _, l := range letters {
		ev, err := events.Parse(l.Data)
		if err != nil || ev.Type != events.SubjectAnnotationRequested {
			continue
		}
		var req events.AnnotationRequested
		if ev.Decode(&req) != nil {
			continue
		}
		orig, _ := strconv.ParseUint(l.Header.Get(bus.HeaderStreamSequence), 10, 64)
		es = append(es, entry{l.Seq, ev.Time, orig, req})
	}
	// Newer means published later by Scanner (the event's time, then the
	// request's place in its stream for two in the same millisecond), not
	// spooled later: concurrent deliveries reach the spool in any order.
	slices.SortStableFunc(es, func(a, b entry) int {
		return cmp.Or(a.time.Compare(b.time), cmp.Compare(a.orig, b.orig), cmp.Compare(a.seq, b.seq))
	})
	drop := map[uint64]string{}
	newest := map[string]uint64{}       // target → seq of its newest entry
	head := map[string]string{}         // repository+PR → newest head commit
	for i := len(es) - 1; i >= 0; i-- { // newest first
		e := es[i]
		if pr := prKey(e.req); pr != "" && e.req.CommitSHA != "" {
			if h, ok := head[pr]; !ok {
				head[pr] = e.req.CommitSHA
			} else if h != e.req.CommitSHA {
				drop[e.seq] = fmt.Sprintf("head %s of %s superseded by %s", short(e.req.CommitSHA), pr, short(h))
				continue
			}
		}
		t := target(e.req)
		if t == "" {
			continue
		}
		if seq, ok := newest[t]; ok {
			drop[e.seq] = fmt.Sprintf("superseded by spool seq %d (%s)", seq, t)
			continue
		}
		newest[t] = e.seq
	}
	return drop
}

// target names what a request writes, for merging; "" when each request
// is its own.
func target(r events.AnnotationRequested) string {
	repo := r.Repository.Owner + "/" + r.Repository.Name
	switch r.Operation {
	case events.OpComment:
		if r.Comment == nil || r.Comment.Key == "" || !r.Comment.UpdateExisting {
			return ""
		}
		return fmt.Sprintf("comment %s#%d key %s", repo, r.PullRequest, r.Comment.Key)
	case events.OpStatus:
		if r.Status == nil {
			return ""
		}
		return fmt.Sprintf("status %s@%s context %s", repo, r.CommitSHA, r.Status.Context)
	case events.OpCheckRun:
		if r.CheckRun == nil {
			return ""
		}
		return fmt.Sprintf("check run %s@%s %s", repo, r.CommitSHA, firstNonEmpty(r.CheckRun.ExternalID, "name:"+r.CheckRun.Name))
	}
	return ""
}

func prKey(r events.AnnotationRequested) string {
	if r.PullRequest <= 0 {
		return ""
	}
	return fmt.Sprintf("%s/%s#%d", r.Repository.Owner, r.Repository.Name, r.PullRequest)
}

func short(sha string) string {
	if len(sha) > 12 {
		return sha[:12]
	}
	return sha
}
