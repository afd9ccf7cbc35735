package e2e_test

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"inthub.dev/events"
	"inthub.dev/pkg/bus"
	"inthub.dev/pkg/deadletter"
)

// scannerSource is the CloudEvents source of the requests the tests
// publish, as Scanner would.
const scannerSource = "e2e/scanner"

// newRequest makes a Scanner request event (not yet published).
func newRequest(req events.AnnotationRequested) (events.Event, error) {
	return events.New(events.SubjectAnnotationRequested, scannerSource, tenant, req)
}

// publish publishes ev as Scanner does: Nats-Msg-Id is the event id, so
// it retries until JetStream acknowledges, and a retry of a publish that
// was stored but whose ack was lost (NATS going down) is dropped by the
// stream's duplicate window. It returns once the event is accepted, or
// ctx's error.
func (f *fleet) publish(ctx context.Context, ev events.Event) error {
	body, err := ev.Marshal()
	if err != nil {
		return err
	}
	h := nats.Header{}
	h.Set(bus.HeaderMsgID, ev.ID)
	h.Set(bus.HeaderTenantID, ev.TenantID)
	if id := ev.IntegrationID(); id != "" {
		h.Set(bus.HeaderIntegrationID, id)
	}
	for {
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		_, err := f.js.PublishMsg(pctx, &nats.Msg{Subject: ev.Type, Header: h, Data: body})
		cancel()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("publish %s %s: %w (last error: %v)", ev.Type, ev.ID, ctx.Err(), err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// streamMsgs reads every message on subject (wildcards allowed) in
// stream, oldest first, by "next message for subject" requests: no
// consumer is created, so reading changes nothing.
func (f *fleet) streamMsgs(ctx context.Context, stream, subject string) ([]*jetstream.RawStreamMsg, error) {
	st, err := f.js.Stream(ctx, stream)
	if err != nil {
		return nil, err
	}
	var out []*jetstream.RawStreamMsg
	for seq := uint64(1); ; {
		m, err := st.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(subject))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("read %s %s at %d: %w", stream, subject, seq, err)
		}
		out = append(out, m)
		seq = m.Sequence + 1
	}
}

// results reads scm.annotation.completed and scm.annotation.failed from
// the SCM stream, by request id.
func (f *fleet) results(ctx context.Context) (completed map[string][]events.AnnotationCompleted, failed map[string][]events.AnnotationFailed, err error) {
	completed, failed = map[string][]events.AnnotationCompleted{}, map[string][]events.AnnotationFailed{}
	for _, subject := range []string{events.SubjectAnnotationCompleted, events.SubjectAnnotationFailed} {
		msgs, err := f.streamMsgs(ctx, bus.StreamSCM, subject)
		if err != nil {
			return nil, nil, err
		}
		for _, m := range msgs {
			ev, err := events.Parse(m.Data)
			if err != nil {
				return nil, nil, fmt.Errorf("%s seq %d does not parse: %w", subject, m.Sequence, err)
			}
			if subject == events.SubjectAnnotationCompleted {
				var c events.AnnotationCompleted
				if err := ev.Decode(&c); err != nil {
					return nil, nil, err
				}
				completed[c.RequestID] = append(completed[c.RequestID], c)
			} else {
				var fl events.AnnotationFailed
				if err := ev.Decode(&fl); err != nil {
					return nil, nil, err
				}
				failed[fl.RequestID] = append(failed[fl.RequestID], fl)
			}
		}
	}
	return completed, failed, nil
}

// parked counts the annotation requests in the DLQ and in the SPOOL, by
// request (CloudEvents) id read from the body, which both keep untouched.
func (f *fleet) parked(ctx context.Context) (dlq, spool map[string][]deadletter.Letter, err error) {
	filter := deadletter.Filter{Subject: events.SubjectAnnotationRequested}
	dls, err := f.dl.List(ctx, filter)
	if err != nil {
		return nil, nil, err
	}
	sps, err := f.dl.SpoolList(ctx, filter)
	if err != nil {
		return nil, nil, err
	}
	byID := func(ls []deadletter.Letter) (map[string][]deadletter.Letter, error) {
		m := map[string][]deadletter.Letter{}
		for _, l := range ls {
			ev, err := events.Parse(l.Data)
			if err != nil {
				return nil, fmt.Errorf("%s seq %d: body does not parse: %w", l.Subject, l.Seq, err)
			}
			m[ev.ID] = append(m[ev.ID], l)
		}
		return m, nil
	}
	if dlq, err = byID(dls); err != nil {
		return nil, nil, err
	}
	spool, err = byID(sps)
	return dlq, spool, err
}

// --- a lifecycle subscriber, as Scheduler or Signals run one

// received is one lifecycle event as a subscriber saw it.
type received struct {
	seq           uint64 // stream sequence in INTEGRATIONS
	subject       string
	id            string // event id
	integrationID string
	version       int64               // created, updated
	status, prev  events.HealthStatus // health_changed
	at            time.Time
}

func (r received) String() string {
	switch r.subject {
	case events.SubjectIntegrationCreated, events.SubjectIntegrationUpdated:
		return fmt.Sprintf("%s v%d", r.subject, r.version)
	case events.SubjectIntegrationHealthChanged:
		return fmt.Sprintf("%s %s→%s", r.subject, r.prev, r.status)
	}
	return r.subject
}

// signals is a subscriber with a durable consumer of its own on
// integration.created/updated/deleted/health_changed. It acks every
// message; a message it sees again (its ack lost in a NATS restart) is
// the same stream sequence and counted as a redelivery, which DESIGN lets
// a consumer drop by event id. Two stream sequences with one event id
// would be a duplicate publication: that it records too.
type signals struct {
	mu           sync.Mutex
	bySeq        map[uint64]received
	seqsByID     map[string][]uint64
	redeliveries int
	bad          []string
	cc           jetstream.ConsumeContext
	// notify is signalled (non-blocking) on every new event.
	notify chan struct{}
}

func (f *fleet) subscribe(durable string) *signals {
	f.t.Helper()
	cons, err := f.js.CreateOrUpdateConsumer(f.ctx, bus.StreamIntegrations, jetstream.ConsumerConfig{
		Durable: durable, AckPolicy: jetstream.AckExplicitPolicy, DeliverPolicy: jetstream.DeliverAllPolicy,
		AckWait: 5 * time.Second, MaxAckPending: 10_000,
		FilterSubjects: []string{events.SubjectIntegrationCreated, events.SubjectIntegrationUpdated,
			events.SubjectIntegrationDeleted, events.SubjectIntegrationHealthChanged},
	})
	if err != nil {
		f.t.Fatal(err)
	}
	s := &signals{bySeq: map[uint64]received{}, seqsByID: map[string][]uint64{}, notify: make(chan struct{}, 1)}
	cc, err := cons.Consume(s.handle, jetstream.ConsumeErrHandler(func(jetstream.ConsumeContext, error) {
		// Disconnects while NATS restarts: Consume resumes by itself.
	}))
	if err != nil {
		f.t.Fatal(err)
	}
	s.cc = cc
	f.t.Cleanup(cc.Stop)
	return s
}

func (s *signals) handle(msg jetstream.Msg) {
	md, err := msg.Metadata()
	if err != nil {
		s.fail("no metadata: %v", err)
		return
	}
	r := received{seq: md.Sequence.Stream, subject: msg.Subject(), at: time.Now()}
	ev, err := events.Parse(msg.Data())
	if err != nil {
		s.fail("seq %d: %v", r.seq, err)
		_ = msg.Ack()
		return
	}
	r.id, r.integrationID = ev.ID, ev.IntegrationID()
	switch ev.Type {
	case events.SubjectIntegrationCreated:
		var p events.IntegrationCreated
		err = ev.Decode(&p)
		r.version = p.Integration.Version
	case events.SubjectIntegrationUpdated:
		var p events.IntegrationUpdated
		err = ev.Decode(&p)
		r.version = p.Integration.Version
	case events.SubjectIntegrationHealthChanged:
		var p events.HealthChanged
		err = ev.Decode(&p)
		r.status, r.prev = p.Status, p.PreviousStatus
	}
	if err != nil {
		s.fail("seq %d: %v", r.seq, err)
	}
	s.mu.Lock()
	if _, seen := s.bySeq[r.seq]; seen {
		s.redeliveries++
	} else {
		s.bySeq[r.seq] = r
		s.seqsByID[r.id] = append(s.seqsByID[r.id], r.seq)
	}
	s.mu.Unlock()
	_ = msg.Ack()
	select {
	case s.notify <- struct{}{}:
	default:
	}
}

func (s *signals) fail(format string, args ...any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.bad = append(s.bad, fmt.Sprintf(format, args...))
}

// of is what the subscriber received about one integration, in stream
// order, each stream message once.
func (s *signals) of(integrationID string) []received {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []received
	for _, r := range s.bySeq {
		if r.integrationID == integrationID {
			out = append(out, r)
		}
	}
	slices.SortFunc(out, func(a, b received) int { return cmp.Compare(a.seq, b.seq) })
	return out
}

// problems lists events that did not parse and event ids published more
// than once (at two stream sequences).
func (s *signals) problems() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := slices.Clone(s.bad)
	for id, seqs := range s.seqsByID {
		if len(seqs) > 1 {
			out = append(out, fmt.Sprintf("event %s published %d times (stream sequences %v)", id, len(seqs), seqs))
		}
	}
	return out
}

// waitFor waits until cond holds over what integrationID received.
func (s *signals) waitFor(d time.Duration, integrationID string, cond func([]received) bool) ([]received, bool) {
	deadline := time.NewTimer(d)
	defer deadline.Stop()
	for {
		got := s.of(integrationID)
		if cond(got) {
			return got, true
		}
		select {
		case <-s.notify:
		case <-time.After(200 * time.Millisecond):
		case <-deadline.C:
			return s.of(integrationID), false
		}
	}
}
