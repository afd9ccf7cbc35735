package outbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"inthub.dev/pkg/bus"
	"inthub.dev/pkg/fault"
)

// Channel is the LISTEN/NOTIFY channel that wakes forwarders; a Notifier
// sends on it.
const Channel = "inthub_outbox"

// Publisher is what the forwarder publishes through: *bus.Publisher, or a
// wrapper of it. PublishMsg must return only once the message is durable
// (JetStream acked it), and classify a refusal with pkg/fault.
type Publisher interface {
	PublishMsg(ctx context.Context, msg *nats.Msg) error
}

var _ Publisher = (*bus.Publisher)(nil)

// Config configures a Forwarder.
type Config struct {
	// Pool connects as inthub_forwarder, which may read and delete every
	// tenant's outbox rows and nothing else. At most Concurrency of its
	// connections are in use at once; the LISTEN connection is separate.
	Pool *pgxpool.Pool
	// ListenURL is the connection string of the dedicated LISTEN
	// connection. Default: the pool's connection settings.
	ListenURL string
	// Publisher publishes the rows. Use a bus.Publisher without a spool
	// (see the package doc for why).
	Publisher Publisher
	// State is the bus.BucketIntegrations bucket. When set, the forwarder
	// keeps it up to date with every lifecycle row it publishes (see
	// "The integrations bucket" in the package doc); the catalog always
	// sets it. Nil leaves the bucket alone.
	State jetstream.KeyValue
	// Batch is the most rows one partition transaction publishes (default 100).
	Batch int
	// PollEvery is the fallback poll for when a notification is lost
	// (default 1s).
	PollEvery time.Duration
	// Concurrency is how many partitions are forwarded at once (default 4,
	// at most the pool's MaxConns).
	Concurrency int
	// MaxBackoff caps the wait between retries after a failed pass or a
	// lost LISTEN connection (default 5s).
	MaxBackoff time.Duration
	// TxTimeout bounds one partition's transaction, publishes included
	// (default 30s).
	TxTimeout time.Duration
	// Service names the forwarder in dead letters' headers (default "catalog").
	Service string
	Logger  *slog.Logger
}

// Stats are counters since New.
type Stats struct {
	Published    uint64 // rows published and deleted
	DeadLettered uint64 // rows JetStream refused for good, written to the DLQ and deleted
	Errors       uint64 // failed partition transactions (bus or database down)
	StateWrites  uint64 // writes to the integrations bucket
	StateSkipped uint64 // rows whose bucket update was refused for good (logged)
	Passes       uint64
	// Lag is, for the newest published row, the time from its INSERT
	// (clock_timestamp on the database server) to its JetStream ack here;
	// it includes any clock difference between the two machines.
	Lag         time.Duration
	LastPublish time.Time // zero until the first publish
}

// Forwarder publishes committed outbox rows. Several forwarders (one per
// catalog replica) may run against one database: each partition is
// forwarded by one of them at a time.
type Forwarder struct {
	cfg       Config
	listenCfg *pgx.ConnConfig
	log       *slog.Logger
	wake      chan struct{}
	running   atomic.Bool

	published    atomic.Uint64
	deadLettered atomic.Uint64
	errs         atomic.Uint64
	stateWrites  atomic.Uint64
	stateSkipped atomic.Uint64
	passes       atomic.Uint64
	lag          atomic.Int64
	lastPublish  atomic.Int64
}

