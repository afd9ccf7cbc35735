// Package bitbuckettest is a fake Bitbucket for tests of code that reads
// from or writes to Bitbucket: Bitbucket Cloud's REST API 2.0 or
// Bitbucket Data Center's REST API 1.0 (with its build-status and Code
// Insights APIs), one flavour per server. It keeps state (repositories,
// branches, tags, pull requests with their comments, build statuses,
// Code Insights reports and annotations) and enforces what the real
// services enforce and a lenient fake would let slide:
//
//   - authentication: Basic (a Cloud app password, a Data Center
//     password) or Bearer (a Cloud workspace/repository access token, a
//     Data Center HTTP access token), 401 otherwise; Cloud checks the
//     credential's scopes (account, repository, pullrequest,
//     pullrequest:write; a write scope implies its read) and answers 403
//     with {"detail":{"required":[...],"granted":[...]}}; an access token
//     reaches only its workspace or repository and has no account
//     (GET /2.0/user is 401 for it); Data Center answers every
//     authenticated request with X-AUSERNAME and refuses projects outside
//     a token's reach with 403;
//   - paging: Cloud's page/pagelen (10 by default, more than 100 is a 400
//     "Invalid pagelen") with a next URL; Data Center's start/limit (25 by
//     default, silently lowered to 1,000) with isLastPage/nextPageStart;
//   - build statuses: one per commit and key; a post with an existing key
//     overwrites it, and on Cloud only its creator may (403 otherwise);
//     key, state and url required; Data Center's 255-character key, name
//     and description and 450-character url; Data Center's states include
//     CANCELLED, Cloud's STOPPED; Options.LegacyBuildStatus serves only
//     /rest/build-status/1.0, as Data Center before 7.4;
//   - comments: only their author edits them (403); Data Center's edits
//     need the current version (409 otherwise) and bodies of at most
//     32,768 characters; Cloud keeps a deleted comment listed with
//     "deleted": true; Data Center lists comments through the pull
//     request's activities;
//   - Code Insights: a report needs a title (and on Cloud a report_type);
//     annotations go to an existing report, at most 100 per call on Cloud
//     and 1,000 per report; an annotation with an external id already
//     there replaces it; a replaced report keeps its annotations until
//     they (or the report) are deleted;
//   - rate limits: Cloud's X-RateLimit-Limit and X-RateLimit-NearLimit
//     (under 20 % left) and 429 without Retry-After once spent; Data
//     Center's X-RateLimit-Limit/Remaining and 429 with Retry-After.
//
// Faults are injected per route (Fail), as latency (SetLatency), or as the
// whole server going away (Down, Up). Accessors return what was written.
package bitbuckettest

import (
	"crypto/sha1"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"inthub.dev/pkg/connectors/servetest"
)

// Flavours.
const (
	Cloud      = "cloud"
	DataCenter = "datacenter"
)

// Defaults and limits.
const (
	DefaultRateLimit  = 1000 // requests per RateLimitWindow
	RateLimitWindow   = time.Hour
	MaxCloudPageLen   = 100
	MaxDCLimit        = 1000
	MaxDCComment      = 32768
	MaxDCStatusField  = 255
	MaxDCStatusURL    = 450
	MaxAnnotations    = 1000 // per report
	MaxCloudAnnBatch  = 100  // per call
	MaxReportDetails  = 2000
	MaxCloudAnnotText = 450
)

// Options configure a fake.
type Options struct {
	// Flavor is Cloud (default) or DataCenter.
	Flavor string
	// Prefix is a Data Center context path ("/bitbucket").
	Prefix string
	// RateLimit is the number of requests per window (DefaultRateLimit).
	RateLimit int
	// LegacyBuildStatus serves build statuses only through
	// /rest/build-status/1.0, as Data Center before 7.4.
	LegacyBuildStatus bool
	// Version is Data Center's version ("8.19.1" when empty).
	Version string
}

// Server is a running fake Bitbucket.
type Server struct {
	tb   testing.TB
	opts Options

	// Server serves the fake and keeps its address across Down and Up;
	// Ledger counts what it received and what its writes changed.
	*servetest.Server
	*servetest.Ledger[Route]

	mu        sync.Mutex
	users     map[string]*User  // by name
	tokens    map[string]*Token // by value
	repos     []*repo
	faults    servetest.Faults[Route]
	latency   time.Duration
	remaining int
	reset     time.Time
	nextID    int64
}

// New starts a fake on a loopback port, stopped at the end of the test.
func New(tb testing.TB, o Options) *Server {
	tb.Helper()
	if o.Flavor == "" {
		o.Flavor = Cloud
	}
	if o.Flavor != Cloud && o.Flavor != DataCenter {
		tb.Fatalf("bitbuckettest: unknown flavor %q", o.Flavor)
	}
	o.Prefix = strings.TrimRight(o.Prefix, "/")
	if o.RateLimit <= 0 {
		o.RateLimit = DefaultRateLimit
	}
	if o.Version == "" {
		o.Version = "8.19.1"
	}
	s := &Server{
		tb: tb, opts: o, users: map[string]*User{}, tokens: map[string]*Token{},
		faults: servetest.Faults[Route]{}, Ledger: servetest.NewLedger(writeRoutes),
		nextID: 100,
	}
	s.remaining = o.RateLimit
	s.reset = time.Now().Add(RateLimitWindow)
	s.Server = servetest.Start(tb, "bitbuckettest", s.handle)
	return s
}

