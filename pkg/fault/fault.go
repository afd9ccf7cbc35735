// Package fault classifies errors into the three classes that decide what
// the worker frame does with a failed message: retry it later (transient),
// dead-letter it at once (permanent), or keep it in the spool until the
// downstream is back (offline).
//
// Drivers and handlers classify; they never retry, sleep, spool or
// dead-letter themselves. Callers act on the class, never on the message:
//
//	if fault.ClassOf(err) == fault.ClassPermanent { ... }
//
//	var f *fault.Error
//	if errors.As(err, &f) { log(f.Class, f.RetryAfter) }
package fault

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Class is an error class. The zero value is ClassUnknown, which the frame treats
// like ClassTransient: an error nobody classified is retried, then dead-lettered.
type Class int

const (
	ClassUnknown Class = iota
	// Transient failures (network, 5xx, 429, rate limits, an open breaker)
	// are retried with backoff and redelivered with a delay.
	ClassTransient
	// Permanent failures (bad input, 4xx auth/not-found/validation) go to
	// the dead-letter subject at once.
	ClassPermanent
	// Offline means the downstream is unreachable for long or the
	// integration is in offline mode: the payload is spooled.
	ClassOffline
)

// String returns the lower-case name used in headers, logs and metrics.
func (c Class) String() string {
	switch c {
	case ClassTransient:
		return "transient"
	case ClassPermanent:
		return "permanent"
	case ClassOffline:
		return "offline"
	default:
		return "unknown"
	}
}

// ParseClass is the inverse of String. Unrecognised names give ClassUnknown.
func ParseClass(s string) Class {
	switch s {
	case "transient":
		return ClassTransient
	case "permanent":
		return ClassPermanent
	case "offline":
		return ClassOffline
	default:
		return ClassUnknown
	}
}

// Error carries a class and, optionally, how long the downstream asked us to
// wait (Retry-After, rate-limit reset). Find it with errors.As.
type Error struct {
	Class      Class
	RetryAfter time.Duration
	Err        error
}

func (e *Error) Error() string {
	if e.Err == nil {
		return e.Class.String() + " error"
	}
	return e.Err.Error()
}

func (e *Error) Unwrap() error { return e.Err }

// Transient marks err as transient. A nil err stays nil.
func Transient(err error) error { return wrap(ClassTransient, 0, err) }

// Permanent marks err as permanent. A nil err stays nil.
func Permanent(err error) error { return wrap(ClassPermanent, 0, err) }

// Offline marks err as offline. A nil err stays nil.
func Offline(err error) error { return wrap(ClassOffline, 0, err) }

// RetryAfter marks err as transient with a hint of when to try again.
func RetryAfter(err error, d time.Duration) error { return wrap(ClassTransient, d, err) }

// Permanentf formats a permanent error, as fmt.Errorf does (%w allowed).
func Permanentf(format string, args ...any) error {
	return Permanent(fmt.Errorf(format, args...))
}

func wrap(c Class, d time.Duration, err error) error {
	if err == nil {
		return nil
	}
	return &Error{Class: c, RetryAfter: d, Err: err}
}

// ClassOf returns the class of the outermost classified error in err's
// chain. An unclassified error is ClassUnknown, except a deadline or cancellation,
// which is Transient: the work may succeed when tried again.
func ClassOf(err error) Class {
	if err == nil {
		return ClassUnknown
	}
	var f *Error
	if errors.As(err, &f) {
		return f.Class
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return ClassTransient
	}
	return ClassUnknown
}

// RetryAfterOf returns the retry hint of err, or 0.
func RetryAfterOf(err error) time.Duration {
	var f *Error
	if errors.As(err, &f) {
		return f.RetryAfter
	}
	return 0
}

// Retryable reports whether the frame may try err again: transient or
// unclassified errors are; permanent and offline ones are not.
func Retryable(err error) bool {
	c := ClassOf(err)
	return c == ClassTransient || c == ClassUnknown
}
