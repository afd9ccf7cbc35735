package bitbuckettest

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

const maxRequestBody = 8 << 20

// match is a request's route and its path parameters.
type match struct {
	route     Route
	owner     string
	slug      string
	pr        int
	commentID int64
	sha       string
	key       string
}

// routeOf names the route of a request's decoded path (after the prefix).
func (s *Server) routeOf(method, path string) (match, bool) {
	var m match
	segs := strings.Split(strings.Trim(path, "/"), "/")
	for i, seg := range segs {
		d, err := url.PathUnescape(seg)
		if err != nil {
			return m, false
		}
		segs[i] = d
	}
	is := func(i int, v string) bool { return i < len(segs) && segs[i] == v }
	n := len(segs)
	get, post, put, del := method == http.MethodGet, method == http.MethodPost, method == http.MethodPut, method == http.MethodDelete

	if s.opts.Flavor == Cloud {
		if !is(0, "2.0") {
			return m, false
		}
		segs, n = segs[1:], n-1
		is = func(i int, v string) bool { return i < len(segs) && segs[i] == v }
		switch {
		case n == 1 && get && is(0, "user"):
			m.route = RouteUser
		case n == 2 && get && is(0, "repositories"):
			m.route, m.owner = RouteRepos, segs[1]
		case n >= 3 && is(0, "repositories"):
			m.owner, m.slug = segs[1], segs[2]
			rest := segs[3:]
			r := len(rest)
			at := func(i int, v string) bool { return i < r && rest[i] == v }
			switch {
			case r == 2 && get && at(0, "refs") && at(1, "branches"):
				m.route = RouteBranches
			case r == 2 && get && at(0, "refs") && at(1, "tags"):
				m.route = RouteTags
			case r >= 3 && at(0, "pullrequests") && at(2, "comments"):
				id, err := strconv.Atoi(rest[1])
				if err != nil {
					return m, false
				}
				m.pr = id
				switch {
				case r == 3 && get:
					m.route = RouteComments
				case r == 3 && post:
					m.route = RouteCreateComment
				case r == 4 && put:
					cid, err := strconv.ParseInt(rest[3], 10, 64)
					if err != nil {
						return m, false
					}
					m.route, m.commentID = RouteEditComment, cid
				default:
					return m, false
				}
			case r >= 3 && at(0, "commit"):
				m.sha = rest[1]
				switch {
				case r == 3 && get && at(2, "statuses"):
					m.route = RouteStatuses
				case (r == 4 || r == 5 && rest[4] == "") && post && at(2, "statuses") && at(3, "build"):
					m.route = RouteCreateStatus
				case r == 4 && at(2, "reports") && put:
					m.route, m.key = RoutePutReport, rest[3]
				case r == 4 && at(2, "reports") && get:
					m.route, m.key = RouteGetReport, rest[3]
				case r == 4 && at(2, "reports") && del:
					m.route, m.key = RouteDelReport, rest[3]
				case r == 5 && at(2, "reports") && at(4, "annotations") && post:
					m.route, m.key = RouteAddAnnotations, rest[3]
				case r == 5 && at(2, "reports") && at(4, "annotations") && get:
					m.route, m.key = RouteListAnnotations, rest[3]
				default:
					return m, false
				}
			default:
				return m, false
			}
		default:
			return m, false
		}
		return m, true
	}

	// Data Center.
	switch {
	case n >= 3 && is(0, "rest") && is(1, "build-status") && is(2, "1.0"):
		if n == 5 && is(3, "commits") && post {
			m.route, m.sha = RouteLegacyStatus, segs[4]
			return m, true
		}
		return m, false
	case n >= 3 && is(0, "rest") && is(1, "insights") && is(2, "1.0"):
		rest := segs[3:]
		r := len(rest)
		at := func(i int, v string) bool { return i < r && rest[i] == v }
		if r < 8 || !at(0, "projects") || !at(2, "repos") || !at(4, "commits") || !at(6, "reports") {
			return m, false
		}
		m.owner, m.slug, m.sha, m.key = rest[1], rest[3], rest[5], rest[7]
		switch {
		case r == 8 && put:
			m.route = RoutePutReport
		case r == 8 && get:
			m.route = RouteGetReport
		case r == 8 && del:
			m.route = RouteDelReport
		case r == 9 && at(8, "annotations") && post:
			m.route = RouteAddAnnotations
		case r == 9 && at(8, "annotations") && del:
			m.route = RouteDelAnnotations
		case r == 9 && at(8, "annotations") && get:
			m.route = RouteListAnnotations
		default:
			return m, false
		}
		return m, true
	case n >= 3 && is(0, "rest") && is(1, "api") && (is(2, "1.0") || is(2, "latest")):
	default:
		return m, false
	}
	rest := segs[3:]
	r := len(rest)
	at := func(i int, v string) bool { return i < r && rest[i] == v }
	switch {
	case r == 1 && get && at(0, "application-properties"):
		m.route = RouteAppProperties
	case r == 1 && get && at(0, "projects"):
		m.route = RouteProjects
	case r == 1 && get && at(0, "repos"):
		m.route = RouteAllRepos
	case r == 3 && get && at(0, "projects") && at(2, "repos"):
		m.route, m.owner = RouteRepos, rest[1]
	case r >= 5 && at(0, "projects") && at(2, "repos"):
		m.owner, m.slug = rest[1], rest[3]
		sub := rest[4:]
		k := len(sub)
		sat := func(i int, v string) bool { return i < k && sub[i] == v }
		switch {
		case k == 1 && get && sat(0, "branches"):
			m.route = RouteBranches
		case k == 1 && get && sat(0, "tags"):
			m.route = RouteTags
		case k >= 3 && sat(0, "pull-requests"):
			id, err := strconv.Atoi(sub[1])
			if err != nil {
				return m, false
			}
			m.pr = id
			switch {
			case k == 3 && get && sat(2, "activities"):
				m.route = RouteComments
			case k == 3 && post && sat(2, "comments"):
				m.route = RouteCreateComment
			case k == 4 && put && sat(2, "comments"):
				cid, err := strconv.ParseInt(sub[3], 10, 64)
				if err != nil {
					return m, false
				}
				m.route, m.commentID = RouteEditComment, cid
			default:
				return m, false
			}
		case k == 3 && sat(0, "commits") && sat(2, "builds"):
			m.sha = sub[1]
			switch {
			case post:
				m.route = RouteCreateStatus
			case get:
				m.route = RouteStatuses
			default:
				return m, false
			}
		default:
			return m, false
		}
	default:
		return m, false
	}
	return m, true
}

