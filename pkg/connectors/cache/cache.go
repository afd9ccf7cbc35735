// Package cache is the bounded TTL cache of connector results (health,
// test connection, discovery, tag resolution), with the seed's sizes and
// TTLs as presets and hit/miss/eviction counters for Prometheus.
//
// Recency and the size bound come from hashicorp/golang-lru/v2's simplelru;
// expiry is ours. Neither maintained TTL cache fits: jellydator/ttlcache/v3
// and golang-lru's expirable both read time.Now themselves, so a TTL test
// would need real waiting, and expirable starts a goroutine per cache that
// never stops (goleak flags it) and has absolute expiry only.
package cache

import (
	"fmt"
	"sync"
	"time"

	"github.com/hashicorp/golang-lru/v2/simplelru"
	"github.com/prometheus/client_golang/prometheus"
)

// Options configures a cache.
type Options struct {
	// Name labels the cache's metrics ("health", "tag_resolution").
	Name string
	// Size bounds the number of entries; past it the least recently
	// used entry goes.
	Size int
	// TTL is how long an entry lives.
	TTL time.Duration
	// Sliding extends an entry's life by TTL on every hit; otherwise the
	// entry expires TTL after it was set, however often it is read.
	Sliding bool
	// Now is the clock, time.Now when nil; tests pass a fake one.
	Now func() time.Time
}

// Presets, from the seed's cache table.

// Health caches integration health: 5 minutes sliding, 1,000 entries.
func Health() Options {
	return Options{Name: "health", Size: 1_000, TTL: 5 * time.Minute, Sliding: true}
}

// Test caches test-connection results: 2 minutes sliding, 500 entries.
func Test() Options {
	return Options{Name: "test_connection", Size: 500, TTL: 2 * time.Minute, Sliding: true}
}

// Discovery caches discovered resources (repos, branches, tags): 10
// minutes sliding, 5,000 entries.
func Discovery() Options {
	return Options{Name: "discovery", Size: 5_000, TTL: 10 * time.Minute, Sliding: true}
}

// TagResolution caches tag → digest: 1 hour absolute, 10,000 entries. It is
// absolute because a tag moves: a hot tag read every minute must still be
// resolved again within the hour.
func TagResolution() Options {
	return Options{Name: "tag_resolution", Size: 10_000, TTL: time.Hour, Sliding: false}
}

// Stats are the cache's counters since it was made.
type Stats struct {
	Hits   uint64
	Misses uint64
	// Evictions counts entries dropped to stay within Size.
	Evictions uint64
	// Expirations counts entries dropped because their TTL passed.
	Expirations uint64
}

type entry[V any] struct {
	value   V
	expires time.Time
}

// Cache is a bounded TTL cache, safe for concurrent use. Expired entries
// are dropped when met (a Get, a Set into a full cache, Len); no goroutine
// runs behind it.
type Cache[K comparable, V any] struct {
	opts  Options
	mu    sync.Mutex
	lru   *simplelru.LRU[K, *entry[V]]
	stats Stats
}

// New returns an empty cache. A Size or TTL that is not positive is a
// programming error and panics.
func New[K comparable, V any](o Options) *Cache[K, V] {
	if o.Size <= 0 || o.TTL <= 0 {
		panic(fmt.Sprintf("cache %q: Size and TTL must be positive (got %d, %v)", o.Name, o.Size, o.TTL))
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	l, err := simplelru.NewLRU[K, *entry[V]](o.Size, nil)
	if err != nil {
		panic(fmt.Sprintf("cache %q: %v", o.Name, err))
	}
	return &Cache[K, V]{opts: o, lru: l}
}

// Options returns the options the cache was made with.
func (c *Cache[K, V]) Options() Options { return c.opts }

// Get returns the value of k if it is there and has not expired; a hit
// on a sliding cache extends the entry's life.
func (c *Cache[K, V]) Get(k K) (V, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.opts.Now()
	e, ok := c.lru.Get(k)
	if ok && !now.Before(e.expires) {
		c.lru.Remove(k)
		c.stats.Expirations++
		ok = false
	}
	if !ok {
		c.stats.Misses++
		var zero V
		return zero, false
	}
	c.stats.Hits++
	if c.opts.Sliding {
		e.expires = now.Add(c.opts.TTL)
	}
	return e.value, true
}

// Set stores v under k for TTL, replacing what was there. In a full
// cache, expired entries go first, then the least recently used one.
func (c *Cache[K, V]) Set(k K, v V) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.opts.Now()
	if c.lru.Len() >= c.opts.Size && !c.lru.Contains(k) {
		c.dropExpiredOldest(now)
	}
	if c.lru.Add(k, &entry[V]{value: v, expires: now.Add(c.opts.TTL)}) {
		c.stats.Evictions++
	}
}

