package gitlab

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
	"strconv"
	"strings"
	"time"

	"inthub.dev/pkg/connectors"
	"inthub.dev/pkg/fault"
)

// maxBody bounds what one response may hold: a page of 100 full project
// objects is a few hundred KiB; anything far larger is not GitLab.
const maxBody = 8 << 20

// errTimeout is the cause of our own per-request deadline, to tell it
// from a deadline of the caller's.
var errTimeout = errors.New("gitlab: request timeout")

// maxRedirects bounds redirects (http→https, a moved instance).
const maxRedirects = 5

// credential is a resolved token, alive for one TestConnection, health
// check or listing call only.
type credential struct {
	header string // "PRIVATE-TOKEN" or "JOB-TOKEN"
	value  string
}

// response is what a successful call returns besides its decoded body.
type response struct {
	next      string // opaque cursor of the next page, "" on the last
	rateLimit *connectors.RateLimit
}

// call is one API request: root/elems...?query, decoding JSON into out.
type call struct {
	op    string // what the user reads in an error: "list projects"
	elems []string
	query url.Values
}

// get performs a GET with cred. Errors are fault-classified, name the
// operation and never hold the token (it is only ever a header value).
func (c *Connector) get(ctx context.Context, cred credential, cl call, out any) (response, error) {
	return c.do(ctx, cred, http.MethodGet, cl, nil, out)
}

// send performs a write (POST, PUT) with a JSON body. It is sent once:
// nothing here retries it, and net/http re-sends a request only when the
// connection broke before any of it was written. A write whose answer is
// lost (a timeout, a proxy's 502) may have been applied; callers find
// what they wrote by its marker before writing again, which a blind
// retry (go-gitlab's retryablehttp) cannot do.
func (c *Connector) send(ctx context.Context, cred credential, method string, cl call, in, out any) (response, error) {
	return c.do(ctx, cred, method, cl, in, out)
}

func (c *Connector) do(ctx context.Context, cred credential, method string, cl call, in, out any) (response, error) {
	ctx, cancel := context.WithTimeoutCause(ctx, c.timeout, errTimeout)
	defer cancel()

	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return response{}, fault.Permanentf("gitlab: %s: encode request: %w", cl.op, err)
		}
		body = bytes.NewReader(b)
	}
	u := apiURL(c.root, cl.query, cl.elems...)
	req, err := http.NewRequestWithContext(ctx, method, u.String(), body)
	if err != nil {
		return response{}, fault.Permanentf("gitlab: %s: build request: %w", cl.op, err)
	}
	// u.String() re-encodes from RawPath; setting URL keeps the exact
	// form, the %2F of a project path included.
	req.URL = u
	req.Header.Set(cred.header, cred.value)
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "inthub-connector-gitlab")
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}

	start := time.Now()
	resp, err := c.client.Do(req)
	if err != nil {
		cerr := transportError(ctx, u, err, time.Since(start), c.timeout)
		c.log(ctx, cl.op, u, 0, time.Since(start), cerr)
		return response{}, fmt.Errorf("gitlab: %s: %w", cl.op, cerr)
	}
	defer resp.Body.Close()

	r := response{rateLimit: connectors.ParseRateLimit(resp.Header)}
	if cerr := classify(resp, method != http.MethodGet); cerr != nil {
		c.log(ctx, cl.op, u, resp.StatusCode, time.Since(start), cerr)
		return r, fmt.Errorf("gitlab: %s: %w", cl.op, cerr)
	}
	if resp.StatusCode >= 300 {
		// Only a write gets here with a redirect: guardRedirects does
		// not follow one for it.
		cerr := fault.Permanentf("gitlab: %s: answered %d (a redirect) to a write; set the endpoint to the GitLab root it redirects to", cl.op, resp.StatusCode)
		c.log(ctx, cl.op, u, resp.StatusCode, time.Since(start), cerr)
		return r, cerr
	}
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxBody+1))
	if err != nil {
		// The headers came, the body stalled or broke off: our deadline
		// covers the body too.
		cerr := transportError(ctx, u, err, time.Since(start), c.timeout)
		c.log(ctx, cl.op, u, resp.StatusCode, time.Since(start), cerr)
		return r, fmt.Errorf("gitlab: %s: read response: %w", cl.op, cerr)
	}
	if len(raw) > maxBody {
		return r, fault.Permanentf("gitlab: %s: response larger than %d bytes", cl.op, maxBody)
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			// A proxy's HTML login page answers 200 too; say so rather
			// than quote the body.
			return r, fault.Permanentf("gitlab: %s: the answer is not GitLab's JSON (%s); check that the endpoint is the GitLab root", cl.op, resp.Header.Get("Content-Type"))
		}
	}
	r.next = nextCursor(resp.Header)
	c.log(ctx, cl.op, u, resp.StatusCode, time.Since(start), nil)
	return r, nil
}

