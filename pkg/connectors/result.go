package connectors

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"inthub.dev/pkg/fault"
)

// RunCheck runs one capability check and measures it. fn returns the
// message of a pass ("12 tags") or the failure; the failure should be
// classified (ClassifyHTTP does it) and its text is the check's message.
func RunCheck(ctx context.Context, capability string, fn func(context.Context) (string, error)) Check {
	start := time.Now()
	msg, err := fn(ctx)
	c := Check{Capability: capability, OK: err == nil, Message: msg, Latency: elapsedSince(start)}
	if err != nil {
		c.Err = err
		c.Class = fault.ClassOf(err)
		c.Message = err.Error()
	}
	if c.Message == "" {
		c.Message = "ok"
	}
	return c
}

// NewResult folds per-capability checks into a Result. start is when the
// test or health check began, from time.Now (a monotonic reading, never a
// fake clock: latency is real). Every check passing is healthy; some
// failing is degraded, unless a failing check's capability is among
// critical, then unhealthy, as when none passed (or none ran). Class and
// Err are those of the worst failing check: permanent, then offline, then
// transient, then unclassified, since the worst says what must happen for
// the integration to work.
func NewResult(checks []Check, start time.Time, critical ...string) Result {
	r := Result{Latency: elapsedSince(start), Checks: checks}
	if len(checks) == 0 {
		r.Status = StatusUnknown
		r.Message = "no check ran"
		return r
	}
	var failed []Check
	criticalFailed := false
	worst := -1
	for _, c := range checks {
		if c.OK {
			continue
		}
		failed = append(failed, c)
		if slices.Contains(critical, c.Capability) {
			criticalFailed = true
		}
		if worst < 0 || classRank(c.Class) > classRank(failed[worst].Class) {
			worst = len(failed) - 1
		}
	}
	if len(failed) == 0 {
		r.Status = StatusHealthy
		names := make([]string, len(checks))
		for i, c := range checks {
			names[i] = c.Capability
		}
		r.Message = fmt.Sprintf("all checks passed (%s)", strings.Join(names, ", "))
		return r
	}
	parts := make([]string, len(failed))
	for i, c := range failed {
		parts[i] = c.Capability + ": " + c.Message
	}
	w := failed[worst]
	r.Class = w.Class
	r.Err = w.Err
	if r.Err == nil {
		r.Err = classified(w.Class, errors.New(w.Capability+": "+w.Message))
	}
	if criticalFailed || len(failed) == len(checks) {
		r.Status = StatusUnhealthy
		r.Message = strings.Join(parts, "; ")
		return r
	}
	r.Status = StatusDegraded
	r.Message = fmt.Sprintf("%d of %d checks failed: %s", len(failed), len(checks), strings.Join(parts, "; "))
	return r
}

// FailedResult is the Result of a test or health check that failed before
// any capability ran (an invalid config, a secret that does not resolve),
// reported as a failed check of capability "config" or "auth".
func FailedResult(start time.Time, capability string, err error) Result {
	c := Check{Capability: capability, Message: err.Error(), Class: fault.ClassOf(err), Err: err, Latency: elapsedSince(start)}
	return NewResult([]Check{c}, start)
}

func classRank(c fault.Class) int {
	switch c {
	case fault.ClassPermanent:
		return 3
	case fault.ClassOffline:
		return 2
	case fault.ClassTransient:
		return 1
	default:
		return 0
	}
}

func classified(c fault.Class, err error) error {
	switch c {
	case fault.ClassPermanent:
		return fault.Permanent(err)
	case fault.ClassOffline:
		return fault.Offline(err)
	case fault.ClassTransient:
		return fault.Transient(err)
	default:
		return err
	}
}

// elapsedSince never reports zero: a call that took less than the clock's
// resolution still took time, and zero reads as "not measured".
func elapsedSince(start time.Time) time.Duration {
	return max(time.Since(start), time.Nanosecond)
}
