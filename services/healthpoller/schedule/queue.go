package schedule

import (
	"math"
	"math/bits"
	"time"
)

// dueHeap is a min-heap of entries by due time. It is written out rather
// than through container/heap to keep each entry's index in an int32 and to
// avoid boxing every push and pop in an interface.
type dueHeap []*entry

func (h dueHeap) less(i, j int) bool { return h[i].due < h[j].due }

func (h dueHeap) swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index = int32(i)
	h[j].index = int32(j)
}

func (h *dueHeap) push(e *entry) {
	e.index = int32(len(*h))
	*h = append(*h, e)
	h.up(len(*h) - 1)
}

func (h *dueHeap) remove(e *entry) {
	i := int(e.index)
	if i < 0 {
		return
	}
	n := len(*h) - 1
	if i != n {
		h.swap(i, n)
	}
	(*h)[n] = nil
	*h = (*h)[:n]
	e.index = -1
	if i != n {
		if !h.down(i) {
			h.up(i)
		}
	}
}

// fix restores the order after e.due changed.
func (h dueHeap) fix(e *entry) {
	i := int(e.index)
	if !h.down(i) {
		h.up(i)
	}
}

func (h dueHeap) up(j int) {
	for {
		i := (j - 1) / 2
		if i == j || !h.less(j, i) {
			break
		}
		h.swap(i, j)
		j = i
	}
}

func (h dueHeap) down(i0 int) bool {
	i, n := i0, len(h)
	for {
		j1 := 2*i + 1
		if j1 >= n || j1 < 0 {
			break
		}
		j := j1
		if j2 := j1 + 1; j2 < n && h.less(j2, j1) {
			j = j2
		}
		if !h.less(j, i) {
			break
		}
		h.swap(i, j)
		i = j
	}
	return i > i0
}

// fifo is a queue of entries waiting for a slot.
type fifo struct {
	items []*entry
	head  int
}

func (q *fifo) len() int { return len(q.items) - q.head }

func (q *fifo) push(e *entry) { q.items = append(q.items, e) }

func (q *fifo) pop() *entry {
	if q.head == len(q.items) {
		return nil
	}
	e := q.items[q.head]
	q.items[q.head] = nil
	q.head++
	switch {
	case q.head == len(q.items):
		q.items, q.head = q.items[:0], 0
	case q.head >= 1024 && q.head*2 >= len(q.items):
		n := copy(q.items, q.items[q.head:])
		clear(q.items[n:])
		q.items, q.head = q.items[:n], 0
	}
	return e
}

// lagHist is a log-linear histogram of scheduling lag in nanoseconds: 8
// sub-buckets per power of two, so a quantile is within 1/8 of the truth.
type lagHist struct {
	counts [64 * 8]uint64
	total  uint64
	max    time.Duration
}

func (h *lagHist) record(ns int64) {
	ns = max(ns, 0)
	h.counts[lagBucket(uint64(ns))]++
	h.total++
	h.max = max(h.max, time.Duration(ns))
}

func lagBucket(v uint64) int {
	if v < 8 {
		return int(v)
	}
	e := bits.Len64(v) - 1 // v in [2^e, 2^(e+1))
	sub := int(v>>(e-3)) & 7
	return (e-2)*8 + sub
}

// bucketTop is the largest value that falls in bucket b.
func bucketTop(b int) uint64 {
	if b < 8 {
		return uint64(b)
	}
	e := b/8 + 2
	sub := uint64(b % 8)
	top := (uint64(8+sub+1) << (e - 3)) - 1
	if e >= 63 && sub == 7 {
		return math.MaxInt64
	}
	return top
}

func (h *lagHist) quantile(q float64) time.Duration {
	if h.total == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(h.total)))
	rank = max(rank, 1)
	var seen uint64
	for b, c := range h.counts {
		seen += c
		if seen >= rank {
			return min(time.Duration(bucketTop(b)), h.max)
		}
	}
	return h.max
}
