package connectors

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"syscall"
	"time"

	"code.dny.dev/ssrf"

	"inthub.dev/pkg/egress"

	"inthub.dev/pkg/fault"
)

// RequestError is a classified failure of one outbound request. Its text is
// what users read: it names the host and what went wrong, never the URL's
// path, query or userinfo (a token in a query string must not reach a
// message), nor an address the egress policy refused. The cause stays
// reachable through Unwrap for errors.Is / errors.As.
type RequestError struct {
	// Host is the request's host[:port], empty when unknown.
	Host string
	// StatusCode is the HTTP status, 0 for a transport failure.
	StatusCode int
	// Reason is the human explanation, e.g. "401 Unauthorized: the
	// credentials were refused".
	Reason string
	Err    error
}

func (e *RequestError) Error() string {
	if e.Host == "" {
		return e.Reason
	}
	return e.Host + ": " + e.Reason
}

func (e *RequestError) Unwrap() error { return e.Err }

// ClassifyHTTP classifies the outcome of one HTTP round trip: a transport
// error goes through ClassifyNet; a status below 400 is nil; anything else
// is a fault-classified *RequestError. It does not read or close the body.
//
//	429, 5xx (but 501), 408          → transient, with Retry-After / x-ratelimit-reset
//	403 with Retry-After or
//	  x-ratelimit-remaining: 0       → transient (GitHub's primary and secondary limits)
//	other 4xx, 501                   → permanent
func ClassifyHTTP(resp *http.Response, err error) error {
	if err != nil {
		return ClassifyNet(err)
	}
	if resp == nil {
		return fault.Transient(&RequestError{Reason: "no response"})
	}
	code := resp.StatusCode
	if code < 400 {
		return nil
	}
	host := ""
	if resp.Request != nil && resp.Request.URL != nil {
		host = resp.Request.URL.Host
	}
	re := &RequestError{Host: host, StatusCode: code}
	status := strconv.Itoa(code) + " " + statusText(code)
	wait, limited := retryAfter(resp.Header)

	switch {
	case code == http.StatusTooManyRequests:
		re.Reason = status + ": rate limited" + retryHint(wait)
		return fault.RetryAfter(re, wait)
	case code == http.StatusForbidden && limited:
		// GitHub answers an exhausted budget or its secondary rate limit
		// with 403, telling the two from a refusal only by these headers.
		re.Reason = status + ": rate limited" + retryHint(wait)
		return fault.RetryAfter(re, wait)
	case code == http.StatusRequestTimeout:
		re.Reason = status + ": the server timed out waiting for the request"
		return fault.Transient(re)
	case code == http.StatusNotImplemented:
		re.Reason = status + ": the server does not support this request (check the endpoint and API version)"
		return fault.Permanent(re)
	case code >= 500:
		re.Reason = status + ": the server failed" + retryHint(wait)
		return fault.RetryAfter(re, wait)
	case code == http.StatusUnauthorized:
		re.Reason = status + ": the credentials were refused"
	case code == http.StatusForbidden:
		re.Reason = status + ": the credentials lack the permission for this operation"
	case code == http.StatusNotFound:
		re.Reason = status + ": the resource does not exist or the credentials cannot see it"
	case code == http.StatusBadRequest, code == http.StatusUnprocessableEntity:
		re.Reason = status + ": the server refused the request as invalid"
	case code == http.StatusConflict:
		re.Reason = status + ": the request conflicts with the resource's state"
	default:
		re.Reason = status + ": the server refused the request"
	}
	return fault.Permanent(re)
}

func statusText(code int) string {
	if t := http.StatusText(code); t != "" {
		return t
	}
	return "status"
}

func retryHint(d time.Duration) string {
	if d <= 0 {
		return ""
	}
	return fmt.Sprintf("; retry after %s", d.Round(time.Second))
}

