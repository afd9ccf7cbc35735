// Package githubtest is a fake GitHub REST API for tests of code that
// acts as a GitHub App. It enforces the rules a real GitHub enforces and a
// lenient fake would let slide:
//
//   - GET app and POST app/installations/{id}/access_tokens need an app JWT
//     (RS256, signed with the app's key, iss = the app id, exp at most ten
//     minutes ahead, iat not in the future);
//   - installation endpoints need "token <installation token>", a token
//     this server issued to that installation and that has not expired;
//   - every answer carries x-ratelimit-limit/remaining/used/reset, and
//     installation calls spend the budget (403 with remaining 0 when it is
//     spent);
//   - lists are paginated with per_page/page and a Link header;
//   - the API lives under Options.Prefix only ("" as api.github.com,
//     "/api/v3" as GitHub Enterprise Server): a request outside it, such as
//     an origin-root /app on a GHES, is answered 404 and recorded as a
//     violation;
//   - the write endpoints of annotations (issue comments, commit statuses,
//     check runs; see annotations.go) keep their state in memory and
//     refuse what GitHub refuses with 422: a comment body over 65,536
//     characters, a status description over 140 characters or the 1,001st
//     status of a sha and context, more than 50 check-run annotations in
//     one call, a check-run summary or text over 65,535 characters;
//   - GitHub's secondary rate limit: Penalize (or the rule of
//     Options.WritesPerMinute / WritesPerHour) makes every request answer
//     403 with Retry-After for a while, and counts the requests that came
//     anyway (PenaltyViolations).
//
// The server speaks TLS with its own certificate for Options.Hosts;
// Client returns an HTTP client that resolves those names to the server
// and trusts the certificate, so code under test uses its real URLs
// (https://api.github.com/, https://ghe.example.com/api/v3/). Faults are
// injected per route with Fail or FailRandomly; Down and Up take the
// server off the network and back with its state kept; SetLatency delays
// every answer.
package githubtest

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log"
	"math/big"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	jwt "github.com/golang-jwt/jwt/v5"
)

// Options configure a fake. Zero values get the defaults noted.
type Options struct {
	AppID          int64 // 1
	InstallationID int64 // 2
	// Prefix is the API root's path: "" (api.github.com) or "/api/v3" (GHES).
	Prefix string
	// Hosts are the names Client resolves to this server and that its
	// certificate covers. Default: api.github.com without a prefix,
	// ghe.example.com with one.
	Hosts []string
	// TokenTTL is the lifetime of installation tokens (1h, as on GitHub).
	TokenTTL time.Duration
	// RateLimit is the installation's hourly budget (5000).
	RateLimit int
	// Repos are the installation's repositories (DefaultRepos by default).
	Repos []Repo

	// WritesPerMinute and WritesPerHour, when positive, enforce GitHub's
	// secondary limit on content-creating requests (POST, PATCH, PUT,
	// DELETE): the request that goes past either starts a penalty of
	// Penalty, as Penalize does, and is answered 403 itself. GitHub's
	// documented numbers are 80 a minute and 500 an hour. Zero: no rule.
	WritesPerMinute int
	WritesPerHour   int
	// Penalty is how long a broken rule blocks the installation (1 min).
	Penalty time.Duration
	// Seed seeds FailRandomly's choices, so a failing run can be repeated (1).
	Seed uint64
}

// Repo is a repository the installation can see.
type Repo struct {
	ID            int64
	FullName      string // owner/name
	Private       bool
	DefaultBranch string
	Branches      []string
	Tags          []string
	// PullRequests are the numbers of the repository's pull requests;
	// comments on any other number are answered 404, as GitHub does.
	PullRequests []int
}

// Route names an endpoint, for Fail and Requests.
type Route string

