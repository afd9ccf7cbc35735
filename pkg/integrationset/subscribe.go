package integrationset

import "inthub.dev/events"

// Kind says what a Change is.
type Kind int

const (
	// Upsert: the integration is new or changed; Integration is its record.
	Upsert Kind = iota + 1
	// Delete: the integration is gone; Integration is the last record the
	// Set held.
	Delete
	// Resync: changes were dropped because the subscriber fell behind;
	// read All and reconcile. Integration is zero.
	Resync
)

func (k Kind) String() string {
	switch k {
	case Upsert:
		return "upsert"
	case Delete:
		return "delete"
	case Resync:
		return "resync"
	}
	return "unknown"
}

// Change is one change of the set, delivered after the Set applied it (so
// Get and All already reflect it).
type Change struct {
	Kind        Kind
	Integration events.Integration
	// TraceParent is the W3C trace context of the catalog change that
	// wrote this record, when the record carries one: an Upsert seen as it
	// happens (not one found by a snapshot) of a created or updated
	// integration. A service whose work follows from the change (the
	// health poller's next check) continues that trace.
	TraceParent string
}

// Subscription receives the Set's changes on a buffered channel. The Set
// never waits for a subscriber. Overflow policy: the last free slot of the
// buffer is kept for a Resync marker; when a change finds no other room it
// is dropped and a Resync is queued instead (if the last slot is free).
// A dropped change is therefore always followed, in the channel, by a
// Resync that the subscriber has not read yet, and since the Set applies a
// change before it queues it, the All that the subscriber reads after
// that Resync includes every change it missed. Changes queued after a
// Resync may repeat what All already showed: apply changes idempotently.
type Subscription struct {
	set *Set
	ch  chan Change
}

// Subscribe returns a subscription with room for buffer changes (at least
// 2; default 1024 when buffer <= 0). Subscribe before reading All, so no
// change falls between the two. Changes are delivered from Ready on (the
// first snapshot is read with All); after a recovery of the watch, the
// differences it found arrive as changes.
func (s *Set) Subscribe(buffer int) *Subscription {
	if buffer <= 0 {
		buffer = 1024
	}
	buffer = max(buffer, 2)
	sub := &Subscription{set: s, ch: make(chan Change, buffer)}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		close(sub.ch)
		return sub
	}
	s.subs[sub] = struct{}{}
	return sub
}

// C is the channel of changes. It is closed by Close and when Run returns.
func (sub *Subscription) C() <-chan Change { return sub.ch }

// Close ends the subscription and closes its channel. Safe to call twice.
func (sub *Subscription) Close() {
	s := sub.set
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.subs[sub]; ok {
		delete(s.subs, sub)
		close(sub.ch)
	}
}

// notify queues c for every subscriber; s.mu must be held for writing
// (it is what orders sends against Close).
func (s *Set) notify(c Change) {
	for sub := range s.subs {
		switch n := len(sub.ch); {
		case n < cap(sub.ch)-1:
			sub.ch <- c
		case n == cap(sub.ch)-1:
			sub.ch <- Change{Kind: Resync}
			s.resyncs.Add(1)
		default:
			// Full, and the last item queued is a Resync not yet read.
		}
	}
}

func (s *Set) closeSubs() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	for sub := range s.subs {
		delete(s.subs, sub)
		close(sub.ch)
	}
}
