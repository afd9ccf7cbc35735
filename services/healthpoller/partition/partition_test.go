package partition_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	"inthub.dev/pkg/natstest"
	"inthub.dev/services/healthpoller/partition"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, natstest.LeakOptions()...)
}

const (
	ttl   = time.Second
	renew = 250 * time.Millisecond
)

// replica is a running Manager with the partitions its OnChange saw.
type replica struct {
	m      *partition.Manager
	nc     *nats.Conn
	cancel context.CancelFunc
	done   chan error

	mu      sync.Mutex
	owned   []bool
	changes int
}

func (r *replica) view() []bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]bool(nil), r.owned...)
}

func (r *replica) changeCount() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.changes
}

func count(b []bool) int {
	n := 0
	for _, v := range b {
		if v {
			n++
		}
	}
	return n
}

func start(t *testing.T, srv *natstest.Server, id string, parts int) *replica {
	t.Helper()
	nc := srv.Connect()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	r := &replica{nc: nc, done: make(chan error, 1)}
	m, err := partition.New(js, partition.Config{
		Partitions: parts, TTL: ttl, Renew: renew, ID: id,
		OnChange: func(owned []bool) {
			r.mu.Lock()
			r.owned = owned
			r.changes++
			r.mu.Unlock()
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	r.m = m
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	go func() { r.done <- m.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-r.done:
		case <-time.After(10 * time.Second):
			t.Error("Run did not return")
		}
	})
	return r
}

func (r *replica) stop(t *testing.T) {
	t.Helper()
	r.cancel()
	select {
	case err := <-r.done:
		if err != nil {
			t.Fatalf("Run = %v", err)
		}
		r.done <- nil // for the cleanup
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return")
	}
}

func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		<-time.After(20 * time.Millisecond)
	}
}

// leaseOwners reads the bucket: partition → replica named in its lease.
func leaseOwners(t *testing.T, js jetstream.JetStream) map[int]string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	kv, err := js.KeyValue(ctx, partition.LeaseBucket)
	if err != nil {
		t.Fatal(err)
	}
	keys, err := kv.Keys(ctx)
	if errors.Is(err, jetstream.ErrNoKeysFound) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	out := map[int]string{}
	for _, k := range keys {
		e, err := kv.Get(ctx, k)
		if err != nil {
			continue
		}
		var p int
		if _, err := fmt.Sscanf(k, "p-%d", &p); err != nil {
			t.Fatalf("lease key %q", k)
		}
		out[p] = string(e.Value())
	}
	return out
}

// disjointCover: every partition held by exactly one replica.
func disjointCover(parts int, rs ...*replica) bool {
	for p := range parts {
		n := 0
		for _, r := range rs {
			if v := r.view(); len(v) == parts && v[p] {
				n++
			}
		}
		if n != 1 {
			return false
		}
	}
	return true
}

func TestReplicasShareThePartitionsAndCoverForEachOther(t *testing.T) {
	const parts = 64
	srv := natstest.Start(t)
	js, _ := srv.JetStream()

	a := start(t, srv, "a", parts)
	waitFor(t, 5*time.Second, "a to hold every partition", func() bool { return count(a.view()) == parts })
	<-a.m.Ready()

	b := start(t, srv, "b", parts)
	waitFor(t, 10*time.Second, "an even split", func() bool {
		return count(a.view()) == parts/2 && count(b.view()) == parts/2 && disjointCover(parts, a, b)
	})
	owners := leaseOwners(t, js)
	for p := range parts {
		want := `{"replica":"a"}`
		if b.view()[p] {
			want = `{"replica":"b"}`
		}
		if owners[p] != want {
			t.Errorf("partition %d: lease %q, OnChange says %s", p, owners[p], want)
		}
	}
	// Stable: a few rounds later nothing moved.
	ca, cb := a.changeCount(), b.changeCount()
	<-time.After(4 * renew) // a span of rounds in which nothing may happen
	if !disjointCover(parts, a, b) || a.changeCount() != ca || b.changeCount() != cb {
		t.Errorf("ownership moved while nothing changed: %d/%d changes", a.changeCount()-ca, b.changeCount()-cb)
	}
	if st := a.m.Stats(); st.Members != 2 || st.Owned != parts/2 || st.Partitions != parts {
		t.Errorf("a stats %+v", st)
	}

	// A clean stop hands back at once: b takes all within a couple of
	// rounds, far less than the TTL.
	stopped := time.Now()
	a.stop(t)
	if n := count(a.view()); n != 0 {
		t.Errorf("a still holds %d after stopping", n)
	}
	waitFor(t, 5*time.Second, "b to take a's share", func() bool { return count(b.view()) == parts })
	if took := time.Since(stopped); took > ttl {
		t.Errorf("b took over %v after a clean stop, want within a few renew periods", took)
	}

	// A replica that dies (connection gone, nothing handed back) loses its
	// leases a TTL later, and the other takes them.
	c := start(t, srv, "c", parts)
	waitFor(t, 10*time.Second, "an even split with c", func() bool {
		return count(b.view()) == parts/2 && count(c.view()) == parts/2 && disjointCover(parts, b, c)
	})
	killed := time.Now()
	c.nc.Close()
	waitFor(t, 10*time.Second, "b to take c's share", func() bool { return count(b.view()) == parts })
	if took := time.Since(killed); took < ttl/2 || took > ttl+4*renew+time.Second {
		t.Errorf("b took over %v after c died, want about the TTL (%v)", took, ttl)
	}
	if got := leaseOwners(t, js); len(got) != parts {
		t.Errorf("%d leases in the bucket, want %d", len(got), parts)
	} else {
		for p, o := range got {
			if o != `{"replica":"b"}` {
				t.Errorf("partition %d held by %s", p, o)
			}
		}
	}
}

