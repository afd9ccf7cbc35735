// Package spool is the publisher's local, fsync'd disk queue for the time the
// NATS bus is unreachable: messages are appended while the bus is down and
// replayed in order when it is back.
//
// Guarantees: a record is durable once Append returns nil, so a process
// killed at any point afterwards (SIGKILL, OOM) still has it on reopen. A
// record is removed only after the Drain callback accepted it; a crash
// between delivery and removal re-delivers it, which is safe because
// JetStream drops the duplicate by Nats-Msg-Id within its duplicate window.
//
// The store is a single bbolt file. bbolt takes an exclusive flock on it, so
// one file serves exactly one Spool at a time, in this process or any other.
//
// A Spool is safe for concurrent use.
package spool

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

var (
	// ErrFull is returned by Append when the batch would take the spool over
	// WithMaxRecords. Nothing of the batch is stored.
	ErrFull = errors.New("spool: full")
	// ErrLocked is returned by Open when the file is held by another Spool,
	// in this or another process.
	ErrLocked = errors.New("spool: file is locked by another open spool")
	// ErrClosed is returned by every method called after Close.
	ErrClosed = errors.New("spool: closed")
	// ErrCorrupt is wrapped by List and Drain when a stored record fails its
	// checksum or cannot be decoded.
	ErrCorrupt = errors.New("spool: corrupt record")
)

// Record is one message kept while the bus is unreachable.
type Record struct {
	Subject string
	// Header holds the NATS headers, Nats-Msg-Id included. A plain map keeps
	// this package free of nats.go.
	Header map[string][]string
	Data   []byte
	// SpooledAt is set to the current UTC time by Append when zero. It is
	// stored with nanosecond precision and read back in UTC.
	SpooledAt time.Time
}

// Entry is a stored Record with its queue position. Seq is strictly
// increasing in append order and never reused, not even after the spool has
// been drained empty or reopened.
type Entry struct {
	Seq uint64
	Record
}

// Option configures Open.
type Option func(*config)

type config struct {
	maxRecords  int
	noSync      bool
	lockTimeout time.Duration
}

// WithMaxRecords bounds the number of records held; Append returns ErrFull
// beyond it. n <= 0 means unbounded, the default. The bound keeps a long
// outage from filling the disk the host also needs for other things.
func WithMaxRecords(n int) Option {
	return func(c *config) { c.maxRecords = n }
}

// WithNoSync turns off fsync on commit. UNSAFE: an Append that returned nil
// can be lost, and the file can be left corrupt, if the machine (not just the
// process) goes down. For benchmarks and tests only.
func WithNoSync() Option {
	return func(c *config) { c.noSync = true }
}

const (
	// defaultLockTimeout bounds how long Open waits for the file lock. A
	// second publisher on the same file is a deployment error, so failing
	// fast with ErrLocked beats hanging in start-up; bbolt's default (0)
	// would wait forever.
	defaultLockTimeout = time.Second

	// drainBatch is how many delivered records share one delete transaction.
	// Each transaction is an fsync, so batching makes Drain roughly this many
	// times faster; the cost is that a crash re-delivers up to this many
	// records, which the bus de-duplicates.
	drainBatch = 64
)

// recordsBucket holds the queue: key = big-endian Seq from NextSequence, so
// bbolt's byte-ordered keys iterate in append order.
func recordsBucket() []byte { return []byte("records") }

// Spool is a durable FIFO of Records backed by one bbolt file.
type Spool struct {
	db         *bolt.DB
	path       string
	maxRecords int

	// wmu serialises our write transactions together with the update of n,
	// so n always equals the number of committed keys for whoever holds wmu
	// (bbolt runs OnCommit hooks after releasing its own writer lock, too
	// late for an exact ErrFull check).
	wmu sync.Mutex
	n   atomic.Int64

	// drainSem admits one Drain at a time: two concurrent drains would hand
	// the same record to two callbacks and break the order on the bus.
	drainSem chan struct{}

	closeOnce sync.Once
	closed    atomic.Bool
	closeErr  error
}

