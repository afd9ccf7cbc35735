package cache_test

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"

	"inthub.dev/pkg/connectors/cache"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// clock is a fake clock that only moves when told.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func newClock() *clock { return &clock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func TestPresets(t *testing.T) {
	tests := []struct {
		opts    cache.Options
		size    int
		ttl     time.Duration
		sliding bool
	}{
		{cache.Health(), 1000, 5 * time.Minute, true},
		{cache.Test(), 500, 2 * time.Minute, true},
		{cache.Discovery(), 5000, 10 * time.Minute, true},
		{cache.TagResolution(), 10000, time.Hour, false},
	}
	for _, tc := range tests {
		if tc.opts.Size != tc.size || tc.opts.TTL != tc.ttl || tc.opts.Sliding != tc.sliding || tc.opts.Name == "" {
			t.Errorf("%s = %+v, want size %d ttl %v sliding %v", tc.opts.Name, tc.opts, tc.size, tc.ttl, tc.sliding)
		}
	}
}

func TestBoundEvictsLeastRecentlyUsed(t *testing.T) {
	clk := newClock()
	c := cache.New[string, int](cache.Options{Name: "t", Size: 3, TTL: time.Minute, Now: clk.Now})
	c.Set("a", 1)
	c.Set("b", 2)
	c.Set("c", 3)
	// Reading "a" makes "b" the least recently used.
	if v, ok := c.Get("a"); !ok || v != 1 {
		t.Fatalf("Get(a) = %v, %v", v, ok)
	}
	c.Set("d", 4)
	if c.Len() != 3 {
		t.Errorf("Len = %d, want 3", c.Len())
	}
	if _, ok := c.Get("b"); ok {
		t.Error("b survived; the least recently used entry should have gone")
	}
	for _, k := range []string{"a", "c", "d"} {
		if _, ok := c.Get(k); !ok {
			t.Errorf("%s was evicted", k)
		}
	}
	// Replacing an entry in a full cache evicts nothing.
	c.Set("d", 40)
	if v, _ := c.Get("d"); v != 40 || c.Len() != 3 {
		t.Errorf("replace: d = %d, Len = %d", v, c.Len())
	}
	if s := c.Stats(); s.Evictions != 1 {
		t.Errorf("Evictions = %d, want 1", s.Evictions)
	}
}

// A full cache drops its expired entries before a live one.
func TestFullCacheDropsExpiredFirst(t *testing.T) {
	clk := newClock()
	c := cache.New[string, int](cache.Options{Size: 2, TTL: time.Minute, Sliding: true, Now: clk.Now})
	c.Set("old", 1)
	clk.Advance(50 * time.Second)
	c.Set("live", 2)
	clk.Advance(20 * time.Second) // "old" expired, "live" has 40 s left
	c.Set("new", 3)
	if _, ok := c.Get("live"); !ok {
		t.Error("a live entry was evicted while an expired one was there")
	}
	if s := c.Stats(); s.Evictions != 0 || s.Expirations != 1 {
		t.Errorf("stats = %+v, want 0 evictions, 1 expiration", s)
	}
}

func TestTTL(t *testing.T) {
	for _, sliding := range []bool{true, false} {
		t.Run(fmt.Sprintf("sliding=%v", sliding), func(t *testing.T) {
			clk := newClock()
			c := cache.New[string, string](cache.Options{Size: 10, TTL: 5 * time.Minute, Sliding: sliding, Now: clk.Now})
			c.Set("k", "v")
			clk.Advance(4 * time.Minute)
			if _, ok := c.Get("k"); !ok {
				t.Fatal("expired before its TTL")
			}
			// 8 minutes after Set, 4 after the hit.
			clk.Advance(4 * time.Minute)
			_, ok := c.Get("k")
			if ok != sliding {
				t.Fatalf("8 min after Set, 4 after a hit: found = %v, want %v", ok, sliding)
			}
			if sliding {
				clk.Advance(5 * time.Minute)
				if _, ok := c.Get("k"); ok {
					t.Error("sliding entry outlived TTL without a hit")
				}
			}
			// Exactly at the TTL an entry is gone.
			c.Set("edge", "v")
			clk.Advance(5 * time.Minute)
			if _, ok := c.Get("edge"); ok {
				t.Error("entry alive at exactly its TTL")
			}
			if c.Len() != 0 {
				t.Errorf("Len = %d, want 0", c.Len())
			}
		})
	}
}

