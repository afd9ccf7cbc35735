// Package natstest gives each test its own embedded JetStream server, on its
// own port and temporary store, that the test can stop and restart.
package natstest

import (
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"inthub.dev/pkg/natsembed"
)

// Server wraps an embedded server bound to a test's lifetime.
type Server struct {
	*natsembed.Server
	tb testing.TB
}

// Start starts a server that is shut down when the test ends.
func Start(tb testing.TB) *Server {
	tb.Helper()
	s, err := natsembed.Start(natsembed.Config{StoreDir: tb.TempDir()})
	if err != nil {
		tb.Fatalf("natstest: %v", err)
	}
	tb.Cleanup(s.Stop)
	return &Server{Server: s, tb: tb}
}

// Restart stops and starts the server on the same port and store.
func (s *Server) Restart() {
	s.tb.Helper()
	s.Stop()
	if err := s.Start(); err != nil {
		s.tb.Fatalf("natstest: restart: %v", err)
	}
}

// Connect opens a client that reconnects forever, as services do, and is
// closed when the test ends.
func (s *Server) Connect(opts ...nats.Option) *nats.Conn {
	s.tb.Helper()
	base := []nats.Option{
		nats.MaxReconnects(-1),
		nats.ReconnectWait(50 * time.Millisecond),
		nats.Timeout(2 * time.Second),
	}
	nc, err := nats.Connect(s.URL(), append(base, opts...)...)
	if err != nil {
		s.tb.Fatalf("natstest: connect: %v", err)
	}
	s.tb.Cleanup(nc.Close)
	return nc
}

// JetStream returns a JetStream context on a fresh connection.
func (s *Server) JetStream() (jetstream.JetStream, *nats.Conn) {
	s.tb.Helper()
	nc := s.Connect()
	js, err := jetstream.New(nc)
	if err != nil {
		s.tb.Fatalf("natstest: jetstream: %v", err)
	}
	return js, nc
}