// New checks cfg and returns a forwarder; it connects to nothing until Run.
func New(cfg Config) (*Forwarder, error) {
	if cfg.Pool == nil {
		return nil, errors.New("outbox: Config.Pool is nil: pass a pgxpool.Pool connected as inthub_forwarder")
	}
	if cfg.Publisher == nil {
		return nil, errors.New("outbox: Config.Publisher is nil: pass a bus.Publisher (without a spool)")
	}
	if cfg.Batch <= 0 {
		cfg.Batch = 100
	}
	if cfg.PollEvery <= 0 {
		cfg.PollEvery = time.Second
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = 4
	}
	if m := int(cfg.Pool.Config().MaxConns); cfg.Concurrency > m {
		cfg.Concurrency = m
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = 5 * time.Second
	}
	if cfg.TxTimeout <= 0 {
		cfg.TxTimeout = 30 * time.Second
	}
	if cfg.Service == "" {
		cfg.Service = "catalog"
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	var lc *pgx.ConnConfig
	if cfg.ListenURL != "" {
		c, err := pgx.ParseConfig(cfg.ListenURL)
		if err != nil {
			return nil, fmt.Errorf("outbox: Config.ListenURL: %w", err)
		}
		lc = c
	} else {
		lc = cfg.Pool.Config().ConnConfig.Copy()
	}
	return &Forwarder{cfg: cfg, listenCfg: lc, log: cfg.Logger, wake: make(chan struct{}, 1)}, nil
}

// Stats returns the forwarder's counters.
func (f *Forwarder) Stats() Stats {
	s := Stats{
		Published:    f.published.Load(),
		DeadLettered: f.deadLettered.Load(),
		Errors:       f.errs.Load(),
		StateWrites:  f.stateWrites.Load(),
		StateSkipped: f.stateSkipped.Load(),
		Passes:       f.passes.Load(),
		Lag:          time.Duration(f.lag.Load()),
	}
	if n := f.lastPublish.Load(); n != 0 {
		s.LastPublish = time.Unix(0, n).UTC()
	}
	return s
}

// Run forwards until ctx is done, then returns nil. It outlives database
// and NATS outages: a failed pass is retried with exponential backoff, the
// LISTEN connection is re-established, and the poll covers notifications
// missed meanwhile.
func (f *Forwarder) Run(ctx context.Context) error {
	if !f.running.CompareAndSwap(false, true) {
		return errors.New("outbox: Run is already running on this Forwarder")
	}
	defer f.running.Store(false)

	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		f.listen(ctx)
	}()
	defer wg.Wait()
	defer cancel()

	poll := time.NewTicker(f.cfg.PollEvery)
	defer poll.Stop()
	bo := f.backoff()
	for {
		more, err := f.pass(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			d := bo.NextBackOff()
			f.log.Warn("outbox: forwarding failed, retrying", "error", err, "retryIn", d.String())
			if !sleep(ctx, d) {
				return nil
			}
			continue
		}
		bo.Reset()
		if more {
			continue
		}
		select {
		case <-ctx.Done():
			return nil
		case <-f.wake:
		case <-poll.C:
		}
	}
}

func (f *Forwarder) backoff() *backoff.ExponentialBackOff {
	b := backoff.NewExponentialBackOff()
	b.InitialInterval = 50 * time.Millisecond
	b.MaxInterval = f.cfg.MaxBackoff
	b.MaxElapsedTime = 0 // never give up: the outbox waits as long as it must
	b.Reset()
	return b
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// Poke wakes the forwarder for a pass now, without waiting for a
// notification or the poll: the catalog calls it after each commit that
// wrote outbox rows, so its own replica starts forwarding without a round
// trip through PostgreSQL. It never blocks and is safe from any goroutine;
// pokes while a pass runs fold into one more pass.
func (f *Forwarder) Poke() {
	select {
	case f.wake <- struct{}{}:
	default:
	}
}

// listen keeps a LISTEN connection open and turns notifications into
// wake-ups. It is an optimisation: while it is down the poll still
// delivers, only later.
func (f *Forwarder) listen(ctx context.Context) {
	bo := f.backoff()
	for {
		err := f.listenOnce(ctx, bo)
		if ctx.Err() != nil {
			return
		}
		d := bo.NextBackOff()
		f.log.Warn("outbox: LISTEN connection lost, reconnecting", "error", err, "retryIn", d.String())
		if !sleep(ctx, d) {
			return
		}
	}
}

func (f *Forwarder) listenOnce(ctx context.Context, bo backoff.BackOff) error {
	conn, err := pgx.ConnectConfig(ctx, f.listenCfg)
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = conn.Close(cctx)
	}()
	if _, err := conn.Exec(ctx, "LISTEN "+Channel); err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	bo.Reset()
	// Rows committed while nobody listened sent their notifications to
	// no one.
	f.Poke()
	for {
		if _, err := conn.WaitForNotification(ctx); err != nil {
			return fmt.Errorf("wait for notification: %w", err)
		}
		f.Poke()
	}
}

// pass forwards every partition that has rows, Concurrency at a time.
// more reports that some partition had a full batch, so there may be more.
func (f *Forwarder) pass(ctx context.Context) (more bool, err error) {
	f.passes.Add(1)
	parts, err := f.pending(ctx)
	if err != nil {
		f.errs.Add(1)
		return false, err
	}
	var (
		mu   sync.Mutex
		errs []error
		wg   sync.WaitGroup
		sem  = make(chan struct{}, f.cfg.Concurrency)
	)
	for _, p := range parts {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			full, err := f.forward(ctx, p)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				f.errs.Add(1)
				errs = append(errs, fmt.Errorf("partition %d: %w", p, err))
			}
			more = more || full
		}()
	}
	wg.Wait()
	return more, errors.Join(errs...)
}