// transportError classifies a failed round trip. Our own deadline is
// reported with the configured timeout, so that the user knows which knob
// to turn; an error we raised ourselves (a refused redirect) keeps its
// words without the URL that *url.Error puts in front.
func transportError(ctx context.Context, u *url.URL, err error, elapsed, timeout time.Duration) error {
	var fe *fault.Error
	if errors.As(err, &fe) {
		return fe
	}
	if errors.Is(context.Cause(ctx), errTimeout) {
		return fault.Transient(&connectors.RequestError{
			Host:   u.Host,
			Reason: fmt.Sprintf("timed out after %s (timeoutSeconds is %d)", elapsed.Round(time.Millisecond), int(timeout/time.Second)),
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

// classify maps a GitLab answer to a fault class with connectors.ClassifyHTTP
// and adds what GitLab says in its error body, which is often the only
// hint of the fix ("insufficient_scope", "404 Project Not Found").
func classify(resp *http.Response, write bool) error {
	cerr := connectors.ClassifyHTTP(resp, nil)
	if cerr == nil {
		return nil
	}
	// GitLab's limit headers are RateLimit-*, which ClassifyHTTP reads
	// only through Retry-After: GitLab sends both, but a proxy in front
	// may drop Retry-After.
	if resp.StatusCode == http.StatusTooManyRequests && fault.RetryAfterOf(cerr) == 0 {
		if rl := connectors.ParseRateLimit(resp.Header); rl != nil && !rl.Reset.IsZero() {
			now := time.Now()
			if d, err := http.ParseTime(resp.Header.Get("Date")); err == nil {
				now = d
			}
			cerr = fault.RetryAfter(cerr, max(rl.Reset.Sub(now), time.Second))
		}
	}
	said := gitlabMessage(resp)
	msg := ""
	if said != "" {
		msg = "GitLab says: " + said
	}
	switch {
	case resp.StatusCode == http.StatusUnauthorized:
		msg = joinHint(msg, "the token is invalid, expired or revoked (a CI job token is valid only while its job runs)")
	case resp.StatusCode == http.StatusForbidden && strings.Contains(msg, "insufficient_scope") && write:
		msg = joinHint(msg, "give the token the api scope: notes and commit statuses are written through the API")
	case resp.StatusCode == http.StatusForbidden && strings.Contains(msg, "insufficient_scope"):
		msg = joinHint(msg, "give the token the read_api or api scope")
	case resp.StatusCode == http.StatusForbidden && write:
		msg = joinHint(msg, "the token's user needs a role in the project that may write this (Developer for commit statuses, Reporter for notes)")
	}
	if msg == "" {
		return cerr
	}
	return &detailed{err: cerr, detail: msg, said: said}
}

// detailed appends GitLab's own words to a classified error, keeping the
// class reachable through Unwrap.
type detailed struct {
	err    error
	detail string
	said   string // GitLab's message as it came
}

// gitlabSaid is GitLab's own message in a failed call's error, "" if it
// sent none.
func gitlabSaid(err error) string {
	var d *detailed
	if errors.As(err, &d) {
		return d.said
	}
	return ""
}

func (d *detailed) Error() string { return d.err.Error() + " (" + d.detail + ")" }
func (d *detailed) Unwrap() error { return d.err }

func joinHint(msg, hint string) string {
	if msg == "" {
		return hint
	}
	return msg + "; " + hint
}

// gitlabMessage reads GitLab's error body: {"message": "..."} (a string
// or a map of field errors) or the OAuth form {"error": "...",
// "error_description": "..."}. At most 300 characters of it are kept;
// "" when there is none worth showing.
func gitlabMessage(resp *http.Response) string {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 16<<10))
	var e struct {
		Message     json.RawMessage `json:"message"`
		Error       string          `json:"error"`
		Description string          `json:"error_description"`
	}
	if json.Unmarshal(b, &e) != nil {
		return ""
	}
	var parts []string
	if len(e.Message) > 0 {
		var s string
		if json.Unmarshal(e.Message, &s) == nil {
			parts = append(parts, s)
		} else {
			parts = append(parts, string(e.Message))
		}
	}
	if e.Error != "" {
		parts = append(parts, e.Error)
	}
	if e.Description != "" {
		parts = append(parts, e.Description)
	}
	msg := strings.Join(parts, ": ")
	// "401 Unauthorized" says nothing the status line did not.
	if msg == "" || msg == fmt.Sprintf("%d %s", resp.StatusCode, http.StatusText(resp.StatusCode)) {
		return ""
	}
	if len(msg) > 300 {
		msg = msg[:300] + "…"
	}
	return msg
}

// nextCursor turns GitLab's pagination headers into an opaque cursor.
// Offset pagination sets X-Next-Page (empty on the last page); keyset
// pagination and responses too large to count give only a Link header
// with rel="next". The cursor is the query parameters of the next page,
// never the Link URL itself: following a URL the server chose would send
// the token to wherever it points.
func nextCursor(h http.Header) string {
	if p := strings.TrimSpace(h.Get("X-Next-Page")); p != "" {
		return url.Values{"page": {p}}.Encode()
	}
	for _, link := range h.Values("Link") {
		for _, part := range strings.Split(link, ",") {
			target, params, ok := strings.Cut(part, ";")
			if !ok || !strings.Contains(strings.ReplaceAll(params, " ", ""), `rel="next"`) {
				continue
			}
			target = strings.Trim(strings.TrimSpace(target), "<>")
			u, err := url.Parse(target)
			if err != nil {
				continue
			}
			q := url.Values{}
			for _, k := range cursorKeys {
				if v := u.Query().Get(k); v != "" {
					q.Set(k, v)
				}
			}
			if len(q) > 0 {
				return q.Encode()
			}
		}
	}
	return ""
}

// cursorKeys are the query parameters a cursor may carry: the offset page
// and GitLab's keyset parameters.
var cursorKeys = []string{"page", "id_after", "id_before", "cursor"}

// applyCursor merges a cursor into a request's query, refusing anything
// that is not a cursor this package made.
func applyCursor(q url.Values, cursor string) error {
	if cursor == "" {
		return nil
	}
	cv, err := url.ParseQuery(cursor)
	if err != nil || len(cv) == 0 || len(cursor) > 1024 {
		return fault.Permanentf("gitlab: invalid page cursor")
	}
	for k, vs := range cv {
		known := false
		for _, ck := range cursorKeys {
			known = known || k == ck
		}
		if !known || len(vs) != 1 || vs[0] == "" {
			return fault.Permanentf("gitlab: invalid page cursor")
		}
		if k == "page" {
			if n, err := strconv.Atoi(vs[0]); err != nil || n < 1 {
				return fault.Permanentf("gitlab: invalid page cursor")
			}
		}
		q.Set(k, vs[0])
	}
	return nil
}

// log records one request at debug level, never with a header value.
func (c *Connector) log(ctx context.Context, op string, u *url.URL, status int, d time.Duration, err error) {
	lvl := slog.LevelDebug
	attrs := []slog.Attr{
		slog.String("tenantId", c.cfg.TenantID),
		slog.String("integrationId", c.cfg.IntegrationID),
		slog.String("provider", "gitlab"),
		slog.String("operation", op),
		slog.String("path", u.EscapedPath()),
		slog.Int("status", status),
		slog.Duration("duration", d),
	}
	if err != nil {
		lvl = slog.LevelInfo
		attrs = append(attrs, slog.String("error", err.Error()), slog.String("class", fault.ClassOf(err).String()))
	}
	c.logger.LogAttrs(ctx, lvl, "gitlab request", attrs...)
}

// guardRedirects wraps a caller's client so that a redirect never carries
// the token to another origin. net/http drops Authorization and cookies on
// a cross-host redirect but copies every other header, PRIVATE-TOKEN and
// JOB-TOKEN included; an instance (or anything on its path) answering 302
// to elsewhere would otherwise receive the credential.
func guardRedirects(base *http.Client) *http.Client {
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
			return fault.Permanentf("gitlab: stopped after %d redirects", maxRedirects)
		}
		if !sameOrigin(via[0].URL, req.URL) {
			return fault.Permanentf("gitlab: the endpoint redirects to another host (%s); set the endpoint to the GitLab root it redirects to", req.URL.Host)
		}
		if prev != nil {
			return prev(req, via)
		}
		return nil
	}
	return &c
}

// sameOrigin allows a redirect within one origin and the upgrade of
// http://host to https://host; never a downgrade to http.
func sameOrigin(from, to *url.URL) bool {
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
