// Package gitlabtest is a fake GitLab REST API (v4) for tests of code that
// reads from or writes to GitLab: the scm.gitlab connector's own tests and
// the annotation worker's. It keeps state (projects, merge requests with
// their diffs, notes, discussions, commit statuses, commit comments) and
// enforces the rules a real GitLab enforces and a lenient fake would let
// slide:
//
//   - authentication by PRIVATE-TOKEN (personal, project or group access
//     token) or JOB-TOKEN, 401 otherwise; a job token only where GitLab
//     allows one (GET /job, branches and tags of its own project) and 403
//     on notes, discussions, commit statuses and commit comments; writes
//     need the api scope (403 insufficient_scope otherwise);
//   - namespaced paths: a project path is one %2F-encoded segment; sent
//     with plain slashes it routes nowhere (404), as on GitLab;
//   - offset pagination (page, per_page capped at 100, X-Page, X-Next-Page,
//     X-Total, a Link header; Options.LinkOnly drops the X- headers as
//     keyset pagination does);
//   - note bodies of at most 1,000,000 characters; commit status ref,
//     description and target_url of at most 255;
//   - commit statuses follow GitLab's state machine: a status of the same
//     name that is still pending or running is updated in place, and the
//     same state again is a 400 "Cannot transition status via :run from
//     :running"; a finished status is never updated, a new one is added;
//   - discussion positions are checked against the merge request's
//     diff_refs and its diff: an added line needs new_line only, a removed
//     line old_line only, an unchanged line both; anything else is GitLab's
//     400 "line_code can't be blank"; position_type "file" needs a file of
//     the diff (and is refused as GitLab before 16.4 does with
//     Options.NoFilePositions);
//   - RateLimit-Limit/Remaining/Reset on every answer and 429 with
//     Retry-After once the budget is spent; GitLab's notes_create limit
//     (300 notes, discussions and commit comments a minute per user).
//
// Faults are injected per route (Fail), at random (SetFlaky), as latency
// (SetLatency) or as the whole server going away and coming back with its
// state (Down, Up). Accessors return what was written (Notes, Discussions,
// Statuses, CommitComments) and how many writes each route took (Writes).
package gitlabtest

import (
	"crypto/sha1"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"inthub.dev/pkg/connectors/servetest"
)

// Defaults of Options.
const (
	DefaultRateLimit   = 2000      // requests per RateLimitWindow
	DefaultMaxNoteBody = 1_000_000 // GitLab's limit on a note, in characters
	// DefaultNotesPerMinute is GitLab's default notes_create rate limit.
	DefaultNotesPerMinute = 300
	RateLimitWindow       = time.Minute
	maxStatusField        = 255 // ref, description, target_url of a commit status
	maxPerPage            = 100
)

// Options configure a fake. Zero values get the defaults noted.
type Options struct {
	// Prefix is a relative URL root ("/gitlab"): the API is then served
	// under /gitlab/api/v4 only.
	Prefix string
	// RateLimit is the number of requests per minute (DefaultRateLimit).
	RateLimit int
	// MaxNoteBody is the longest note or commit comment, in characters
	// (DefaultMaxNoteBody).
	MaxNoteBody int
	// NoFilePositions refuses position_type "file", as GitLab before 16.4.
	NoFilePositions bool
	// NoDiffsEndpoint answers 404 to merge_requests/:iid/diffs, as GitLab
	// before 15.7; /changes still works.
	NoDiffsEndpoint bool
	// NoTokenSelf answers 404 to personal_access_tokens/self, as GitLab
	// before 15.5.
	NoTokenSelf bool
	// LinkOnly paginates with a Link header only (no X-Next-Page, no
	// totals), as GitLab's keyset pagination and very large lists do.
	LinkOnly bool
	// NotesPerMinute is GitLab's notes_create limit: notes, discussions
	// and commit comments a user may create per minute before GitLab
	// answers 429 (DefaultNotesPerMinute; negative: no limit).
	NotesPerMinute int
}

// Server is a running fake GitLab.
type Server struct {
	tb   testing.TB
	opts Options

	// Server serves the fake and keeps its address across Down and Up;
	// Ledger counts what it received and what its writes changed.
	*servetest.Server
	*servetest.Ledger[Route]

	mu        sync.Mutex
	tokens    map[string]*token
	jobs      map[string]JobToken
	users     map[string]int64
	projects  []*project
	faults    servetest.Faults[Route]
	flaky     Flaky
	rng       *rand.Rand
	latency   time.Duration
	remaining int
	reset     time.Time
	nextID    int64
	now       func() time.Time
	noteTimes map[string][]time.Time // per user: note creations in the last minute
	ci        ciState                // pipelines.go
}

