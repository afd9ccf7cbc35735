package github

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/bradleyfalzon/ghinstallation/v2"
	gh "github.com/google/go-github/v62/github"

	"inthub.dev/pkg/connectors"
	"inthub.dev/pkg/egress"
	"inthub.dev/pkg/fault"
)

// apiError is a failure as the user reads it: what was being done and
// why it failed. Its message never holds a token, a key or a resolved
// address; the cause stays reachable through Unwrap for errors.As.
type apiError struct {
	op  string
	msg string
	err error
}

func (e *apiError) Error() string { return e.op + ": " + e.msg }
func (e *apiError) Unwrap() error { return e.err }

// opKind says which credential a call used, which decides what a 401 or a
// 404 means.
type opKind int

const (
	opApp          opKind = iota // app JWT: GET app
	opToken                      // the installation token exchange
	opInstallation               // installation token: installation/*, rate_limit
	opRepo                       // installation token, one repository
)

type op struct {
	kind opKind
	name string // "list installation repositories"
	repo string // owner/name, for opRepo
	// target is what in repo the call is about ("pull request #42"), for
	// a 404 to name it.
	target string
	// perm is the installation permission a write needs ("checks:
	// write"), for a 403 to name it.
	perm string
}

// defaultSecondaryWait is the wait after a secondary rate limit that came
// without Retry-After: GitHub's documentation says to wait at least a
// minute.
const defaultSecondaryWait = time.Minute

func classed(class fault.Class, retryAfter time.Duration, err error) error {
	switch class {
	case fault.ClassPermanent:
		return fault.Permanent(err)
	case fault.ClassOffline:
		return fault.Offline(err)
	default:
		if retryAfter > 0 {
			return fault.RetryAfter(err, retryAfter)
		}
		return fault.Transient(err)
	}
}

// classify turns a failed call into a classified error with a message a
// user can act on. parent is the caller's context: its cancellation is
// not a timeout of ours.
func (c *Connector) classify(parent context.Context, o op, err error) error {
	if err == nil {
		return nil
	}
	fail := func(class fault.Class, retry time.Duration, msg string) error {
		return classed(class, retry, &apiError{op: o.name, msg: msg, err: err})
	}
	now := time.Now()

	if parent.Err() != nil {
		return fail(fault.ClassTransient, 0, "cancelled by the caller: "+parent.Err().Error())
	}

	// go-github answers these from its own state without a request once
	// GitHub has said to back off; both carry the wait.
	var rl *gh.RateLimitError
	if errors.As(err, &rl) {
		wait := max(rl.Rate.Reset.Time.Sub(now), time.Second)
		return fail(fault.ClassTransient, wait, fmt.Sprintf("GitHub's API rate limit (%d requests an hour) is used up until %s",
			rl.Rate.Limit, rl.Rate.Reset.Time.UTC().Format(time.RFC3339)))
	}
	var abuse *gh.AbuseRateLimitError
	if errors.As(err, &abuse) {
		wait := defaultSecondaryWait
		if abuse.RetryAfter != nil && *abuse.RetryAfter > 0 {
			wait = *abuse.RetryAfter
		}
		return fail(fault.ClassTransient, wait, fmt.Sprintf("GitHub's secondary rate limit was hit; retry after %s", wait.Round(time.Second)))
	}

	if resp, kind, ghMsg := responseOf(err); resp != nil {
		if kind == opToken {
			o.kind = opToken
		}
		return c.fromStatus(o, resp, ghMsg, err)
	}

	// Failures already classified below us (the key's AuthRef could not
	// be resolved, the key does not parse) keep their class and message.
	var fe *fault.Error
	if errors.As(err, &fe) {
		return classed(fe.Class, fe.RetryAfter, &apiError{op: o.name, msg: fe.Error(), err: err})
	}

	var netErr net.Error
	if errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &netErr) && netErr.Timeout()) {
		return fail(fault.ClassTransient, 0, fmt.Sprintf("GitHub did not answer within %s (timeoutSeconds)", c.timeout))
	}
	var denied *egress.DeniedError
	if errors.As(err, &denied) {
		// Reason is generic on purpose: the detail names the address.
		return fail(fault.ClassPermanent, 0, denied.Reason)
	}
	var refused *refusedError
	if errors.As(err, &refused) {
		return fail(fault.ClassPermanent, 0, refused.msg)
	}
	// Transport failures are classified as every connector does
	// (refused or unresolvable: offline; a certificate: permanent; ...).
	nerr := connectors.ClassifyNet(err)
	msg := "request failed"
	var re *connectors.RequestError
	if errors.As(nerr, &re) {
		msg = re.Reason
		if re.Host != "" {
			msg = re.Host + ": " + re.Reason
		}
	}
	if fault.ClassOf(nerr) == fault.ClassPermanent && re != nil && strings.Contains(re.Reason, "certificate") {
		msg += " (a GitHub Enterprise Server with a private CA needs that CA in the integration's trust settings)"
	}
	return fail(fault.ClassOf(nerr), fault.RetryAfterOf(nerr), msg)
}

