package outbox

import (
	"context"
	"errors"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// DefaultNotifyWindow is the Notifier's default window: the most a
// notification waits behind the previous one, and so the least time
// between two.
const DefaultNotifyWindow = 5 * time.Millisecond

// notifyTimeout bounds one pg_notify; meanwhile further requests fold into
// the next one.
const notifyTimeout = 2 * time.Second

// Notifier wakes the forwarders of every catalog replica through
// PostgreSQL's NOTIFY, at most once per window however many writes ask for
// it, and never inside a write's transaction (see the package doc for why).
type Notifier struct {
	pool    *pgxpool.Pool
	window  time.Duration
	log     *slog.Logger
	kick    chan struct{}
	running atomic.Bool

	sent   atomic.Uint64
	failed atomic.Uint64
}

// NotifierStats are counters since NewNotifier.
type NotifierStats struct {
	Sent   uint64 // notifications PostgreSQL accepted
	Failed uint64 // notifications that failed (logged; the poll covers them)
}

// NewNotifier returns a Notifier that sends through pool. Any role will
// do (pg_notify needs no privilege); the catalog uses its forwarder pool.
// window <= 0 means DefaultNotifyWindow; log may be nil.
func NewNotifier(pool *pgxpool.Pool, window time.Duration, log *slog.Logger) (*Notifier, error) {
	if pool == nil {
		return nil, errors.New("outbox: NewNotifier needs a pool: pass the catalog's pgxpool.Pool (any role)")
	}
	if window <= 0 {
		window = DefaultNotifyWindow
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Notifier{pool: pool, window: window, log: log, kick: make(chan struct{}, 1)}, nil
}

// Notify asks for a notification. It never blocks and is safe from any
// goroutine: requests made while one is pending fold into it. Requests
// made before Run starts are sent when it does; after Run returns, they
// are dropped.
func (n *Notifier) Notify() {
	select {
	case n.kick <- struct{}{}:
	default:
	}
}

// Stats returns the notifier's counters.
func (n *Notifier) Stats() NotifierStats {
	return NotifierStats{Sent: n.sent.Load(), Failed: n.failed.Load()}
}

// Run sends the requested notifications until ctx is done, then returns
// nil. The first request after a quiet spell goes out at once; requests
// within the following window wait for its end and go out as one, so the
// rate is bounded by the window, not by the write rate, and the last
// request is never left unsent. A failed notification is logged and Run
// goes on: the forwarders' poll delivers the rows, only later.
func (n *Notifier) Run(ctx context.Context) error {
	if !n.running.CompareAndSwap(false, true) {
		return errors.New("outbox: Run is already running on this Notifier")
	}
	defer n.running.Store(false)
	healthy := true
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-n.kick:
		}
		err := n.send(ctx)
		switch {
		case ctx.Err() != nil:
			return nil
		case err != nil:
			n.failed.Add(1)
			// Once per outage at Warn: while the database is away every
			// window would log the same thing.
			level := slog.LevelDebug
			if healthy {
				level = slog.LevelWarn
			}
			healthy = false
			n.log.Log(ctx, level, "outbox: notify failed; other replicas' forwarders wait for their poll", "error", err)
		default:
			n.sent.Add(1)
			if !healthy {
				n.log.Info("outbox: notify works again")
			}
			healthy = true
		}
		if !sleep(ctx, n.window) {
			return nil
		}
	}
}

// send runs pg_notify in its own single-statement transaction. It does not
// wait for its commit record to reach the disk (synchronous_commit off for
// this transaction only): a notification is a wake-up, not data, and
// waiting would hold the cluster-wide notify lock through a WAL flush, the
// very stall this type exists to keep off the writes. A crash that loses
// the commit loses only the wake-up, which the poll covers.
func (n *Notifier) send(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, notifyTimeout)
	defer cancel()
	_, err := n.pool.Exec(ctx,
		`SELECT set_config('synchronous_commit', 'off', true), pg_notify($1, '')`, Channel)
	return err
}
