package deadletter

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"inthub.dev/pkg/bus"
)

// kind tells the two streams apart: they share the iteration but differ in
// subject layout and in which time a filter looks at.
type kind int

const (
	kindDLQ kind = iota
	kindSpool
)

func (k kind) stream() string {
	if k == kindSpool {
		return bus.StreamSpool
	}
	return bus.StreamDLQ
}

// serverFilter is the subject filter the server applies, so a narrow
// selection in a large stream does not travel over the wire.
func (k kind) serverFilter(f Filter) string {
	if k == kindDLQ {
		if f.Subject == "" {
			return bus.DLQPrefix + ">"
		}
		return bus.DLQSubject(f.Subject)
	}
	switch {
	case f.Subject == "":
		return bus.SpoolPrefix + ">"
	case strings.HasSuffix(f.Subject, ">"):
		// ">" already swallows the integration token.
		return bus.SpoolPrefix + f.Subject
	case f.IntegrationID != "":
		return bus.SpoolSubject(f.Subject, f.IntegrationID)
	default:
		return bus.SpoolPrefix + f.Subject + ".*"
	}
}

// open validates f and looks the stream up: the checks that come before any
// run, so that a rejected request leaves no audit record.
func (s *Store) open(ctx context.Context, k kind, f Filter) (jetstream.Stream, error) {
	if err := f.validate(k); err != nil {
		return nil, err
	}
	return s.stream(ctx, k)
}

func (s *Store) stream(ctx context.Context, k kind) (jetstream.Stream, error) {
	st, err := s.js.Stream(ctx, k.stream())
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, fmt.Errorf("deadletter: stream %s does not exist (no inthub service has provisioned the streams on this server yet): %w", k.stream(), err)
	}
	if err != nil {
		return nil, fmt.Errorf("deadletter: stream %s: %w", k.stream(), err)
	}
	return st, nil
}

// each calls fn for every letter matching f, in stream order. With seqs it
// visits exactly those sequences (all must exist, checked before fn runs
// once, so a typo aborts before anything changes), still narrowed by f.
//
// It stops at the last sequence the stream had when it began, so letters
// that arrive meanwhile (for instance a replayed message failing again) are
// never picked up by the same run, which would otherwise loop.
func (s *Store) each(ctx context.Context, st jetstream.Stream, k kind, f Filter, seqs []uint64, fn func(Letter) error) error {
	matched := 0
	visit := func(l Letter) (stop bool, err error) {
		if !f.matches(k, l) {
			return false, nil
		}
		if err := fn(l); err != nil {
			return true, err
		}
		matched++
		return f.Limit > 0 && matched >= f.Limit, nil
	}

	if len(seqs) > 0 {
		letters, err := s.getSeqs(ctx, st, k, seqs)
		if err != nil {
			return err
		}
		for _, l := range letters {
			if err := ctx.Err(); err != nil {
				return err
			}
			// The subject filter narrows explicit sequences as it narrows
			// a scan, where the server applies it.
			if !subjectMatches(k.serverFilter(f), l.Subject) {
				continue
			}
			if stop, err := visit(l); stop || err != nil {
				return err
			}
		}
		return nil
	}

	state := st.CachedInfo().State
	if state.Msgs == 0 {
		return nil
	}
	last := state.LastSeq
	filter := k.serverFilter(f)
	for seq := max(state.FirstSeq, 1); seq <= last; {
		if err := ctx.Err(); err != nil {
			return err
		}
		raw, err := st.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(filter))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("deadletter: read %s from seq %d: %w", k.stream(), seq, err)
		}
		if raw.Sequence > last {
			return nil
		}
		if stop, err := visit(decode(k, raw)); stop || err != nil {
			return err
		}
		seq = raw.Sequence + 1
	}
	return nil
}

func (s *Store) getSeqs(ctx context.Context, st jetstream.Stream, k kind, seqs []uint64) ([]Letter, error) {
	seqs = slices.Clone(seqs)
	slices.Sort(seqs)
	seqs = slices.Compact(seqs)
	letters := make([]Letter, 0, len(seqs))
	var missing []string
	for _, seq := range seqs {
		l, err := getOne(ctx, st, k, seq)
		if errors.Is(err, ErrNotFound) {
			missing = append(missing, strconv.FormatUint(seq, 10))
			continue
		}
		if err != nil {
			return nil, err
		}
		letters = append(letters, l)
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("%w: %s seq %s", ErrNotFound, k.stream(), strings.Join(missing, ", "))
	}
	return letters, nil
}

func getOne(ctx context.Context, st jetstream.Stream, k kind, seq uint64) (Letter, error) {
	if seq == 0 {
		return Letter{}, fmt.Errorf("%w: %s seq 0 (sequences start at 1)", ErrNotFound, k.stream())
	}
	raw, err := st.GetMsg(ctx, seq)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return Letter{}, fmt.Errorf("%w: %s seq %d", ErrNotFound, k.stream(), seq)
	}
	if err != nil {
		return Letter{}, fmt.Errorf("deadletter: get %s seq %d: %w", k.stream(), seq, err)
	}
	return decode(k, raw), nil
}

// deleteAfterPublish finishes a replay whose publish was acknowledged even
// if ctx was cancelled meanwhile (an operator's Ctrl-C): the letter is on
// the bus again, and leaving it in the stream would replay it twice on the
// next run.
func deleteAfterPublish(ctx context.Context, st jetstream.Stream, k kind, seq uint64) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), deleteTimeout)
	defer cancel()
	return deleteMsg(ctx, st, k, seq)
}

const deleteTimeout = 10 * time.Second

