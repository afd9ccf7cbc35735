// Package servetest is what the fake API servers of connector tests
// (bitbuckettest, gitlabtest) share: a server on a loopback port whose
// address survives Down and Up (an outage the client must ride out), a
// Close that waits for every handler (so that goleak finds none), a
// channel slow handlers give up on at Close, and injected faults counted
// per route.
package servetest

import (
	"net"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"
)

// Server is one running fake.
type Server struct {
	tb      testing.TB
	name    string
	handler http.HandlerFunc
	addr    string // host:port, kept across Down and Up

	life    sync.Mutex // guards hs and served
	hs      *http.Server
	served  chan struct{} // closed when hs.Serve returns
	release chan struct{} // closed at Close: slow handlers return
	closed  bool

	hmu      sync.Mutex // orders handlers.Add before Close's Wait
	handlers sync.WaitGroup
	stopping bool
}

// Start serves h on a loopback port until the end of the test. name
// prefixes its fatal errors ("gitlabtest").
func Start(tb testing.TB, name string, h http.HandlerFunc) *Server {
	tb.Helper()
	s := &Server{tb: tb, name: name, handler: h, release: make(chan struct{})}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("%s: listen: %v", name, err)
	}
	s.addr = ln.Addr().String()
	s.serve(ln)
	tb.Cleanup(s.Close)
	return s
}

// Addr is the server's host:port.
func (s *Server) Addr() string { return s.addr }

// Released is closed at Close: a handler that waits (latency, a slow
// fault) returns then.
func (s *Server) Released() <-chan struct{} { return s.release }

// Client is an HTTP client for the fake whose idle connections are closed
// at the end of the test, so that no keep-alive goroutine outlives it.
func (s *Server) Client() *http.Client {
	tr := &http.Transport{Proxy: nil}
	s.tb.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

func (s *Server) serve(ln net.Listener) {
	hs := &http.Server{Handler: http.HandlerFunc(s.handle), ReadHeaderTimeout: 10 * time.Second}
	done := make(chan struct{})
	s.hs, s.served = hs, done
	go func() {
		defer close(done)
		_ = hs.Serve(ln)
	}()
}

func (s *Server) handle(w http.ResponseWriter, r *http.Request) {
	if !s.enter() {
		return
	}
	defer s.handlers.Done()
	s.handler(w, r)
}

// Down stops accepting connections and drops the open ones: clients get
// "connection refused" until Up. The state is kept.
func (s *Server) Down() {
	s.life.Lock()
	defer s.life.Unlock()
	if s.hs == nil {
		return
	}
	_ = s.hs.Close()
	<-s.served
	s.hs = nil
}

// Up listens again on the same address after Down.
func (s *Server) Up() {
	s.life.Lock()
	defer s.life.Unlock()
	if s.hs != nil || s.closed {
		return
	}
	ln, err := net.Listen("tcp", s.addr)
	if err != nil {
		s.tb.Fatalf("%s: listen again on %s: %v", s.name, s.addr, err)
	}
	s.serve(ln)
}

// Close stops the server for good and waits for its handlers. It runs at
// the end of the test; calling it earlier is allowed.
func (s *Server) Close() {
	s.Down()
	s.life.Lock()
	if !s.closed {
		s.closed = true
		close(s.release)
	}
	s.life.Unlock()
	s.hmu.Lock()
	s.stopping = true
	s.hmu.Unlock()
	s.handlers.Wait()
}

// enter counts a handler in, unless the server is closing.
func (s *Server) enter() bool {
	s.hmu.Lock()
	defer s.hmu.Unlock()
	if s.stopping {
		return false
	}
	s.handlers.Add(1)
	return true
}

// Fault is an injected failure of a route.
type Fault struct {
	Status int
	// Body is the JSON body; empty: the fake's error body with the
	// status text.
	Body   string
	Header http.Header
	// Slow never answers: the handler waits until the client gives up.
	Slow bool
	// After lets this many requests of the route through first.
	After int
	// Times fails this many requests, then the fault is gone; 0 fails
	// until cleared.
	Times int
	// Applied performs a write before answering with the fault: the
	// provider did the work and the answer was lost on the way back (a
	// proxy's 502, a timeout), the case that duplicates a comment when a
	// client retries without looking first.
	Applied bool
}

// Faults are the faults injected per route; the fake guards them with
// its own lock.
type Faults[R comparable] map[R]*Fault

// Take returns the fault that applies to route now (route's own, else
// all's), counting down its After and Times; nil when none does.
func (fs Faults[R]) Take(route, all R) *Fault {
	key := route
	f := fs[key]
	if f == nil {
		key = all
		f = fs[key]
	}
	if f == nil {
		return nil
	}
	if f.After > 0 {
		f.After--
		return nil
	}
	c := *f
	if f.Times > 0 {
		f.Times--
		if f.Times == 0 {
			delete(fs, key)
		}
	}
	return &c
}

// Request is one request a fake received.
type Request[R comparable] struct {
	Method string
	URI    string // as sent: path (escapes kept) and query
	Route  R      // the zero R when it matched none
	Header http.Header
	Body   []byte
}

// Ledger counts what a fake received and what its writes changed, for
// tests to assert on (a retry must not write twice).
type Ledger[R comparable] struct {
	writeRoutes []R

	mu       sync.Mutex
	seen     []Request[R]
	requests map[R]int
	writes   map[R]int
}

// NewLedger is an empty ledger; writeRoutes are the routes that write.
func NewLedger[R comparable](writeRoutes []R) *Ledger[R] {
	return &Ledger[R]{writeRoutes: writeRoutes, requests: map[R]int{}, writes: map[R]int{}}
}

// Record notes a request as it arrives, matched to route.
func (l *Ledger[R]) Record(r *http.Request, route R, body []byte) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.seen = append(l.seen, Request[R]{Method: r.Method, URI: r.RequestURI, Route: route, Header: r.Header.Clone(), Body: body})
	l.requests[route]++
}

// Serve runs serve and, when route writes and serve answers 2xx, counts
// the write.
func (l *Ledger[R]) Serve(w http.ResponseWriter, route R, serve func(http.ResponseWriter)) {
	rec := &statusWriter{ResponseWriter: w}
	serve(rec)
	if slices.Contains(l.writeRoutes, route) && rec.status >= 200 && rec.status < 300 {
		l.mu.Lock()
		l.writes[route]++
		l.mu.Unlock()
	}
}

// Seen returns the requests received so far, in order.
func (l *Ledger[R]) Seen() []Request[R] {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.seen)
}

// Requests is how many requests a route received, failed ones included.
func (l *Ledger[R]) Requests(route R) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.requests[route]
}

// Writes is how many writes succeeded on the given routes (every write
// route when none is given): the calls that changed state, including
// those whose answer a fault replaced (Fault.Applied).
func (l *Ledger[R]) Writes(routes ...R) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(routes) == 0 {
		routes = l.writeRoutes
	}
	n := 0
	for _, r := range routes {
		n += l.writes[r]
	}
	return n
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