// retryAfter reads how long the server asked us to wait: Retry-After
// (seconds or an HTTP-date), else the reset of an exhausted budget
// (x-ratelimit-remaining: 0 with x-ratelimit-reset, GitHub; or the same
// as RateLimit-*, GitLab). limited reports a rate-limit signal was
// present at all. Dates are measured against the response's Date header
// when it has one, so our clock's skew does not stretch the wait.
func retryAfter(h http.Header) (wait time.Duration, limited bool) {
	now := time.Now()
	if d, err := http.ParseTime(h.Get("Date")); err == nil {
		now = d
	}
	if v := strings.TrimSpace(h.Get("Retry-After")); v != "" {
		if secs, err := strconv.ParseInt(v, 10, 64); err == nil && secs >= 0 {
			return atLeastOneSecond(time.Duration(secs) * time.Second), true
		}
		if t, err := http.ParseTime(v); err == nil {
			return atLeastOneSecond(t.Sub(now)), true
		}
	}
	for _, prefix := range []string{"X-Ratelimit-", "Ratelimit-"} {
		if strings.TrimSpace(h.Get(prefix+"Remaining")) != "0" {
			continue
		}
		if reset, ok := resetTime(h.Get(prefix+"Reset"), now); ok {
			return atLeastOneSecond(reset.Sub(now)), true
		}
		return 0, true
	}
	return 0, false
}

// resetTime reads a rate-limit reset: epoch seconds (GitHub's
// x-ratelimit-reset, GitLab's RateLimit-Reset) or, for the IETF draft's
// RateLimit-Reset, seconds from now. No delta is a billion seconds long,
// and no epoch this century is shorter.
func resetTime(v string, now time.Time) (time.Time, bool) {
	secs, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
	if err != nil || secs < 0 {
		return time.Time{}, false
	}
	if secs < 1_000_000_000 {
		return now.Add(time.Duration(secs) * time.Second), true
	}
	return time.Unix(secs, 0), true
}

// atLeastOneSecond keeps a hint that is already due (clock skew, a reset
// in the past) from reading as "no hint": the server did ask us to wait.
func atLeastOneSecond(d time.Duration) time.Duration {
	return max(d, time.Second)
}

// ParseRateLimit reads a provider's budget from response headers:
// x-ratelimit-{limit,remaining,reset} (GitHub, epoch seconds) or
// RateLimit-{Limit,Remaining,Reset} (GitLab, epoch seconds; the IETF
// draft's delta seconds). Nil when the headers are absent.
func ParseRateLimit(h http.Header) *RateLimit {
	for _, prefix := range []string{"X-Ratelimit-", "Ratelimit-"} {
		limit, err1 := strconv.Atoi(strings.TrimSpace(h.Get(prefix + "Limit")))
		remaining, err2 := strconv.Atoi(strings.TrimSpace(h.Get(prefix + "Remaining")))
		if err1 != nil || err2 != nil {
			continue
		}
		rl := &RateLimit{Limit: limit, Remaining: remaining}
		if reset, ok := resetTime(h.Get(prefix+"Reset"), time.Now()); ok {
			rl.Reset = reset.UTC()
		}
		return rl
	}
	return nil
}

// ClassifyNet classifies a transport error (what http.Client.Do, a dialer
// or a TLS handshake returns). The decisions:
//
//   - A deadline, a timeout or a temporary DNS failure is transient: the
//     same call may work in a moment.
//   - Connection refused, "no such host", network or host unreachable are
//     offline: nothing answers at that address, and retrying soon will not
//     change it; the frame spools instead of burning retries.
//   - Connection reset, broken pipe and an unexpected EOF are transient:
//     something answered and dropped us, a restart or a proxy hiccup.
//   - A certificate that does not verify, a TLS handshake failure, a plain
//     HTTP server behind an https URL, an address the egress policy refuses
//     are permanent: only a change of configuration fixes them.
//   - Cancellation is transient (the caller gave up, not the server).
//   - Anything else is transient.
//
// An error that is already classified is returned unchanged.
func ClassifyNet(err error) error { return classifyNet(err, 0) }

