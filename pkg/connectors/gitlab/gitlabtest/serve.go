package gitlabtest

import (
	"bytes"
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

// maxRequestBody bounds what one request may carry; GitLab's own limit
// is larger, but a note is at most a few MB.
const maxRequestBody = 8 << 20

// match is a request's route and its path parameters.
type match struct {
	route        Route
	project      string
	group        string
	iid          int
	noteID       int64
	discussionID string
	sha          string
	file         string // pipelines.go
}

// routeOf names the route of decoded path segments. A project path sent
// with raw slashes has more segments than any route and matches none.
func routeOf(method string, segs []string) (match, bool) {
	n := len(segs)
	is := func(i int, s string) bool { return i < n && segs[i] == s }
	get := method == http.MethodGet
	var m match
	switch {
	case n == 1 && get && segs[0] == "version":
		m.route = RouteVersion
	case n == 1 && get && segs[0] == "user":
		m.route = RouteUser
	case n == 1 && get && segs[0] == "job":
		m.route = RouteJob
	case n == 2 && get && is(0, "personal_access_tokens") && is(1, "self"):
		m.route = RouteTokenSelf
	case n == 1 && get && segs[0] == "projects":
		m.route = RouteProjects
	case n == 3 && get && is(0, "groups") && is(2, "projects"):
		m.route, m.group = RouteGroupProjects, segs[1]
	case n >= 2 && is(0, "projects"):
		m.project = segs[1]
		return projectRoute(m, method, segs[2:])
	default:
		return m, false
	}
	return m, true
}

func projectRoute(m match, method string, rest []string) (match, bool) {
	n := len(rest)
	is := func(i int, s string) bool { return i < n && rest[i] == s }
	get, post, put := method == http.MethodGet, method == http.MethodPost, method == http.MethodPut
	switch {
	case n == 2 && get && is(0, "repository") && is(1, "branches"):
		m.route = RouteBranches
	case n == 2 && get && is(0, "repository") && is(1, "tags"):
		m.route = RouteTags
	case n == 2 && post && is(0, "statuses"):
		m.route, m.sha = RouteCreateStatus, rest[1]
	case n == 4 && is(0, "repository") && is(1, "commits") && is(3, "statuses") && get:
		m.route, m.sha = RouteStatuses, rest[2]
	case n == 4 && is(0, "repository") && is(1, "commits") && is(3, "comments") && (get || post):
		m.route, m.sha = RouteCommitComments, rest[2]
		if post {
			m.route = RouteCreateComment
		}
	case n >= 2 && is(0, "merge_requests"):
		iid, err := strconv.Atoi(rest[1])
		if err != nil || iid < 1 {
			return m, false
		}
		m.iid = iid
		switch {
		case n == 2 && get:
			m.route = RouteMergeRequest
		case n == 3 && get && is(2, "diffs"):
			m.route = RouteMRDiffs
		case n == 3 && get && is(2, "changes"):
			m.route = RouteMRChanges
		case n == 3 && is(2, "notes") && get:
			m.route = RouteNotes
		case n == 3 && is(2, "notes") && post:
			m.route = RouteCreateNote
		case n == 4 && is(2, "notes") && put:
			id, err := strconv.ParseInt(rest[3], 10, 64)
			if err != nil {
				return m, false
			}
			m.route, m.noteID = RouteEditNote, id
		case n == 3 && is(2, "discussions") && get:
			m.route = RouteDiscussions
		case n == 3 && is(2, "discussions") && post:
			m.route = RouteCreateDiscussion
		case n == 6 && is(2, "discussions") && is(4, "notes") && put:
			id, err := strconv.ParseInt(rest[5], 10, 64)
			if err != nil {
				return m, false
			}
			m.route, m.discussionID, m.noteID = RouteEditThreadNote, rest[3], id
		default:
			return m, false
		}
	default:
		return ciRoute(m, method, rest)
	}
	return m, true
}

func isWrite(r Route) bool { return slices.Contains(writeRoutes, r) }

// handle is the server's handler: record, delay, rate-limit, inject
// faults, authenticate, then serve the route.
func (s *Server) handle(w http.ResponseWriter, r *http.Request) {

	body, err := io.ReadAll(io.LimitReader(r.Body, maxRequestBody+1))
	if err != nil {
		return // the client went away
	}
	if len(body) > maxRequestBody {
		writeJSON(w, http.StatusRequestEntityTooLarge, map[string]string{"message": "413 Request Entity Too Large"})
		return
	}

	// Route on the path as sent: r.URL.Path has %2F decoded already,
	// which is exactly the difference GitLab's router cares about.
	m, routed := match{}, false
	if rest, ok := strings.CutPrefix(r.URL.EscapedPath(), s.opts.Prefix+"/api/v4/"); ok {
		segs := strings.Split(rest, "/")
		decoded := true
		for i, seg := range segs {
			d, err := url.PathUnescape(seg)
			if err != nil {
				decoded = false
				break
			}
			segs[i] = d
		}
		if decoded {
			m, routed = routeOf(r.Method, segs)
		}
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
	now := s.now()
	if !now.Before(s.reset) {
		s.remaining = s.opts.RateLimit
		s.reset = now.Add(RateLimitWindow).Truncate(time.Second)
	}
	spent := s.remaining <= 0
	if !spent {
		s.remaining--
	}
	h := w.Header()
	h.Set("RateLimit-Limit", strconv.Itoa(s.opts.RateLimit))
	h.Set("RateLimit-Remaining", strconv.Itoa(max(s.remaining, 0)))
	h.Set("RateLimit-Reset", strconv.FormatInt(s.reset.Unix(), 10))
	h.Set("RateLimit-ResetTime", s.reset.UTC().Format(http.TimeFormat))
	h.Set("RateLimit-Observed", strconv.Itoa(s.opts.RateLimit-max(s.remaining, 0)))
	retryAfter := int(s.reset.Sub(now).Seconds() + 0.999)
	f := s.faults.Take(m.route, RouteAll)
	flakyStatus := 0
	if f == nil && s.flaky.Rate > 0 && s.rng.Float64() < s.flaky.Rate {
		flakyStatus = []int{500, 502, 503}[s.rng.IntN(3)]
	}
	flakyApplied := s.flaky.Applied
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
		b := f.Body
		if b == "" {
			b = fmt.Sprintf(`{"message":"%d %s"}`, f.Status, http.StatusText(f.Status))
		}
		h.Set("Content-Type", "application/json")
		w.WriteHeader(f.Status)
		_, _ = io.WriteString(w, b)
		return
	case flakyStatus != 0:
		if flakyApplied && routed && isWrite(m.route) {
			s.dispatch(httptest.NewRecorder(), r, m, body)
		}
		writeJSON(w, flakyStatus, map[string]string{"message": fmt.Sprintf("%d %s", flakyStatus, http.StatusText(flakyStatus))})
		return
	case spent:
		h.Set("Retry-After", strconv.Itoa(max(retryAfter, 1)))
		writeJSON(w, http.StatusTooManyRequests, map[string]string{"message": "Retry later"})
		return
	case !routed:
		writeJSON(w, http.StatusNotFound, map[string]string{"error": "404 Not Found"})
		return
	}
	s.dispatch(w, r, m, body)
}

// caller is who a request authenticated as.
type caller struct {
	user   string
	userID int64
	tok    *token
	job    *JobToken
}

// readScopes are the scopes that allow reading through the API.
var readScopes = []string{"api", "read_api"}

// dispatch authenticates and serves a routed request, counting a
// successful write.
func (s *Server) dispatch(w http.ResponseWriter, r *http.Request, m match, body []byte) {
	s.Serve(w, m.route, func(w http.ResponseWriter) { s.serveRoute(w, r, m, body) })
}

func (s *Server) serveRoute(w http.ResponseWriter, r *http.Request, m match, body []byte) {
	c, ok := s.authenticate(w, r, m.route)
	if !ok || !s.noteThrottle(w, m.route, c) {
		return
	}
	switch m.route {
	case RouteVersion:
		writeJSON(w, http.StatusOK, map[string]string{"version": "17.5.1-ee", "revision": "4f1b2e3a"})
	case RouteUser:
		writeJSON(w, http.StatusOK, map[string]any{"id": c.userID, "username": c.user, "name": c.user, "bot": c.tok.Bot, "state": "active"})
	case RouteTokenSelf:
		s.tokenSelf(w, c)
	case RouteJob:
		writeJSON(w, http.StatusOK, map[string]any{"id": c.job.JobID, "status": "running", "ref": "main",
			"pipeline": map[string]any{"id": 99, "project_id": c.job.ProjectID}})
	case RouteProjects, RouteGroupProjects:
		s.listProjects(w, r, m, c)
	default:
		s.projectRoutes(w, r, m, c, body)
	}
}

// authenticate checks the token for route, answering as GitLab does when
// it is refused.
func (s *Server) authenticate(w http.ResponseWriter, r *http.Request, route Route) (caller, bool) {
	pat, jobTok := r.Header.Get("Private-Token"), r.Header.Get("Job-Token")
	s.mu.Lock()
	t, patOK := s.tokens[pat]
	j, jobOK := s.jobs[jobTok]
	var uid int64
	if patOK {
		uid = s.userID(t.User)
	}
	expired := patOK && t.ExpiresAt != "" && t.ExpiresAt <= s.now().UTC().Format(time.DateOnly)
	s.mu.Unlock()

	switch {
	case pat != "" && patOK && !t.revoked && !expired:
		scopes := readScopes
		if route == RouteUser {
			scopes = append(slices.Clone(readScopes), "read_user")
		}
		if isWrite(route) {
			scopes = []string{"api"}
		}
		if !slices.ContainsFunc(t.Scopes, func(sc string) bool { return slices.Contains(scopes, sc) }) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusForbidden)
			_, _ = io.WriteString(w, insufficientScopeBody)
			return caller{}, false
		}
		return caller{user: t.User, userID: uid, tok: t}, true
	case pat != "" && expired && !t.revoked:
		writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "invalid_token", "error_description": "Token has expired."})
		return caller{}, false
	case jobTok != "" && jobOK:
		switch route {
		case RouteJob, RouteBranches, RouteTags, RoutePipelines:
			return caller{job: &j}, true
		case RouteNotes, RouteCreateNote, RouteEditNote, RouteDiscussions, RouteCreateDiscussion, RouteEditThreadNote,
			RouteCreateStatus, RouteStatuses, RouteCreateComment, RouteCommitComments:
			writeJSON(w, http.StatusForbidden, map[string]string{"message": "403 Forbidden"})
			return caller{}, false
		}
	}
	writeJSON(w, http.StatusUnauthorized, map[string]string{"message": "401 Unauthorized"})
	return caller{}, false
}