// URL is the endpoint to configure: the Cloud API host stand-in
// (http://127.0.0.1:port, the API under /2.0) or the Data Center root
// (with Options.Prefix).
func (s *Server) URL() string { return "http://" + s.Addr() + s.opts.Prefix }

// Flavor is the server's flavour.
func (s *Server) Flavor() string { return s.opts.Flavor }

// User is an account that authenticates with Basic auth: a Cloud user
// with an app password, a Data Center user with a password.
type User struct {
	Name     string
	Password string
	// Scopes are a Cloud app password's scopes; nil means account,
	// repository and pullrequest:write.
	Scopes []string
	// Projects limits a Data Center user to these project keys (nil: all).
	Projects []string
	// Permissions are a Data Center user's within those projects
	// (permissions.go); nil means PROJECT_WRITE.
	Permissions []string
	uuid        string
}

// Token is an access token (Bearer).
type Token struct {
	// Name is the token's bot user: what Data Center reports in
	// X-AUSERNAME and as the author of what the token writes.
	Name string
	// Scopes are a Cloud access token's scopes; nil means repository
	// and pullrequest:write.
	Scopes []string
	// Workspace (Cloud) or Projects (Data Center) the token reaches;
	// Repo narrows a Cloud token to one repository slug.
	Workspace string
	Repo      string
	Projects  []string
	// Permissions are a Data Center token's within its projects
	// (permissions.go); nil means PROJECT_WRITE.
	Permissions []string
	Revoked     bool
	uuid        string
}

// AddUser adds (or replaces) a Basic-auth user.
func (s *Server) AddUser(u User) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if u.Scopes == nil {
		u.Scopes = []string{"account", "repository", "pullrequest:write"}
	}
	u.uuid = "{" + uuidOf("user:"+u.Name) + "}"
	s.users[u.Name] = &u
}

// AddToken makes value a valid access token.
func (s *Server) AddToken(value string, t Token) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if t.Scopes == nil {
		t.Scopes = []string{"repository", "pullrequest:write"}
	}
	if t.Name == "" {
		t.Name = "bot-" + uuidOf(value)[:8]
	}
	t.uuid = "{" + uuidOf("token:"+t.Name) + "}"
	s.tokens[value] = &t
}

// Revoke makes a token invalid (401).
func (s *Server) Revoke(value string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if t, ok := s.tokens[value]; ok {
		t.Revoked = true
	}
}

// UUID is the Cloud account uuid of a user or token bot name.
func (s *Server) UUID(name string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if u, ok := s.users[name]; ok {
		return u.uuid
	}
	for _, t := range s.tokens {
		if t.Name == name {
			return t.uuid
		}
	}
	return ""
}

// Repo is a repository: Owner is the Cloud workspace or the Data Center
// project key.
type Repo struct {
	Owner, Slug string
	Private     bool
	// Branches map names to their tip commit; "main" → SHA("main") when
	// nil.
	Branches map[string]string
	Tags     map[string]string
	// Commits are further SHAs the repository holds.
	Commits []string
	// PullRequests are the ids of open pull requests.
	PullRequests []int
}

type repo struct {
	Repo
	id       int64
	commits  map[string]bool
	prs      map[int]*pullRequest
	statuses map[string][]*Status          // by sha, in creation order
	reports  map[string]map[string]*Report // by sha, then key
}

type pullRequest struct {
	comments []*Comment
}

// AddRepo adds a repository.
func (s *Server) AddRepo(r Repo) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if r.Branches == nil {
		r.Branches = map[string]string{"main": SHA("main")}
	}
	s.nextID++
	rp := &repo{Repo: r, id: s.nextID, commits: map[string]bool{}, prs: map[int]*pullRequest{},
		statuses: map[string][]*Status{}, reports: map[string]map[string]*Report{}}
	for _, sha := range r.Branches {
		rp.commits[sha] = true
	}
	for _, sha := range r.Tags {
		rp.commits[sha] = true
	}
	for _, sha := range r.Commits {
		rp.commits[sha] = true
	}
	for _, id := range r.PullRequests {
		rp.prs[id] = &pullRequest{}
	}
	s.repos = append(s.repos, rp)
}

func (s *Server) repo(owner, slug string) *repo {
	for _, r := range s.repos {
		if strings.EqualFold(r.Owner, owner) && strings.EqualFold(r.Slug, slug) {
			return r
		}
	}
	return nil
}

func (s *Server) mustRepo(full string) *repo {
	owner, slug, _ := strings.Cut(full, "/")
	r := s.repo(owner, slug)
	if r == nil {
		s.tb.Fatalf("bitbuckettest: no repository %q", full)
	}
	return r
}

