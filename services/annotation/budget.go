package annotation

import (
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Budget is the write budget of one scope: an installation (account) or an
// API host. The defaults follow GitHub's guidance for content-creating
// requests: writes serialised, about one a second, at most 80 a minute and
// 500 an hour per installation.
type Budget struct {
	PerSecond float64 // sustained rate; also the spacing of reserved slots
	PerMinute int     // 0: no minute window
	PerHour   int     // 0: no hour window
}

// DefaultAccountBudget is the budget of one GitHub App installation or
// GitLab token.
var DefaultAccountBudget = Budget{PerSecond: 1, PerMinute: 80, PerHour: 500}

// DefaultHostBudget is the budget of one API host across every account of
// this worker.
var DefaultHostBudget = Budget{PerSecond: 10}

// budgets hands out write slots per scope. A request that cannot write now
// gets a reserved slot in the future (a ticket) and is deferred until
// then, so the messages waiting for one scope come back spread over time
// in the order they asked, each with its slot already paid for, instead
// of all at once to compete again. A provider's "wait" (secondary rate
// limit, exhausted primary budget) is a penalty: no slot starts before it
// ends.
type budgets struct {
	account, host Budget
	now           func() time.Time

	mu      sync.Mutex
	scopes  map[string]*scope
	tickets map[string]ticket // by request id
}

type scope struct {
	next    time.Time // earliest start of the next reserved slot
	penalty time.Time // no writes before this
	minute  *rate.Limiter
	hour    *rate.Limiter
	spacing time.Duration
}

// ticket is a reservation: the request may write from at on, at the given
// degrade level (its cost was paid when it was made).
type ticket struct {
	at      time.Time
	level   int
	expires time.Time
}

func newBudgets(account, host Budget, now func() time.Time) *budgets {
	return &budgets{account: account, host: host, now: now,
		scopes: map[string]*scope{}, tickets: map[string]ticket{}}
}

func (b *budgets) scope(key string, bud Budget) *scope {
	s, ok := b.scopes[key]
	if !ok {
		s = &scope{spacing: time.Duration(float64(time.Second) / max(bud.PerSecond, 0.001))}
		if bud.PerMinute > 0 {
			s.minute = rate.NewLimiter(rate.Limit(float64(bud.PerMinute)/60), bud.PerMinute)
		}
		if bud.PerHour > 0 {
			s.hour = rate.NewLimiter(rate.Limit(float64(bud.PerHour)/3600), bud.PerHour)
		}
		b.scopes[key] = s
	}
	return s
}

// wait is how long from now until n writes fit in s, without reserving.
func (s *scope) wait(now time.Time, n int) time.Duration {
	start := now
	if s.next.After(start) {
		start = s.next
	}
	if s.penalty.After(start) {
		start = s.penalty
	}
	d := start.Sub(now)
	for _, l := range []*rate.Limiter{s.minute, s.hour} {
		if l == nil {
			continue
		}
		r := l.ReserveN(now, n)
		if !r.OK() {
			// More than the window's whole burst: never fits, so the caller
			// must degrade.
			return time.Duration(1<<62 - 1)
		}
		d = max(d, r.DelayFrom(now))
		r.CancelAt(now)
	}
	return d
}

// take reserves n writes starting at now+d.
func (s *scope) take(now time.Time, d time.Duration, n int) {
	start := now.Add(d)
	s.next = start.Add(time.Duration(n) * s.spacing)
	for _, l := range []*rate.Limiter{s.minute, s.hour} {
		if l != nil {
			l.ReserveN(now, n)
		}
	}
}

// grant is the outcome of acquire.
type grant struct {
	level int           // the degrade level that got the slot
	wait  time.Duration // > 0: defer for this long, the slot is reserved
}

// acquire finds write slots for request id in both scopes. costs[i] is the
// number of writes of degrade level i (0 = as requested, each next level
// cheaper). It grants the richest level that can write now; if none can,
// it reserves the level that can write soonest (the richest among equals)
// and says how long to wait. A request that comes back with its ticket
// due writes at the ticket's level without paying again.
func (b *budgets) acquire(id, account, host string, costs []int) grant {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.now()
	acc, hst := b.scope(account, b.account), b.scope(host, b.host)
	pen := later(acc.penalty, hst.penalty)

	if t, ok := b.tickets[id]; ok {
		switch {
		case pen.After(now):
			// A penalty came after the ticket was issued: its slot is
			// void; fall through to a new reservation after the penalty.
			delete(b.tickets, id)
		case !t.at.After(now.Add(slack)):
			delete(b.tickets, id)
			return grant{level: t.level}
		default:
			return grant{level: t.level, wait: t.at.Sub(now)}
		}
	}
	b.gc(now)

	best, bestWait := -1, time.Duration(0)
	for lvl, n := range costs {
		w := max(acc.wait(now, n), hst.wait(now, n))
		if w == 0 {
			best, bestWait = lvl, 0
			break
		}
		if best < 0 || w < bestWait {
			best, bestWait = lvl, w
		}
	}
	n := costs[best]
	acc.take(now, bestWait, n)
	hst.take(now, bestWait, n)
	if bestWait > 0 {
		b.tickets[id] = ticket{at: now.Add(bestWait), level: best, expires: now.Add(bestWait + ticketTTL)}
	}
	return grant{level: best, wait: bestWait}
}

// slack lets a redelivery that comes back a little early use its ticket:
// the server's delayed redelivery is not exact.
const slack = 100 * time.Millisecond

// ticketTTL forgets a ticket whose request never came back (handled by
// another replica, dead-lettered).
const ticketTTL = 10 * time.Minute

func (b *budgets) gc(now time.Time) {
	if len(b.tickets) < 1024 {
		return
	}
	for id, t := range b.tickets {
		if now.After(t.expires) {
			delete(b.tickets, id)
		}
	}
}

// penalize stops writes in scope key until until (a provider's Retry-After
// or rate-limit reset).
func (b *budgets) penalize(key string, until time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	s, ok := b.scopes[key]
	if !ok {
		return
	}
	if until.After(s.penalty) {
		s.penalty = until
	}
}

// penalty is when the penalty of key ends (zero if none).
func (b *budgets) penaltyOf(key string) time.Time {
	b.mu.Lock()
	defer b.mu.Unlock()
	if s, ok := b.scopes[key]; ok {
		return s.penalty
	}
	return time.Time{}
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
