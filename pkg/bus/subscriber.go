package bus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/nats-io/nats.go/jetstream"
)

// subscriber adapts a durable JetStream pull consumer to Watermill's
// message.Subscriber. It exists because watermill-nats v2.1.3's jetstream
// subscriber falls short where it matters for us (see DESIGN §4 and
// subscriber_gaps_test.go):
//
//   - it handles one message at a time per Consume callback;
//   - a local timer gives up on a message after AckWaitTimeout and drops
//     the late ack, so a slow handler is processed twice; here the server's
//     ack timer is extended with in-progress acks while the handler runs;
//   - a plain Nak is redelivered at once; here the outcome layer chooses
//     the delay per message (NakWithDelay);
//   - it cannot reach the delivery metadata from a handler; here the
//     message context carries a *Delivery.
//
// Bodies are never unmarshalled here, so nothing can fail before the
// middleware stack sees the message: a body that does not decode reaches
// the handler adapter, fails as permanent, and the outcome layer
// dead-letters it.
type subscriber struct {
	consumer    jetstream.Consumer
	stream      string
	name        string
	concurrency int
	pullBatch   int
	maxDeliver  int
	ackWait     time.Duration
	confirmAcks bool
	log         *slog.Logger
	// ledger records the messages handed back unhandled at shutdown: no
	// attempt, so they must not count toward MaxDeliver.
	ledger *ledger
	// recreate creates the durable consumer again (Worker.createConsumer)
	// when consuming stopped by itself; nil leaves it stopped.
	recreate func(context.Context) (jetstream.Consumer, error)
	// silent is signalled when the client missed the server's heartbeats.
	silent chan struct{}

	mu      sync.Mutex
	closed  bool
	closing chan struct{}
	wg      sync.WaitGroup
	watch   sync.WaitGroup // resume
	cc      jetstream.ConsumeContext
	in      chan jetstream.Msg
}

var _ message.Subscriber = (*subscriber)(nil)

// A pull request can vanish without an answer: on a cluster, the
// consumer's leader forgets its waiting requests when it steps down, and
// the new leader sends "409 Leadership Change" only for those it had
// heard of through the consumer's Raft group; a request that reached the
// old leader just before the change, or reached no leader at all (a 503,
// which the client does not answer with a new pull), is simply gone. The
// client's only way to notice is the idle heartbeat it asks the server
// for: two missed heartbeats and it pulls again. With the client's
// defaults (30 s expiry, 15 s heartbeat) that left a worker silent for
// 30 s after about half of the consumer leader changes that came right
// after it started (TestClusterWorkerResumesAfterConsumerLeaderChange);
// with these, a lost pull costs at most two heartbeats, 4 s. The price is
// one heartbeat every 2 s and a new pull every 10 s per idle worker.
const (
	pullExpiry    = 10 * time.Second
	pullHeartbeat = 2 * time.Second
)

// Subscribe starts consuming; topic is ignored (the consumer is fixed).
func (s *subscriber) Subscribe(ctx context.Context, _ string) (<-chan *message.Message, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, errors.New("bus: subscriber closed")
	}
	in := make(chan jetstream.Msg, s.concurrency)
	s.in = in
	s.silent = make(chan struct{}, 1)
	out := make(chan *message.Message)
	handle := func(m jetstream.Msg) {
		select {
		case <-s.closing:
			// Not ours any more: hand it back at once for another replica.
			s.handBack(m)
			return
		default:
		}
		select {
		case in <- m:
		case <-s.closing:
			s.handBack(m)
		case <-ctx.Done():
			s.handBack(m)
		}
	}
	cc, err := s.consume(s.consumer, handle)
	if err != nil {
		return nil, fmt.Errorf("bus: consume %s: %w", s.name, err)
	}
	s.cc = cc
	for range s.concurrency {
		s.wg.Go(func() { s.work(ctx, in, out) })
	}
	s.watch.Go(func() { s.resume(ctx, cc, handle) })
	go func() {
		s.wg.Wait()
		close(out)
	}()
	return out, nil
}

func (s *subscriber) consume(cons jetstream.Consumer, handle jetstream.MessageHandler) (jetstream.ConsumeContext, error) {
	return cons.Consume(handle,
		jetstream.PullMaxMessages(s.pullBatch),
		jetstream.PullExpiry(pullExpiry),
		jetstream.PullHeartbeat(pullHeartbeat),
		jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
			s.log.Debug("consume", "consumer", s.name, "error", err)
			if errors.Is(err, jetstream.ErrNoHeartbeat) {
				select {
				case s.silent <- struct{}{}:
				default:
				}
			}
		}),
	)
}