func isWrite(r Route) bool { return slices.Contains(writeRoutes, r) }

// handle records, delays, rate-limits, injects faults, authenticates and
// serves.
func (s *Server) handle(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, maxRequestBody+1))
	if err != nil {
		return
	}
	if len(body) > maxRequestBody {
		s.fail(w, http.StatusRequestEntityTooLarge, "request body too large", "")
		return
	}
	m, routed := match{}, false
	if rest, ok := strings.CutPrefix(r.URL.EscapedPath(), s.opts.Prefix+"/"); ok {
		m, routed = s.routeOf(r.Method, rest)
	}

	s.Record(r, m.route, body)
	s.mu.Lock()
	latency := s.latency
	s.mu.Unlock()

	if latency > 0 {
		t := time.NewTimer(latency)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			return
		case <-s.Released():
			t.Stop()
			return
		}
	}

	s.mu.Lock()
	now := time.Now()
	if !now.Before(s.reset) {
		s.remaining = s.opts.RateLimit
		s.reset = now.Add(RateLimitWindow)
	}
	spent := s.remaining <= 0
	if !spent {
		s.remaining--
	}
	h := w.Header()
	h.Set("X-RateLimit-Limit", strconv.Itoa(s.opts.RateLimit))
	if s.opts.Flavor == Cloud {
		h.Set("X-RateLimit-Resource", "api")
		h.Set("X-RateLimit-NearLimit", strconv.FormatBool(s.remaining*5 < s.opts.RateLimit))
	} else {
		h.Set("X-RateLimit-Remaining", strconv.Itoa(max(s.remaining, 0)))
	}
	retryAfter := int(s.reset.Sub(now).Seconds() + 0.999)
	f := s.faults.Take(m.route, RouteAll)
	s.mu.Unlock()

	switch {
	case f != nil && f.Slow:
		select {
		case <-r.Context().Done():
		case <-s.Released():
		}
		return
	case f != nil:
		if f.Applied && routed && isWrite(m.route) {
			s.dispatch(httptest.NewRecorder(), r, m, body)
		}
		for k, vs := range f.Header {
			h[k] = vs
		}
		if f.Body == "" {
			s.fail(w, f.Status, http.StatusText(f.Status), "")
			return
		}
		h.Set("Content-Type", "application/json")
		w.WriteHeader(f.Status)
		_, _ = io.WriteString(w, f.Body)
		return
	case spent:
		if s.opts.Flavor == DataCenter {
			h.Set("Retry-After", strconv.Itoa(max(retryAfter, 1)))
		}
		s.fail(w, http.StatusTooManyRequests, "Rate limit for this resource has been exceeded", "")
		return
	case !routed:
		// Jersey's answer to a path it has no resource for: no exception.
		s.fail(w, http.StatusNotFound, "null for uri: "+r.URL.Path, "")
		return
	}
	s.dispatch(w, r, m, body)
}

