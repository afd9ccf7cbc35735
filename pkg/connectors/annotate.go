package connectors

import (
	"context"
	"fmt"
	"net/url"
	"strings"
	"unicode/utf8"

	"inthub.dev/events"
)

// Annotator is the capability of source hosts that take scan results back:
// pull-request comments, commit statuses and check runs (emulated where the
// host has none). The annotation worker orchestrates (budgets, degrading,
// spooling); an Annotator makes the calls one request needs.
//
// Every call is safe to repeat: a comment carries a hidden marker (its key,
// or the request id when it has none) and is found and edited rather than
// posted twice; a check run is found by its external id (the request id
// when the request names none). Limits are applied before sending: text
// that would be refused is cut with a visible note (reported in
// Posted.Notes), never sent to fail.
//
// Errors are classified with package fault. A rate limit is transient with
// fault.RetryAfter set to the provider's wait (Retry-After, or the reset of
// an exhausted budget); bad input and refused credentials are permanent.
type Annotator interface {
	// AnnotationScope names the write budgets a call draws on: the API
	// host ("api.github.com") and the account writing there (a GitHub App
	// installation, a GitLab token's user), as stable strings.
	AnnotationScope() (host, account string)
	// Writes is how many write calls req costs when sent as it is, counting
	// nothing for reads (lookups, which are cached). The worker compares it
	// with its budget before calling Annotate.
	Writes(req AnnotationRequest) int
	// Annotate performs req.
	Annotate(ctx context.Context, req AnnotationRequest) (Posted, error)
}

// AnnotationRequest is one scm.annotation.requested with the identity of
// the request, which makes retries safe.
type AnnotationRequest struct {
	// ID is the request's CloudEvents id.
	ID string
	// Attempt counts deliveries of the request, from 1. A first attempt
	// may skip lookups that only a retry needs (a comment without a key).
	Attempt int
	events.AnnotationRequested
}

// Posted is what an Annotate call did.
type Posted struct {
	URL        string // what users open: the comment, the check run, the commit
	ExternalID string // the provider's id of what was written (comment id, check run id)
	Reads      int    // API calls that only read
	Writes     int    // API calls that wrote
	// Notes says what was cut or changed to fit the provider's limits, in
	// words for the user ("status description cut to 140 characters").
	Notes []string
	// Unchanged is set when nothing was written because the provider
	// already shows exactly this (the same status, the same comment body).
	Unchanged bool
	// RateLimit is the budget as the provider last reported it, if it did.
	RateLimit *RateLimit
}

// Provider limits, checked before sending.
const (
	MaxCommentBody           = 65536 // GitHub issue comment / GitLab note body, characters
	MaxStatusDescription     = 140   // GitHub commit status description
	MaxCheckRunText          = 65535 // GitHub check run output.summary and output.text
	MaxAnnotationTitle       = 255   // GitHub check run annotation title
	MaxAnnotationsPerCall    = 50    // GitHub Checks API: annotations per create/update
	MaxStatusesPerSHAContext = 1000  // GitHub: statuses per sha and context
)

// CommentMarker is the hidden line that identifies inthub's comment for
// key on a pull request, so that the next request with the same key edits
// it. It is an HTML comment: GitHub and GitLab render nothing for it.
func CommentMarker(key string) string {
	return "<!-- inthub:annotation key=" + url.QueryEscape(key) + " -->"
}

// HasMarker reports whether body carries the marker of key.
func HasMarker(body, key string) bool { return strings.Contains(body, CommentMarker(key)) }

// Cut returns s cut to at most max characters (runes), with a visible
// note at the end saying how much was cut, and whether it cut. The note is
// counted in max; s is cut on a rune boundary.
func Cut(s string, max int) (string, bool) {
	n := utf8.RuneCountInString(s)
	if n <= max {
		return s, false
	}
	note := fmt.Sprintf("\n\n… (cut by inthub: %d of %d characters did not fit)", 0, n)
	// The note's length depends on the number it prints; size it for the
	// largest possible number first.
	keep := max - utf8.RuneCountInString(note) - len(fmt.Sprint(n))
	if keep < 0 {
		// No room for a note: a hard cut is all that fits.
		return string([]rune(s)[:max]), true
	}
	note = fmt.Sprintf("\n\n… (cut by inthub: %d of %d characters did not fit)", n-keep, n)
	return string([]rune(s)[:keep]) + note, true
}

// CutPlain cuts s to max characters with "…" as the only note, for short
// fields (a status description, an annotation title) where a sentence
// would not fit.
func CutPlain(s string, max int) (string, bool) {
	if utf8.RuneCountInString(s) <= max {
		return s, false
	}
	if max < 1 {
		return "", true
	}
	return string([]rune(s)[:max-1]) + "…", true
}
