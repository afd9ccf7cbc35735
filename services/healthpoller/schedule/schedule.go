package schedule

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"inthub.dev/pkg/fault"
)

// Statuses, spelled as events.HealthStatus spells them.
const (
	StatusHealthy   = "healthy"
	StatusDegraded  = "degraded"
	StatusUnhealthy = "unhealthy"
	StatusUnknown   = "unknown"
)

// Target is one integration to keep checked. Interval and Timeout of zero
// take the Config defaults. Version orders updates: an Upsert with a lower
// non-zero Version than the one held is a late event and is ignored.
type Target struct {
	ID, TenantID, Type, Provider string
	Interval                     time.Duration
	Timeout                      time.Duration
	Version                      int64
}

// Result is one check's outcome. A Checker fills Status, Message, Class
// and, if it measured them itself, Latency and CheckedAt (the scheduler
// fills them otherwise). The Sink gets Status smoothed by the thresholds and
// Observed as this check measured it.
type Result struct {
	Status    string // healthy|degraded|unhealthy|unknown
	Observed  string // set by the scheduler: the status this check measured
	Latency   time.Duration
	Message   string
	CheckedAt time.Time
	Class     fault.Class
}

// Checker checks one target. It must return by the time ctx ends; the
// scheduler gives it a context with the target's timeout.
type Checker interface {
	Check(ctx context.Context, t Target) Result
}

// Sink takes every result (it publishes integration.health_checked and may
// spool). Calls for one target never overlap and come in check order.
type Sink interface {
	Report(ctx context.Context, t Target, r Result) error
}

// Thresholds are the consecutive agreeing results needed before the
// reported status changes (see the package doc for the rule).
type Thresholds struct {
	Failure int // default 3
	Success int // default 1
}

// Breaker configures the per-target circuit breaker.
type Breaker struct {
	Failures int           // consecutive unhealthy results that open it; default 5, negative disables it
	OpenFor  time.Duration // default 10m
}

// Config tunes a Scheduler. The zero value of every field takes its default.
type Config struct {
	DefaultInterval time.Duration // 5m
	DefaultTimeout  time.Duration // 10s, and never more than the target's interval
	Jitter          float64       // ±fraction of the interval added to each next due time; 0.1, negative for none
	MaxConcurrent   int           // checks running at once, all providers; 64
	MaxPerProvider  int           // checks running at once for one provider; 16
	Thresholds      Thresholds
	Breaker         Breaker
	// Align puts every check of a target on a wall-clock slot that depends
	// on its id and interval only: k·Interval + phase, the phase a hash of
	// the id. Any scheduler with the same clock computes the same slots, so
	// when a target moves between replicas the new owner checks at the
	// very next slot of the old cadence: no doubled check, no gap, and no
	// burst at start either (the hash spreads the phases). Jitter is not
	// applied: it would break that agreement.
	Align bool
	// Clock drives the schedule; the real clock by default. Check timeouts
	// always run on real time (they are context deadlines). The brief asked
	// for a Now func; a Now alone cannot wake a sleeping scheduler, so a
	// test clock has to provide timers too.
	Clock  Clock
	Logger *slog.Logger
}

// Clock is the scheduler's source of time. TimerAt returns a channel that
// receives once the clock reaches deadline and a func that stops it. The
// deadline is absolute so that a test clock moved between the scheduler
// reading the time and setting its timer cannot make it oversleep.
type Clock interface {
	Now() time.Time
	TimerAt(deadline time.Time) (<-chan time.Time, func() bool)
}

type realClock struct{}

func (realClock) Now() time.Time { return time.Now() }
func (realClock) TimerAt(deadline time.Time) (<-chan time.Time, func() bool) {
	t := time.NewTimer(time.Until(deadline))
	return t.C, t.Stop
}