// Open opens or creates the spool file at path. Missing parent directories
// are created with mode 0o700 and a new file with mode 0o600, since spooled
// messages may carry customer data. If another Spool holds the file, Open
// fails after about a second with an error wrapping ErrLocked.
func Open(path string, opts ...Option) (*Spool, error) {
	cfg := config{lockTimeout: defaultLockTimeout}
	for _, o := range opts {
		o(&cfg)
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("spool: create directory: %w", err)
	}
	_, statErr := os.Stat(path)
	created := errors.Is(statErr, os.ErrNotExist)

	db, err := bolt.Open(path, 0o600, &bolt.Options{
		Timeout: cfg.lockTimeout,
		NoSync:  cfg.noSync,
	})
	if errors.Is(err, bolterrors.ErrTimeout) {
		return nil, fmt.Errorf("%w: %s (gave up after %v; is another publisher running with the same spool?)",
			ErrLocked, path, cfg.lockTimeout)
	}
	if err != nil {
		return nil, fmt.Errorf("spool: open %s: %w", path, err)
	}
	s := &Spool{
		db:         db,
		path:       path,
		maxRecords: cfg.maxRecords,
		drainSem:   make(chan struct{}, 1),
	}
	var count int64
	err = db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(recordsBucket())
		if err != nil {
			return err
		}
		// Counting once at open keeps Len O(1) afterwards without storing
		// a counter that every Append and Drain would have to rewrite.
		return b.ForEach(func(_, _ []byte) error {
			count++
			return nil
		})
	})
	if err == nil && created && !cfg.noSync {
		// bbolt fsyncs the file but not the directory entry; without this a
		// power cut soon after the first Open could lose the whole file.
		err = syncDir(dir)
	}
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("spool: open %s: %w", path, err)
	}
	s.n.Store(count)
	return s, nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// Path returns the file the spool lives in, for logs and metrics labels.
func (s *Spool) Path() string { return s.path }

// Append stores recs, in order, in one fsync'd transaction: either all of
// them are stored or none. It returns nil only once they are durable. ctx is
// checked before the write starts; a write in progress is not abandoned,
// because an Append that reports failure must not have stored anything.
// A record with an empty Subject is rejected: it could never be published
// and would block every later Drain.
func (s *Spool) Append(ctx context.Context, recs ...Record) error {
	if len(recs) == 0 {
		return nil
	}
	if s.closed.Load() {
		return ErrClosed
	}
	// Encode before taking any lock so concurrent appenders overlap their
	// CPU work and only serialise on the disk.
	now := time.Now().UTC()
	vals := make([][]byte, len(recs))
	for i := range recs {
		r := recs[i] // copy: filling SpooledAt must not write to the caller's slice
		if r.Subject == "" {
			return fmt.Errorf("spool: record %d has an empty subject", i)
		}
		if r.SpooledAt.IsZero() {
			r.SpooledAt = now
		}
		vals[i] = encodeRecord(&r)
	}
	if err := ctx.Err(); err != nil {
		return err
	}

	s.wmu.Lock()
	defer s.wmu.Unlock()
	if n := s.n.Load(); s.maxRecords > 0 && n+int64(len(recs)) > int64(s.maxRecords) {
		return fmt.Errorf("%w: %d records held, %d more would exceed the limit of %d",
			ErrFull, n, len(recs), s.maxRecords)
	}
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(recordsBucket())
		// Keys only ever grow, so pages never get inserts in the middle;
		// packing them full halves the file compared with the 50 % default.
		b.FillPercent = 0.95
		for _, v := range vals {
			seq, err := b.NextSequence()
			if err != nil {
				return err
			}
			if err := b.Put(seqKey(seq), v); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return s.wrapErr("append", err)
	}
	s.n.Add(int64(len(recs)))
	return nil
}

// Len returns the number of records held. It reads a counter, not the file.
func (s *Spool) Len() int { return int(s.n.Load()) }

