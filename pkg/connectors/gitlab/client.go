package gitlab

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"inthub.dev/pkg/connectors"
	"inthub.dev/pkg/connectors/httpapi"
	"inthub.dev/pkg/fault"
)

// maxBody bounds what one response may hold: a page of 100 full project
// objects is a few hundred KiB; anything far larger is not GitLab.
const maxBody = 8 << 20

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
	h, err := c.api().Do(ctx, httpapi.Request{
		Op:       cl.op,
		Method:   method,
		URL:      apiURL(c.root, cl.query, cl.elems...),
		Header:   http.Header{cred.header: {cred.value}, "User-Agent": {"inthub-connector-gitlab"}},
		In:       in,
		Out:      out,
		Classify: func(resp *http.Response) error { return classify(resp, method != http.MethodGet) },
	})
	var r response
	if h != nil {
		r.rateLimit = connectors.ParseRateLimit(h)
	}
	if err != nil {
		return r, err
	}
	r.next = nextCursor(h)
	return r, nil
}

// api is the connector's API client, over its (redirect-guarded) client.
func (c *Connector) api() *httpapi.API {
	return &httpapi.API{
		Name:        "gitlab",
		Product:     "GitLab",
		NotJSONHint: "check that the endpoint is the GitLab root",
		Client:      c.client,
		Timeout:     c.timeout,
		MaxBody:     maxBody,
		Logger:      c.logger,
		Attrs: []slog.Attr{
			slog.String("tenantId", c.cfg.TenantID),
			slog.String("integrationId", c.cfg.IntegrationID),
			slog.String("provider", "gitlab"),
		},
	}
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
	return &httpapi.Detailed[string]{Err: cerr, Detail: msg, Said: said}
}

// gitlabSaid is GitLab's own message in a failed call's error, "" if it
// sent none.
func gitlabSaid(err error) string { return httpapi.SaidOf[string](err) }

var joinHint = httpapi.JoinHint

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

// guardRedirects keeps PRIVATE-TOKEN and JOB-TOKEN, which net/http
// copies to any redirect target, within the instance.
func guardRedirects(base *http.Client) *http.Client {
	return httpapi.GuardRedirects(base, "gitlab", "GitLab")
}

var sameOrigin = httpapi.SameOrigin