// deleteMsg removes a letter after it has been handled. A letter that is
// already gone was handled by a concurrent run; that is not an error, the
// goal (letter out of the stream) holds.
func deleteMsg(ctx context.Context, st jetstream.Stream, k kind, seq uint64) error {
	err := st.DeleteMsg(ctx, seq)
	if err == nil {
		return nil
	}
	// The delete error does not carry the API error code, so ask again
	// rather than match on its text.
	if _, gerr := st.GetMsg(ctx, seq); errors.Is(gerr, jetstream.ErrMsgNotFound) {
		return nil
	}
	return fmt.Errorf("deadletter: delete %s seq %d: %w", k.stream(), seq, err)
}

func (f Filter) matches(k kind, l Letter) bool {
	if f.TenantID != "" && l.TenantID != f.TenantID {
		return false
	}
	if f.IntegrationID != "" && l.IntegrationID != f.IntegrationID {
		return false
	}
	if f.ErrorContains != "" && !strings.Contains(strings.ToLower(l.LastError), strings.ToLower(f.ErrorContains)) {
		return false
	}
	t := l.when(k)
	if !f.Since.IsZero() && t.Before(f.Since) {
		return false
	}
	if !f.Until.IsZero() && !t.Before(f.Until) {
		return false
	}
	return true
}

// when is the time the Since/Until filter looks at.
func (l Letter) when(k kind) time.Time {
	t := l.LastFailure
	if k == kindSpool {
		t = l.SpooledAt
	}
	return cmp.Or(t, l.StoredAt)
}

func decode(k kind, raw *jetstream.RawStreamMsg) Letter {
	h := withoutDirectGetHeaders(raw.Header)
	l := Letter{
		Seq:             raw.Sequence,
		Subject:         raw.Subject,
		OriginalSubject: header(h, bus.HeaderOriginalSubject),
		MsgID:           cmp.Or(header(h, bus.HeaderOriginalMsgID), header(h, bus.HeaderMsgID)),
		TenantID:        header(h, bus.HeaderTenantID),
		IntegrationID:   header(h, bus.HeaderIntegrationID),
		StoredAt:        raw.Time.UTC(),
		Header:          h,
		Data:            raw.Data,
	}
	// The worker frame writes the failure headers on spool entries too
	// (class offline); entries spooled otherwise leave these fields empty.
	l.ErrorClass = header(h, bus.HeaderErrorClass)
	l.LastError = header(h, bus.HeaderLastError)
	l.Service = header(h, bus.HeaderService)
	l.DeliveryCount, _ = strconv.Atoi(header(h, bus.HeaderDeliveryCount))
	l.FirstFailure = parseTime(header(h, bus.HeaderFirstFailure))
	l.LastFailure = parseTime(header(h, bus.HeaderLastFailure))
	switch k {
	case kindDLQ:
		if l.OriginalSubject == "" {
			l.OriginalSubject = strings.TrimPrefix(raw.Subject, bus.DLQPrefix)
		}
	case kindSpool:
		// The subject is spool.<orig>.<integration>; the headers are the
		// authority, the subject the fallback for entries spooled by hand.
		rest := strings.TrimPrefix(raw.Subject, bus.SpoolPrefix)
		i := strings.LastIndexByte(rest, '.')
		if l.OriginalSubject == "" && i > 0 {
			l.OriginalSubject = rest[:i]
		}
		if l.IntegrationID == "" && i > 0 && rest[i+1:] != "_" {
			l.IntegrationID = rest[i+1:]
		}
		l.SpooledAt = parseTime(header(h, bus.HeaderSpooledAt))
	}
	return l
}

// withoutDirectGetHeaders removes what a direct get (used by nats.go when a
// stream allows it) adds to the stored headers, so a Letter shows the
// message as stored whichever way it was read.
func withoutDirectGetHeaders(h nats.Header) nats.Header {
	if h.Get(jetstream.StreamHeader) == "" || h.Get(jetstream.SequenceHeader) == "" {
		return h
	}
	out := make(nats.Header, len(h))
	for k, v := range h {
		switch k {
		case jetstream.StreamHeader, jetstream.SequenceHeader, jetstream.TimeStampHeaer, jetstream.SubjectHeader, "Nats-Last-Sequence", "Nats-Num-Pending":
			continue
		}
		out[k] = v
	}
	return out
}

// header reads a header by its documented name, then case-insensitively:
// a letter written by hand with the nats CLI may not match the case.
func header(h nats.Header, key string) string {
	if v := h.Get(key); v != "" {
		return v
	}
	for k, v := range h {
		if len(v) > 0 && strings.EqualFold(k, key) {
			return v[0]
		}
	}
	return ""
}

func parseTime(s string) time.Time {
	if s == "" {
		return time.Time{}
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}
	}
	return t.UTC()
}

// validSubjectPattern accepts what a NATS subject filter accepts: non-empty
// tokens, "*" as a whole token, ">" only as the last token.
func validSubjectPattern(p string) error {
	if strings.ContainsAny(p, " \t\r\n") {
		return fmt.Errorf("%q contains white space", p)
	}
	toks := strings.Split(p, ".")
	for i, t := range toks {
		switch {
		case t == "":
			return fmt.Errorf("%q has an empty token", p)
		case t == ">" && i != len(toks)-1:
			return fmt.Errorf("%q has '>' before the last token", p)
		case t != "*" && t != ">" && strings.ContainsAny(t, "*>"):
			return fmt.Errorf("%q has a wildcard inside token %q", p, t)
		}
	}
	return nil
}

// subjectMatches is NATS wildcard matching of a concrete subject.
func subjectMatches(pattern, subject string) bool {
	pt := strings.Split(pattern, ".")
	st := strings.Split(subject, ".")
	for i, p := range pt {
		if p == ">" {
			return len(st) > i
		}
		if i >= len(st) || (p != "*" && p != st[i]) {
			return false
		}
	}
	return len(pt) == len(st)
}