// noteThrottle applies GitLab's notes_create rate limit (per user, per
// minute, every attempt counted), answering 429 when it is reached.
func (s *Server) noteThrottle(w http.ResponseWriter, route Route, c caller) bool {
	if s.opts.NotesPerMinute < 0 || c.tok == nil || (route != RouteCreateNote && route != RouteCreateDiscussion && route != RouteCreateComment) {
		return true
	}
	s.mu.Lock()
	now := s.now()
	recent := s.noteTimes[c.user]
	for len(recent) > 0 && now.Sub(recent[0]) >= time.Minute {
		recent = recent[1:]
	}
	allowed := len(recent) < s.opts.NotesPerMinute
	if allowed {
		recent = append(recent, now)
	}
	s.noteTimes[c.user] = recent
	s.mu.Unlock()
	if !allowed {
		writeJSON(w, http.StatusTooManyRequests, map[string]string{"error": "This endpoint has been requested too many times. Try again later."})
	}
	return allowed
}

func (s *Server) tokenSelf(w http.ResponseWriter, c caller) {
	if s.opts.NoTokenSelf {
		writeJSON(w, http.StatusNotFound, map[string]string{"error": "404 Not Found"})
		return
	}
	var exp any
	if c.tok.ExpiresAt != "" {
		exp = c.tok.ExpiresAt
	}
	writeJSON(w, http.StatusOK, map[string]any{"id": 1, "name": "inthub", "scopes": c.tok.Scopes, "expires_at": exp, "active": true, "revoked": false})
}

