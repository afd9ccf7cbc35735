package bitbucket

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"inthub.dev/pkg/connectors"
	"inthub.dev/pkg/connectors/httpapi"
	"inthub.dev/pkg/fault"
)

// maxBody bounds what one response may hold: a page of 100 repositories
// (Cloud) or 1,000 activities (Data Center) is well under it.
const maxBody = 16 << 20

// cloudRetryDefault is the wait a Cloud 429 gets when it names none:
// Cloud's limits are per rolling hour and it does not always send
// Retry-After.
const cloudRetryDefault = time.Minute

// call is one API request: root/elems...?query.
type call struct {
	op    string // what the user reads in an error: "list repositories"
	elems []string
	query url.Values
	// scope is the Cloud OAuth scope the call needs, perm the Data
	// Center permission: a 403 names them.
	scope, perm string
	// root replaces the REST root (Data Center's build-status and
	// insights APIs live beside /rest/api).
	root string
}

// response is what a successful (or refused) call returns besides its
// decoded body.
type response struct {
	rateLimit *connectors.RateLimit
	nearLimit bool   // Cloud's X-RateLimit-NearLimit: under 20 % left
	user      string // Data Center's X-AUSERNAME: who the credential is
}

func (c *Connector) get(ctx context.Context, cred credential, cl call, out any) (response, error) {
	return c.do(ctx, cred, http.MethodGet, cl, nil, out)
}

// send performs a write. It is sent once: nothing here retries it. A
// write whose answer is lost may have been applied; the annotator finds
// what it wrote (a comment's marker, a status's key) before writing again.
func (c *Connector) send(ctx context.Context, cred credential, method string, cl call, in, out any) (response, error) {
	return c.do(ctx, cred, method, cl, in, out)
}

func (c *Connector) do(ctx context.Context, cred credential, method string, cl call, in, out any) (response, error) {
	root := c.root
	if cl.root != "" {
		r := *c.site
		r.Path = strings.TrimRight(r.Path, "/") + cl.root
		root = &r
	}
	h := http.Header{"Authorization": {cred.header}, "User-Agent": {"inthub-connector-bitbucket"}}
	if !c.cloud() {
		// Data Center refuses a write without it when XSRF protection
		// is on and the request could come from a browser form.
		h.Set("X-Atlassian-Token", "no-check")
	}
	got, err := c.api().Do(ctx, httpapi.Request{
		Op:       cl.op,
		Method:   method,
		URL:      apiURL(root, cl.query, cl.elems...),
		Header:   h,
		In:       in,
		Out:      out,
		Classify: func(resp *http.Response) error { return c.classify(resp, cl) },
	})
	var r response
	if got != nil {
		r = response{
			rateLimit: connectors.ParseRateLimit(got),
			nearLimit: strings.EqualFold(got.Get("X-RateLimit-NearLimit"), "true"),
			user:      got.Get("X-AUSERNAME"),
		}
	}
	return r, err
}

// api is the connector's API client, over its (redirect-guarded) client.
func (c *Connector) api() *httpapi.API {
	return &httpapi.API{
		Name:        "bitbucket",
		Product:     "Bitbucket",
		NotJSONHint: "check the endpoint and flavor",
		Client:      c.client,
		Timeout:     c.timeout,
		MaxBody:     maxBody,
		EmptyOK:     true,
		Logger:      c.logger,
		Attrs: []slog.Attr{
			slog.String("tenantId", c.cfg.TenantID),
			slog.String("integrationId", c.cfg.IntegrationID),
			slog.String("provider", "bitbucket"),
			slog.String("flavor", c.flavor),
		},
	}
}

// said is what Bitbucket wrote in an error body.
type said struct {
	message   string
	exception string   // Data Center's exceptionName
	required  []string // Cloud's scopes the call needed
	granted   []string // Cloud's scopes the credential has
}

// readSaid reads either flavour's error body: Cloud's {"type":"error",
// "error":{"message","detail","data"}} (detail is a string, or for a
// missing scope {"required":[...],"granted":[...]}), Data Center's
// {"errors":[{"message","exceptionName"}]}.
func readSaid(resp *http.Response) said {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 16<<10))
	var e struct {
		Error *struct {
			Message string          `json:"message"`
			Detail  json.RawMessage `json:"detail"`
		} `json:"error"`
		Errors []struct {
			Message       string `json:"message"`
			ExceptionName string `json:"exceptionName"`
		} `json:"errors"`
	}
	if json.Unmarshal(b, &e) != nil {
		return said{}
	}
	var s said
	switch {
	case e.Error != nil:
		s.message = e.Error.Message
		var detail string
		var scopes struct {
			Required []string `json:"required"`
			Granted  []string `json:"granted"`
		}
		if json.Unmarshal(e.Error.Detail, &detail) == nil && detail != "" {
			s.message = strings.TrimSuffix(s.message, ".") + ": " + detail
		} else if json.Unmarshal(e.Error.Detail, &scopes) == nil {
			s.required, s.granted = scopes.Required, scopes.Granted
		}
	case len(e.Errors) > 0:
		msgs := make([]string, 0, len(e.Errors))
		for _, er := range e.Errors {
			if er.Message != "" {
				msgs = append(msgs, er.Message)
			}
		}
		s.message = strings.Join(msgs, "; ")
		s.exception = e.Errors[0].ExceptionName
	}
	if len(s.message) > 300 {
		s.message = s.message[:300] + "…"
	}
	return s
}

