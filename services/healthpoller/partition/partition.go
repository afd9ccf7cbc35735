// Package partition shares the health poller's work between its replicas.
//
// The integrations are split into a fixed number of partitions by a hash
// of their id (Of). Each partition is a lease: a key in the JetStream KV
// bucket HEALTH_LEASES that one replica holds at a time. A replica takes a
// free partition with Create (compare-and-set on "no such key"), renews it
// with Update on the revision it holds, and gives it back with a Delete on
// that revision. The bucket's TTL (MaxAge) is the lease time: a replica
// that dies stops renewing and its leases vanish a TTL later, for the
// others to take.
//
// Each replica also keeps a key with the same TTL in HEALTH_MEMBERS, so
// every replica knows how many are alive (N) and aims at ceil(P/N)
// partitions: it takes free ones up to that share and hands the surplus
// back, so a new replica gets its share within a renew period or two, and
// the survivors of a dead one cover its partitions a TTL later.
//
// Why leases on partitions and not work items on a WorkQueue stream: the
// schedule stays where it is cheap (an in-memory heap, one timer, no
// message per check: 100,000 integrations at 5 minutes would be 333
// messages a second through the stream for nothing but timing), JetStream
// only arbitrates ownership (64 keys renewed every few seconds), and a
// check is never queued behind a dead consumer's ack wait. Why not one
// leader that schedules everything: the checks themselves are the work to
// share.
//
// The manager reports every change of the partitions it holds to OnChange
// before it gives a lease back and after it takes one, so the caller can
// stop scheduling a partition before another replica may start. While
// NATS is unreachable a replica keeps the leases it holds (its checks go
// on; results wait in the spool): every replica is cut off alike, and if
// only this one is, the others take the partitions a TTL later and both
// check them until it is back and finds its renewals refused.
package partition

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	mrand "math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"inthub.dev/pkg/bus"
)

// Bucket names and defaults.
const (
	LeaseBucket       = "HEALTH_LEASES"
	MemberBucket      = "HEALTH_MEMBERS"
	DefaultPartitions = 64
	DefaultTTL        = 15 * time.Second
	// MaxPartitions bounds the keys renewed per period.
	MaxPartitions = 4096
	// metaPartitions records the partition count on the lease bucket: two
	// replicas that disagree on it would hash the same integration to
	// different keys and both check it.
	metaPartitions = "inthub.partitions"
)

// Of is the partition of an integration id among n.
func Of(id string, n int) int {
	h := fnv.New32a()
	_, _ = h.Write([]byte(id))
	return int(h.Sum32() % uint32(n))
}

// Config configures a Manager. Zero values take the defaults.
type Config struct {
	// Partitions is the number of partitions (64); every replica must use
	// the same, and the lease bucket records it.
	Partitions int
	// TTL is how long a lease outlives its last renewal (15s): the time a
	// dead replica's partitions wait for a new owner. Every replica should
	// use the same; the last one started sets the buckets' TTL.
	TTL time.Duration
	// Renew is the period of renewals and rebalancing (TTL/3); at most
	// TTL/2, so one missed renewal does not lose a lease.
	Renew time.Duration
	// Topology lays out the buckets (replicas, placement) like the
	// fleet's streams; the zero value is one replica.
	Topology bus.Topology
	// ID names this replica in the buckets; default host name + random.
	ID string
	// OnChange gets the partitions held (a fresh slice, indexed by
	// partition) each time they change, from one goroutine, in order.
	OnChange func(owned []bool)
	Logger   *slog.Logger
}

// Stats is a snapshot of the manager's state.
type Stats struct {
	Partitions int
	Owned      int
	// Members is the number of replicas seen alive at the last rebalance
	// (0 before the first).
	Members int
	// Acquired and Released count lease changes since start (Lost is
	// included in Released: leases that were taken over while this replica
	// could not renew them).
	Acquired, Released, Lost uint64
}