// Stats is a snapshot of the scheduler's counters.
type Stats struct {
	Targets        int
	Checks         uint64 // checker calls finished (or cut by the watchdog)
	ShortCircuited uint64 // results reported by an open breaker without a call
	Skipped        uint64 // due times skipped because the previous check was still running or waiting
	Dropped        uint64 // results not reported: target removed or changed meanwhile, or shutting down
	Timeouts       uint64 // checks that ran into their timeout
	ReportErrors   uint64 // Sink.Report errors
	InFlight       int    // checks running (including breaker short-circuits being reported)
	Queued         int    // checks due and waiting for a slot
	BreakersOpen   int
	// Lag is the time from a check's due time to its start, over every
	// check since the scheduler was made (to within 1/8 of the value).
	LagP50, LagP99, LagMax time.Duration
}

type jobState uint8

const (
	idle jobState = iota
	queued
	running
)

// entry is one target's scheduling state. Times are nanoseconds since the
// scheduler's epoch (monotonic, and 8 bytes instead of time.Time's 24).
type entry struct {
	t           Target
	due         int64
	jobDue      int64 // due time of the queued or running check, for lag
	openUntil   int64 // breaker open until; 0 = closed
	lastChecked int64 // 0 = never
	index       int32 // in the heap; -1 when not in it
	gen         uint32
	failures    uint16 // breaker: consecutive unhealthy results
	smooth      smoothing
	state       jobState
	short       bool // the queued check is a breaker short-circuit
	removed     bool
	handedOff   bool // removed by Handoff: a check in flight still reports
}

type provider struct {
	name    string
	running int
	q       fifo
}

// Scheduler keeps targets checked. Make one with New; Upsert and Remove may
// be called before and while Run runs.
type Scheduler struct {
	cfg     Config
	checker Checker
	sink    Sink
	clock   Clock
	log     *slog.Logger
	epoch   time.Time
	// epochWall is epoch in Unix nanoseconds: aligned slots are wall-clock
	// times, so that schedulers in different processes agree on them.
	epochWall int64

	wake    chan struct{}
	started atomic.Bool
	// signals counts wake-ups asked for; armed is the count the loop had
	// seen when it last went to sleep. Equal means the loop is up to date
	// (tests wait on it; a channel's length cannot tell).
	signals, armed atomic.Uint64
	jobs           sync.WaitGroup

	mu                                                    sync.Mutex
	runCtx                                                context.Context // nil until Run; checks start only while it is live
	rng                                                   *rand.Rand
	byID                                                  map[string]*entry
	heap                                                  dueHeap
	providers                                             map[string]*provider
	provList                                              []*provider
	rr                                                    int
	shortQ                                                fifo
	inFlight                                              int
	queued                                                int
	open                                                  int
	lag                                                   lagHist
	checks, short, skipped, dropped, timeouts, reportErrs uint64
}

// New makes a Scheduler. The checker and sink are required.
func New(cfg Config, c Checker, s Sink) (*Scheduler, error) {
	if c == nil {
		return nil, errors.New("schedule: no Checker: pass the connector-backed checker to New")
	}
	if s == nil {
		return nil, errors.New("schedule: no Sink: pass the health_checked publisher to New")
	}
	if cfg.Jitter >= 1 {
		return nil, fmt.Errorf("schedule: Jitter %v out of range: use a fraction below 1, e.g. 0.1", cfg.Jitter)
	}
	if cfg.DefaultInterval <= 0 {
		cfg.DefaultInterval = 5 * time.Minute
	}
	if cfg.DefaultTimeout <= 0 {
		cfg.DefaultTimeout = 10 * time.Second
	}
	switch {
	case cfg.Jitter == 0:
		cfg.Jitter = 0.1
	case cfg.Jitter < 0:
		cfg.Jitter = 0
	}
	if cfg.MaxConcurrent <= 0 {
		cfg.MaxConcurrent = 64
	}
	if cfg.MaxPerProvider <= 0 {
		cfg.MaxPerProvider = 16
	}
	if cfg.Thresholds.Failure <= 0 {
		cfg.Thresholds.Failure = 3
	}
	if cfg.Thresholds.Success <= 0 {
		cfg.Thresholds.Success = 1
	}
	if cfg.Breaker.Failures == 0 {
		cfg.Breaker.Failures = 5
	}
	if cfg.Breaker.OpenFor <= 0 {
		cfg.Breaker.OpenFor = 10 * time.Minute
	}
	if cfg.Clock == nil {
		cfg.Clock = realClock{}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	sc := &Scheduler{
		cfg: cfg, checker: c, sink: s, clock: cfg.Clock, log: cfg.Logger,
		wake:      make(chan struct{}, 1),
		rng:       rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64())),
		byID:      make(map[string]*entry),
		providers: make(map[string]*provider),
	}
	sc.epoch = cfg.Clock.Now()
	sc.epochWall = sc.epoch.UnixNano()
	return sc, nil
}