type token struct {
	Token
	revoked bool
}

// New starts a fake listening on a loopback port, stopped at the end of
// the test.
func New(tb testing.TB, o Options) *Server {
	tb.Helper()
	o.Prefix = strings.TrimRight(o.Prefix, "/")
	if o.RateLimit <= 0 {
		o.RateLimit = DefaultRateLimit
	}
	if o.MaxNoteBody <= 0 {
		o.MaxNoteBody = DefaultMaxNoteBody
	}
	if o.NotesPerMinute == 0 {
		o.NotesPerMinute = DefaultNotesPerMinute
	}
	s := &Server{
		tb:        tb,
		opts:      o,
		tokens:    map[string]*token{},
		jobs:      map[string]JobToken{},
		users:     map[string]int64{},
		faults:    servetest.Faults[Route]{},
		Ledger:    servetest.NewLedger(writeRoutes),
		noteTimes: map[string][]time.Time{},
		rng:       rand.New(rand.NewPCG(1, 2)),
		nextID:    1000,
		now:       time.Now,
	}
	s.remaining = o.RateLimit
	s.reset = s.now().Add(RateLimitWindow).Truncate(time.Second)
	s.Server = servetest.Start(tb, "gitlabtest", s.handle)
	return s
}

// URL is the instance root to configure as the integration's endpoint
// (http://127.0.0.1:port plus Options.Prefix).
func (s *Server) URL() string { return "http://" + s.Addr() + s.opts.Prefix }

// Token is an access token the server accepts in PRIVATE-TOKEN.
type Token struct {
	User string // username; each user gets a stable numeric id
	// Bot marks a project or group access token (its user is a bot).
	Bot bool
	// Scopes are the token's scopes; nil means {"api"}. Reads need api
	// or read_api, writes need api.
	Scopes []string
	// ExpiresAt is the expiry date (YYYY-MM-DD), "" for none.
	ExpiresAt string
	// Member lists the projects (full paths) the user is a member of:
	// private ones are invisible to others, and writes need membership.
	Member []string
}

// JobToken is a CI job token: valid while its job runs (until Revoke).
type JobToken struct {
	JobID     int64
	ProjectID int64
}

// AddToken makes value a valid access token (replacing one of the same
// value).
func (s *Server) AddToken(value string, t Token) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if t.Scopes == nil {
		t.Scopes = []string{"api"}
	}
	s.tokens[value] = &token{Token: t}
	s.userID(t.User)
}

// AddJobToken makes value a valid CI job token.
func (s *Server) AddJobToken(value string, j JobToken) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.jobs[value] = j
}

// Revoke makes a token (access or job) invalid: GitLab answers 401.
func (s *Server) Revoke(value string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if t, ok := s.tokens[value]; ok {
		t.revoked = true
	}
	delete(s.jobs, value)
}

// UserID is the numeric id the server gives a username.
func (s *Server) UserID(username string) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.userID(username)
}

func (s *Server) userID(name string) int64 {
	id, ok := s.users[name]
	if !ok {
		id = int64(len(s.users) + 1)
		s.users[name] = id
	}
	return id
}

// Project is a GitLab project.
type Project struct {
	ID         int64  // 0: assigned
	Path       string // full path, "group/sub/name"
	Visibility string // "private" (default), "internal" or "public"
	// DefaultBranch is "main" when empty.
	DefaultBranch string
	Branches      []string
	Tags          []string
	// Commits are SHAs the repository holds besides those of its merge
	// requests' diff_refs: statuses and commit comments need a known
	// commit.
	Commits []string
}

type project struct {
	Project
	commits  map[string]bool
	mrs      map[int]*mergeRequest
	statuses []*Status
	comments map[string][]CommitComment
}

// AddProject adds a project and returns its id.
func (s *Server) AddProject(p Project) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	if p.ID == 0 {
		p.ID = int64(len(s.projects) + 1)
		for s.projectByRef(strconv.FormatInt(p.ID, 10)) != nil {
			p.ID++
		}
	}
	if p.Visibility == "" {
		p.Visibility = "private"
	}
	if p.DefaultBranch == "" {
		p.DefaultBranch = "main"
	}
	pr := &project{Project: p, commits: map[string]bool{}, mrs: map[int]*mergeRequest{}, comments: map[string][]CommitComment{}}
	for _, c := range p.Commits {
		pr.commits[c] = true
	}
	s.projects = append(s.projects, pr)
	return p.ID
}