const (
	RouteApp          Route = "GET app"
	RouteAccessTokens Route = "POST app/installations/{id}/access_tokens"
	RouteRepos        Route = "GET installation/repositories"
	RouteRateLimit    Route = "GET rate_limit"
	RouteBranches     Route = "GET repos/{owner}/{repo}/branches"
	RouteTags         Route = "GET repos/{owner}/{repo}/tags"

	// Annotation routes (annotations.go).
	RouteListComments    Route = "GET repos/{owner}/{repo}/issues/{number}/comments"
	RouteCreateComment   Route = "POST repos/{owner}/{repo}/issues/{number}/comments"
	RouteEditComment     Route = "PATCH repos/{owner}/{repo}/issues/comments/{id}"
	RouteCreateStatus    Route = "POST repos/{owner}/{repo}/statuses/{sha}"
	RouteListStatuses    Route = "GET repos/{owner}/{repo}/commits/{ref}/statuses"
	RouteCreateCheckRun  Route = "POST repos/{owner}/{repo}/check-runs"
	RouteUpdateCheckRun  Route = "PATCH repos/{owner}/{repo}/check-runs/{id}"
	RouteListCheckRuns   Route = "GET repos/{owner}/{repo}/commits/{ref}/check-runs"
	RouteListAnnotations Route = "GET repos/{owner}/{repo}/check-runs/{id}/annotations"

	// RouteAll makes Fail and FailRandomly apply to every route, and
	// Requests and Writes count over every route.
	RouteAll Route = "*"
)

// WriteRoutes are the routes that create or change something.
func WriteRoutes() []Route {
	return []Route{RouteCreateComment, RouteEditComment, RouteCreateStatus, RouteCreateCheckRun, RouteUpdateCheckRun}
}

// Fault is an injected answer.
type Fault struct {
	Status  int
	Message string
	DocURL  string
	// Errors are validation errors, as GitHub lists them with a 422.
	Errors []string
	// Header is set on the answer, over the fake's own headers (the
	// rate-limit headers included).
	Header http.Header
	// Slow never answers: the handler waits until the client gives up.
	Slow bool
	// Reset drops the connection without an answer, as a crashing
	// server or a proxy does.
	Reset bool
}

// Unauthorized is GitHub's answer to a bad JWT or token.
func Unauthorized() Fault {
	return Fault{Status: http.StatusUnauthorized, Message: "Bad credentials", DocURL: "https://docs.github.com/rest"}
}

// Forbidden is a missing permission.
func Forbidden() Fault {
	return Fault{Status: http.StatusForbidden, Message: "Resource not accessible by integration",
		DocURL: "https://docs.github.com/rest/apps/installations"}
}

// NotFound is GitHub's 404.
func NotFound() Fault {
	return Fault{Status: http.StatusNotFound, Message: "Not Found", DocURL: "https://docs.github.com/rest"}
}

// ServerError is a 500 (GitHub's own failures are 500, 502 and 503).
func ServerError(status int) Fault {
	if status == 0 {
		status = http.StatusInternalServerError
	}
	return Fault{Status: status, Message: http.StatusText(status)}
}

// SecondaryLimit is GitHub's secondary rate limit: 403 with Retry-After,
// while the primary budget is not spent.
func SecondaryLimit(retryAfter time.Duration) Fault {
	return Fault{
		Status:  http.StatusForbidden,
		Message: "You have exceeded a secondary rate limit. Please wait a few minutes before you try again.",
		DocURL:  "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api#about-secondary-rate-limits",
		Header:  http.Header{"Retry-After": {strconv.Itoa(int(retryAfter / time.Second))}},
	}
}

// TooManyRequests is a 429 with Retry-After.
func TooManyRequests(retryAfter time.Duration) Fault {
	return Fault{Status: http.StatusTooManyRequests, Message: "Too Many Requests",
		Header: http.Header{"Retry-After": {strconv.Itoa(int(retryAfter / time.Second))}}}
}

// Slow is an endpoint that does not answer in time.
func Slow() Fault { return Fault{Slow: true} }

// ConnectionReset drops the connection instead of answering.
func ConnectionReset() Fault { return Fault{Reset: true} }

// PrimaryLimit is an exhausted hourly budget as GitHub reports it: status
// (403, or 429 as some GitHub endpoints and proxies answer) with
// x-ratelimit-remaining 0 and the reset at reset.
func PrimaryLimit(status int, reset time.Time) Fault {
	return Fault{Status: status, Message: "API rate limit exceeded for installation.",
		DocURL: "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api#about-the-primary-rate-limit",
		Header: http.Header{
			"X-Ratelimit-Remaining": {"0"},
			"X-Ratelimit-Used":      {"5000"},
			"X-Ratelimit-Reset":     {strconv.FormatInt(reset.Unix(), 10)},
		}}
}

// Invalid is GitHub's 422 with one validation error, as it refuses bad
// input.
func Invalid(message string) Fault {
	return Fault{Status: http.StatusUnprocessableEntity, Message: "Validation Failed",
		DocURL: "https://docs.github.com/rest", Errors: []string{message}}
}