func (s *Scheduler) now() int64 { return int64(s.clock.Now().Sub(s.epoch)) }

func (s *Scheduler) normalize(t Target) Target {
	if t.Interval <= 0 {
		t.Interval = s.cfg.DefaultInterval
	}
	if t.Timeout <= 0 {
		t.Timeout = s.cfg.DefaultTimeout
	}
	t.Timeout = min(t.Timeout, t.Interval)
	return t
}

// Upsert adds a target or updates it. A new target is first checked at a
// random point within one interval. A changed interval starts a new cadence
// from now, again at a random point within the new interval (so a bulk
// change does not fire at once). A new Version closes the breaker (its
// config may have fixed the failure) and drops the result of a check in
// flight for the old one. An identical or older (by Version) target changes
// nothing.
func (s *Scheduler) Upsert(t Target) {
	if t.ID == "" {
		s.log.Error("health schedule: target without id ignored", "tenantId", t.TenantID, "type", t.Type)
		return
	}
	t = s.normalize(t)
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	e, ok := s.byID[t.ID]
	if !ok {
		e = &entry{t: t, index: -1}
		e.due = s.firstDue(t, now)
		s.byID[t.ID] = e
		s.heap.push(e)
		s.signal()
		return
	}
	if t.Version != 0 && t.Version < e.t.Version {
		s.log.Debug("health schedule: stale update ignored", "integrationId", t.ID, "tenantId", t.TenantID,
			"version", t.Version, "held", e.t.Version)
		return
	}
	if t == e.t {
		return
	}
	old := e.t
	e.t = t
	e.gen++
	if t.Interval != old.Interval {
		e.due = s.firstDue(t, now)
		s.heap.fix(e)
		s.signal()
	}
	if t.Version != old.Version {
		e.failures = 0
		if e.openUntil != 0 {
			e.openUntil = 0
			s.open--
		}
	}
}

// Remove stops checking a target at once; the result of a check in flight
// is dropped unless its report has already begun.
func (s *Scheduler) Remove(id string) { s.remove(id, false) }

// Handoff stops scheduling a target whose checks another replica takes
// over. Unlike Remove, a check already running still reports its result:
// the target is alive, and the new owner's first check is due only at the
// next slot, so dropping it would leave a gap of two intervals. A check
// still waiting for a slot is not started.
func (s *Scheduler) Handoff(id string) { s.remove(id, true) }

func (s *Scheduler) remove(id string, handoff bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.byID[id]
	if !ok {
		return
	}
	delete(s.byID, id)
	s.heap.remove(e)
	e.removed = true
	e.handedOff = handoff
	if e.openUntil != 0 {
		e.openUntil = 0
		s.open--
	}
}

// Statuses calls fn, under the scheduler's lock, for every target with the
// status it last reported; "unknown" if it has not been checked yet or its
// last check is older than twice its interval (no stale green). fn must
// be quick and must not call the Scheduler.
func (s *Scheduler) Statuses(fn func(t Target, status string)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	for _, e := range s.byID {
		status := statusNames[e.smooth.reported]
		if e.lastChecked == 0 || now-e.lastChecked > 2*int64(e.t.Interval) {
			status = StatusUnknown
		}
		fn(e.t, status)
	}
}

// LastChecked is when the target's last reported check started; false if it
// is unknown or has not been checked yet.
func (s *Scheduler) LastChecked(id string) (time.Time, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.byID[id]
	if !ok || e.lastChecked == 0 {
		return time.Time{}, false
	}
	return s.epoch.Add(time.Duration(e.lastChecked)), true
}