// classifyNet is ClassifyNet with the elapsed time of the call, when the
// caller measured it, for the "timed out after" message.
func classifyNet(err error, elapsed time.Duration) error {
	if err == nil {
		return nil
	}
	var already *fault.Error
	if errors.As(err, &already) {
		return err
	}
	re := &RequestError{Host: hostOf(err), Err: err}

	var (
		dnsErr   *net.DNSError
		unknown  x509.UnknownAuthorityError
		invalid  x509.CertificateInvalidError
		hostname x509.HostnameError
		verify   *tls.CertificateVerificationError
		record   tls.RecordHeaderError
		alert    tls.AlertError
		netErr   net.Error
	)
	switch {
	case errors.Is(err, egress.ErrDenied),
		errors.Is(err, ssrf.ErrProhibitedIP), errors.Is(err, ssrf.ErrProhibitedPort),
		errors.Is(err, ssrf.ErrProhibitedNetwork), errors.Is(err, ssrf.ErrInvalidHostPort):
		// The blocked address stays out of the message (it would tell
		// what the host resolves to inside our network).
		re.Reason = "the endpoint's address is not allowed by the egress policy (ask an administrator to allow-list it)"
		return fault.Permanent(re)
	case errors.Is(err, context.Canceled):
		re.Reason = "the request was cancelled"
		return fault.Transient(re)
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, syscall.ETIMEDOUT),
		errors.As(err, &netErr) && netErr.Timeout():
		re.Reason = "timed out"
		if elapsed > 0 {
			re.Reason = "timed out after " + roundElapsed(elapsed).String()
		}
		return fault.Transient(re)
	case errors.As(err, &dnsErr):
		if dnsErr.IsNotFound {
			re.Reason = "the host name does not resolve (no such host)"
			return fault.Offline(re)
		}
		re.Reason = "the host name could not be resolved (DNS failure)"
		return fault.Transient(re)
	case errors.Is(err, syscall.ECONNREFUSED):
		re.Reason = "connection refused (nothing listens at that address)"
		return fault.Offline(re)
	case errors.Is(err, syscall.ENETUNREACH), errors.Is(err, syscall.EHOSTUNREACH):
		re.Reason = "the network or host is unreachable"
		return fault.Offline(re)
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE),
		errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		re.Reason = "the server closed the connection"
		return fault.Transient(re)
	case errors.As(err, &verify), errors.As(err, &unknown), errors.As(err, &invalid):
		re.Reason = "the server's certificate does not verify; configure the integration's CA"
		return fault.Permanent(re)
	case errors.As(err, &hostname):
		re.Reason = "the server's certificate is not valid for this host name; check the endpoint or the certificate"
		return fault.Permanent(re)
	// net/http reports a plain-HTTP answer on its own, as an untyped error
	// (it checks the TLS record first), so only its text tells.
	case errors.As(err, &record), strings.Contains(err.Error(), "server gave HTTP response to HTTPS client"):
		re.Reason = "the server did not answer with TLS (is the endpoint http:// rather than https://?)"
		return fault.Permanent(re)
	case errors.As(err, &alert):
		re.Reason = "the TLS handshake failed (" + alert.Error() + ")"
		return fault.Permanent(re)
	}
	re.Reason = "request failed: " + causeText(err)
	return fault.Transient(re)
}

func roundElapsed(d time.Duration) time.Duration {
	if d >= time.Second {
		return d.Round(100 * time.Millisecond)
	}
	return d.Round(time.Millisecond)
}

// hostOf finds the host of the request that failed, from the *url.Error
// http.Client wraps every failure in, or from a dial error's address.
func hostOf(err error) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		if u, perr := url.Parse(ue.URL); perr == nil {
			return u.Host
		}
	}
	return ""
}

// causeText is the message of err without the URL a *url.Error prefixes
// (its query may hold a token).
func causeText(err error) string {
	var ue *url.Error
	if errors.As(err, &ue) && ue.Err != nil {
		return ue.Err.Error()
	}
	return err.Error()
}

// Do sends req with c (nil: http.DefaultClient) and classifies the outcome:
// a transport failure (with "timed out after <elapsed>") or a status of 400
// and above comes back as a classified error, the body drained and closed;
// otherwise the caller owns resp.Body.
func Do(c *http.Client, req *http.Request) (*http.Response, error) {
	if c == nil {
		c = http.DefaultClient
	}
	start := time.Now()
	resp, err := c.Do(req)
	if err != nil {
		cerr := classifyNet(err, time.Since(start))
		if h := req.URL.Host; h != "" {
			var re *RequestError
			if errors.As(cerr, &re) && re.Host == "" {
				re.Host = h
			}
		}
		return nil, cerr
	}
	if cerr := ClassifyHTTP(resp, nil); cerr != nil {
		// Drain a little so the connection can be reused, then drop it.
		_, _ = io.CopyN(io.Discard, resp.Body, 64<<10)
		_ = resp.Body.Close()
		return nil, cerr
	}
	return resp, nil
}
