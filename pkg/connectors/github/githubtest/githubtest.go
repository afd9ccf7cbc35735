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
//     violation.
//
// The server speaks TLS with its own certificate for Options.Hosts;
// Client returns an HTTP client that resolves those names to the server
// and trusts the certificate, so code under test uses its real URLs
// (https://api.github.com/, https://ghe.example.com/api/v3/). Faults are
// injected per route with Fail.
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
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
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
	// Repos are the installation's repositories (three by default).
	Repos []Repo
}

// Repo is a repository the installation can see.
type Repo struct {
	ID            int64
	FullName      string // owner/name
	Private       bool
	DefaultBranch string
	Branches      []string
	Tags          []string
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
	// RouteAll makes Fail apply to every route.
	RouteAll Route = "*"
)

// Fault is an injected answer.
type Fault struct {
	Status  int
	Message string
	DocURL  string
	Header  http.Header
	// Slow never answers: the handler waits until the client gives up.
	Slow bool
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
	remaining   int
	reset       time.Time
	requests    map[Route]int
	hostHits    map[string]int
	exchanges   int
	jwtsSeen    int
	violations  []string
	tokenSerial int
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
		remaining: o.RateLimit,
		reset:     time.Now().Add(time.Hour).Truncate(time.Second),
		requests:  map[Route]int{},
		hostHits:  map[string]int{},
	}
	cert, pool := selfSigned(tb, o.Hosts)
	s.pool = pool
	s.srv = httptest.NewUnstartedServer(s.routes())
	// Refused handshakes (the TLS fault tests) are expected: not noise
	// for the test log.
	s.srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	s.srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	s.srv.StartTLS()
	tb.Cleanup(s.Close)
	return s
}

// DefaultRepos are three repositories of two owners.
func DefaultRepos() []Repo {
	return []Repo{
		{ID: 101, FullName: "acme/api", Private: true, DefaultBranch: "main",
			Branches: []string{"main", "develop", "feature/x"}, Tags: []string{"v1.0.0", "v1.1.0"}},
		{ID: 102, FullName: "acme/web", DefaultBranch: "main", Branches: []string{"main"}},
		{ID: 103, FullName: "other/lib", DefaultBranch: "trunk", Branches: []string{"trunk"}, Tags: []string{"v0.1.0"}},
	}
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
	return &http.Client{Transport: tr}
}

// DialContext connects the fake's host names to the server, for clients
// built by the test (one that does not trust the certificate, say).
func (s *Server) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	if !slices.Contains(s.opts.Hosts, host) {
		return nil, &net.OpError{Op: "dial", Net: network, Err: &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}}
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

// Clear removes every injected fault.
func (s *Server) Clear() {
	s.mu.Lock()
	defer s.mu.Unlock()
	clear(s.faults)
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

// Requests counts requests that reached route.
func (s *Server) Requests(route Route) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.requests[route]
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

// route counts the request and answers an injected fault instead of h.
func (s *Server) route(rt Route, h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.requests[rt]++
		s.hostHits[hostOnly(r.Host)]++
		f, failing := s.faults[rt]
		if !failing {
			f, failing = s.faults[RouteAll]
		}
		s.mu.Unlock()
		if !failing {
			h(w, r)
			return
		}
		if f.Slow {
			select {
			case <-r.Context().Done():
			case <-s.done:
			}
			return
		}
		s.headers(w)
		for k, vs := range f.Header {
			for _, v := range vs {
				w.Header().Add(k, v)
			}
		}
		if f.Status >= 300 && f.Status < 400 {
			w.WriteHeader(f.Status)
			return
		}
		writeError(w, f.Status, f.Message, f.DocURL)
	}
}

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
		"permissions":          map[string]string{"contents": "read", "metadata": "read"},
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
	body := map[string]any{"message": msg}
	if doc != "" {
		body["documentation_url"] = doc
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