func (s *Server) dispatch(w http.ResponseWriter, r *http.Request, m match, body []byte) {
	s.Serve(w, m.route, func(w http.ResponseWriter) { s.serveRoute(w, r, m, body) })
}

// caller is who a request authenticated as.
type caller struct {
	name   string
	uuid   string
	scopes []string
	user   *User
	token  *Token
}

// implied are the scopes each scope grants besides itself.
var implied = map[string][]string{
	"repository:write":  {"repository"},
	"pullrequest":       {"repository"},
	"pullrequest:write": {"pullrequest", "repository", "repository:write"},
}

func (c caller) has(scope string) bool {
	for _, sc := range c.scopes {
		if sc == scope || slices.Contains(implied[sc], scope) {
			return true
		}
	}
	return false
}

// cloudScope is the scope a Cloud route needs.
func cloudScope(route Route) string {
	switch route {
	case RouteUser:
		return "account"
	case RouteComments:
		return "pullrequest"
	case RouteCreateComment, RouteEditComment:
		return "pullrequest:write"
	}
	return "repository"
}

// authenticate checks the Authorization header, answering as Bitbucket
// does when it is refused.
func (s *Server) authenticate(w http.ResponseWriter, r *http.Request, m match) (caller, bool) {
	auth := r.Header.Get("Authorization")
	s.mu.Lock()
	var c caller
	ok := false
	if tok, found := strings.CutPrefix(auth, "Bearer "); found {
		if t, exists := s.tokens[tok]; exists && !t.Revoked {
			c, ok = caller{name: t.Name, uuid: t.uuid, scopes: t.Scopes, token: t}, true
		}
	} else if name, pass, basic := r.BasicAuth(); basic {
		if u, exists := s.users[name]; exists && u.Password == pass {
			c, ok = caller{name: u.Name, uuid: u.uuid, scopes: u.Scopes, user: u}, true
		}
	}
	s.mu.Unlock()

	switch {
	case !ok && auth == "" && m.route == RouteAppProperties:
		return caller{}, true // Data Center serves it anonymously
	case !ok:
		if s.opts.Flavor == DataCenter {
			if _, _, basic := r.BasicAuth(); basic {
				w.Header().Set("X-Seraph-LoginReason", "AUTHENTICATED_FAILED")
			}
			s.fail(w, http.StatusUnauthorized, "Authentication failed. Please check your credentials and try again.", "com.atlassian.bitbucket.auth.IncorrectPasswordAuthenticationException")
		} else {
			s.fail(w, http.StatusUnauthorized, "Token is invalid, expired, or not supported for this endpoint.", "")
		}
		return caller{}, false
	}
	if s.opts.Flavor == DataCenter {
		w.Header().Set("X-AUSERNAME", c.name)
		var projects []string
		if c.token != nil {
			projects = c.token.Projects
		} else {
			projects = c.user.Projects
		}
		if m.owner != "" && projects != nil && !slices.ContainsFunc(projects, func(p string) bool { return strings.EqualFold(p, m.owner) }) {
			s.fail(w, http.StatusForbidden, "You are not permitted to access this resource", "com.atlassian.bitbucket.AuthorisationException")
			return caller{}, false
		}
		return c, true
	}
	if m.route == RouteUser && c.token != nil {
		s.fail(w, http.StatusUnauthorized, "Token is invalid, expired, or not supported for this endpoint.", "")
		return caller{}, false
	}
	cloudScopeHeaders(w.Header(), c, m.route)
	if need := cloudScope(m.route); !c.has(need) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusForbidden)
		_ = json.NewEncoder(w).Encode(map[string]any{"type": "error", "error": map[string]any{
			"message": "Your credentials lack one or more required privilege scopes.",
			"detail":  map[string]any{"required": []string{need}, "granted": c.scopes},
		}})
		return caller{}, false
	}
	if t := c.token; t != nil && m.owner != "" && (!strings.EqualFold(t.Workspace, m.owner) || m.slug != "" && t.Repo != "" && !strings.EqualFold(t.Repo, m.slug)) {
		s.fail(w, http.StatusForbidden, "Access denied. You must have write or admin access.", "")
		return caller{}, false
	}
	return c, true
}