// Manager holds this replica's leases. Make it with New, run it with Run.
type Manager struct {
	js  jetstream.JetStream
	cfg Config
	log *slog.Logger
	val []byte

	ready chan struct{}

	leases, members jetstream.KeyValue

	mu    sync.Mutex
	held  map[int]uint64 // partition → revision of our lease
	stats Stats
}

// New checks cfg; nothing touches NATS until Run.
func New(js jetstream.JetStream, cfg Config) (*Manager, error) {
	if js == nil {
		return nil, errors.New("partition: a JetStream context is required")
	}
	if cfg.Partitions == 0 {
		cfg.Partitions = DefaultPartitions
	}
	if cfg.Partitions < 1 || cfg.Partitions > MaxPartitions {
		return nil, fmt.Errorf("partition: %d partitions: want 1 to %d", cfg.Partitions, MaxPartitions)
	}
	if cfg.TTL == 0 {
		cfg.TTL = DefaultTTL
	}
	if cfg.TTL < time.Second {
		return nil, fmt.Errorf("partition: lease TTL %v: want at least 1s (JetStream expires messages at a 250 ms grain)", cfg.TTL)
	}
	if cfg.Renew == 0 {
		cfg.Renew = cfg.TTL / 3
	}
	if cfg.Renew <= 0 || cfg.Renew > cfg.TTL/2 {
		return nil, fmt.Errorf("partition: renew period %v with a lease TTL of %v: want more than 0 and at most TTL/2", cfg.Renew, cfg.TTL)
	}
	if err := cfg.Topology.Validate(); err != nil {
		return nil, fmt.Errorf("partition: %w", err)
	}
	if cfg.ID == "" {
		cfg.ID = defaultID()
	}
	if !validKey(cfg.ID) {
		return nil, fmt.Errorf("partition: replica id %q: use letters, digits, '-' and '_'", cfg.ID)
	}
	if cfg.OnChange == nil {
		cfg.OnChange = func([]bool) {}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	val, _ := json.Marshal(struct {
		Replica string `json:"replica"`
	}{cfg.ID})
	return &Manager{
		js: js, cfg: cfg, log: cfg.Logger.With("replica", cfg.ID), val: val,
		ready: make(chan struct{}),
		held:  map[int]uint64{},
		stats: Stats{Partitions: cfg.Partitions},
	}, nil
}

func defaultID() string {
	host, _ := os.Hostname()
	host = strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' {
			return r
		}
		return '-'
	}, host)
	if host == "" {
		host = "poller"
	}
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return host + "-" + hex.EncodeToString(b)
}

func validKey(s string) bool {
	if s == "" || len(s) > 200 {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
			return false
		}
	}
	return true
}

// ID is this replica's name in the buckets.
func (m *Manager) ID() string { return m.cfg.ID }

// Partitions is the partition count.
func (m *Manager) Partitions() int { return m.cfg.Partitions }

// Ready is closed after the first round: buckets provisioned, membership
// announced, the first share of partitions taken.
func (m *Manager) Ready() <-chan struct{} { return m.ready }

// Stats returns a snapshot.
func (m *Manager) Stats() Stats {
	m.mu.Lock()
	defer m.mu.Unlock()
	st := m.stats
	st.Owned = len(m.held)
	return st
}

func leaseKey(p int) string { return "p-" + strconv.Itoa(p) }

func partitionOf(key string) (int, bool) {
	s, ok := strings.CutPrefix(key, "p-")
	if !ok {
		return 0, false
	}
	p, err := strconv.Atoi(s)
	return p, err == nil
}

