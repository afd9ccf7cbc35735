package natstest

import (
	"errors"
	"io"
	"net"
	"sync"
)

// link is a TCP relay that carries the route connections one cluster node
// opens to another. Cutting it closes every connection it carries and
// refuses new ones until it is healed: both servers stay up and see their
// route drop, as they would on a network partition, which a restart or a
// Shutdown cannot show (the isolated node keeps its in-memory Raft state
// and may still believe it leads).
type link struct {
	target string
	ln     net.Listener

	mu    sync.Mutex
	cut   bool
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
}

func newLink(target string) (*link, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	l := &link{target: target, ln: ln, conns: map[net.Conn]struct{}{}}
	l.wg.Add(1)
	go l.accept()
	return l, nil
}

func (l *link) addr() string { return l.ln.Addr().String() }

func (l *link) accept() {
	defer l.wg.Done()
	for {
		c, err := l.ln.Accept()
		if err != nil {
			return // listener closed
		}
		l.mu.Lock()
		if l.cut {
			l.mu.Unlock()
			c.Close()
			continue
		}
		l.wg.Add(1)
		l.mu.Unlock()
		go l.relay(c)
	}
}

func (l *link) relay(in net.Conn) {
	defer l.wg.Done()
	out, err := net.Dial("tcp", l.target)
	if err != nil {
		in.Close() // the target is down: the dialing server retries
		return
	}
	if !l.track(in, out) {
		in.Close()
		out.Close()
		return
	}
	defer l.untrack(in, out)
	done := make(chan struct{}, 2)
	pipe := func(dst, src net.Conn) {
		_, _ = io.Copy(dst, src)
		// One direction ended: end both, so neither server waits on a
		// half-open route until its ping timeout.
		dst.Close()
		src.Close()
		done <- struct{}{}
	}
	go pipe(out, in)
	go pipe(in, out)
	<-done
	<-done
}

func (l *link) track(cs ...net.Conn) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.cut || l.conns == nil {
		return false
	}
	for _, c := range cs {
		l.conns[c] = struct{}{}
	}
	return true
}

func (l *link) untrack(cs ...net.Conn) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, c := range cs {
		delete(l.conns, c)
	}
}

// setCut cuts (true) or heals (false) the link. Cutting closes the
// connections it carries.
func (l *link) setCut(cut bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.cut = cut
	if cut {
		for c := range l.conns {
			c.Close()
		}
	}
}

// close stops the relay and waits for its goroutines.
func (l *link) close() error {
	l.mu.Lock()
	l.cut = true
	for c := range l.conns {
		c.Close()
	}
	l.conns = nil
	l.mu.Unlock()
	err := l.ln.Close()
	l.wg.Wait()
	if errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}