// List returns up to limit entries with Seq > after, in order; limit <= 0
// means all. It does not remove anything; it is for inspection and tools.
func (s *Spool) List(ctx context.Context, after uint64, limit int) ([]Entry, error) {
	if s.closed.Load() {
		return nil, ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if after == math.MaxUint64 {
		return nil, nil
	}
	var out []Entry
	err := s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(recordsBucket()).Cursor()
		for k, v := c.Seek(seqKey(after + 1)); k != nil; k, v = c.Next() {
			if limit > 0 && len(out) >= limit {
				break
			}
			// Checked every so often so a huge List honours cancellation
			// without paying for ctx.Err on every record.
			if len(out)%256 == 255 {
				if err := ctx.Err(); err != nil {
					return err
				}
			}
			if len(k) != 8 {
				return fmt.Errorf("%w: key of %d bytes", ErrCorrupt, len(k))
			}
			seq := binary.BigEndian.Uint64(k)
			r, err := decodeRecord(v)
			if err != nil {
				return fmt.Errorf("seq %d: %w", seq, err)
			}
			out = append(out, Entry{Seq: seq, Record: r})
		}
		return nil
	})
	if err != nil {
		return nil, s.wrapErr("list", err)
	}
	return out, nil
}

// Drain hands records to fn in order, oldest first, and removes each one only
// after fn returned nil for it. The first error from fn (or from ctx) stops
// the drain and is returned wrapped; that record stays first in line for the
// next Drain. Drain returns how many records it removed.
//
// Records appended while Drain runs are drained too: Drain returns only when
// it finds the spool empty, on error, or when ctx is done. This lets a
// publisher keep appending to the spool until Drain returns nil and only then
// switch to publishing directly, without reordering messages.
//
// Removals are committed in batches. A crash re-delivers at most one batch of
// records that fn had already accepted (the bus de-duplicates them by
// Nats-Msg-Id) and never loses one it had not. fn runs outside any
// transaction, so it may be slow and may call Append. Only one Drain runs at
// a time; a second one waits for the first or for its ctx.
func (s *Spool) Drain(ctx context.Context, fn func(context.Context, Entry) error) (int, error) {
	if fn == nil {
		return 0, errors.New("spool: Drain with nil func")
	}
	if s.closed.Load() {
		return 0, ErrClosed
	}
	select {
	case s.drainSem <- struct{}{}:
	case <-ctx.Done():
		return 0, ctx.Err()
	}
	defer func() { <-s.drainSem }()

	drained := 0
	var after uint64
	for {
		batch, err := s.List(ctx, after, drainBatch)
		if err != nil {
			return drained, err
		}
		if len(batch) == 0 {
			return drained, nil
		}
		done := 0
		var stop error
		for _, e := range batch {
			if err := ctx.Err(); err != nil {
				stop = err
				break
			}
			if err := fn(ctx, e); err != nil {
				stop = fmt.Errorf("spool: deliver seq %d: %w", e.Seq, err)
				break
			}
			done++
		}
		if done > 0 {
			if err := s.remove(batch[:done]); err != nil {
				return drained, errors.Join(stop, err)
			}
			drained += done
			after = batch[done-1].Seq
		}
		if stop != nil {
			return drained, stop
		}
	}
}

func (s *Spool) remove(es []Entry) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(recordsBucket())
		for _, e := range es {
			if err := b.Delete(seqKey(e.Seq)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return s.wrapErr("remove delivered", err)
	}
	s.n.Add(-int64(len(es)))
	return nil
}

// Close releases the file and its lock. It waits for transactions in flight;
// a Drain blocked in its callback fails with ErrClosed when it next touches
// the file. Calling Close again returns the first result.
func (s *Spool) Close() error {
	s.closeOnce.Do(func() {
		s.closed.Store(true)
		if err := s.db.Close(); err != nil {
			s.closeErr = fmt.Errorf("spool: close %s: %w", s.path, err)
		}
	})
	return s.closeErr
}

func (s *Spool) wrapErr(op string, err error) error {
	switch {
	case errors.Is(err, bolterrors.ErrDatabaseNotOpen):
		return ErrClosed
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return err
	}
	return fmt.Errorf("spool: %s: %w", op, err)
}

func seqKey(seq uint64) []byte {
	return binary.BigEndian.AppendUint64(make([]byte, 0, 8), seq)
}