// Stats returns a snapshot of the counters.
func (s *Scheduler) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return Stats{
		Targets: len(s.byID), Checks: s.checks, ShortCircuited: s.short, Skipped: s.skipped,
		Dropped: s.dropped, Timeouts: s.timeouts, ReportErrors: s.reportErrs,
		InFlight: s.inFlight, Queued: s.queued, BreakersOpen: s.open,
		LagP50: s.lag.quantile(0.50), LagP99: s.lag.quantile(0.99), LagMax: s.lag.max,
	}
}

func (s *Scheduler) signal() {
	s.signals.Add(1)
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// randIn is a random offset in [0, d). Callers hold s.mu.
func (s *Scheduler) randIn(d time.Duration) int64 {
	if d <= 0 {
		return 0
	}
	return s.rng.Int64N(int64(d))
}

// firstDue is a new cadence's first due time: the next aligned slot, or a
// random point within one interval. Callers hold s.mu.
func (s *Scheduler) firstDue(t Target, now int64) int64 {
	if s.cfg.Align {
		return s.nextSlot(t, now)
	}
	return now + s.randIn(t.Interval)
}

// nextSlot is the first aligned slot of t strictly after `after` (both in
// scheduler time).
func (s *Scheduler) nextSlot(t Target, after int64) int64 {
	iv := int64(t.Interval)
	phase := int64(Phase(t.ID, t.Interval))
	wall := s.epochWall + after
	k := floorDiv(wall-phase, iv) + 1
	return k*iv + phase - s.epochWall
}

// Phase is the offset within each interval at which an aligned target is
// due: a hash of its id, so phases are spread evenly and every replica
// computes the same one.
func Phase(id string, interval time.Duration) time.Duration {
	if interval <= 0 {
		return 0
	}
	h := fnv.New64a()
	_, _ = h.Write([]byte(id))
	return time.Duration(h.Sum64() % uint64(interval))
}

func floorDiv(a, b int64) int64 {
	q := a / b
	if (a%b != 0) && ((a < 0) != (b < 0)) {
		q--
	}
	return q
}

// jittered is d ± Jitter·d. Callers hold s.mu.
func (s *Scheduler) jittered(d time.Duration) int64 {
	if s.cfg.Jitter == 0 {
		return max(1, int64(d))
	}
	j := s.cfg.Jitter * (2*s.rng.Float64() - 1)
	return max(1, int64(float64(d)*(1+j)))
}

// Run checks targets as they fall due until ctx ends, then waits for the
// checks in flight (cancelled with ctx, their results dropped) and returns
// nil. A Scheduler runs once.
func (s *Scheduler) Run(ctx context.Context) error {
	if !s.started.CompareAndSwap(false, true) {
		return errors.New("schedule: Run called twice; make a new Scheduler")
	}
	s.mu.Lock()
	s.runCtx = ctx
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.runCtx = nil // nothing more starts
		s.mu.Unlock()
		s.jobs.Wait()
	}()
	for {
		seen := s.signals.Load()
		s.mu.Lock()
		next := s.dispatchDue()
		s.mu.Unlock()
		if ctx.Err() != nil {
			return nil
		}
		var (
			fired <-chan time.Time
			stop  func() bool
		)
		if next >= 0 {
			fired, stop = s.clock.TimerAt(s.epoch.Add(time.Duration(next)))
		}
		s.armed.Store(seen)
		select {
		case <-ctx.Done():
		case <-fired:
		case <-s.wake:
		}
		if stop != nil {
			stop()
		}
	}
}

// dispatchDue queues every target that is due and starts what the limits
// allow. It returns the next due time, or -1 if there is no target. Callers
// hold s.mu.
func (s *Scheduler) dispatchDue() int64 {
	now := s.now()
	for len(s.heap) > 0 && s.heap[0].due <= now {
		e := s.heap[0]
		due := e.due
		var next int64
		switch {
		case s.cfg.Align:
			// The slot after now, not after due: a stall longer than an
			// interval is not caught up in a burst, and slots are spread
			// by phase already.
			next = s.nextSlot(e.t, max(due, now))
		default:
			next = due + s.jittered(e.t.Interval)
			if next <= now {
				// Stalled for longer than an interval: spread again rather
				// than catch up in a burst.
				next = now + 1 + s.randIn(e.t.Interval)
			}
		}
		e.due = next
		s.heap.fix(e)
		if e.state != idle {
			s.skipped++
			continue
		}
		e.jobDue = due
		e.state = queued
		s.queued++
		if e.openUntil != 0 && now < e.openUntil {
			e.short = true
			s.shortQ.push(e)
			continue
		}
		e.short = false
		s.provider(e.t).q.push(e)
	}
	s.pump(now)
	if len(s.heap) == 0 {
		return -1
	}
	return s.heap[0].due
}