// responseOf finds the HTTP response behind a failed call: go-github's
// ErrorResponse, or ghinstallation's HTTPError for a refused token
// exchange (whose body nobody has read or closed yet).
func responseOf(err error) (resp *http.Response, kind opKind, ghMsg string) {
	var he *ghinstallation.HTTPError
	if errors.As(err, &he) && he.Response != nil {
		resp = he.Response
		var body struct {
			Message string `json:"message"`
		}
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
		resp.Body.Close()
		_ = json.Unmarshal(b, &body)
		return resp, opToken, body.Message
	}
	var er *gh.ErrorResponse
	if errors.As(err, &er) && er.Response != nil {
		return er.Response, opInstallation, errorMessage(er)
	}
	return nil, 0, ""
}

// errorMessage is GitHub's message with its validation errors, which say
// what a 422 refused ("description is too long (maximum is 140
// characters)").
func errorMessage(er *gh.ErrorResponse) string {
	var details []string
	for _, e := range er.Errors {
		switch {
		case e.Message != "":
			details = append(details, e.Message)
		case e.Field != "" || e.Code != "":
			details = append(details, strings.TrimSpace(e.Field+" "+strings.ReplaceAll(e.Code, "_", " ")))
		}
	}
	if len(details) == 0 {
		return er.Message
	}
	return er.Message + ": " + strings.Join(details, "; ")
}

func (c *Connector) fromStatus(o op, resp *http.Response, ghMsg string, err error) error {
	fail := func(class fault.Class, retry time.Duration, msg string) error {
		return classed(class, retry, &apiError{op: o.name, msg: msg, err: err})
	}
	code := resp.StatusCode
	said := strconv.Itoa(code)
	if m := strings.TrimSpace(ghMsg); m != "" {
		if len(m) > 300 {
			m = strings.ToValidUTF8(m[:300], "") + "…"
		}
		said += " " + m
	}
	// The class and the wait are the shared rules' (Retry-After,
	// x-ratelimit-*); the message is GitHub's meaning of the status.
	shared := connectors.ClassifyHTTP(resp, nil)
	wait := fault.RetryAfterOf(shared)
	limited := code == http.StatusTooManyRequests || (code == http.StatusForbidden && fault.ClassOf(shared) == fault.ClassTransient)
	if !limited && code == http.StatusForbidden && strings.Contains(strings.ToLower(ghMsg), "secondary rate limit") {
		// A secondary limit without Retry-After: GitHub's documentation
		// says to wait at least a minute.
		limited = true
	}
	if limited && wait <= 0 {
		wait = defaultSecondaryWait
	}

	switch {
	case code == http.StatusUnauthorized:
		if o.kind == opApp || o.kind == opToken {
			return fail(fault.ClassPermanent, 0, fmt.Sprintf("GitHub refused the app's JWT: the app's key or id was refused (is the key app %d's, and is the app id right?) (%s)", c.conf.AppID, said))
		}
		return fail(fault.ClassPermanent, 0, fmt.Sprintf("GitHub refused the installation token (%s)", said))
	case code == http.StatusForbidden && limited:
		return fail(fault.ClassTransient, wait, fmt.Sprintf("GitHub rate-limited the call; retry after %s (%s)", wait.Round(time.Second), said))
	case code == http.StatusForbidden && o.perm != "":
		return fail(fault.ClassPermanent, 0, fmt.Sprintf("GitHub refused the call: the app lacks the permission %s, or the installation is suspended (%s)", o.perm, said))
	case code == http.StatusForbidden:
		return fail(fault.ClassPermanent, 0, fmt.Sprintf("GitHub refused the call: the app lacks the permission it needs, or the installation is suspended (%s)", said))
	case code == http.StatusNotFound:
		switch o.kind {
		case opToken:
			return fail(fault.ClassPermanent, 0, fmt.Sprintf("installation %d of app %d was not found: the app was uninstalled, or the id belongs to another app (%s)", c.conf.InstallationID, c.conf.AppID, said))
		case opRepo:
			if o.target != "" {
				return fail(fault.ClassPermanent, 0, fmt.Sprintf("%s of %s was not found, or the installation cannot see repository %s (%s)", o.target, o.repo, o.repo, said))
			}
			return fail(fault.ClassPermanent, 0, fmt.Sprintf("repository %s was not found, or the installation cannot see it (%s)", o.repo, said))
		default:
			return fail(fault.ClassPermanent, 0, fmt.Sprintf("not found: is %s a GitHub API root? (%s)", c.ends.api, said))
		}
	case code == http.StatusTooManyRequests:
		// go-github v62 returns a plain ErrorResponse for a 429: the wait
		// is Retry-After, or the reset of a spent budget (shared rules).
		return fail(fault.ClassTransient, wait, fmt.Sprintf("GitHub rate-limited the call; retry after %s (%s)", wait.Round(time.Second), said))
	case code == http.StatusUnprocessableEntity:
		return fail(fault.ClassPermanent, 0, fmt.Sprintf("GitHub refused the request as invalid (%s)", said))
	case code == http.StatusRequestTimeout || code >= 500:
		return fail(fault.ClassOf(shared), fault.RetryAfterOf(shared), fmt.Sprintf("GitHub failed to answer (%s)", said))
	case code >= 300 && code < 400:
		return fail(fault.ClassPermanent, 0, fmt.Sprintf("unexpected redirect to %q: is %s the API root? (%d)", resp.Header.Get("Location"), c.ends.api, code))
	default:
		return fail(fault.ClassPermanent, 0, fmt.Sprintf("GitHub refused the call (%s)", said))
	}
}
