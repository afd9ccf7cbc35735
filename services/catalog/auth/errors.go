package auth

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
)

// Callers act on these with errors.Is; the message of an *Error is safe to show.
var (
	ErrUnauthenticated = errors.New("unauthenticated")
	ErrForbidden       = errors.New("forbidden")
)

const reasonNoToken = "missing bearer token"

// Error is an authentication (401) or authorization (403) failure. Reason is written for
// the caller and never holds the token or a claim value; the underlying cause is kept for
// errors.Is and logs only.
//
// It satisfies huma/v2's StatusError, HeadersError and ContentTypeFilter by shape (without
// importing huma), so a handler may return it as is and get the same problem document and
// WWW-Authenticate header the HTTP middleware writes.
type Error struct {
	Reason string
	// Scope is the scope that was missing (403 only).
	Scope string

	kind  error
	cause error
}

func unauthenticated(reason string, cause error) *Error {
	return &Error{Reason: reason, kind: ErrUnauthenticated, cause: cause}
}

func forbidden(scope string) *Error {
	return &Error{Reason: "missing scope " + scope, Scope: scope, kind: ErrForbidden}
}

func (e *Error) Error() string { return e.kind.Error() + ": " + e.Reason }

func (e *Error) Unwrap() []error {
	if e.cause == nil {
		return []error{e.kind}
	}
	return []error{e.kind, e.cause}
}

// GetStatus is 401 or 403.
func (e *Error) GetStatus() int {
	if e.kind == ErrForbidden {
		return http.StatusForbidden
	}
	return http.StatusUnauthorized
}

// GetHeaders holds the RFC 6750 §3 challenge. A request without credentials gets no error
// code (§3.1: "SHOULD NOT include an error code"); a bad token gets invalid_token; a
// missing scope gets insufficient_scope. Reasons are fixed strings without quotes, so they
// can sit in a quoted-string as they are.
func (e *Error) GetHeaders() http.Header {
	var v string
	switch {
	case e.kind == ErrForbidden:
		v = fmt.Sprintf(`Bearer realm="inthub", error="insufficient_scope", scope=%q`, e.Scope)
	case e.Reason == reasonNoToken:
		v = `Bearer realm="inthub"`
	default:
		v = fmt.Sprintf(`Bearer realm="inthub", error="invalid_token", error_description=%q`, e.Reason)
	}
	return http.Header{"Www-Authenticate": {v}}
}

// ContentType makes huma send the problem document as application/problem+json.
func (e *Error) ContentType(ct string) string {
	if ct == "application/json" || ct == "" {
		return "application/problem+json"
	}
	return ct
}

// problem is an RFC 9457 problem details document.
type problem struct {
	Type   string `json:"type"`
	Title  string `json:"title"`
	Status int    `json:"status"`
	Detail string `json:"detail"`
}

func (e *Error) problem() problem {
	status := e.GetStatus()
	return problem{Type: "about:blank", Title: http.StatusText(status), Status: status, Detail: e.Reason}
}

// MarshalJSON renders the problem document.
func (e *Error) MarshalJSON() ([]byte, error) { return json.Marshal(e.problem()) }

// writeError writes err as a problem document; anything that is not an *Error is a 401
// without detail, so an unexpected failure still fails closed.
func writeError(w http.ResponseWriter, err error) {
	var ae *Error
	if !errors.As(err, &ae) {
		ae = unauthenticated("invalid token", err)
	}
	for k, vs := range ae.GetHeaders() {
		for _, v := range vs {
			w.Header().Add(k, v)
		}
	}
	body, _ := json.Marshal(ae.problem())
	w.Header().Set("Content-Type", "application/problem+json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(ae.GetStatus())
	_, _ = w.Write(body)
}
