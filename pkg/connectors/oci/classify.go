package oci

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	"oras.land/oras-go/v2/registry/remote/auth"
	"oras.land/oras-go/v2/registry/remote/errcode"

	"inthub.dev/pkg/connectors"
	"inthub.dev/pkg/fault"
)

// ClassifyStatus classifies a non-2xx answer with the shared rules of
// connectors.ClassifyHTTP (401, 403, 404 and other 4xx permanent; 408, 429
// and 5xx transient with the Retry-After hint) and adds the operation and
// the registry's error codes to the message. It reads a bounded part of
// the body; the caller closes it.
func ClassifyStatus(op string, resp *http.Response) error {
	detail := errorDetail(resp)
	err := connectors.ClassifyHTTP(resp, nil)
	if err == nil {
		// A 3xx that was not followed (a redirect limit of the caller's
		// client): the endpoint is not where the config says.
		err = fault.Permanent(&connectors.RequestError{Host: resp.Request.URL.Host, StatusCode: resp.StatusCode,
			Reason: fmt.Sprintf("%d %s: unexpected redirect", resp.StatusCode, http.StatusText(resp.StatusCode))})
	}
	if detail != "" {
		return fmt.Errorf("%s: %w: %s", op, err, detail)
	}
	return fmt.Errorf("%s: %w", op, err)
}

// errorDetail extracts the distribution error codes ({"errors":[{"code",
// "message"}]}, Harbor's too) or a short plain-text reason. Bounded, one
// line.
func errorDetail(resp *http.Response) string {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 8<<10))
	var doc struct {
		Errors []struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"errors"`
	}
	var parts []string
	if json.Unmarshal(b, &doc) == nil {
		for _, e := range doc.Errors {
			p := e.Code
			if e.Message != "" {
				p += " " + e.Message
			}
			parts = append(parts, strings.TrimSpace(p))
		}
	}
	s := strings.Join(parts, "; ")
	if s == "" && strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") {
		s = strings.TrimSpace(string(b))
	}
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 200 {
		s = s[:200] + "…"
	}
	return s
}

// ClassifyTransport classifies a failure to get a response at all. ctx is
// the request's context (its deadline is the per-request timeout).
// Messages are for users: an address refused by the egress policy is not
// named.
func ClassifyTransport(ctx context.Context, op string, timeout time.Duration, err error) error {
	var (
		cred *credentialError
		resp *errcode.ErrorResponse
	)
	switch {
	case errors.As(err, &cred):
		if fault.ClassOf(cred.err) == fault.ClassUnknown {
			// A resolver that did not classify: a missing secret will
			// not appear by retrying.
			return fault.Permanent(fmt.Errorf("%s: %w", op, cred))
		}
		return fmt.Errorf("%s: %w", op, cred)
	case errors.As(err, &resp):
		// The token service answered with an error.
		return classifyTokenResponse(op, resp)
	case errors.Is(err, auth.ErrBasicCredentialNotFound):
		return fault.Permanent(fmt.Errorf("%s: the registry asks for credentials and none are configured", op))
	case strings.Contains(err.Error(), "bearer realm"):
		// oras-go refused the token realm (a blocked address, scheme or
		// https → http downgrade) with an untyped error.
		return fault.Permanent(fmt.Errorf("%s: token service refused: %s", op, realmReason(err)))
	case !errors.Is(err, context.Canceled) && (errors.Is(err, context.DeadlineExceeded) || isTimeout(err)) && ctx.Err() != nil:
		// Our per-request timeout: name the setting.
		return fault.Transient(fmt.Errorf("%s: no answer within %s (timeoutSeconds): %w", op, timeout, context.DeadlineExceeded))
	default:
		return fmt.Errorf("%s: %w", op, connectors.ClassifyNet(err))
	}
}

// realmReason is oras-go's refusal without the address a realm resolved
// to (the egress rule: users see no internal address).
func realmReason(err error) string {
	msg := err.Error()
	if i := strings.Index(msg, "bearer realm"); i >= 0 {
		msg = msg[i:]
	}
	if i := strings.Index(msg, " is "); i >= 0 && strings.Contains(msg, "blocked prefix") {
		return msg[:i] + " is on a loopback, link-local or metadata address and is not the registry's host"
	}
	if i := strings.Index(msg, " resolves to "); i >= 0 {
		return msg[:i] + " resolves to a loopback, link-local or metadata address"
	}
	return msg
}

func classifyTokenResponse(op string, r *errcode.ErrorResponse) error {
	re := &connectors.RequestError{StatusCode: r.StatusCode,
		Reason: fmt.Sprintf("token service answered %d %s", r.StatusCode, http.StatusText(r.StatusCode))}
	if r.URL != nil {
		re.Host = r.URL.Host
	}
	if len(r.Errors) > 0 {
		re.Reason += ": " + r.Errors.Error()
	}
	switch c := r.StatusCode; {
	case c == http.StatusTooManyRequests || c >= 500 && c != http.StatusNotImplemented || c == http.StatusRequestTimeout:
		return fmt.Errorf("%s: %w", op, fault.Transient(re))
	case c == http.StatusUnauthorized:
		re.Reason += " (the credentials were refused)"
	}
	return fmt.Errorf("%s: %w", op, fault.Permanent(re))
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