// fail answers with the flavour's error body.
func (s *Server) fail(w http.ResponseWriter, status int, msg, exception string) {
	if s.opts.Flavor == Cloud {
		writeJSON(w, status, map[string]any{"type": "error", "error": map[string]any{"message": msg}})
		return
	}
	var exc any
	if exception != "" {
		exc = exception
	}
	writeJSON(w, status, map[string]any{"errors": []any{map[string]any{"context": nil, "message": msg, "exceptionName": exc}}})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// paginate answers one page of list in the flavour's paging.
func (s *Server) paginate(w http.ResponseWriter, r *http.Request, list []any) {
	q := r.URL.Query()
	if list == nil {
		list = []any{}
	}
	if s.opts.Flavor == Cloud {
		pagelen, page := 10, 1
		if v := q.Get("pagelen"); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 || n > MaxCloudPageLen {
				s.fail(w, http.StatusBadRequest, "Invalid pagelen", "")
				return
			}
			pagelen = n
		}
		if v := q.Get("page"); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 {
				s.fail(w, http.StatusBadRequest, "Invalid page", "")
				return
			}
			page = n
		}
		lo := min((page-1)*pagelen, len(list))
		hi := min(lo+pagelen, len(list))
		out := map[string]any{"size": len(list), "page": page, "pagelen": pagelen, "values": list[lo:hi]}
		if hi < len(list) {
			u := *r.URL
			u.Scheme, u.Host = "http", r.Host
			nq := u.Query()
			nq.Set("page", strconv.Itoa(page+1))
			u.RawQuery = nq.Encode()
			out["next"] = u.String()
		}
		writeJSON(w, http.StatusOK, out)
		return
	}
	limit, start := 25, 0
	if v := q.Get("limit"); v != "" {
		if n, err := strconv.Atoi(v); err == nil && n > 0 {
			limit = min(n, MaxDCLimit)
		}
	}
	if v := q.Get("start"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			s.fail(w, http.StatusBadRequest, "start must be a non-negative integer", "")
			return
		}
		start = n
	}
	lo := min(start, len(list))
	hi := min(lo+limit, len(list))
	out := map[string]any{"size": hi - lo, "limit": limit, "start": start, "isLastPage": hi >= len(list), "values": list[lo:hi]}
	if hi < len(list) {
		out["nextPageStart"] = hi
	}
	writeJSON(w, http.StatusOK, out)
}

func decodeBody(body []byte, v any) error {
	if len(body) == 0 {
		return fmt.Errorf("empty body")
	}
	return json.Unmarshal(body, v)
}