// pending lists the partitions that have rows: one index probe each, so
// an idle wake-up costs one round trip rather than a transaction per
// partition.
func (f *Forwarder) pending(ctx context.Context) ([]int, error) {
	ctx, cancel := context.WithTimeout(ctx, f.cfg.TxTimeout)
	defer cancel()
	rows, err := f.cfg.Pool.Query(ctx,
		`SELECT p FROM generate_series(0, $1::int - 1) AS p
		 WHERE EXISTS (SELECT 1 FROM outbox WHERE partition = p)`, Partitions)
	if err != nil {
		return nil, fmt.Errorf("outbox: list pending partitions: %w", err)
	}
	parts, err := pgx.CollectRows(rows, pgx.RowTo[int])
	if err != nil {
		return nil, fmt.Errorf("outbox: list pending partitions: %w", err)
	}
	return parts, nil
}

type row struct {
	id          int64
	subject     string
	eventID     string
	payload     []byte
	tenantID    string
	aggregateID string
	createdAt   time.Time
}

// message is the row as it goes on the bus: the payload bytes as written,
// the headers bus.Publisher would set.
func (r row) message() *nats.Msg {
	h := make(nats.Header, 4)
	h.Set(bus.HeaderMsgID, r.eventID)
	h.Set(bus.HeaderTenantID, r.tenantID)
	h.Set(bus.HeaderIntegrationID, r.aggregateID)
	// The trace context of the request that wrote the row, so the trace
	// continues across the outbox.
	var tp struct {
		TraceParent string `json:"traceparent"`
	}
	if json.Unmarshal(r.payload, &tp) == nil && tp.TraceParent != "" {
		h.Set(bus.HeaderTraceParent, tp.TraceParent)
	}
	return &nats.Msg{Subject: r.subject, Header: h, Data: r.payload}
}

// forward publishes up to Batch rows of partition p in id order, unless
// another forwarder holds the partition. full reports a full batch.
func (f *Forwarder) forward(ctx context.Context, p int) (full bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, f.cfg.TxTimeout)
	defer cancel()
	tx, err := f.cfg.Pool.Begin(ctx)
	if err != nil {
		return false, fmt.Errorf("begin: %w", err)
	}
	defer func() {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = tx.Rollback(rctx) // after Commit a no-op
	}()

	// The DELETE's commit need not wait for the WAL flush: if the server
	// loses it, the rows are published again and the duplicate window
	// drops them. This keeps the forwarder's commits out of the producers'
	// flush queue.
	var mine bool
	if err := tx.QueryRow(ctx, `SELECT pg_try_advisory_xact_lock($1, $2), set_config('synchronous_commit', 'off', true)`,
		LockClass, int32(p)).Scan(&mine, nil); err != nil {
		return false, fmt.Errorf("advisory lock: %w", err)
	}
	if !mine {
		return false, nil // another replica is forwarding it
	}
	// In READ COMMITTED this statement's snapshot is taken after the lock
	// was granted, so it sees every delete of the previous holder.
	//
	// No FOR UPDATE: PostgreSQL requires UPDATE privilege for row locks,
	// which inthub_forwarder rightly lacks, and it would add nothing. The
	// advisory lock already makes this transaction the partition's only
	// reader-deleter; the only other writers are producers' INSERTs, and
	// new rows are not in this snapshot.
	rows, err := tx.Query(ctx,
		`SELECT id, subject, event_id::text, payload, tenant_id::text, aggregate_id::text, created_at
		 FROM outbox WHERE partition = $1 ORDER BY id LIMIT $2`, p, f.cfg.Batch)
	if err != nil {
		return false, fmt.Errorf("select: %w", err)
	}
	batch, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (row, error) {
		var x row
		err := r.Scan(&x.id, &x.subject, &x.eventID, &x.payload, &x.tenantID, &x.aggregateID, &x.createdAt)
		return x, err
	})
	if err != nil {
		return false, fmt.Errorf("select: %w", err)
	}
	if len(batch) == 0 {
		return false, nil
	}

	done := make([]int64, 0, len(batch))
	var dead int
	var perr error
	var last row
	for _, r := range batch {
		err := f.cfg.Publisher.PublishMsg(ctx, r.message())
		var isDead bool
		if err != nil && fault.ClassOf(err) == fault.ClassPermanent {
			if derr := f.deadLetter(ctx, r, err); derr != nil {
				err = fmt.Errorf("%w; dead-lettering it failed too: %w", err, derr)
			} else {
				err = nil
				isDead = true
			}
		}
		if err == nil {
			// A dead-lettered row updates the bucket too: the bucket
			// mirrors the catalog's committed state, not which messages
			// the stream took.
			err = f.state(ctx, r)
		}
		if err != nil {
			// Later rows may be the same integration's later events:
			// stop here, they go after this one. The row stays; its
			// publish is repeated on the next pass, and the duplicate
			// window drops the repeat.
			f.log.Warn("outbox: forwarding failed",
				"subject", r.subject, "eventId", r.eventID,
				"tenantId", r.tenantID, "integrationId", r.aggregateID, "error", err)
			perr = fmt.Errorf("forward event %s: %w", r.eventID, err)
			break
		}
		if isDead {
			dead++
		}
		done = append(done, r.id)
		last = r
	}
	if len(done) == 0 {
		return false, perr
	}

	// What is published is deleted even if Run is stopping, so that a
	// graceful shutdown leaves no duplicates behind.
	dctx, dcancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer dcancel()
	if _, err := tx.Exec(dctx, `DELETE FROM outbox WHERE id = ANY($1)`, done); err != nil {
		return false, errors.Join(perr, fmt.Errorf("delete %d published rows (they will be re-published, the duplicate window drops them): %w", len(done), err))
	}
	if err := tx.Commit(dctx); err != nil {
		return false, errors.Join(perr, fmt.Errorf("commit delete of %d published rows (they will be re-published, the duplicate window drops them): %w", len(done), err))
	}
	now := time.Now()
	f.published.Add(uint64(len(done) - dead))
	f.deadLettered.Add(uint64(dead))
	f.lag.Store(int64(now.Sub(last.createdAt)))
	f.lastPublish.Store(now.UnixNano())
	return perr == nil && len(batch) == f.cfg.Batch, perr
}