// Redirect answers 302 to location.
func Redirect(location string) Fault {
	return Fault{Status: http.StatusFound, Header: http.Header{"Location": {location}}}
}

// Server is a running fake.
type Server struct {
	tb     testing.TB
	opts   Options
	key    *rsa.PrivateKey
	keyPEM []byte
	srv    *httptest.Server
	pool   *x509.CertPool
	done   chan struct{}
	close  sync.Once

	mu          sync.Mutex
	tokens      map[string]time.Time // installation token → expiry
	lastToken   string
	faults      map[Route]Fault
	random      map[Route]randomFault
	rng         *mrand.Rand
	remaining   int
	reset       time.Time
	requests    map[Route]int
	writes      map[Route]int
	hostHits    map[string]int
	exchanges   int
	jwtsSeen    int
	violations  []string
	tokenSerial int
	latency     time.Duration
	down        bool
	transports  []*http.Transport // Client's, whose idle connections Down closes

	penaltyUntil      time.Time
	penaltyViolations int
	penalties         int
	writeTimes        []time.Time // content-creating requests of the last hour

	ann annotationState
	act actionsState // actions.go
}

// randomFault fails a share of a route's calls.
type randomFault struct {
	p float64
	f Fault
}

// New starts a fake and stops it at the end of the test.
func New(tb testing.TB, o Options) *Server {
	tb.Helper()
	if o.AppID == 0 {
		o.AppID = 1
	}
	if o.InstallationID == 0 {
		o.InstallationID = 2
	}
	o.Prefix = strings.TrimRight(o.Prefix, "/")
	if len(o.Hosts) == 0 {
		o.Hosts = []string{"api.github.com"}
		if o.Prefix != "" {
			o.Hosts = []string{"ghe.example.com"}
		}
	}
	if o.TokenTTL == 0 {
		o.TokenTTL = time.Hour
	}
	if o.RateLimit == 0 {
		o.RateLimit = 5000
	}
	if o.Repos == nil {
		o.Repos = DefaultRepos()
	}
	if o.Penalty == 0 {
		o.Penalty = time.Minute
	}
	if o.Seed == 0 {
		o.Seed = 1
	}
	// 2048 bits as GitHub issues; generating it costs ~100ms per fake.
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		tb.Fatalf("githubtest: app key: %v", err)
	}
	s := &Server{
		tb:        tb,
		opts:      o,
		key:       key,
		keyPEM:    pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}),
		done:      make(chan struct{}),
		tokens:    map[string]time.Time{},
		faults:    map[Route]Fault{},
		random:    map[Route]randomFault{},
		rng:       mrand.New(mrand.NewPCG(o.Seed, o.Seed)),
		remaining: o.RateLimit,
		reset:     time.Now().Add(time.Hour).Truncate(time.Second),
		requests:  map[Route]int{},
		writes:    map[Route]int{},
		hostHits:  map[string]int{},
		ann:       newAnnotationState(),
	}
	cert, pool := selfSigned(tb, o.Hosts)
	s.pool = pool
	s.srv = httptest.NewUnstartedServer(s.offline(s.routes()))
	// Refused handshakes (the TLS fault tests) are expected: not noise
	// for the test log.
	s.srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	s.srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	s.srv.StartTLS()
	tb.Cleanup(s.Close)
	return s
}

// DefaultRepos are three repositories of two owners: acme/api with pull
// requests 1 to 100, acme/web with 1 to 3, other/lib with none.
func DefaultRepos() []Repo {
	return []Repo{
		{ID: 101, FullName: "acme/api", Private: true, DefaultBranch: "main",
			Branches: []string{"main", "develop", "feature/x"}, Tags: []string{"v1.0.0", "v1.1.0"}, PullRequests: numbers(1, 100)},
		{ID: 102, FullName: "acme/web", DefaultBranch: "main", Branches: []string{"main"}, PullRequests: numbers(1, 3)},
		{ID: 103, FullName: "other/lib", DefaultBranch: "trunk", Branches: []string{"trunk"}, Tags: []string{"v0.1.0"}},
	}
}

func numbers(from, to int) []int {
	out := make([]int, 0, to-from+1)
	for i := from; i <= to; i++ {
		out = append(out, i)
	}
	return out
}

// Close stops the server; a slow handler returns at once.
func (s *Server) Close() {
	s.close.Do(func() {
		close(s.done)
		s.srv.Close()
	})
}

