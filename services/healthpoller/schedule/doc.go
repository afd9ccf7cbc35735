// Package schedule is the health poller's scheduling core: it keeps every
// known integration checked on its interval, with bounded concurrency, a
// circuit breaker per integration and smoothed status, and hands every
// result to a Sink. It knows nothing about the bus, the catalog or
// connectors: a Checker calls out, a Sink publishes, and whoever watches the
// live integrations calls Upsert and Remove.
//
// # Scheduling
//
// One goroutine owns a min-heap of next-due times and sleeps on one timer;
// there is no goroutine per integration (about 300 B of heap per target,
// see the benchmark). A new target is first checked at a random offset in
// [0, interval), so a snapshot of 100,000 integrations loaded at start does
// not fire at once; after that each check is due one interval after the
// previous due time, with ±Jitter of the interval added each time, so the
// cadence does not drift with scheduling lag. A due time that is already
// past when it is computed (the process stalled for longer than an interval)
// is placed at random in the next interval instead of firing in a burst.
//
// With Config.Align (what the service uses) the due times are wall-clock
// slots instead: k·interval + Phase(id), the phase a hash of the id. They
// are as spread as random offsets, but every scheduler computes the same
// ones, so a target handed from one replica to another (Handoff, then
// Upsert on the other) is checked at the next slot of the same cadence:
// neither twice nor with a gap. After a stall, each target resumes at its
// next slot.
//
// A check that is still running or waiting for a slot when its next check
// is due is not started twice: that due time is skipped and counted
// (Stats.Skipped).
//
// # Concurrency and timeouts
//
// At most MaxConcurrent checks run at once, and at most MaxPerProvider for
// one provider (Target.Provider, or Target.Type when that is empty), so one
// slow provider cannot take every slot. Waiting checks are started
// round-robin across providers. The checker gets a context that ends at the
// target's timeout; a check that ends by its deadline is reported unhealthy
// with class transient. A checker that ignores its context is reported the
// same way a little after the deadline by a watchdog; its goroutine keeps
// its provider slot until it returns, so a misbehaving checker lowers that
// provider's capacity instead of piling up goroutines.
//
// # Status smoothing (Config.Thresholds)
//
// Like Kubernetes probes, the reported status follows the observed one only
// after enough consecutive agreeing results:
//
//   - the first result for a target is reported as observed (unknown is no
//     claim, so any measurement beats it);
//   - healthy → not healthy after Failure consecutive results that are not
//     healthy (degraded, unhealthy or unknown); the status reported is the
//     last one observed;
//   - not healthy → healthy after Success consecutive healthy results;
//   - between two non-healthy statuses (degraded ↔ unhealthy ↔ unknown)
//     after Failure consecutive results of the new status, so an integration
//     that is sick in varying ways does not flap between them.
//
// Defaults are Kubernetes' own: Failure 3, Success 1. The Sink gets both the
// smoothed status (Result.Status) and what this check measured
// (Result.Observed); nothing is ever reported that was not measured in that
// check or its predecessors ("no stale green": staleness is for the reader
// to judge from CheckedAt, and LastChecked serves a readiness check).
//
// # Circuit breaker (Config.Breaker)
//
// Per target: after Failures consecutive unhealthy results (degraded and
// healthy reset the count, unknown leaves it) the breaker opens for OpenFor.
// While open, each due check is reported unhealthy (class transient,
// Observed unhealthy) without calling the checker. The first due check after
// OpenFor is a half-open trial that calls the checker: success closes the
// breaker, failure opens it for another OpenFor. A new Version of the target
// (its config changed) closes the breaker.
package schedule