// AddCommit makes sha known to a project's repository.
func (s *Server) AddCommit(projectPath, sha string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.mustProject(projectPath).commits[sha] = true
}

// MergeRequest is a merge request with its diff.
type MergeRequest struct {
	IID          int
	Title        string
	SourceBranch string // "feature" when empty
	TargetBranch string // "main" when empty
	State        string // "opened" when empty
	// DiffRefs are the commits of the diff; zero while GitLab is still
	// preparing the merge request (diff_refs is null then).
	DiffRefs DiffRefs
	Diffs    []Diff
}

// DiffRefs are a merge request version's commits.
type DiffRefs struct {
	BaseSHA  string `json:"base_sha"`
	StartSHA string `json:"start_sha"`
	HeadSHA  string `json:"head_sha"`
}

// Diff is one file of a merge request's diff, as GitLab returns it.
type Diff struct {
	OldPath     string `json:"old_path"`
	NewPath     string `json:"new_path"`
	NewFile     bool   `json:"new_file"`
	RenamedFile bool   `json:"renamed_file"`
	DeletedFile bool   `json:"deleted_file"`
	// Diff is the unified diff of the file without its ---/+++ header
	// ("@@ -1,3 +1,4 @@\n context\n+added\n..."), empty when TooLarge or
	// Collapsed.
	Diff      string `json:"diff"`
	TooLarge  bool   `json:"too_large,omitempty"`
	Collapsed bool   `json:"collapsed,omitempty"`
}

type mergeRequest struct {
	MergeRequest
	id          int64
	discussions []*discussion
	lines       map[string]*fileLines // by new_path+"\x00"+old_path
}

type discussion struct {
	id         string
	individual bool
	notes      []*Note
}

// AddMergeRequest adds a merge request to a project, or replaces one of
// the same IID (a push: new diff_refs and diffs) keeping its notes.
func (s *Server) AddMergeRequest(projectPath string, mr MergeRequest) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.mustProject(projectPath)
	if mr.IID <= 0 {
		s.tb.Fatalf("gitlabtest: merge request IID must be positive")
	}
	if mr.SourceBranch == "" {
		mr.SourceBranch = "feature"
	}
	if mr.TargetBranch == "" {
		mr.TargetBranch = "main"
	}
	if mr.State == "" {
		mr.State = "opened"
	}
	for _, sha := range []string{mr.DiffRefs.BaseSHA, mr.DiffRefs.StartSHA, mr.DiffRefs.HeadSHA} {
		if sha != "" {
			p.commits[sha] = true
		}
	}
	lines := map[string]*fileLines{}
	for _, d := range mr.Diffs {
		fl, err := parseDiff(d.Diff)
		if err != nil {
			s.tb.Fatalf("gitlabtest: diff of %s: %v", d.NewPath, err)
		}
		lines[d.NewPath+"\x00"+d.OldPath] = fl
	}
	if old, ok := p.mrs[mr.IID]; ok {
		old.MergeRequest, old.lines = mr, lines
		return
	}
	s.nextID++
	p.mrs[mr.IID] = &mergeRequest{MergeRequest: mr, id: s.nextID, lines: lines}
}

// AddNote adds a note to a merge request as if author had written it in
// the UI (or, with system, as GitLab's own "added 1 commit" notes), and
// returns its id.
func (s *Server) AddNote(projectPath string, iid int, author, body string, system bool) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	mr := s.mustMR(projectPath, iid)
	n := s.newNote(author, body, "")
	n.System = system
	s.addDiscussion(mr, true, n)
	return n.ID
}

// DeleteNote deletes a note, as a user may in the UI.
func (s *Server) DeleteNote(projectPath string, iid int, noteID int64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	mr := s.mustMR(projectPath, iid)
	for i, d := range mr.discussions {
		for j, n := range d.notes {
			if n.ID == noteID {
				d.notes = slices.Delete(d.notes, j, j+1)
				if len(d.notes) == 0 {
					mr.discussions = slices.Delete(mr.discussions, i, i+1)
				}
				return true
			}
		}
	}
	return false
}

func (s *Server) mustProject(ref string) *project {
	p := s.projectByRef(ref)
	if p == nil {
		s.tb.Fatalf("gitlabtest: no project %q", ref)
	}
	return p
}

func (s *Server) mustMR(projectPath string, iid int) *mergeRequest {
	mr := s.mustProject(projectPath).mrs[iid]
	if mr == nil {
		s.tb.Fatalf("gitlabtest: no merge request !%d in %s", iid, projectPath)
	}
	return mr
}

