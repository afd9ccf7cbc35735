// Package natsembed runs a NATS server with JetStream inside the process:
// the default for `inthub dev` and for every test that needs a bus. It is a
// real nats-server v2, so tests can stop and restart it to inject faults.
package natsembed

import (
	"errors"
	"fmt"
	"net"
	"os"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// Config of an embedded server. The zero value listens on a free loopback
// port and keeps JetStream in a temporary directory chosen by the caller.
type Config struct {
	Host string // default 127.0.0.1
	Port int    // 0 picks a free port once; Restart keeps it
	// StoreDir holds JetStream's files. Required: an embedded server that
	// forgot its streams on restart would hide the faults tests look for.
	StoreDir string
	// SyncAlways makes JetStream fsync every write. Without replicas this is
	// what "acknowledged means on disk" needs; the NATS default syncs every
	// two minutes. Costs throughput.
	SyncAlways bool
	// ServerName shows up in `nats server list`; default "inthub-embedded".
	ServerName string
	// Logs sends the server's own log lines to stderr.
	Logs bool
}

// Server is an embedded nats-server that can be stopped and started again
// on the same port and store, as a real deployment would be restarted.
type Server struct {
	cfg Config
	srv *server.Server
}

// Start starts a server and waits until it accepts connections.
func Start(cfg Config) (*Server, error) {
	if cfg.StoreDir == "" {
		return nil, errors.New("natsembed: StoreDir is required (JetStream keeps streams there)")
	}
	if cfg.Host == "" {
		cfg.Host = "127.0.0.1"
	}
	if cfg.ServerName == "" {
		cfg.ServerName = "inthub-embedded"
	}
	if cfg.Port == 0 {
		p, err := freePort(cfg.Host)
		if err != nil {
			return nil, fmt.Errorf("natsembed: pick a port: %w", err)
		}
		cfg.Port = p
	}
	if err := os.MkdirAll(cfg.StoreDir, 0o700); err != nil {
		return nil, fmt.Errorf("natsembed: store dir: %w", err)
	}
	s := &Server{cfg: cfg}
	if err := s.Start(); err != nil {
		return nil, err
	}
	return s, nil
}

// Start (re)starts a stopped server with the same port and store.
func (s *Server) Start() error {
	if s.srv != nil && s.srv.Running() {
		return nil
	}
	opts := &server.Options{
		ServerName: s.cfg.ServerName,
		Host:       s.cfg.Host,
		Port:       s.cfg.Port,
		JetStream:  true,
		StoreDir:   s.cfg.StoreDir,
		NoSigs:     true,
		MaxPayload: 8 << 20,
	}
	if s.cfg.SyncAlways {
		opts.SyncAlways = true
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		return fmt.Errorf("natsembed: new server: %w", err)
	}
	if s.cfg.Logs {
		srv.ConfigureLogger()
	}
	go srv.Start()
	if !srv.ReadyForConnections(15 * time.Second) {
		srv.Shutdown()
		return fmt.Errorf("natsembed: server on %s:%d not ready after 15s", s.cfg.Host, s.cfg.Port)
	}
	s.srv = srv
	return nil
}

// Stop shuts the server down and waits until it is gone. Clients see a
// disconnect and, if they reconnect forever, come back after Start.
func (s *Server) Stop() {
	if s.srv == nil {
		return
	}
	s.srv.Shutdown()
	s.srv.WaitForShutdown()
}

// Running reports whether the server accepts connections.
func (s *Server) Running() bool { return s.srv != nil && s.srv.Running() }

// URL is the client URL, stable across restarts.
func (s *Server) URL() string { return fmt.Sprintf("nats://%s:%d", s.cfg.Host, s.cfg.Port) }

// StoreDir is where JetStream keeps its files.
func (s *Server) StoreDir() string { return s.cfg.StoreDir }

func freePort(host string) (int, error) {
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