func (s *Scheduler) provider(t Target) *provider {
	name := t.Provider
	if name == "" {
		name = t.Type
	}
	p, ok := s.providers[name]
	if !ok {
		p = &provider{name: name}
		s.providers[name] = p
		s.provList = append(s.provList, p)
	}
	return p
}

// pump starts queued checks while the limits allow: breaker short-circuits
// first (they call nothing), then round-robin across providers. Callers
// hold s.mu.
func (s *Scheduler) pump(now int64) {
	if s.runCtx == nil || s.runCtx.Err() != nil {
		return
	}
	for s.inFlight < s.cfg.MaxConcurrent {
		if e := s.shortQ.pop(); e != nil {
			s.queued--
			if e.removed {
				e.state = idle
				continue
			}
			s.start(e, nil, now)
			continue
		}
		var p *provider
		for i := range s.provList {
			c := s.provList[(s.rr+i)%len(s.provList)]
			if c.q.len() > 0 && c.running < s.cfg.MaxPerProvider {
				p = c
				s.rr = (s.rr + i + 1) % len(s.provList)
				break
			}
		}
		if p == nil {
			return
		}
		e := p.q.pop()
		s.queued--
		if e.removed {
			e.state = idle
			continue
		}
		p.running++
		s.start(e, p, now)
	}
}

// start runs one check (p != nil) or one short-circuit report (p == nil).
// Callers hold s.mu.
func (s *Scheduler) start(e *entry, p *provider, now int64) {
	e.state = running
	s.inFlight++
	s.lag.record(now - e.jobDue)
	j := job{e: e, t: e.t, gen: e.gen, p: p, ctx: s.runCtx}
	s.jobs.Add(1)
	if p == nil {
		go s.shortCircuit(j)
		return
	}
	go s.check(j)
}

type job struct {
	e   *entry
	t   Target
	gen uint32
	p   *provider
	ctx context.Context
}

func (s *Scheduler) shortCircuit(j job) {
	defer s.jobs.Done()
	s.mu.Lock()
	until := s.epoch.Add(time.Duration(j.e.openUntil)).UTC()
	failures := j.e.failures
	s.mu.Unlock()
	now := s.clock.Now()
	s.finish(j, Result{
		Status: StatusUnhealthy, CheckedAt: now.UTC(), Class: fault.ClassTransient,
		Message: fmt.Sprintf("circuit breaker open after %d consecutive failures; next check after %s",
			failures, until.Format(time.RFC3339)),
	}, true)
}

// check calls the checker under the target's timeout. If the checker does
// not return soon after its deadline, a watchdog reports the timeout in its
// place; the checker's goroutine keeps its provider slot until it returns.
func (s *Scheduler) check(j job) {
	defer s.jobs.Done()
	var claimed atomic.Bool
	timeout := j.t.Timeout
	s.jobs.Add(1)
	watchdog := time.AfterFunc(timeout+timeout/4+10*time.Millisecond, func() {
		defer s.jobs.Done()
		if claimed.CompareAndSwap(false, true) {
			s.mu.Lock()
			s.timeouts++
			s.mu.Unlock()
			s.log.Warn("health check ignored its deadline", "integrationId", j.t.ID, "tenantId", j.t.TenantID,
				"provider", j.p.name, "timeout", timeout)
			s.finish(j, timedOut(s.clock.Now(), timeout), false)
		}
	})
	r, cut := s.call(j.ctx, j.t, timeout)
	if watchdog.Stop() {
		s.jobs.Done()
	}
	if claimed.CompareAndSwap(false, true) {
		if cut {
			s.mu.Lock()
			s.timeouts++
			s.mu.Unlock()
		}
		s.finish(j, r, false)
	}
	s.mu.Lock()
	j.p.running--
	s.pump(s.now())
	s.mu.Unlock()
}