// KeyPEM is the app's private key (PKCS#1 PEM, as GitHub issues it).
func (s *Server) KeyPEM() []byte { return slices.Clone(s.keyPEM) }

// AppID and InstallationID are the ids the fake knows.
func (s *Server) AppID() int64          { return s.opts.AppID }
func (s *Server) InstallationID() int64 { return s.opts.InstallationID }

// Root is the URL an operator would type: https://<host> (the GHES root
// for a prefixed fake; api.github.com's for one at the root).
func (s *Server) Root() string { return "https://" + s.opts.Hosts[0] }

// APIRoot is the API root the connector should call.
func (s *Server) APIRoot() string { return "https://" + s.opts.Hosts[0] + s.opts.Prefix + "/" }

// Client is an HTTP client that reaches this server under its host names
// and trusts its certificate. Any other name fails as unresolvable.
func (s *Server) Client() *http.Client {
	tr := &http.Transport{
		Proxy:           nil,
		DialContext:     s.DialContext,
		TLSClientConfig: &tls.Config{RootCAs: s.pool, MinVersion: tls.VersionTLS12},
	}
	s.tb.Cleanup(tr.CloseIdleConnections)
	s.mu.Lock()
	s.transports = append(s.transports, tr)
	s.mu.Unlock()
	return &http.Client{Transport: tr}
}

// DialContext connects the fake's host names to the server, for clients
// built by the test (one that does not trust the certificate, say). While
// the server is Down it refuses the connection.
func (s *Server) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	if !slices.Contains(s.opts.Hosts, host) {
		return nil, &net.OpError{Op: "dial", Net: network, Err: &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}}
	}
	s.mu.Lock()
	down := s.down
	s.mu.Unlock()
	if down {
		return nil, &net.OpError{Op: "dial", Net: network, Addr: s.srv.Listener.Addr(),
			Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}
	}
	var d net.Dialer
	return d.DialContext(ctx, "tcp", s.srv.Listener.Addr().String())
}

// Addr is the listener's address (host:port), for clients that dial it
// their own way.
func (s *Server) Addr() string { return s.srv.Listener.Addr().String() }

// Fail makes route (or every route, RouteAll) answer f until Clear.
func (s *Server) Fail(route Route, f Fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults[route] = f
}

// FailRandomly makes a share p (0 to 1) of route's requests (or every
// route's, RouteAll) answer f, chosen by a generator seeded with
// Options.Seed, until Clear. A route with a Fail fault answers that.
func (s *Server) FailRandomly(route Route, p float64, f Fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.random[route] = randomFault{p: p, f: f}
}

// Clear removes every injected fault (Fail and FailRandomly), not a
// penalty.
func (s *Server) Clear() {
	s.mu.Lock()
	defer s.mu.Unlock()
	clear(s.faults)
	clear(s.random)
}

// SetLatency delays every answer by d (0: none), for benchmarks against a
// provider as far away as GitHub is.
func (s *Server) SetLatency(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.latency = d
}

// Down takes the server off the network: connections through Client or
// DialContext are refused (the idle ones of Client's transports are
// closed, so the next request dials), and requests on connections still
// open are dropped unanswered. Its state (comments, statuses, check runs,
// tokens) is kept for Up.
func (s *Server) Down() {
	s.mu.Lock()
	s.down = true
	transports := slices.Clone(s.transports)
	s.mu.Unlock()
	for _, tr := range transports {
		tr.CloseIdleConnections()
	}
	s.srv.CloseClientConnections()
}

// Up serves again after Down, with the state Down kept.
func (s *Server) Up() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.down = false
}

// Penalize starts GitHub's secondary rate limit for d: every request but
// the app's own (GET app, the token exchange) is answered 403 with the
// documented message and Retry-After (the seconds left), and counted in
// PenaltyViolations.
func (s *Server) Penalize(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.penalize(time.Now(), d)
}

func (s *Server) penalize(now time.Time, d time.Duration) {
	if until := now.Add(d); until.After(s.penaltyUntil) {
		s.penaltyUntil = until
	}
	s.penalties++
}

// PenaltyViolations counts the requests that arrived during a penalty:
// each is one a client should not have sent.
func (s *Server) PenaltyViolations() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.penaltyViolations
}

// Penalties counts the penalties started (by Penalize or by the rule of
// Options.WritesPerMinute / WritesPerHour).
func (s *Server) Penalties() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.penalties
}

