// Package httpapi is a JSON REST client that classifies errors the
// connectors' way: one request with the connector's own deadline, the
// failure's fault class (connectors.ClassifyNet, and the provider's
// reading of an error answer), a bounded body decoded as JSON, one log
// line per request without a header value, and redirects that never take
// a credential to another origin. The GitLab and Bitbucket connectors
// talk to their APIs through it; what each API says in an error body,
// and how it pages, stays with its connector.
package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"inthub.dev/pkg/connectors"
	"inthub.dev/pkg/fault"
)

// API is one provider's REST API as a connector calls it.
type API struct {
	// Name prefixes errors and names log lines ("gitlab"); Product is
	// the name users know ("GitLab").
	Name, Product string
	// NotJSONHint is what to check when a success is not the API's JSON
	// (a proxy's login page answers 200 too).
	NotJSONHint string
	// Client is a client from GuardRedirects.
	Client  *http.Client
	Timeout time.Duration
	// MaxBody bounds what one answer may hold.
	MaxBody int64
	// EmptyOK decodes an empty body as nothing instead of refusing it.
	EmptyOK bool
	Logger  *slog.Logger
	// Attrs go with every request's log line (ids, provider, flavor).
	Attrs []slog.Attr
}

// Request is one call.
type Request struct {
	// Op is what the user reads in an error: "list projects".
	Op     string
	Method string
	URL    *url.URL
	// Header holds the credential and the provider's own headers; Accept
	// and Content-Type are set here.
	Header http.Header
	// In, when not nil, is sent as the JSON body; Out, when not nil,
	// receives the JSON answer.
	In, Out any
	// Classify returns the classified error of an answer that failed
	// (nil for a success); it may read the body.
	Classify func(*http.Response) error
}