// Delete removes k and reports whether it was there (expired or not).
func (c *Cache[K, V]) Delete(k K) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lru.Remove(k)
}

// Len is the number of live entries. It drops the expired ones it finds,
// so it costs a walk of the cache.
func (c *Cache[K, V]) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.opts.Now()
	for _, k := range c.lru.Keys() {
		if e, ok := c.lru.Peek(k); ok && !now.Before(e.expires) {
			c.lru.Remove(k)
			c.stats.Expirations++
		}
	}
	return c.lru.Len()
}

// Stats returns the counters.
func (c *Cache[K, V]) Stats() Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stats
}

// dropExpiredOldest removes expired entries from the least recent end.
// In a sliding cache recency order is expiry order, so this finds every
// expired entry; in an absolute one an expired entry read recently may
// stay until it is met, which costs room, never a stale answer.
func (c *Cache[K, V]) dropExpiredOldest(now time.Time) {
	for {
		_, e, ok := c.lru.GetOldest()
		if !ok || now.Before(e.expires) {
			return
		}
		c.lru.RemoveOldest()
		c.stats.Expirations++
	}
}

// size is the raw entry count, expired ones included, for the gauge: a
// scrape must not walk the cache.
func (c *Cache[K, V]) size() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lru.Len()
}

// Register exposes the cache's counters on reg as
// integrations_cache_{hits,misses}_total{cache},
// integrations_cache_evictions_total{cache,reason="capacity"|"expired"},
// integrations_cache_entries{cache} and integrations_cache_capacity{cache}.
// The cache needs a Name, unique on reg.
func (c *Cache[K, V]) Register(reg prometheus.Registerer) error {
	if c.opts.Name == "" {
		return fmt.Errorf("cache: Register needs Options.Name to label the metrics")
	}
	return reg.Register(newCollector(c.opts.Name, c.opts.Size, c.Stats, c.size))
}

type collector struct {
	stats                                  func() Stats
	size                                   func() int
	capacity                               int
	hits, misses, evict, ent, capacityDesc *prometheus.Desc
}

func newCollector(name string, capacity int, stats func() Stats, size func() int) *collector {
	labels := prometheus.Labels{"cache": name}
	return &collector{
		stats:        stats,
		size:         size,
		capacity:     capacity,
		hits:         prometheus.NewDesc("integrations_cache_hits_total", "Cache lookups that found a live entry.", nil, labels),
		misses:       prometheus.NewDesc("integrations_cache_misses_total", "Cache lookups that found nothing or an expired entry.", nil, labels),
		evict:        prometheus.NewDesc("integrations_cache_evictions_total", "Entries dropped, by reason: capacity (size bound) or expired (TTL).", []string{"reason"}, labels),
		ent:          prometheus.NewDesc("integrations_cache_entries", "Entries held, expired ones not yet dropped included.", nil, labels),
		capacityDesc: prometheus.NewDesc("integrations_cache_capacity", "The cache's size bound.", nil, labels),
	}
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.hits
	ch <- c.misses
	ch <- c.evict
	ch <- c.ent
	ch <- c.capacityDesc
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	s := c.stats()
	ch <- prometheus.MustNewConstMetric(c.hits, prometheus.CounterValue, float64(s.Hits))
	ch <- prometheus.MustNewConstMetric(c.misses, prometheus.CounterValue, float64(s.Misses))
	ch <- prometheus.MustNewConstMetric(c.evict, prometheus.CounterValue, float64(s.Evictions), "capacity")
	ch <- prometheus.MustNewConstMetric(c.evict, prometheus.CounterValue, float64(s.Expirations), "expired")
	ch <- prometheus.MustNewConstMetric(c.ent, prometheus.GaugeValue, float64(c.size()))
	ch <- prometheus.MustNewConstMetric(c.capacityDesc, prometheus.GaugeValue, float64(c.capacity))
}