// PenaltyUntil is when the current penalty ends (zero or past: none).
func (s *Server) PenaltyUntil() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.penaltyUntil
}

// SetRemaining sets the installation's remaining rate-limit budget.
func (s *Server) SetRemaining(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.remaining = n
}

// SetTokenTTL changes the lifetime of tokens issued from now on.
func (s *Server) SetTokenTTL(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.opts.TokenTTL = d
}

// Exchanges counts installation tokens issued.
func (s *Server) Exchanges() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.exchanges
}

// AppAuths counts requests that a valid app JWT authenticated.
func (s *Server) AppAuths() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.jwtsSeen
}

// LastToken is the installation token most recently presented on an
// installation endpoint.
func (s *Server) LastToken() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lastToken
}

// Requests counts requests that reached route (every route: RouteAll),
// answered or failed.
func (s *Server) Requests(route Route) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if route == RouteAll {
		n := 0
		for _, v := range s.requests {
			n += v
		}
		return n
	}
	return s.requests[route]
}

// Writes counts the requests on route (every write route: RouteAll) that
// the fake carried out: answered 2xx, so something was created or changed.
func (s *Server) Writes(route Route) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if route == RouteAll {
		n := 0
		for _, v := range s.writes {
			n += v
		}
		return n
	}
	return s.writes[route]
}

// HostRequests counts requests that arrived for host.
func (s *Server) HostRequests(host string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.hostHits[host]
}

// Violations lists requests made outside the API root.
func (s *Server) Violations() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.violations)
}

func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	p := s.opts.Prefix
	mux.HandleFunc("GET "+p+"/app", s.route(RouteApp, s.app))
	mux.HandleFunc("POST "+p+"/app/installations/{id}/access_tokens", s.route(RouteAccessTokens, s.accessToken))
	mux.HandleFunc("GET "+p+"/installation/repositories", s.route(RouteRepos, s.installation(s.repos)))
	mux.HandleFunc("GET "+p+"/rate_limit", s.route(RouteRateLimit, s.installation(s.rateLimit)))
	mux.HandleFunc("GET "+p+"/repos/{owner}/{repo}/branches", s.route(RouteBranches, s.installation(s.branches)))
	mux.HandleFunc("GET "+p+"/repos/{owner}/{repo}/tags", s.route(RouteTags, s.installation(s.tags)))
	s.annotationRoutes(mux)
	s.actionsRoutes(mux)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.violations = append(s.violations, r.Method+" "+r.URL.Path)
		s.hostHits[hostOnly(r.Host)]++
		s.mu.Unlock()
		s.headers(w)
		writeError(w, http.StatusNotFound, "Not Found", "https://docs.github.com/rest")
	})
	return mux
}

// route counts the request and answers, in this order: after the latency,
// a secondary-limit penalty (or one the request starts by breaking the
// write rule), an injected fault, or h.
func (s *Server) route(rt Route, h http.HandlerFunc) http.HandlerFunc {
	write := slices.Contains(WriteRoutes(), rt)
	app := rt == RouteApp || rt == RouteAccessTokens
	return func(w http.ResponseWriter, r *http.Request) {
		if !s.wait(r.Context(), s.currentLatency()) {
			return
		}
		now := time.Now()
		s.mu.Lock()
		s.requests[rt]++
		s.hostHits[hostOnly(r.Host)]++
		penalised := false
		if !app {
			if now.Before(s.penaltyUntil) {
				s.penaltyViolations++
				penalised = true
			} else if write && s.breaksWriteRule(now) {
				s.penalize(now, s.opts.Penalty)
				penalised = true
			}
		}
		until := s.penaltyUntil
		f, failing := s.faults[rt]
		if !failing {
			f, failing = s.faults[RouteAll]
		}
		if !failing && !penalised {
			rf, ok := s.random[rt]
			if !ok {
				rf, ok = s.random[RouteAll]
			}
			failing = ok && s.rng.Float64() < rf.p
			f = rf.f
		}
		s.mu.Unlock()
		if penalised {
			f, failing = SecondaryLimit(max(until.Sub(now), time.Second)), true
			// Retry-After is whole seconds, rounded up so a client that
			// honours it does not come back a moment early.
			f.Header.Set("Retry-After", strconv.Itoa(int((until.Sub(now)+time.Second-1)/time.Second)))
		}
		if !failing {
			sw := &statusWriter{ResponseWriter: w}
			h(sw, r)
			if write && sw.status >= 200 && sw.status < 300 {
				s.mu.Lock()
				s.writes[rt]++
				s.mu.Unlock()
			}
			return
		}
		s.answerFault(w, r, f)
	}
}