// Do sends r once: nothing here retries, and net/http re-sends a request
// only when the connection broke before any of it was written, so a write
// whose answer is lost may have been applied. The header is the answer's,
// also of a refused one (rate-limit headers), nil when none came. Errors
// are fault-classified, name the operation and never hold a header value.
func (a *API) Do(ctx context.Context, r Request) (http.Header, error) {
	// Our own deadline has its own cause, to tell it from the caller's.
	errTimeout := errors.New(a.Name + ": request timeout")
	ctx, cancel := context.WithTimeoutCause(ctx, a.Timeout, errTimeout)
	defer cancel()

	var body io.Reader
	if r.In != nil {
		b, err := json.Marshal(r.In)
		if err != nil {
			return nil, fault.Permanentf("%s: %s: encode request: %w", a.Name, r.Op, err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, r.Method, r.URL.String(), body)
	if err != nil {
		return nil, fault.Permanentf("%s: %s: build request: %w", a.Name, r.Op, err)
	}
	// u.String() re-encodes from RawPath; setting URL keeps the exact
	// form, the %2F of a GitLab project path included.
	req.URL = r.URL
	for k, vs := range r.Header {
		req.Header[k] = vs
	}
	req.Header.Set("Accept", "application/json")
	if r.In != nil {
		req.Header.Set("Content-Type", "application/json")
	}

	u := r.URL
	start := time.Now()
	resp, err := a.Client.Do(req)
	if err != nil {
		cerr := a.transportError(ctx, errTimeout, u, err, time.Since(start))
		a.log(ctx, r.Op, u, 0, time.Since(start), cerr)
		return nil, fmt.Errorf("%s: %s: %w", a.Name, r.Op, cerr)
	}
	defer resp.Body.Close()

	if cerr := r.Classify(resp); cerr != nil {
		a.log(ctx, r.Op, u, resp.StatusCode, time.Since(start), cerr)
		return resp.Header, fmt.Errorf("%s: %s: %w", a.Name, r.Op, cerr)
	}
	if resp.StatusCode >= 300 {
		// Only a write gets here with a redirect: GuardRedirects does
		// not follow one for it.
		cerr := fault.Permanentf("%s: %s: answered %d (a redirect) to a write; set the endpoint to the %s root it redirects to", a.Name, r.Op, resp.StatusCode, a.Product)
		a.log(ctx, r.Op, u, resp.StatusCode, time.Since(start), cerr)
		return resp.Header, cerr
	}
	raw, err := io.ReadAll(io.LimitReader(resp.Body, a.MaxBody+1))
	if err != nil {
		// The headers came, the body stalled or broke off: our deadline
		// covers the body too.
		cerr := a.transportError(ctx, errTimeout, u, err, time.Since(start))
		a.log(ctx, r.Op, u, resp.StatusCode, time.Since(start), cerr)
		return resp.Header, fmt.Errorf("%s: %s: read response: %w", a.Name, r.Op, cerr)
	}
	if int64(len(raw)) > a.MaxBody {
		return resp.Header, fault.Permanentf("%s: %s: response larger than %d bytes", a.Name, r.Op, a.MaxBody)
	}
	if r.Out != nil && (!a.EmptyOK || len(bytes.TrimSpace(raw)) > 0) {
		if err := json.Unmarshal(raw, r.Out); err != nil {
			// Say so rather than quote the body.
			return resp.Header, fault.Permanentf("%s: %s: the answer is not %s's JSON (%s); %s", a.Name, r.Op, a.Product, resp.Header.Get("Content-Type"), a.NotJSONHint)
		}
	}
	a.log(ctx, r.Op, u, resp.StatusCode, time.Since(start), nil)
	return resp.Header, nil
}

// transportError classifies a failed round trip. Our own deadline is
// reported with the configured timeout, so that the user knows which knob
// to turn; an error we raised ourselves (a refused redirect) keeps its
// words without the URL that *url.Error puts in front.
func (a *API) transportError(ctx context.Context, errTimeout error, u *url.URL, err error, elapsed time.Duration) error {
	var fe *fault.Error
	if errors.As(err, &fe) {
		return fe
	}
	if errors.Is(context.Cause(ctx), errTimeout) {
		return fault.Transient(&connectors.RequestError{
			Host:   u.Host,
			Reason: fmt.Sprintf("timed out after %s (timeoutSeconds is %d)", elapsed.Round(time.Millisecond), int(a.Timeout/time.Second)),
			Err:    err,
		})
	}
	cerr := connectors.ClassifyNet(err)
	var re *connectors.RequestError
	if errors.As(cerr, &re) && re.Host == "" {
		re.Host = u.Host
	}
	return cerr
}

// log records one request at debug level (info when it failed), never
// with a header value.
func (a *API) log(ctx context.Context, op string, u *url.URL, status int, d time.Duration, err error) {
	lvl := slog.LevelDebug
	attrs := append(append([]slog.Attr(nil), a.Attrs...),
		slog.String("operation", op),
		slog.String("path", u.EscapedPath()),
		slog.Int("status", status),
		slog.Duration("duration", d),
	)
	if err != nil {
		lvl = slog.LevelInfo
		attrs = append(attrs, slog.String("error", err.Error()), slog.String("class", fault.ClassOf(err).String()))
	}
	a.Logger.LogAttrs(ctx, lvl, a.Name+" request", attrs...)
}

// URL joins a root and path elements, each one escaped path segment: a
// GitLab project path given as one element keeps its slashes encoded
// ("acme/api" → "acme%2Fapi"), as GitLab requires ("namespaced path
// encoding"); sent as "acme/api" it routes nowhere and GitLab answers 404.
// RawPath carries the encoded form, Path the decoded one;
// url.URL.EscapedPath uses RawPath because it is a valid encoding of
// Path, so http.Client sends the %2F unchanged.
func URL(root *url.URL, query url.Values, elems ...string) *url.URL {
	u := *root
	raw := strings.TrimSuffix(root.EscapedPath(), "/")
	dec := strings.TrimSuffix(root.Path, "/")
	for _, e := range elems {
		raw += "/" + url.PathEscape(e)
		dec += "/" + e
	}
	u.Path, u.RawPath = dec, raw
	u.RawQuery = ""
	if len(query) > 0 {
		u.RawQuery = query.Encode()
	}
	u.Fragment, u.RawFragment = "", ""
	return &u
}

// Detailed appends what the provider said, and what to change, to a
// classified error, keeping the class reachable through Unwrap. Said is
// the provider's words as they came, in the provider's own shape.
type Detailed[S any] struct {
	Err    error
	Detail string
	Said   S
}

func (d *Detailed[S]) Error() string { return d.Err.Error() + " (" + d.Detail + ")" }
func (d *Detailed[S]) Unwrap() error { return d.Err }

// SaidOf is what the provider said in a failed call's answer; the zero S
// when the error holds none.
func SaidOf[S any](err error) S {
	var d *Detailed[S]
	if errors.As(err, &d) {
		return d.Said
	}
	var zero S
	return zero
}

// JoinHint appends a hint to a message, either of which may be empty.
func JoinHint(msg, hint string) string {
	if msg == "" {
		return hint
	}
	return msg + "; " + hint
}

// maxRedirects bounds redirects (http→https, a moved instance).
const maxRedirects = 5

// GuardRedirects wraps a caller's client so that a redirect stays within
// the instance and a write is never redirected. net/http drops
// Authorization and cookies on a cross-host redirect but copies every
// other header (GitLab's PRIVATE-TOKEN and JOB-TOKEN included); refusing
// the redirect outright keeps the credential home and says what is wrong
// instead of failing with a 401 from elsewhere. name and product word the
// errors as API's do.
func GuardRedirects(base *http.Client, name, product string) *http.Client {
	if base == nil {
		base = http.DefaultClient
	}
	c := *base
	prev := base.CheckRedirect
	c.CheckRedirect = func(req *http.Request, via []*http.Request) error {
		if via[0].Method != http.MethodGet {
			// A redirected write is re-sent (307, 308) or turned into a
			// GET (301, 302, 303): neither is what the caller asked for.
			return http.ErrUseLastResponse
		}
		if len(via) >= maxRedirects {
			return fault.Permanentf("%s: stopped after %d redirects", name, maxRedirects)
		}
		if !SameOrigin(via[0].URL, req.URL) {
			return fault.Permanentf("%s: the endpoint redirects to another host (%s); set the endpoint to the %s root it redirects to", name, req.URL.Host, product)
		}
		if prev != nil {
			return prev(req, via)
		}
		return nil
	}
	return &c
}

// SameOrigin allows a redirect within one origin and the upgrade of
// http://host to https://host; never a downgrade to http.
func SameOrigin(from, to *url.URL) bool {
	if from.Hostname() != to.Hostname() {
		return false
	}
	switch {
	case from.Scheme == to.Scheme:
		return portOf(from) == portOf(to)
	case from.Scheme == "http" && to.Scheme == "https":
		return from.Port() == "" && to.Port() == ""
	default:
		return false
	}
}

func portOf(u *url.URL) string {
	if p := u.Port(); p != "" {
		return p
	}
	if u.Scheme == "http" {
		return "80"
	}
	return "443"
}