// Comment is a pull request comment.
type Comment struct {
	ID      int64
	Text    string
	Author  string // user or token bot name
	Version int    // Data Center: +1 per edit
	Edits   int
	Deleted bool
}

// AddComment adds a comment as if author had written it in the UI.
func (s *Server) AddComment(full string, pr int, author, text string) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.mustRepo(full).prs[pr]
	if p == nil {
		s.tb.Fatalf("bitbuckettest: no pull request %d in %s", pr, full)
	}
	s.nextID++
	p.comments = append(p.comments, &Comment{ID: s.nextID, Text: text, Author: author})
	return s.nextID
}

// DeleteComment deletes a comment, as a user may in the UI: Cloud keeps
// it listed as deleted, Data Center drops it.
func (s *Server) DeleteComment(full string, pr int, id int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.mustRepo(full).prs[pr]
	for i, c := range p.comments {
		if c.ID == id {
			if s.opts.Flavor == Cloud {
				c.Deleted = true
			} else {
				p.comments = slices.Delete(p.comments, i, i+1)
			}
			return
		}
	}
}

// Comments returns a pull request's comments (deleted ones left out), oldest first.
func (s *Server) Comments(full string, pr int) []Comment {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Comment
	for _, c := range s.mustRepo(full).prs[pr].comments {
		if !c.Deleted {
			out = append(out, *c)
		}
	}
	return out
}

// Status is a build status.
type Status struct {
	Key, State, Name, Description, URL string
	Author                             string
	// Legacy is set when it came through /rest/build-status/1.0.
	Legacy bool
	// Updates counts posts after the first.
	Updates int
}

// Statuses returns a commit's build statuses, in creation order.
func (s *Server) Statuses(full, sha string) []Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Status
	for _, st := range s.mustRepo(full).statuses[sha] {
		out = append(out, *st)
	}
	return out
}

// Report is a Code Insights report.
type Report struct {
	Key, Title, Details, Result, ReportType, Reporter string
	Author                                            string
	Puts                                              int
	// Annotations by external id, in the order first added.
	Annotations []Annotation
}

// Annotation is a Code Insights annotation.
type Annotation struct {
	ExternalID, Path, Message, Severity, Type, Result string
	Line                                              int
}

// Reports returns a commit's reports, by key.
func (s *Server) Reports(full, sha string) map[string]Report {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]Report{}
	for k, r := range s.mustRepo(full).reports[sha] {
		c := *r
		c.Annotations = slices.Clone(r.Annotations)
		out[k] = c
	}
	return out
}

// Route names an endpoint, for Fail, Requests and Writes.
type Route string

const (
	RouteUser            Route = "GET user"                   // Cloud /2.0/user
	RouteAppProperties   Route = "GET application-properties" // Data Center
	RouteRepos           Route = "GET repos"
	RouteBranches        Route = "GET branches"
	RouteTags            Route = "GET tags"
	RouteComments        Route = "GET comments" // Cloud comments, Data Center activities
	RouteCreateComment   Route = "POST comment"
	RouteEditComment     Route = "PUT comment"
	RouteCreateStatus    Route = "POST status"
	RouteLegacyStatus    Route = "POST legacy status"
	RouteStatuses        Route = "GET statuses"
	RoutePutReport       Route = "PUT report"
	RouteGetReport       Route = "GET report"
	RouteDelReport       Route = "DELETE report"
	RouteAddAnnotations  Route = "POST annotations"
	RouteDelAnnotations  Route = "DELETE annotations"
	RouteListAnnotations Route = "GET annotations"
	// RouteAll makes Fail apply to every route.
	RouteAll Route = "*"
)

var writeRoutes = []Route{RouteCreateComment, RouteEditComment, RouteCreateStatus, RouteLegacyStatus, RoutePutReport, RouteDelReport, RouteAddAnnotations, RouteDelAnnotations}

// Fault is an injected failure of a route.
type Fault = servetest.Fault

// Fail injects f on route (or RouteAll).
func (s *Server) Fail(route Route, f Fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults[route] = &f
}

// Clear removes faults and latency and refills the rate-limit budget.
func (s *Server) Clear() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = servetest.Faults[Route]{}
	s.latency = 0
	s.remaining = s.opts.RateLimit
}

// SetLatency delays every answer by d.
func (s *Server) SetLatency(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.latency = d
}

// SetRemaining sets what is left of the rate-limit budget.
func (s *Server) SetRemaining(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.remaining = n
}

// Request is one request the server received.
type Request = servetest.Request[Route]

// SHA is a stable fake commit SHA for a name.
func SHA(name string) string {
	sum := sha1.Sum([]byte(name))
	return hex.EncodeToString(sum[:])
}

func uuidOf(s string) string {
	h := SHA(s)
	return fmt.Sprintf("%s-%s-%s-%s-%s", h[:8], h[8:12], h[12:16], h[16:20], h[20:32])
}