// breaksWriteRule records a content-creating request at now and reports
// whether it goes past Options.WritesPerMinute or WritesPerHour.
func (s *Server) breaksWriteRule(now time.Time) bool {
	if s.opts.WritesPerMinute <= 0 && s.opts.WritesPerHour <= 0 {
		return false
	}
	hourAgo, minuteAgo := now.Add(-time.Hour), now.Add(-time.Minute)
	i := 0
	for i < len(s.writeTimes) && !s.writeTimes[i].After(hourAgo) {
		i++
	}
	s.writeTimes = append(s.writeTimes[i:], now)
	lastMinute := 0
	for _, t := range s.writeTimes {
		if t.After(minuteAgo) {
			lastMinute++
		}
	}
	return (s.opts.WritesPerMinute > 0 && lastMinute > s.opts.WritesPerMinute) ||
		(s.opts.WritesPerHour > 0 && len(s.writeTimes) > s.opts.WritesPerHour)
}

func (s *Server) answerFault(w http.ResponseWriter, r *http.Request, f Fault) {
	switch {
	case f.Slow:
		select {
		case <-r.Context().Done():
		case <-s.done:
		}
		// Returning would send an empty 200, which a client still
		// listening (its deadline a hair later than the server noticed)
		// takes for an answer: abort the response instead.
		panic(http.ErrAbortHandler)
	case f.Reset:
		drop(w)
		return
	}
	s.headers(w)
	for k, vs := range f.Header {
		w.Header()[http.CanonicalHeaderKey(k)] = slices.Clone(vs)
	}
	if f.Status >= 300 && f.Status < 400 {
		w.WriteHeader(f.Status)
		return
	}
	writeErrors(w, f.Status, f.Message, f.DocURL, f.Errors)
}

func (s *Server) currentLatency() time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.latency
}

// wait waits d, and reports false when the client or the server gave up
// first.
func (s *Server) wait(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
	case <-s.done:
	}
	return false
}

// offline drops every request while the server is Down, also those on
// connections opened before.
func (s *Server) offline(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		down := s.down
		s.mu.Unlock()
		if down {
			drop(w)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// drop closes the connection without an answer.
func drop(w http.ResponseWriter) {
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		// Not hijackable (HTTP/2): aborting the handler resets the stream.
		panic(http.ErrAbortHandler)
	}
	conn.Close()
}

// statusWriter remembers the status a handler answered.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (s *Server) headers(w http.ResponseWriter) {
	s.mu.Lock()
	limit, remaining, reset := s.opts.RateLimit, s.remaining, s.reset
	s.mu.Unlock()
	h := w.Header()
	h.Set("X-Ratelimit-Limit", strconv.Itoa(limit))
	h.Set("X-Ratelimit-Remaining", strconv.Itoa(remaining))
	h.Set("X-Ratelimit-Used", strconv.Itoa(limit-remaining))
	h.Set("X-Ratelimit-Reset", strconv.FormatInt(reset.Unix(), 10))
	h.Set("X-Ratelimit-Resource", "core")
	h.Set("X-Github-Api-Version-Selected", "2022-11-28")
}

// checkJWT enforces GitHub's rules for app JWTs.
func (s *Server) checkJWT(w http.ResponseWriter, r *http.Request) bool {
	deny := func(msg string) bool {
		s.headers(w)
		writeError(w, http.StatusUnauthorized, msg, "https://docs.github.com/rest")
		return false
	}
	raw, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok {
		return deny("A JSON web token could not be decoded")
	}
	now := time.Now()
	claims := jwt.MapClaims{}
	_, err := jwt.ParseWithClaims(raw, claims, func(*jwt.Token) (any, error) { return &s.key.PublicKey, nil },
		jwt.WithValidMethods([]string{jwt.SigningMethodRS256.Alg()}),
		jwt.WithExpirationRequired(), jwt.WithIssuedAt(), jwt.WithTimeFunc(func() time.Time { return now }))
	if err != nil {
		return deny("A JSON web token could not be decoded")
	}
	exp, _ := claims.GetExpirationTime()
	iat, _ := claims.GetIssuedAt()
	switch {
	case iat == nil:
		return deny("'Issued at' claim ('iat') must be an Integer representing the time that the assertion was issued.")
	case iat.After(now):
		return deny("'Issued at' claim ('iat') must be an Integer representing a time in the past.")
	case exp.Sub(now) > 10*time.Minute:
		return deny("'Expiration time' claim ('exp') is too far in the future")
	}
	var iss string
	switch v := claims["iss"].(type) {
	case string:
		iss = v
	case float64:
		iss = strconv.FormatInt(int64(v), 10)
	}
	if iss != strconv.FormatInt(s.opts.AppID, 10) {
		return deny("Integration not found")
	}
	s.mu.Lock()
	s.jwtsSeen++
	s.mu.Unlock()
	return true
}