// visible reports whether c may read project p.
func (c caller) visible(p *project) bool {
	switch {
	case c.job != nil:
		return p.ID == c.job.ProjectID
	case p.Visibility == "public", p.Visibility == "internal":
		return true
	default:
		return c.member(p)
	}
}

func (c caller) member(p *project) bool { return c.tok != nil && slices.Contains(c.tok.Member, p.Path) }

func (s *Server) listProjects(w http.ResponseWriter, r *http.Request, m match, c caller) {
	s.mu.Lock()
	var list []any
	groupFound := false
	for _, p := range s.projects {
		if m.route == RouteGroupProjects {
			if !strings.HasPrefix(p.Path, m.group+"/") {
				continue
			}
			groupFound = true
		}
		if !c.visible(p) || r.URL.Query().Get("membership") == "true" && !c.member(p) {
			continue
		}
		list = append(list, map[string]any{"id": p.ID, "path_with_namespace": p.Path, "default_branch": p.DefaultBranch,
			"visibility": p.Visibility, "web_url": s.URL() + "/" + p.Path})
	}
	s.mu.Unlock()
	if m.route == RouteGroupProjects && !groupFound {
		writeJSON(w, http.StatusNotFound, map[string]string{"message": "404 Group Not Found"})
		return
	}
	s.paginate(w, r, list)
}