func (s *Server) projectByRef(ref string) *project {
	for _, p := range s.projects {
		if p.Path == ref || strconv.FormatInt(p.ID, 10) == ref {
			return p
		}
	}
	return nil
}

func (s *Server) newNote(author, body, typ string) *Note {
	s.nextID++
	now := s.now().UTC()
	return &Note{ID: s.nextID, Type: typ, Body: body, Author: author, CreatedAt: now, UpdatedAt: now}
}

func (s *Server) addDiscussion(mr *mergeRequest, individual bool, n *Note) *discussion {
	sum := sha1.Sum([]byte(fmt.Sprintf("discussion-%d", n.ID)))
	d := &discussion{id: hex.EncodeToString(sum[:]), individual: individual, notes: []*Note{n}}
	n.DiscussionID = d.id
	mr.discussions = append(mr.discussions, d)
	return d
}

// Route names an endpoint, for Fail, Requests and Writes.
type Route string

const (
	RouteVersion          Route = "GET /version"
	RouteUser             Route = "GET /user"
	RouteTokenSelf        Route = "GET /personal_access_tokens/self"
	RouteJob              Route = "GET /job"
	RouteProjects         Route = "GET /projects"
	RouteGroupProjects    Route = "GET /groups/:id/projects"
	RouteBranches         Route = "GET /projects/:id/repository/branches"
	RouteTags             Route = "GET /projects/:id/repository/tags"
	RouteMergeRequest     Route = "GET /projects/:id/merge_requests/:iid"
	RouteMRDiffs          Route = "GET /projects/:id/merge_requests/:iid/diffs"
	RouteMRChanges        Route = "GET /projects/:id/merge_requests/:iid/changes"
	RouteNotes            Route = "GET /projects/:id/merge_requests/:iid/notes"
	RouteCreateNote       Route = "POST /projects/:id/merge_requests/:iid/notes"
	RouteEditNote         Route = "PUT /projects/:id/merge_requests/:iid/notes/:note_id"
	RouteDiscussions      Route = "GET /projects/:id/merge_requests/:iid/discussions"
	RouteCreateDiscussion Route = "POST /projects/:id/merge_requests/:iid/discussions"
	RouteEditThreadNote   Route = "PUT /projects/:id/merge_requests/:iid/discussions/:discussion_id/notes/:note_id"
	RouteCreateStatus     Route = "POST /projects/:id/statuses/:sha"
	RouteStatuses         Route = "GET /projects/:id/repository/commits/:sha/statuses"
	RouteCommitComments   Route = "GET /projects/:id/repository/commits/:sha/comments"
	RouteCreateComment    Route = "POST /projects/:id/repository/commits/:sha/comments"
	// RouteAll makes Fail apply to every route.
	RouteAll Route = "*"
)

// writeRoutes are the routes that change state.
var writeRoutes = []Route{RouteCreateNote, RouteEditNote, RouteCreateDiscussion, RouteEditThreadNote, RouteCreateStatus, RouteCreateComment}

// Fault is an injected failure of a route.
type Fault = servetest.Fault

// TooManyRequests is GitLab's 429 with Retry-After.
func TooManyRequests(retryAfter time.Duration) Fault {
	return Fault{Status: http.StatusTooManyRequests, Body: `{"message":"Retry later"}`,
		Header: http.Header{"Retry-After": {strconv.Itoa(int(retryAfter / time.Second))}}}
}

// ServerError is a 5xx (0: 500).
func ServerError(status int) Fault {
	if status == 0 {
		status = http.StatusInternalServerError
	}
	return Fault{Status: status}
}

// Unauthorized is GitLab's answer to an invalid token.
func Unauthorized() Fault { return Fault{Status: http.StatusUnauthorized} }

// InsufficientScope is GitLab's 403 for a token without the scope.
func InsufficientScope() Fault {
	return Fault{Status: http.StatusForbidden, Body: insufficientScopeBody}
}

const insufficientScopeBody = `{"error":"insufficient_scope","error_description":"The request requires higher privileges than provided by the access token.","scope":"api"}`

// Fail injects f on route (or RouteAll) until Clear, or for f.Times
// requests.
func (s *Server) Fail(route Route, f Fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults[route] = &f
}

// Clear removes every injected fault, the flakiness and the latency, and
// refills the rate-limit budgets.
func (s *Server) Clear() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = servetest.Faults[Route]{}
	s.flaky = Flaky{}
	s.latency = 0
	s.remaining = s.opts.RateLimit
	s.noteTimes = map[string][]time.Time{}
}