// resume keeps the worker consuming when the client stops by itself. The
// client ends a Consume for good on "409 Consumer Deleted" (the durable was
// removed, by hand or lost by the cluster) and on a bad request, and it
// keeps pulling in vain, every two missed heartbeats, from a consumer that
// is gone without a word: either way the worker would run on and never
// see another message. Here the consumer is created again, as at start,
// and consumed again.
func (s *subscriber) resume(ctx context.Context, cc jetstream.ConsumeContext, handle jetstream.MessageHandler) {
	if s.recreate == nil {
		return
	}
	// Cancelled when the subscriber closes, so that a recreation waiting
	// for the bus does not hold up Close.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-s.closing:
			cancel()
		case <-ctx.Done():
		}
	}()
	cons := s.consumer
	for {
		select {
		case <-cc.Closed():
		case <-s.silent:
			// Missed heartbeats: the client pulls again by itself, which
			// is enough unless the consumer is gone.
			ictx, icancel := context.WithTimeout(ctx, 5*time.Second)
			_, err := cons.Info(ictx)
			icancel()
			if !errors.Is(err, jetstream.ErrConsumerNotFound) {
				continue
			}
			cc.Stop()
		case <-ctx.Done():
			return
		}
		if ctx.Err() != nil {
			return
		}
		s.log.Warn("the consumer stopped delivering; creating it again", "consumer", s.name, "stream", s.stream)
		next, err := s.recreate(ctx)
		if err != nil {
			return // closing: recreate retries for as long as ctx lives
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			return
		}
		ncc, err := s.consume(next, handle)
		if err == nil {
			s.cc, s.consumer = ncc, next
		}
		s.mu.Unlock()
		if err != nil {
			s.log.Warn("cannot consume the re-created consumer", "consumer", s.name, "error", err)
			select {
			case <-time.After(time.Second):
			case <-ctx.Done():
				return
			}
			continue // cc is still the stopped one: its Closed fires at once
		}
		cons, cc = next, ncc
	}
}

func (s *subscriber) work(ctx context.Context, in <-chan jetstream.Msg, out chan<- *message.Message) {
	tick := max(s.ackWait/3, 10*time.Millisecond)
	timer := time.NewTimer(tick)
	defer timer.Stop()
	for {
		var m jetstream.Msg
		select {
		case m = <-in:
		case <-s.closing:
			return
		case <-ctx.Done():
			return
		}
		s.deliver(ctx, m, out, timer, tick)
	}
}

func (s *subscriber) deliver(ctx context.Context, m jetstream.Msg, out chan<- *message.Message, timer *time.Timer, tick time.Duration) {
	d := &Delivery{
		Subject:    m.Subject(),
		Stream:     s.stream,
		Consumer:   s.name,
		MaxDeliver: s.maxDeliver,
		Header:     m.Headers(),
		inProgress: m.InProgress,
	}
	if md, err := m.Metadata(); err == nil {
		d.StreamSeq = md.Sequence.Stream
		d.NumDelivered = md.NumDelivered
		d.Stored = md.Timestamp
	}
	id := d.Header.Get(HeaderMsgID)
	if id == "" {
		id = fmt.Sprintf("%s:%d", s.stream, d.StreamSeq)
	}
	wm := message.NewMessage(id, m.Data())
	wm.SetContext(withDelivery(ctx, d))

	select {
	case out <- wm:
	case <-s.closing:
		s.handBack(m)
		return
	case <-ctx.Done():
		s.handBack(m)
		return
	}

	timer.Reset(tick)
	for {
		select {
		case <-wm.Acked():
			var err error
			if s.confirmAcks {
				actx, acancel := context.WithTimeout(context.Background(), 5*time.Second)
				err = m.DoubleAck(actx)
				acancel()
			} else {
				err = m.Ack()
			}
			if err != nil {
				// The server redelivers after AckWait; the handler's effect is
				// either idempotent or guarded by the idempotency KV.
				s.log.Warn("ack failed", "consumer", s.name, "seq", d.StreamSeq, "error", err)
			}
			return
		case <-wm.Nacked():
			if delay := d.getNakDelay(); delay > 0 {
				_ = m.NakWithDelay(delay)
			} else {
				_ = m.Nak()
			}
			return
		case <-timer.C:
			// Keep the server's ack timer from expiring under a slow handler.
			_ = m.InProgress()
			timer.Reset(tick)
		}
	}
}

// handBack naks a message no handler saw, recording first that this
// delivery was no attempt (see BucketDeferrals): a worker that stops must
// not use up its messages' deliveries.
func (s *subscriber) handBack(m jetstream.Msg) {
	if md, err := m.Metadata(); err == nil {
		if _, err := s.ledger.add(context.Background(), md.Sequence.Stream); err != nil {
			s.log.Debug("handed back without recording it; the delivery counts", "consumer", s.name,
				"seq", md.Sequence.Stream, "error", err)
		}
	}
	_ = m.Nak()
}

// Close stops pulling and waits until every delivered message was acked or
// nacked by the router. The messages the client had buffered are handed
// back at once (Drain, not Stop, so that they reach the callback), not left
// for the server to redeliver after AckWait.
func (s *subscriber) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	close(s.closing)
	s.mu.Unlock()
	// resume may be between a stopped Consume and a new one; after it
	// returns, s.cc is the last one.
	s.watch.Wait()
	s.mu.Lock()
	cc, in := s.cc, s.in
	s.mu.Unlock()
	if cc != nil {
		cc.Drain()
		select {
		case <-cc.Closed():
		case <-time.After(5 * time.Second):
			cc.Stop()
		}
	}
	s.wg.Wait()
	// What the callback queued for workers that have stopped.
	for drained := in == nil; !drained; {
		select {
		case m := <-in:
			s.handBack(m)
		default:
			drained = true
		}
	}
	return nil
}