// state applies r to the integrations bucket, if there is one. A
// refusal for good is logged and counted, not returned: the event is
// published, and blocking the partition would not cure it.
func (f *Forwarder) state(ctx context.Context, r row) error {
	if f.cfg.State == nil {
		return nil
	}
	wrote, err := f.applyState(ctx, r)
	switch {
	case errors.Is(err, errSkip):
		f.stateSkipped.Add(1)
		f.log.Error("outbox: integrations bucket not updated for this event",
			"subject", r.subject, "eventId", r.eventID,
			"tenantId", r.tenantID, "integrationId", r.aggregateID, "error", err)
		return nil
	case err != nil:
		return fmt.Errorf("update integrations bucket: %w", err)
	}
	if wrote {
		f.stateWrites.Add(1)
	}
	return nil
}

// deadLetter writes a row that JetStream refuses for good to
// dlq.<subject>, body untouched, the failure in headers, as the worker
// frame writes its dead letters; `inthubctl dlq replay` can send it again.
func (f *Forwarder) deadLetter(ctx context.Context, r row, cause error) error {
	msg := r.message()
	subject := msg.Subject
	now := time.Now().UTC().Format(time.RFC3339Nano)
	h := msg.Header
	h.Set(bus.HeaderMsgID, bus.DLQSubject(subject)+":outbox:"+r.eventID)
	h.Set(bus.HeaderOriginalMsgID, r.eventID)
	h.Set(bus.HeaderOriginalSubject, subject)
	h.Set(bus.HeaderErrorClass, fault.ClassPermanent.String())
	h.Set(bus.HeaderLastError, truncate(cause.Error(), 2048))
	h.Set(bus.HeaderService, f.cfg.Service)
	h.Set(bus.HeaderFirstFailure, now)
	h.Set(bus.HeaderLastFailure, now)
	msg.Subject = bus.DLQSubject(subject)
	if err := f.cfg.Publisher.PublishMsg(ctx, msg); err != nil {
		return err
	}
	f.log.Error("outbox: event refused by JetStream, dead-lettered",
		"subject", subject, "eventId", r.eventID,
		"tenantId", r.tenantID, "integrationId", r.aggregateID, "error", cause)
	return nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
