package e2e_test

import (
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"inthub.dev/pkg/connectors/github/githubtest"
)

// crashProxy relays TCP between the processes and the fake GitHub (TLS
// passes through untouched: the processes still verify the fake's
// certificate). Armed, it kills a process right after the fake carried
// out a write on one of the armed routes and before the answer reaches
// the process: the window in which a crash repeats a request whose effect
// already happened, which only finding what was posted keeps single.
// Waiting for that window by polling from outside hits it by luck; the
// proxy hits it every time.
type crashProxy struct {
	ln     net.Listener
	target string
	gh     *githubtest.Server

	mu    sync.Mutex
	trap  *trap
	conns map[net.Conn]struct{}
}

// trap is one armed crash.
type trap struct {
	routes []githubtest.Route
	base   int // writes on routes when armed
	kill   func() error
	fired  chan error
	once   sync.Once
}

func (tr *trap) writes(gh *githubtest.Server) int {
	n := 0
	for _, r := range tr.routes {
		n += gh.Writes(r)
	}
	return n
}

func newCrashProxy(tb testing.TB, gh *githubtest.Server) *crashProxy {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	p := &crashProxy{ln: ln, target: gh.Addr(), gh: gh, conns: map[net.Conn]struct{}{}}
	var wg sync.WaitGroup
	wg.Go(func() { p.serve(&wg) })
	tb.Cleanup(func() {
		ln.Close()
		p.mu.Lock()
		for c := range p.conns {
			c.Close()
		}
		p.mu.Unlock()
		wg.Wait()
	})
	return p
}

func (p *crashProxy) port() string {
	_, port, _ := net.SplitHostPort(p.ln.Addr().String())
	return port
}

// arm sets a trap: the next write on one of routes calls kill before its
// answer is relayed. The channel reports kill's error once it fired.
func (p *crashProxy) arm(kill func() error, routes ...githubtest.Route) <-chan error {
	tr := &trap{routes: routes, kill: kill, fired: make(chan error, 1)}
	tr.base = tr.writes(p.gh)
	p.mu.Lock()
	p.trap = tr
	p.mu.Unlock()
	return tr.fired
}

func (p *crashProxy) serve(wg *sync.WaitGroup) {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		wg.Go(func() { p.relay(c) })
	}
}

func (p *crashProxy) track(cs ...net.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range cs {
		p.conns[c] = struct{}{}
	}
}

func (p *crashProxy) untrack(cs ...net.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range cs {
		delete(p.conns, c)
		c.Close()
	}
}

func (p *crashProxy) relay(client net.Conn) {
	server, err := net.Dial("tcp", p.target)
	if err != nil {
		client.Close()
		return
	}
	p.track(client, server)
	defer p.untrack(client, server)
	go func() {
		_, _ = io.Copy(server, client)
		server.Close()
	}()
	buf := make([]byte, 32<<10)
	for {
		n, err := server.Read(buf)
		if n > 0 {
			if p.spring() {
				return // the process is dead; its answer is dropped
			}
			if _, werr := client.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			if !errors.Is(err, io.EOF) {
				client.Close()
			}
			return
		}
	}
}

// spring fires an armed trap when a write on its routes was carried out.
// The fake counts a write just after it sent the answer, so it waits a
// moment for the count before it lets an answer through.
func (p *crashProxy) spring() bool {
	p.mu.Lock()
	tr := p.trap
	p.mu.Unlock()
	if tr == nil {
		return false
	}
	deadline := time.Now().Add(20 * time.Millisecond)
	for tr.writes(p.gh) == tr.base {
		if time.Now().After(deadline) {
			return false
		}
		<-time.After(200 * time.Microsecond)
	}
	fired := false
	tr.once.Do(func() {
		p.mu.Lock()
		p.trap = nil
		p.mu.Unlock()
		tr.fired <- tr.kill()
		fired = true
	})
	return fired
}