func TestLenDropsExpired(t *testing.T) {
	clk := newClock()
	c := cache.New[int, int](cache.Options{Size: 10, TTL: time.Minute, Now: clk.Now})
	for i := range 5 {
		c.Set(i, i)
	}
	clk.Advance(30 * time.Second)
	c.Set(99, 99)
	clk.Advance(31 * time.Second)
	if n := c.Len(); n != 1 {
		t.Errorf("Len = %d, want 1", n)
	}
	if s := c.Stats(); s.Expirations != 5 {
		t.Errorf("Expirations = %d, want 5", s.Expirations)
	}
	if !c.Delete(99) || c.Delete(99) || c.Len() != 0 {
		t.Error("Delete")
	}
}

func TestCountersAndMetrics(t *testing.T) {
	clk := newClock()
	c := cache.New[string, int](cache.Options{Name: "health", Size: 2, TTL: time.Minute, Now: clk.Now})
	reg := prometheus.NewPedanticRegistry()
	if err := c.Register(reg); err != nil {
		t.Fatal(err)
	}
	// A second cache with another name registers beside it.
	other := cache.New[string, int](cache.Options{Name: "tag_resolution", Size: 1, TTL: time.Minute, Now: clk.Now})
	if err := other.Register(reg); err != nil {
		t.Fatal(err)
	}
	if err := cache.New[string, int](cache.Options{Size: 1, TTL: time.Minute}).Register(reg); err == nil {
		t.Error("Register without a Name succeeded")
	}

	c.Get("a")    // miss
	c.Set("a", 1) //
	c.Get("a")    // hit
	c.Get("a")    // hit
	c.Set("b", 2)
	c.Set("c", 3) // evicts a
	c.Get("a")    // miss
	clk.Advance(time.Minute)
	c.Get("b") // expired: miss

	want := cache.Stats{Hits: 2, Misses: 3, Evictions: 1, Expirations: 1}
	if s := c.Stats(); s != want {
		t.Errorf("Stats = %+v, want %+v", s, want)
	}
	expected := `
# HELP integrations_cache_evictions_total Entries dropped, by reason: capacity (size bound) or expired (TTL).
# TYPE integrations_cache_evictions_total counter
integrations_cache_evictions_total{cache="health",reason="capacity"} 1
integrations_cache_evictions_total{cache="health",reason="expired"} 1
integrations_cache_evictions_total{cache="tag_resolution",reason="capacity"} 0
integrations_cache_evictions_total{cache="tag_resolution",reason="expired"} 0
# HELP integrations_cache_hits_total Cache lookups that found a live entry.
# TYPE integrations_cache_hits_total counter
integrations_cache_hits_total{cache="health"} 2
integrations_cache_hits_total{cache="tag_resolution"} 0
# HELP integrations_cache_misses_total Cache lookups that found nothing or an expired entry.
# TYPE integrations_cache_misses_total counter
integrations_cache_misses_total{cache="health"} 3
integrations_cache_misses_total{cache="tag_resolution"} 0
# HELP integrations_cache_entries Entries held, expired ones not yet dropped included.
# TYPE integrations_cache_entries gauge
integrations_cache_entries{cache="health"} 1
integrations_cache_entries{cache="tag_resolution"} 0
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(expected),
		"integrations_cache_evictions_total", "integrations_cache_hits_total",
		"integrations_cache_misses_total", "integrations_cache_entries"); err != nil {
		t.Error(err)
	}
	if n := testutil.CollectAndCount(reg, "integrations_cache_capacity"); n != 2 {
		t.Errorf("capacity series = %d, want 2", n)
	}
}

func TestConcurrentUse(t *testing.T) {
	c := cache.New[int, int](cache.Options{Size: 64, TTL: time.Minute, Sliding: true})
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 1000 {
				k := (g*1000 + i) % 100
				c.Set(k, i)
				c.Get(k)
				if i%10 == 0 {
					c.Delete(k)
				}
			}
		})
	}
	wg.Wait()
	if n := c.Len(); n > 64 {
		t.Errorf("Len = %d past the bound 64", n)
	}
}

func TestNewRejectsUnbounded(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Error("New with Size 0 did not panic")
		}
	}()
	cache.New[int, int](cache.Options{TTL: time.Minute})
}