// Flaky makes a fraction of the requests fail with 500, 502 or 503.
type Flaky struct {
	Rate float64 // 0..1
	// Applied performs a failed write first (a lost answer; see
	// Fault.Applied).
	Applied bool
	// Seed makes the sequence of failures repeatable.
	Seed uint64
}

// SetFlaky sets random server errors (a zero Flaky turns them off).
func (s *Server) SetFlaky(f Flaky) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.flaky = f
	s.rng = rand.New(rand.NewPCG(f.Seed, 2))
}

// SetLatency delays every answer by d (the handler gives up early when
// the client does).
func (s *Server) SetLatency(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.latency = d
}

// SetRemaining sets what is left of the rate-limit budget in the current
// window; at 0 every request is answered 429 until the window resets.
func (s *Server) SetRemaining(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.remaining = n
}

// RateLimitReset is when the current rate-limit window ends.
func (s *Server) RateLimitReset() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.reset
}

// Request is one request the server received.
type Request = servetest.Request[Route]

// Note is a note on a merge request.
type Note struct {
	ID           int64
	DiscussionID string
	// Type is "" for a plain note, "DiscussionNote" for a thread without
	// a position, "DiffNote" for one on the diff.
	Type      string
	Body      string
	Author    string
	System    bool
	Position  *Position
	Edits     int // times the body was changed through the API
	CreatedAt time.Time
	UpdatedAt time.Time
}

// Position is where a diff note sits.
type Position struct {
	BaseSHA      string `json:"base_sha"`
	StartSHA     string `json:"start_sha"`
	HeadSHA      string `json:"head_sha"`
	PositionType string `json:"position_type"` // "text" or "file"
	OldPath      string `json:"old_path"`
	NewPath      string `json:"new_path"`
	OldLine      int    `json:"old_line,omitempty"`
	NewLine      int    `json:"new_line,omitempty"`
}

// Discussion is a thread of notes; a plain note is a discussion of one
// (IndividualNote).
type Discussion struct {
	ID             string
	IndividualNote bool
	Notes          []Note
}

// Status is a commit status (GitLab: an external job).
type Status struct {
	ID          int64
	SHA         string
	Ref         string
	Name        string
	State       string // pending, running, success, failed, canceled, skipped
	Description string
	TargetURL   string
	Author      string
	// History is every state the status went through, in order.
	History []string
}

// CommitComment is a comment on a commit.
type CommitComment struct {
	Note      string
	Author    string
	Path      string
	Line      int
	LineType  string
	CreatedAt time.Time
}

// Notes returns a merge request's notes in the order they were created.
func (s *Server) Notes(projectPath string, iid int) []Note {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Note
	for _, d := range s.mustMR(projectPath, iid).discussions {
		for _, n := range d.notes {
			out = append(out, *n)
		}
	}
	slices.SortFunc(out, func(a, b Note) int { return int(a.ID - b.ID) })
	return out
}

// Discussions returns a merge request's discussions in order.
func (s *Server) Discussions(projectPath string, iid int) []Discussion {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Discussion
	for _, d := range s.mustMR(projectPath, iid).discussions {
		dd := Discussion{ID: d.id, IndividualNote: d.individual}
		for _, n := range d.notes {
			dd.Notes = append(dd.Notes, *n)
		}
		out = append(out, dd)
	}
	return out
}

// Statuses returns a commit's statuses, oldest first.
func (s *Server) Statuses(projectPath, sha string) []Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Status
	for _, st := range s.mustProject(projectPath).statuses {
		if st.SHA == sha {
			c := *st
			c.History = slices.Clone(st.History)
			out = append(out, c)
		}
	}
	return out
}

// CommitComments returns a commit's comments, oldest first.
func (s *Server) CommitComments(projectPath, sha string) []CommitComment {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.mustProject(projectPath).comments[sha])
}

// NewFileDiff is the diff of a new file of n lines ("line 1" ... "line n").
func NewFileDiff(path string, n int) Diff {
	var b strings.Builder
	fmt.Fprintf(&b, "@@ -0,0 +1,%d @@\n", n)
	for i := 1; i <= n; i++ {
		fmt.Fprintf(&b, "+line %d\n", i)
	}
	return Diff{OldPath: path, NewPath: path, NewFile: true, Diff: b.String()}
}

// SHA is a stable fake commit SHA for a name.
func SHA(name string) string {
	sum := sha1.Sum([]byte(name))
	return hex.EncodeToString(sum[:])
}
