package authref

import (
	"bytes"
	"container/list"
	"sync"
	"time"
)

// cache holds secrets per reference until an absolute expiry, at most max
// of them, evicting the least recently used. It hands out copies and zeroes
// its own bytes when an entry leaves, so a secret lingers in memory no
// longer than the cache keeps it.
type cache struct {
	mu    sync.Mutex
	max   int
	ll    *list.List // front = most recently used
	items map[string]*list.Element
	// gen changes on every forget and purge: a read that started before
	// one must not put back what was just dropped.
	gen uint64
}

type cacheEntry struct {
	key     string
	val     []byte
	expires time.Time
}

func newCache(max int) *cache {
	return &cache{max: max, ll: list.New(), items: make(map[string]*list.Element)}
}

func (c *cache) get(key string, now time.Time) ([]byte, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.items[key]
	if !ok {
		return nil, false
	}
	e := el.Value.(*cacheEntry)
	if !now.Before(e.expires) {
		c.remove(el)
		return nil, false
	}
	c.ll.MoveToFront(el)
	return bytes.Clone(e.val), true
}

func (c *cache) generation() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.gen
}

// put stores a copy of val unless the cache was forgotten or purged since
// gen was read.
func (c *cache) put(key string, val []byte, expires time.Time, gen uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if gen != c.gen {
		return
	}
	if el, ok := c.items[key]; ok {
		c.remove(el)
	}
	c.items[key] = c.ll.PushFront(&cacheEntry{key: key, val: bytes.Clone(val), expires: expires})
	for c.ll.Len() > c.max {
		c.remove(c.ll.Back())
	}
}

func (c *cache) forget(key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	if el, ok := c.items[key]; ok {
		c.remove(el)
	}
}

func (c *cache) purge() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	for el := c.ll.Front(); el != nil; el = el.Next() {
		clear(el.Value.(*cacheEntry).val)
	}
	c.ll.Init()
	clear(c.items)
}

func (c *cache) remove(el *list.Element) {
	e := c.ll.Remove(el).(*cacheEntry)
	delete(c.items, e.key)
	clear(e.val)
}