// paginate answers one page as GitLab's offset pagination does.
func (s *Server) paginate(w http.ResponseWriter, r *http.Request, list []any) {
	q := r.URL.Query()
	perPage, page := 20, 1
	if v := q.Get("per_page"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "per_page is invalid"})
			return
		}
		perPage = min(n, maxPerPage)
	}
	if v := q.Get("page"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "page is invalid"})
			return
		}
		page = n
	}
	total := len(list)
	pages := max(1, (total+perPage-1)/perPage)
	lo := min((page-1)*perPage, total)
	hi := min(lo+perPage, total)
	h := w.Header()
	h.Set("X-Page", strconv.Itoa(page))
	h.Set("X-Per-Page", strconv.Itoa(perPage))
	if !s.opts.LinkOnly {
		h.Set("X-Total", strconv.Itoa(total))
		h.Set("X-Total-Pages", strconv.Itoa(pages))
		next := ""
		if page < pages {
			next = strconv.Itoa(page + 1)
		}
		h.Set("X-Next-Page", next)
	}
	link := func(p int, rel string) string {
		u := *r.URL
		u.Scheme, u.Host = "http", r.Host
		qq := u.Query()
		qq.Set("page", strconv.Itoa(p))
		qq.Set("per_page", strconv.Itoa(perPage))
		u.RawQuery = qq.Encode()
		return fmt.Sprintf(`<%s>; rel="%s"`, u.String(), rel)
	}
	links := []string{link(1, "first")}
	if page < pages {
		links = append(links, link(page+1, "next"))
	}
	links = append(links, link(pages, "last"))
	h.Set("Link", strings.Join(links, ", "))
	if list == nil {
		list = []any{}
	}
	writeJSON(w, http.StatusOK, list[lo:hi])
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// params reads a write's parameters from a JSON body or a form, as Grape
// does: form keys like position[new_line] become nested objects.
func params(r *http.Request, body []byte) (map[string]any, error) {
	if strings.HasPrefix(r.Header.Get("Content-Type"), "application/json") {
		out := map[string]any{}
		dec := json.NewDecoder(bytes.NewReader(body))
		dec.UseNumber()
		if err := dec.Decode(&out); err != nil {
			return nil, err
		}
		return out, nil
	}
	form, err := url.ParseQuery(string(body))
	if err != nil {
		return nil, err
	}
	for k, v := range r.URL.Query() {
		if _, ok := form[k]; !ok {
			form[k] = v
		}
	}
	out := map[string]any{}
	for k, vs := range form {
		if outer, inner, ok := strings.Cut(k, "["); ok && strings.HasSuffix(inner, "]") {
			sub, _ := out[outer].(map[string]any)
			if sub == nil {
				sub = map[string]any{}
				out[outer] = sub
			}
			sub[strings.TrimSuffix(inner, "]")] = vs[0]
			continue
		}
		out[k] = vs[0]
	}
	return out, nil
}

// str reads a string parameter; ok is false when it is absent.
func str(m map[string]any, k string) (string, bool) {
	switch v := m[k].(type) {
	case string:
		return v, true
	case json.Number:
		return v.String(), true
	case nil:
		return "", false
	default:
		return fmt.Sprint(v), true
	}
}

// integer reads an integer parameter: 0 when absent, an error when it is
// not an integer.
func integer(m map[string]any, k string) (int, error) {
	s, ok := str(m, k)
	if !ok || s == "" {
		return 0, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil {
		return 0, fmt.Errorf("%s is invalid", k)
	}
	return n, nil
}
