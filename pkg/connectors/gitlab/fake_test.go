package gitlab

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeGitLab is an httptest GitLab that enforces what the connector must
// get right:
//   - authentication by PRIVATE-TOKEN or JOB-TOKEN, 401 otherwise; a job
//     token only on the endpoints GitLab allows it (/job, branches, tags);
//   - namespaced paths: a project path is one %2F-encoded segment; sent
//     with plain slashes it routes nowhere and the answer is 404, as from
//     GitLab's router;
//   - offset pagination with X-Next-Page/X-Page/X-Total and a Link
//     header, per_page capped at 100;
//   - RateLimit-Limit/Remaining/Reset on every answer, 429 with
//     Retry-After when the budget is spent;
//   - scripted faults: any status, or a slow answer that holds until the
//     client gives up.
type fakeGitLab struct {
	t      testing.TB
	srv    *httptest.Server
	prefix string // relative URL root, "" or "/gitlab"

	mu        sync.Mutex
	pats      map[string]fakePAT
	jobs      map[string]fakeJob
	projects  []fakeProject
	fault     map[string]fakeFault // by route name: "version", "user", "projects", ...; "*" for all
	linkOnly  bool                 // omit X-Next-Page, as for keyset pagination
	noSelf    bool                 // GitLab < 15.5: no /personal_access_tokens/self
	limit     int
	remaining int
	reset     time.Time
	requests  []fakeRequest
	release   chan struct{}
}

type fakePAT struct {
	user      string
	bot       bool
	scopes    []string
	expiresAt string // "" = never
	member    []string
}

type fakeJob struct {
	id        int64
	projectID int64
}

type fakeProject struct {
	id         int64
	path       string
	visibility string
	branches   []string
	tags       []string
}

type fakeFault struct {
	status     int
	header     http.Header
	body       string
	slow       bool
	afterCalls int // fail only after this many successful calls
}

type fakeRequest struct {
	rawURI  string
	route   string
	headers http.Header
}

func newFakeGitLab(t testing.TB) *fakeGitLab {
	t.Helper()
	f := &fakeGitLab{
		t:         t,
		pats:      map[string]fakePAT{},
		jobs:      map[string]fakeJob{},
		fault:     map[string]fakeFault{},
		limit:     2000,
		remaining: 2000,
		reset:     time.Now().Add(time.Minute).Truncate(time.Second),
		release:   make(chan struct{}),
	}
	f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(func() {
		close(f.release)
		f.srv.Close()
	})
	return f
}

// endpoint is the instance root to configure.
func (f *fakeGitLab) endpoint() string { return f.srv.URL + f.prefix }

func (f *fakeGitLab) setFault(route string, ff fakeFault) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fault[route] = ff
}