// installation wraps an installation endpoint: a valid installation
// token, and the rate-limit budget (rate_limit itself is free).
func (s *Server) installation(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "token ")
		s.mu.Lock()
		exp, known := s.tokens[tok]
		valid := ok && known && time.Now().Before(exp)
		if valid {
			s.lastToken = tok
		}
		spent := false
		if valid && !strings.HasSuffix(r.URL.Path, "/rate_limit") {
			if s.remaining <= 0 {
				spent = true
			} else {
				s.remaining--
			}
		}
		s.mu.Unlock()
		s.headers(w)
		switch {
		case !valid:
			writeError(w, http.StatusUnauthorized, "Bad credentials", "https://docs.github.com/rest")
		case spent:
			writeError(w, http.StatusForbidden, fmt.Sprintf("API rate limit exceeded for installation ID %d.", s.opts.InstallationID),
				"https://docs.github.com/rest/overview/rate-limits-for-the-rest-api#about-the-primary-rate-limit")
		default:
			h(w, r)
		}
	}
}

func (s *Server) app(w http.ResponseWriter, r *http.Request) {
	if !s.checkJWT(w, r) {
		return
	}
	s.headers(w)
	writeJSON(w, http.StatusOK, map[string]any{
		"id": s.opts.AppID, "slug": "inthub-test", "name": "inthub test",
		"owner":       map[string]any{"login": "acme", "type": "Organization"},
		"permissions": map[string]string{"contents": "read", "metadata": "read", "checks": "write"},
	})
}

func (s *Server) accessToken(w http.ResponseWriter, r *http.Request) {
	if !s.checkJWT(w, r) {
		return
	}
	s.headers(w)
	if r.PathValue("id") != strconv.FormatInt(s.opts.InstallationID, 10) {
		writeError(w, http.StatusNotFound, "Not Found", "https://docs.github.com/rest/apps/apps#create-an-installation-access-token-for-an-app")
		return
	}
	s.mu.Lock()
	s.tokenSerial++
	s.exchanges++
	var b [18]byte
	_, _ = rand.Read(b[:])
	tok := fmt.Sprintf("ghs_%d%s", s.tokenSerial, hex.EncodeToString(b[:]))
	exp := time.Now().Add(s.opts.TokenTTL).UTC().Truncate(time.Second)
	s.tokens[tok] = exp
	s.mu.Unlock()
	writeJSON(w, http.StatusCreated, map[string]any{
		"token": tok, "expires_at": exp.Format(time.RFC3339),
		"permissions": map[string]string{"contents": "read", "metadata": "read", "checks": "write",
			"statuses": "write", "pull_requests": "write", "issues": "write"},
		"repository_selection": "selected",
	})
}

func (s *Server) repos(w http.ResponseWriter, r *http.Request) {
	from, to := paginate(w, r, len(s.opts.Repos))
	out := make([]map[string]any, 0, to-from)
	for _, rp := range s.opts.Repos[from:to] {
		owner, name, _ := strings.Cut(rp.FullName, "/")
		out = append(out, map[string]any{
			"id": rp.ID, "name": name, "full_name": rp.FullName, "private": rp.Private,
			"default_branch": rp.DefaultBranch, "owner": map[string]any{"login": owner},
		})
	}
	writeJSON(w, http.StatusOK, map[string]any{"total_count": len(s.opts.Repos), "repository_selection": "selected", "repositories": out})
}