// classify maps a Bitbucket answer to a fault class with
// connectors.ClassifyHTTP and adds what Bitbucket said and, for 401 and
// 403, what to change: the scope (Cloud) or permission (Data Center)
// the call needs.
func (c *Connector) classify(resp *http.Response, cl call) error {
	cerr := connectors.ClassifyHTTP(resp, nil)
	if cerr == nil {
		return nil
	}
	if resp.StatusCode == http.StatusTooManyRequests && fault.RetryAfterOf(cerr) == 0 {
		cerr = fault.RetryAfter(cerr, cloudRetryDefault)
	}
	s := readSaid(resp)
	msg := ""
	if s.message != "" {
		msg = "Bitbucket says: " + s.message
	}
	switch resp.StatusCode {
	case http.StatusUnauthorized:
		hint := "the credentials are invalid, expired or revoked"
		switch {
		case c.cloud() && c.bearer():
			hint += " (an access token is tied to its workspace, project or repository)"
		case c.cloud():
			hint += " (use an app password or API token, not the account's login password)"
		case resp.Header.Get("X-Seraph-LoginReason") == "AUTHENTICATION_DENIED":
			hint = "Bitbucket requires a CAPTCHA for this user after failed logins; log in once through the web UI, or use an HTTP access token"
		}
		msg = joinHint(msg, hint)
	case http.StatusForbidden:
		if c.cloud() {
			need := cl.scope
			if len(s.required) > 0 {
				need = strings.Join(s.required, ", ")
			}
			hint := "the credentials lack a permission for this"
			if need != "" {
				hint = "the credentials lack the " + need + " scope"
				if g := granular(need); g != "" {
					hint += " (" + g + " on a scoped API token)"
				}
				hint += ", or the account lacks access to the repository"
			}
			if len(s.granted) > 0 {
				hint += "; granted: " + strings.Join(s.granted, ", ")
			}
			msg = joinHint(msg, hint)
		} else if cl.perm != "" {
			msg = joinHint(msg, "the user or access token needs the "+cl.perm+" permission")
		}
	}
	if msg == "" {
		return cerr
	}
	return &httpapi.Detailed[said]{Err: cerr, Detail: msg, Said: s}
}

// granularScopes are the scoped API tokens' names of the classic scopes
// that app passwords, OAuth consumers and access tokens are granted.
var granularScopes = map[string]string{
	"account":           "read:user:bitbucket",
	"repository":        "read:repository:bitbucket",
	"repository:write":  "write:repository:bitbucket",
	"pullrequest":       "read:pullrequest:bitbucket",
	"pullrequest:write": "write:pullrequest:bitbucket",
}

// granular names the scoped API token's scopes for classic ones, "" when
// none is known (Bitbucket named granular ones already).
func granular(classic string) string {
	var out []string
	for _, sc := range strings.Split(classic, ", ") {
		if g, ok := granularScopes[sc]; ok {
			out = append(out, g)
		}
	}
	return strings.Join(out, ", ")
}

// saidOf is what Bitbucket said in a failed call's answer.
func saidOf(err error) said { return httpapi.SaidOf[said](err) }

var joinHint = httpapi.JoinHint

// statusOf is the HTTP status of a failed call, 0 for a transport failure.
func statusOf(err error) int {
	var re *connectors.RequestError
	if errors.As(err, &re) {
		return re.StatusCode
	}
	return 0
}

// apiURL joins a root and path elements, each one escaped path segment.
var apiURL = httpapi.URL

// page is one page of either flavour's listings: Cloud's {values, next}
// (next a URL), Data Center's {values, isLastPage, nextPageStart}.
type page[T any] struct {
	Values        []T    `json:"values"`
	Next          string `json:"next"`
	IsLastPage    *bool  `json:"isLastPage"`
	NextPageStart *int   `json:"nextPageStart"`
}

// cloudCursorKeys are the query parameters a Cloud cursor may carry.
var cloudCursorKeys = []string{"page", "after"}

// cursor turns a page's paging fields into an opaque cursor: Data
// Center's next start, or the page parameters of Cloud's next URL. The
// cursor is never the URL itself: following a URL the server chose would
// send the credential wherever it points.
func (c *Connector) cursor(nextURL string, isLast *bool, nextStart *int) string {
	if !c.cloud() {
		if isLast == nil || *isLast || nextStart == nil {
			return ""
		}
		return "start=" + strconv.Itoa(*nextStart)
	}
	if nextURL == "" {
		return ""
	}
	u, err := url.Parse(nextURL)
	if err != nil {
		return ""
	}
	q := url.Values{}
	for _, k := range cloudCursorKeys {
		if v := u.Query().Get(k); v != "" {
			q.Set(k, v)
		}
	}
	return q.Encode()
}

// applyCursor merges a cursor into a request's query, refusing anything
// that is not a cursor this package made.
func (c *Connector) applyCursor(q url.Values, cursor string) error {
	if cursor == "" {
		return nil
	}
	cv, err := url.ParseQuery(cursor)
	if err != nil || len(cv) == 0 || len(cursor) > 1024 {
		return fault.Permanentf("bitbucket: invalid page cursor")
	}
	keys := cloudCursorKeys
	if !c.cloud() {
		keys = []string{"start"}
	}
	for k, vs := range cv {
		if !slices.Contains(keys, k) || len(vs) != 1 || vs[0] == "" {
			return fault.Permanentf("bitbucket: invalid page cursor")
		}
		if k == "page" || k == "start" {
			if n, err := strconv.Atoi(vs[0]); err != nil || n < 0 {
				return fault.Permanentf("bitbucket: invalid page cursor")
			}
		}
		q.Set(k, vs[0])
	}
	return nil
}

// guardRedirects keeps a redirect within the instance and never
// redirects a write.
func guardRedirects(base *http.Client) *http.Client {
	return httpapi.GuardRedirects(base, "bitbucket", "Bitbucket")
}