func TestThreeReplicasCoverEveryPartition(t *testing.T) {
	const parts = 64
	srv := natstest.Start(t)
	rs := []*replica{start(t, srv, "r1", parts), start(t, srv, "r2", parts), start(t, srv, "r3", parts)}
	waitFor(t, 10*time.Second, "a cover with shares of at most 22", func() bool {
		for _, r := range rs {
			if n := count(r.view()); n > 22 || n < 20 {
				return false
			}
		}
		return disjointCover(parts, rs...)
	})
}

func TestPartitionCountMustAgree(t *testing.T) {
	srv := natstest.Start(t)
	a := start(t, srv, "a", 16)
	<-a.m.Ready()
	js, _ := srv.JetStream()
	m, err := partition.New(js, partition.Config{Partitions: 32, TTL: ttl, Renew: renew, ID: "b"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err = m.Run(ctx)
	if err == nil || !strings.Contains(err.Error(), "16 partitions") || !strings.Contains(err.Error(), "--partitions") {
		t.Fatalf("Run with another partition count = %v, want an error naming both counts", err)
	}
}

func TestOfIsStableAndSpread(t *testing.T) {
	counts := make([]int, 64)
	for i := range 64_000 {
		id := fmt.Sprintf("8f1d2c3e-0000-4000-8000-%012d", i)
		p := partition.Of(id, 64)
		if p != partition.Of(id, 64) {
			t.Fatal("not stable")
		}
		counts[p]++
	}
	for p, n := range counts {
		if n < 800 || n > 1200 {
			t.Errorf("partition %d has %d of 64,000 ids, want about 1,000", p, n)
		}
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	srv := natstest.Start(t)
	js, _ := srv.JetStream()
	for _, tc := range []struct {
		name string
		cfg  partition.Config
		want string
	}{
		{"too many partitions", partition.Config{Partitions: 5000}, "partitions"},
		{"negative partitions", partition.Config{Partitions: -1}, "partitions"},
		{"short ttl", partition.Config{TTL: 100 * time.Millisecond}, "TTL"},
		{"renew too slow", partition.Config{TTL: 10 * time.Second, Renew: 6 * time.Second}, "renew"},
		{"bad id", partition.Config{ID: "a.b"}, "replica id"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := partition.New(js, tc.cfg); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("New(%+v) = %v, want an error about %s", tc.cfg, err, tc.want)
			}
		})
	}
	if _, err := partition.New(nil, partition.Config{}); err == nil {
		t.Error("New without JetStream")
	}
	m, err := partition.New(js, partition.Config{})
	if err != nil {
		t.Fatal(err)
	}
	if m.Partitions() != 64 || m.ID() == "" {
		t.Errorf("defaults: %d partitions, id %q", m.Partitions(), m.ID())
	}
}

// A members bucket that does not answer must not cost the leases: they
// live in their own bucket and are renewed whatever the members bucket
// does (found on a cluster, where the two buckets elect leaders apart).
func TestLeasesRenewedWhileMembersBucketIsAway(t *testing.T) {
	srv := natstest.Start(t)
	js, _ := srv.JetStream()
	const parts = 8
	a := start(t, srv, "a", parts)
	waitFor(t, 10*time.Second, "a holds every partition", func() bool { return count(a.view()) == parts })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := js.DeleteKeyValue(ctx, partition.MemberBucket); err != nil {
		t.Fatal(err)
	}
	// Three lease TTLs: every lease would have expired twice over.
	deadline := time.Now().Add(3 * ttl)
	for time.Now().Before(deadline) {
		owners := leaseOwners(t, js)
		if len(owners) != parts {
			t.Fatalf("%d of %d leases left while the members bucket is away: %v", len(owners), parts, owners)
		}
		for p, o := range owners {
			if !strings.Contains(o, `"replica":"a"`) {
				t.Fatalf("partition %d leased to %q", p, o)
			}
		}
		<-time.After(50 * time.Millisecond)
	}
	if n := count(a.view()); n != parts {
		t.Fatalf("a holds %d partitions, want %d", n, parts)
	}
}