// Run keeps the leases until ctx ends, then hands them back and returns
// nil. It returns an error only for a configuration that cannot work (a
// lease bucket made for another partition count).
func (m *Manager) Run(ctx context.Context) error {
	tick := time.NewTicker(m.cfg.Renew)
	defer tick.Stop()
	defer m.releaseAll(ctx)
	for {
		if m.leases == nil {
			if err := m.provision(ctx); err != nil {
				var ce *configError
				if errors.As(err, &ce) {
					return err
				}
				if ctx.Err() == nil {
					m.log.Warn("health leases: cannot provision the buckets yet; retrying", "error", err)
				}
			}
		}
		if m.leases != nil {
			m.round(ctx)
			select {
			case <-m.ready:
			default:
				close(m.ready)
				m.log.Info("health leases: first round done", "owned", m.Stats().Owned, "members", m.Stats().Members)
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

type configError struct{ msg string }

func (e *configError) Error() string { return e.msg }

func (m *Manager) provision(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, max(m.cfg.Renew, 5*time.Second))
	defer cancel()
	want := strconv.Itoa(m.cfg.Partitions)
	if kv, err := m.js.KeyValue(ctx, LeaseBucket); err == nil {
		st, err := kv.Status(ctx)
		if err != nil {
			return fmt.Errorf("lease bucket status: %w", err)
		}
		if got := st.Metadata()[metaPartitions]; got != "" && got != want {
			return &configError{fmt.Sprintf("partition: bucket %s was made for %s partitions, this replica has %s: "+
				"run every replica with the same --partitions (to change it, stop them all and delete the bucket: nats kv del %s)",
				LeaseBucket, got, want, LeaseBucket)}
		}
	} else if !errors.Is(err, jetstream.ErrBucketNotFound) {
		return fmt.Errorf("lease bucket: %w", err)
	}
	mk := func(bucket, desc string, meta map[string]string) (jetstream.KeyValue, error) {
		kv, err := bus.ProvisionKeyValue(ctx, m.js, m.cfg.Topology, jetstream.KeyValueConfig{
			Bucket: bucket, Description: desc, History: 1, TTL: m.cfg.TTL,
			Storage: jetstream.FileStorage, Metadata: meta,
		})
		if err != nil {
			return nil, fmt.Errorf("bucket %s: %w", bucket, err)
		}
		return kv, nil
	}
	leases, err := mk(LeaseBucket, "health-poller partition leases: key p-<n>, held by one replica, expiring a TTL after the last renewal",
		map[string]string{metaPartitions: want})
	if err != nil {
		return err
	}
	members, err := mk(MemberBucket, "health-poller replicas alive: one key per replica, expiring a TTL after its last beat", nil)
	if err != nil {
		return err
	}
	m.leases, m.members = leases, members
	return nil
}

// round renews, counts the members and rebalances, once. It may take
// longer than the renew period on a busy server (the ticker then skips a
// tick), but not half the TTL.
func (m *Manager) round(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, m.cfg.TTL/2)
	defer cancel()
	// Renew before announcing: the leases are what keep another replica
	// off our partitions, and they live in a bucket of their own. A
	// members bucket that does not answer (its Raft group between
	// leaders) must not let them expire.
	m.renew(ctx)
	if _, err := m.members.Put(ctx, m.cfg.ID, m.val); err != nil {
		// NATS, or the members bucket, is out of reach: keep what we hold
		// and do not rebalance on a count we cannot trust (see the
		// package doc).
		if ctx.Err() == nil {
			m.log.Warn("health leases: cannot announce this replica; keeping the partitions held", "error", err)
		}
		return
	}
	n, err := m.countMembers(ctx)
	if err != nil {
		m.log.Warn("health leases: cannot count replicas", "error", err)
		return
	}
	share := (m.cfg.Partitions + n - 1) / n
	m.mu.Lock()
	m.stats.Members = n
	owned := len(m.held)
	m.mu.Unlock()
	switch {
	case owned > share:
		m.release(ctx, owned-share)
	case owned < share:
		m.acquire(ctx, share-owned)
	}
}

func (m *Manager) renew(ctx context.Context) {
	m.mu.Lock()
	held := make(map[int]uint64, len(m.held))
	for p, rev := range m.held {
		held[p] = rev
	}
	m.mu.Unlock()
	// In parallel: one round trip for all, not one per partition, so a
	// busy server does not stretch a round past the lease TTL.
	type outcome struct {
		p    int
		rev  uint64
		err  error
		lost bool
	}
	out := make(chan outcome, len(held))
	for p, rev := range held {
		go func() {
			nrev, err := m.leases.Update(ctx, leaseKey(p), m.val, rev)
			if errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
				// A renewal that timed out may have gone through: if the
				// lease still names this replica, it is ours at its new
				// revision.
				if e, gerr := m.leases.Get(ctx, leaseKey(p)); gerr == nil && string(e.Value()) == string(m.val) {
					nrev, err = m.leases.Update(ctx, leaseKey(p), m.val, e.Revision())
				}
			}
			out <- outcome{p: p, rev: nrev, err: err,
				lost: errors.Is(err, jetstream.ErrKeyRevisionMismatch) || errors.Is(err, jetstream.ErrKeyNotFound)}
		}()
	}
	var lost []int
	failed := 0
	var lastErr error
	for range held {
		o := <-out
		switch {
		case o.err == nil:
			m.mu.Lock()
			if _, still := m.held[o.p]; still {
				m.held[o.p] = o.rev
			}
			m.mu.Unlock()
		case o.lost:
			// Expired while we could not renew, and perhaps taken since.
			lost = append(lost, o.p)
		default:
			failed++
			lastErr = o.err
		}
	}
	if failed > 0 {
		m.log.Warn("health leases: renewals failed; keeping the partitions", "partitions", failed, "error", lastErr)
	}
	if len(lost) == 0 {
		return
	}
	slices.Sort(lost)
	m.mu.Lock()
	for _, p := range lost {
		delete(m.held, p)
	}
	m.stats.Lost += uint64(len(lost))
	m.stats.Released += uint64(len(lost))
	owned := m.ownedLocked()
	m.mu.Unlock()
	m.log.Warn("health leases: partitions lost (their leases expired)", "partitions", lost)
	m.cfg.OnChange(owned)
}

func (m *Manager) countMembers(ctx context.Context) (int, error) {
	keys, err := m.members.Keys(ctx)
	if errors.Is(err, jetstream.ErrNoKeysFound) {
		return 1, nil
	}
	if err != nil {
		return 0, err
	}
	seen := map[string]bool{m.cfg.ID: true}
	for _, k := range keys {
		seen[k] = true
	}
	return len(seen), nil
}

// release hands back n partitions: the caller stops scheduling them first.
func (m *Manager) release(ctx context.Context, n int) {
	m.mu.Lock()
	ps := make([]int, 0, len(m.held))
	for p := range m.held {
		ps = append(ps, p)
	}
	// Random: replicas that release at once then leave a mix, not all the
	// same high numbers, which keeps the shares even after the next joins.
	mrand.Shuffle(len(ps), func(i, j int) { ps[i], ps[j] = ps[j], ps[i] })
	ps = ps[:n]
	revs := make(map[int]uint64, n)
	for _, p := range ps {
		revs[p] = m.held[p]
		delete(m.held, p)
	}
	m.stats.Released += uint64(n)
	owned := m.ownedLocked()
	m.mu.Unlock()
	m.cfg.OnChange(owned)
	slices.Sort(ps)
	if failed, err := m.giveBack(ctx, revs); failed > 0 {
		// They expire a TTL from their last renewal anyway.
		m.log.Warn("health leases: cannot hand partitions back; they expire by themselves", "partitions", failed, "error", err)
	}
	m.log.Info("health leases: partitions handed back", "partitions", ps, "owned", len(owned)-countFalse(owned))
}

// acquire takes up to n free partitions.
func (m *Manager) acquire(ctx context.Context, n int) {
	taken := map[int]bool{}
	keys, err := m.leases.Keys(ctx)
	if err != nil && !errors.Is(err, jetstream.ErrNoKeysFound) {
		m.log.Warn("health leases: cannot list leases", "error", err)
		return
	}
	for _, k := range keys {
		if p, ok := partitionOf(k); ok {
			taken[p] = true
		}
	}
	var free []int
	m.mu.Lock()
	for p := range m.cfg.Partitions {
		if _, mine := m.held[p]; !mine && !taken[p] {
			free = append(free, p)
		}
	}
	m.mu.Unlock()
	// Random order: replicas taking at the same moment mostly try
	// different keys instead of racing for the same ones. Batches in
	// parallel, for the same reason renewals are.
	mrand.Shuffle(len(free), func(i, j int) { free[i], free[j] = free[j], free[i] })
	var got []int
	for len(got) < n && len(free) > 0 && ctx.Err() == nil {
		batch := free[:min(n-len(got), len(free))]
		free = free[len(batch):]
		type outcome struct {
			p   int
			rev uint64
			err error
		}
		out := make(chan outcome, len(batch))
		for _, p := range batch {
			go func() {
				rev, err := m.leases.Create(ctx, leaseKey(p), m.val)
				out <- outcome{p, rev, err}
			}()
		}
		for range batch {
			o := <-out
			switch {
			case o.err == nil:
				m.mu.Lock()
				m.held[o.p] = o.rev
				m.mu.Unlock()
				got = append(got, o.p)
			case errors.Is(o.err, jetstream.ErrKeyExists):
				// Another replica was quicker.
			default:
				m.log.Warn("health leases: cannot take a partition", "partition", o.p, "error", o.err)
			}
		}
	}
	if len(got) == 0 {
		return
	}
	slices.Sort(got)
	m.mu.Lock()
	m.stats.Acquired += uint64(len(got))
	owned := m.ownedLocked()
	m.mu.Unlock()
	m.cfg.OnChange(owned)
	m.log.Info("health leases: partitions taken", "partitions", got, "owned", len(owned)-countFalse(owned))
}

// releaseAll gives every lease back at shutdown, so the other replicas take
// them at their next round instead of a TTL later.
func (m *Manager) releaseAll(ctx context.Context) {
	m.mu.Lock()
	held := m.held
	m.held = map[int]uint64{}
	m.stats.Released += uint64(len(held))
	owned := m.ownedLocked()
	m.mu.Unlock()
	if len(held) > 0 {
		m.cfg.OnChange(owned)
	}
	if m.leases == nil {
		return
	}
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	if failed, err := m.giveBack(dctx, held); failed > 0 {
		m.log.Warn("health leases: not handed back at shutdown; they expire by themselves", "partitions", failed, "error", err)
	}
	if err := m.members.Delete(dctx, m.cfg.ID); err != nil {
		m.log.Debug("health leases: membership not withdrawn at shutdown; it expires by itself", "error", err)
	}
	m.log.Info("health leases: handed back at shutdown", "partitions", len(held))
}

// giveBack deletes leases at the revisions held, in parallel; a lease
// renewed or taken by someone else since is left alone.
func (m *Manager) giveBack(ctx context.Context, revs map[int]uint64) (failed int, last error) {
	errs := make(chan error, len(revs))
	for p, rev := range revs {
		go func() { errs <- m.leases.Delete(ctx, leaseKey(p), jetstream.LastRevision(rev)) }()
	}
	for range revs {
		if err := <-errs; err != nil {
			failed++
			last = err
		}
	}
	return failed, last
}

func (m *Manager) ownedLocked() []bool {
	owned := make([]bool, m.cfg.Partitions)
	for p := range m.held {
		owned[p] = true
	}
	return owned
}

func countFalse(b []bool) int {
	n := 0
	for _, v := range b {
		if !v {
			n++
		}
	}
	return n
}