func timedOut(start time.Time, timeout time.Duration) Result {
	return Result{Status: StatusUnhealthy, Latency: timeout, CheckedAt: start.UTC(), Class: fault.ClassTransient,
		Message: fmt.Sprintf("health check timed out after %s", timeout)}
}

// call runs the checker and normalises its result; cut says the check ran
// into its timeout.
func (s *Scheduler) call(ctx context.Context, t Target, timeout time.Duration) (r Result, cut bool) {
	cctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	start := s.clock.Now()
	began := time.Now()
	defer func() {
		if p := recover(); p != nil {
			r = Result{Status: StatusUnhealthy, Message: fmt.Sprintf("health checker panicked: %v", p)}
		}
		if r.Latency <= 0 {
			r.Latency = time.Since(began)
		}
		if r.CheckedAt.IsZero() {
			r.CheckedAt = start
		}
		r.CheckedAt = r.CheckedAt.UTC()
		switch r.Status {
		case StatusHealthy, StatusDegraded, StatusUnhealthy, StatusUnknown:
		default:
			if r.Message == "" {
				r.Message = fmt.Sprintf("health checker returned status %q", r.Status)
			}
			r.Status = StatusUnknown
		}
		if ctx.Err() == nil && errors.Is(cctx.Err(), context.DeadlineExceeded) && r.Status != StatusHealthy && r.Status != StatusDegraded {
			msg := r.Message
			r = timedOut(start, timeout)
			if msg != "" {
				r.Message += ": " + msg
			}
			r.Latency = max(r.Latency, time.Since(began))
			cut = true
		}
	}()
	return s.checker.Check(cctx, t), false
}

// finish applies a result to the target's state and reports it.
func (s *Scheduler) finish(j job, r Result, short bool) {
	e := j.e
	s.mu.Lock()
	if !short {
		s.checks++
	} else {
		s.short++
	}
	if j.ctx.Err() != nil || (e.removed && !e.handedOff) || e.gen != j.gen {
		s.dropped++
		s.release(e)
		s.mu.Unlock()
		return
	}
	now := s.now()
	if !short && !e.removed {
		// A handed-off target's breaker is its new owner's business, and
		// counting it here would leave s.open off by one.
		s.trip(e, r.Status, now)
	}
	r.Observed = r.Status
	r.Status = e.smooth.observe(r.Status, s.cfg.Thresholds)
	e.lastChecked = max(now, 1)
	s.mu.Unlock()

	if err := s.sink.Report(j.ctx, j.t, r); err != nil {
		s.log.Error("health result not reported", "integrationId", j.t.ID, "tenantId", j.t.TenantID,
			"status", r.Status, "error", err)
		s.mu.Lock()
		s.reportErrs++
		s.mu.Unlock()
	}
	s.mu.Lock()
	s.release(e)
	s.mu.Unlock()
}

// release frees the global slot and lets the target be checked again.
// Callers hold s.mu.
func (s *Scheduler) release(e *entry) {
	e.state = idle
	s.inFlight--
	s.pump(s.now())
}

// trip updates the breaker from an observed status. Callers hold s.mu.
func (s *Scheduler) trip(e *entry, status string, now int64) {
	if s.cfg.Breaker.Failures < 0 {
		return
	}
	switch status {
	case StatusUnhealthy:
		if e.failures < ^uint16(0) {
			e.failures++
		}
		if e.openUntil != 0 || int(e.failures) >= s.cfg.Breaker.Failures {
			if e.openUntil == 0 {
				s.open++
				s.log.Warn("health breaker open", "integrationId", e.t.ID, "tenantId", e.t.TenantID,
					"provider", e.t.Provider, "failures", e.failures, "openFor", s.cfg.Breaker.OpenFor)
			}
			e.openUntil = max(now+int64(s.cfg.Breaker.OpenFor), 1)
		}
	case StatusHealthy, StatusDegraded:
		e.failures = 0
		if e.openUntil != 0 {
			e.openUntil = 0
			s.open--
			s.log.Info("health breaker closed", "integrationId", e.t.ID, "tenantId", e.t.TenantID, "provider", e.t.Provider)
		}
	}
}