func (f *fakeGitLab) seen() []fakeRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.requests)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func (f *fakeGitLab) serve(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		writeJSON(w, http.StatusMethodNotAllowed, map[string]string{"error": "405 Method Not Allowed"})
		return
	}
	// Route on the path as sent: r.URL.Path has %2F decoded already, which
	// is exactly the difference GitLab's router cares about.
	raw := r.URL.EscapedPath()
	rest, ok := strings.CutPrefix(raw, f.prefix+"/api/v4/")
	if !ok {
		writeJSON(w, http.StatusNotFound, map[string]string{"error": "404 Not Found"})
		return
	}
	segs := strings.Split(rest, "/")
	for i, s := range segs {
		d, err := url.PathUnescape(s)
		if err != nil {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "400 Bad Request"})
			return
		}
		segs[i] = d
	}
	route, params := routeOf(segs)

	f.mu.Lock()
	f.requests = append(f.requests, fakeRequest{rawURI: r.RequestURI, route: route, headers: r.Header.Clone()})
	ff, faulty := f.fault[route]
	if !faulty {
		ff, faulty = f.fault["*"]
	}
	if faulty && ff.afterCalls > 0 {
		ff.afterCalls--
		f.fault[route] = ff
		faulty = false
	}
	if f.remaining > 0 {
		f.remaining--
	}
	h := w.Header()
	h.Set("RateLimit-Limit", strconv.Itoa(f.limit))
	h.Set("RateLimit-Remaining", strconv.Itoa(f.remaining))
	h.Set("RateLimit-Reset", strconv.FormatInt(f.reset.Unix(), 10))
	h.Set("RateLimit-ResetTime", f.reset.UTC().Format(http.TimeFormat))
	spent := f.remaining == 0 && f.limit > 0
	f.mu.Unlock()

	if faulty {
		if ff.slow {
			select {
			case <-r.Context().Done():
			case <-f.release:
			}
			return
		}
		for k, vs := range ff.header {
			h[k] = vs
		}
		body := ff.body
		if body == "" {
			body = fmt.Sprintf(`{"message":"%d %s"}`, ff.status, http.StatusText(ff.status))
		}
		h.Set("Content-Type", "application/json")
		w.WriteHeader(ff.status)
		_, _ = w.Write([]byte(body))
		return
	}
	if spent {
		h.Set("Retry-After", "42")
		writeJSON(w, http.StatusTooManyRequests, map[string]string{"message": "Retry later"})
		return
	}
	if route == "" {
		writeJSON(w, http.StatusNotFound, map[string]string{"error": "404 Not Found"})
		return
	}

	pat, jobTok := r.Header.Get("Private-Token"), r.Header.Get("Job-Token")
	f.mu.Lock()
	p, patOK := f.pats[pat]
	j, jobOK := f.jobs[jobTok]
	f.mu.Unlock()
	jobAllowed := route == "job" || route == "branches" || route == "tags"
	switch {
	case pat != "" && patOK:
	case jobTok != "" && jobOK && jobAllowed:
	default:
		writeJSON(w, http.StatusUnauthorized, map[string]string{"message": "401 Unauthorized"})
		return
	}

	switch route {
	case "version":
		writeJSON(w, 200, map[string]string{"version": "17.5.1-ee", "revision": "4f1b2e3a"})
	case "user":
		writeJSON(w, 200, map[string]any{"id": 7, "username": p.user, "bot": p.bot, "state": "active"})
	case "token":
		f.mu.Lock()
		noSelf := f.noSelf
		f.mu.Unlock()
		if noSelf {
			writeJSON(w, http.StatusNotFound, map[string]string{"error": "404 Not Found"})
			return
		}
		var exp any
		if p.expiresAt != "" {
			exp = p.expiresAt
		}
		writeJSON(w, 200, map[string]any{"id": 1, "name": "inthub", "scopes": p.scopes, "expires_at": exp, "active": true, "revoked": false})
	case "job":
		writeJSON(w, 200, map[string]any{"id": j.id, "status": "running", "ref": "main", "pipeline": map[string]any{"id": 99, "project_id": j.projectID}})
	case "projects", "group_projects":
		var list []any
		f.mu.Lock()
		for _, pr := range f.projects {
			if route == "projects" && r.URL.Query().Get("membership") == "true" && !slices.Contains(p.member, pr.path) {
				continue
			}
			if route == "group_projects" && !strings.HasPrefix(pr.path, params["group"]+"/") {
				continue
			}
			list = append(list, map[string]any{"id": pr.id, "path_with_namespace": pr.path, "default_branch": "main", "visibility": pr.visibility})
		}
		f.mu.Unlock()
		if route == "group_projects" && !f.groupExists(params["group"]) {
			writeJSON(w, http.StatusNotFound, map[string]string{"message": "404 Group Not Found"})
			return
		}
		f.paginate(w, r, list)
	case "branches", "tags":
		pr, ok := f.project(params["project"])
		if !ok || jobTok != "" && pr.id != j.projectID {
			writeJSON(w, http.StatusNotFound, map[string]string{"message": "404 Project Not Found"})
			return
		}
		names := pr.branches
		if route == "tags" {
			names = pr.tags
		}
		list := make([]any, 0, len(names))
		for i, n := range names {
			list = append(list, map[string]any{"name": n, "commit": map[string]any{"id": fmt.Sprintf("%040x", i+1)}})
		}
		f.paginate(w, r, list)
	}
}

// routeOf names a route from decoded path segments. A project path sent
// with raw slashes has more segments than any route and matches none.
func routeOf(segs []string) (string, map[string]string) {
	switch {
	case len(segs) == 1 && segs[0] == "version":
		return "version", nil
	case len(segs) == 1 && segs[0] == "user":
		return "user", nil
	case len(segs) == 1 && segs[0] == "job":
		return "job", nil
	case len(segs) == 2 && segs[0] == "personal_access_tokens" && segs[1] == "self":
		return "token", nil
	case len(segs) == 1 && segs[0] == "projects":
		return "projects", nil
	case len(segs) == 3 && segs[0] == "groups" && segs[2] == "projects":
		return "group_projects", map[string]string{"group": segs[1]}
	case len(segs) == 4 && segs[0] == "projects" && segs[2] == "repository" && (segs[3] == "branches" || segs[3] == "tags"):
		return segs[3], map[string]string{"project": segs[1]}
	}
	return "", nil
}

func (f *fakeGitLab) project(ref string) (fakeProject, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, p := range f.projects {
		if p.path == ref || strconv.FormatInt(p.id, 10) == ref {
			return p, true
		}
	}
	return fakeProject{}, false
}

func (f *fakeGitLab) groupExists(g string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, p := range f.projects {
		if strings.HasPrefix(p.path, g+"/") {
			return true
		}
	}
	return false
}

// paginate answers one page as GitLab's offset pagination does.
func (f *fakeGitLab) paginate(w http.ResponseWriter, r *http.Request, list []any) {
	q := r.URL.Query()
	perPage, page := 20, 1
	if v := q.Get("per_page"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "per_page is invalid"})
			return
		}
		perPage = min(n, 100)
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
	f.mu.Lock()
	linkOnly := f.linkOnly
	f.mu.Unlock()
	h.Set("X-Page", strconv.Itoa(page))
	h.Set("X-Per-Page", strconv.Itoa(perPage))
	if !linkOnly {
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
	writeJSON(w, 200, list[lo:hi])
}