func (s *Server) rateLimit(w http.ResponseWriter, _ *http.Request) {
	s.mu.Lock()
	core := map[string]any{"limit": s.opts.RateLimit, "remaining": s.remaining, "used": s.opts.RateLimit - s.remaining,
		"reset": s.reset.Unix(), "resource": "core"}
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, map[string]any{
		"resources": map[string]any{
			"core":    core,
			"search":  map[string]any{"limit": 30, "remaining": 30, "used": 0, "reset": s.reset.Unix(), "resource": "search"},
			"graphql": map[string]any{"limit": 5000, "remaining": 5000, "used": 0, "reset": s.reset.Unix(), "resource": "graphql"},
		},
		"rate": core,
	})
}

func (s *Server) repo(w http.ResponseWriter, r *http.Request) (Repo, bool) {
	full := r.PathValue("owner") + "/" + r.PathValue("repo")
	for _, rp := range s.opts.Repos {
		if strings.EqualFold(rp.FullName, full) {
			return rp, true
		}
	}
	writeError(w, http.StatusNotFound, "Not Found", "https://docs.github.com/rest/repos/repos#get-a-repository")
	return Repo{}, false
}

func (s *Server) branches(w http.ResponseWriter, r *http.Request) {
	rp, ok := s.repo(w, r)
	if !ok {
		return
	}
	from, to := paginate(w, r, len(rp.Branches))
	out := make([]map[string]any, 0, to-from)
	for _, b := range rp.Branches[from:to] {
		out = append(out, map[string]any{"name": b, "commit": map[string]any{"sha": SHA(rp.FullName, b)}, "protected": b == rp.DefaultBranch})
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) tags(w http.ResponseWriter, r *http.Request) {
	rp, ok := s.repo(w, r)
	if !ok {
		return
	}
	from, to := paginate(w, r, len(rp.Tags))
	out := make([]map[string]any, 0, to-from)
	for _, t := range rp.Tags[from:to] {
		out = append(out, map[string]any{"name": t, "commit": map[string]any{"sha": SHA(rp.FullName, t)}})
	}
	writeJSON(w, http.StatusOK, out)
}

// SHA is the commit a ref of a fake repository points at.
func SHA(repo, ref string) string {
	sum := sha1.Sum([]byte(repo + "@" + ref))
	return hex.EncodeToString(sum[:])
}

// paginate applies per_page (default 30, at most 100) and page, and sets
// the Link header GitHub sends.
func paginate(w http.ResponseWriter, r *http.Request, n int) (from, to int) {
	q := r.URL.Query()
	per := 30
	if v, err := strconv.Atoi(q.Get("per_page")); err == nil && v > 0 {
		per = min(v, 100)
	}
	page := 1
	if v, err := strconv.Atoi(q.Get("page")); err == nil && v > 0 {
		page = v
	}
	last := max((n+per-1)/per, 1)
	link := func(p int, rel string) string {
		q := url.Values{"per_page": {strconv.Itoa(per)}, "page": {strconv.Itoa(p)}}
		return fmt.Sprintf(`<https://%s%s?%s>; rel="%s"`, r.Host, r.URL.Path, q.Encode(), rel)
	}
	var links []string
	if page < last {
		links = append(links, link(page+1, "next"), link(last, "last"))
	}
	if page > 1 {
		links = append(links, link(1, "first"), link(min(page-1, last), "prev"))
	}
	if len(links) > 0 {
		w.Header().Set("Link", strings.Join(links, ", "))
	}
	from = min((page-1)*per, n)
	return from, min(from+per, n)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, status int, msg, doc string) {
	writeErrors(w, status, msg, doc, nil)
}

// writeErrors answers GitHub's error document; errs are validation errors
// ("errors": [{"resource", "code": "custom", "message"}]).
func writeErrors(w http.ResponseWriter, status int, msg, doc string, errs []string) {
	body := map[string]any{"message": msg}
	if doc != "" {
		body["documentation_url"] = doc
	}
	if len(errs) > 0 {
		list := make([]map[string]string, 0, len(errs))
		for _, e := range errs {
			list = append(list, map[string]string{"code": "custom", "message": e})
		}
		body["errors"] = list
	}
	writeJSON(w, status, body)
}

func hostOnly(hostport string) string {
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		return h
	}
	return hostport
}

// selfSigned makes a certificate for hosts (and 127.0.0.1) that is its
// own authority.
func selfSigned(tb testing.TB, hosts []string) (tls.Certificate, *x509.CertPool) {
	tb.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatalf("githubtest: tls key: %v", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "githubtest"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		DNSNames:              hosts,
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		tb.Fatalf("githubtest: certificate: %v", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		tb.Fatalf("githubtest: certificate: %v", err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, pool
}
