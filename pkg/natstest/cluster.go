package natstest

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// clusterWait bounds every wait of the cluster helpers. NATS elects a new
// Raft leader 4 to 9 s after it lost the old one (the server's election
// timeout, not settable from outside its package), so this leaves room
// for two elections on a busy machine.
const clusterWait = 30 * time.Second

// account is the account of a server configured without accounts, where
// every test's streams live.
const account = server.DEFAULT_GLOBAL_ACCOUNT

// TestCluster is a JetStream cluster of embedded nats-server v2 instances
// in the test process: each node with its own client port, cluster port and
// store directory, all on loopback. Every route between two nodes goes
// through a relay the test can cut, so a node can be partitioned away while
// it keeps running (Partition, Heal), as well as stopped and restarted on
// the same ports and store (ClusterNode.Shutdown, ClusterNode.Restart).
type TestCluster struct {
	tb    testing.TB
	name  string
	nodes []*ClusterNode
	// links[i][j] carries the routes node i opens to node j.
	links [][]*link
}

// ClusterNode is one server of a TestCluster.
type ClusterNode struct {
	c           *TestCluster
	index       int
	name        string
	port        int
	clusterPort int
	storeDir    string
	routes      []*url.URL
	advertise   string

	mu  sync.Mutex
	srv *server.Server
}

// Cluster starts n servers (3 or 5 make sense: Raft needs a majority),
// waits until they have elected a JetStream meta leader and every node is
// current, and shuts them down when the test ends.
func Cluster(tb testing.TB, n int) *TestCluster {
	tb.Helper()
	if n < 1 {
		tb.Fatalf("natstest: a cluster of %d nodes", n)
	}
	// The store's directory first: cleanups run last-in first-out, and the
	// servers must be down before their files are removed.
	dir := tb.TempDir()
	c := &TestCluster{tb: tb, name: "inthub-test", links: make([][]*link, n)}
	tb.Cleanup(c.stop)
	// Gossip tells each server the other servers' advertised route address,
	// and a server connects to an address it learns that way directly,
	// around the relays. Advertising a closed port makes those connections
	// fail, so every route is one the relays carry and Partition is total.
	noRoute, err := closedPort()
	if err != nil {
		tb.Fatalf("natstest: %v", err)
	}
	for i := range n {
		port, err := freePort()
		if err != nil {
			tb.Fatalf("natstest: %v", err)
		}
		cport, err := freePort()
		if err != nil {
			tb.Fatalf("natstest: %v", err)
		}
		c.nodes = append(c.nodes, &ClusterNode{
			c: c, index: i, name: fmt.Sprintf("n%d", i), port: port, clusterPort: cport,
			storeDir: filepath.Join(dir, fmt.Sprintf("n%d", i)), advertise: noRoute,
		})
	}
	for i, from := range c.nodes {
		c.links[i] = make([]*link, n)
		for j, to := range c.nodes {
			if i == j {
				continue
			}
			l, err := newLink(fmt.Sprintf("127.0.0.1:%d", to.clusterPort))
			if err != nil {
				tb.Fatalf("natstest: route relay: %v", err)
			}
			c.links[i][j] = l
			from.routes = append(from.routes, &url.URL{Scheme: "nats-route", Host: l.addr()})
		}
	}
	for _, node := range c.nodes {
		if err := node.start(); err != nil {
			tb.Fatalf("natstest: %v", err)
		}
	}
	c.WaitReady()
	return c
}

func (c *TestCluster) stop() {
	var wg sync.WaitGroup
	for _, node := range c.nodes {
		wg.Go(node.shutdown)
	}
	wg.Wait()
	for _, row := range c.links {
		for _, l := range row {
			if l != nil {
				_ = l.close()
			}
		}
	}
}

// Nodes returns the cluster's nodes, running or not, in a stable order.
func (c *TestCluster) Nodes() []*ClusterNode { return append([]*ClusterNode(nil), c.nodes...) }

// Node returns node i.
func (c *TestCluster) Node(i int) *ClusterNode { return c.nodes[i] }

// URLs is every node's client URL, comma-separated, as services take them.
func (c *TestCluster) URLs() string {
	urls := make([]string, len(c.nodes))
	for i, n := range c.nodes {
		urls[i] = n.URL()
	}
	return strings.Join(urls, ",")
}

// WaitReady waits until the running nodes agree on a meta leader, the
// leader counts every running node as an online peer, and each node is
// current with it: before that, creating a stream can fail with
// "JetStream system temporarily unavailable" or "no suitable peers for
// placement, peer offline".
func (c *TestCluster) WaitReady() {
	c.tb.Helper()
	c.waitFor("the cluster to be ready (meta leader elected, every node an online peer and current)", func() bool {
		var leaders []*server.Server
		running := 0
		for _, n := range c.nodes {
			s := n.server()
			if s == nil {
				continue
			}
			running++
			if !s.JetStreamIsCurrent() {
				return false
			}
			if s.JetStreamIsLeader() {
				leaders = append(leaders, s)
			}
		}
		return len(leaders) == 1 && len(leaders[0].JetStreamClusterPeers()) == running
	})
}

// MetaLeader returns the node that leads the JetStream meta group, or nil.
func (c *TestCluster) MetaLeader() *ClusterNode {
	for _, n := range c.nodes {
		if s := n.server(); s != nil && s.JetStreamIsLeader() {
			return n
		}
	}
	return nil
}

// StreamLeader returns a running node that leads stream, or nil. During a
// partition an isolated node may still believe it leads; use
// WaitStreamLeader with the node to leave out.
func (c *TestCluster) StreamLeader(stream string, not ...*ClusterNode) *ClusterNode {
	for _, n := range c.nodes {
		if s := n.server(); s != nil && !slices.Contains(not, n) && s.JetStreamIsStreamLeader(account, stream) {
			return n
		}
	}
	return nil
}

// WaitStreamLeader waits until a node other than those in not leads stream.
func (c *TestCluster) WaitStreamLeader(stream string, not ...*ClusterNode) *ClusterNode {
	c.tb.Helper()
	var leader *ClusterNode
	c.waitFor("a leader of stream "+stream, func() bool {
		leader = c.StreamLeader(stream, not...)
		return leader != nil
	})
	return leader
}

// Partition cuts every route between node and the other nodes; both sides
// keep running. Clients connected to node stay connected to it.
func (c *TestCluster) Partition(node *ClusterNode) { c.setCut(node, true) }

// Heal restores the routes Partition cut; the servers reconnect by
// themselves (within about a second).
func (c *TestCluster) Heal(node *ClusterNode) { c.setCut(node, false) }

func (c *TestCluster) setCut(node *ClusterNode, cut bool) {
	for j := range c.nodes {
		if j == node.index {
			continue
		}
		c.links[node.index][j].setCut(cut)
		c.links[j][node.index].setCut(cut)
	}
}

// Connect opens a client to every node that reconnects forever, as
// services do, and is closed when the test ends.
func (c *TestCluster) Connect(opts ...nats.Option) *nats.Conn {
	c.tb.Helper()
	return connect(c.tb, c.URLs(), opts)
}

// JetStream returns a JetStream context on a fresh connection to every node.
func (c *TestCluster) JetStream() (jetstream.JetStream, *nats.Conn) {
	c.tb.Helper()
	return newJetStream(c.tb, c.Connect())
}

func (c *TestCluster) waitFor(what string, ok func() bool) {
	c.tb.Helper()
	deadline := time.Now().Add(clusterWait)
	for !ok() {
		if time.Now().After(deadline) {
			c.tb.Fatalf("natstest: waited %v for %s", clusterWait, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Name is the node's server name (n0, n1, ...).
func (n *ClusterNode) Name() string { return n.name }

// URL is the node's client URL, stable across restarts.
func (n *ClusterNode) URL() string { return fmt.Sprintf("nats://127.0.0.1:%d", n.port) }

// Running reports whether the node's server is up.
func (n *ClusterNode) Running() bool { return n.server() != nil }

// Connect opens a client to this node alone (it learns the others' URLs
// from the server and fails over to them only if this one goes away).
func (n *ClusterNode) Connect(opts ...nats.Option) *nats.Conn {
	n.c.tb.Helper()
	return connect(n.c.tb, n.URL(), opts)
}

// JetStream returns a JetStream context on a fresh connection to this node.
func (n *ClusterNode) JetStream() (jetstream.JetStream, *nats.Conn) {
	n.c.tb.Helper()
	return newJetStream(n.c.tb, n.Connect())
}

// Shutdown stops the node's server and waits until it is gone; the store
// stays for Restart.
func (n *ClusterNode) Shutdown() { n.shutdown() }

// Crash stops the node as a power loss would for its peers: its routes
// are cut first, so the leadership hand-over a Shutdown sends never
// reaches them and they notice the loss only when its heartbeats stop.
// The routes are restored once it is down, ready for Restart.
func (n *ClusterNode) Crash() {
	n.c.Partition(n)
	n.shutdown()
	n.c.Heal(n)
}

// Restart starts a stopped node again on the same ports and store; it
// rejoins the cluster and catches up. It does not wait for that: see
// WaitStreamCurrent.
func (n *ClusterNode) Restart() {
	n.c.tb.Helper()
	if err := n.start(); err != nil {
		n.c.tb.Fatalf("natstest: restart %s: %v", n.name, err)
	}
}

// StreamState is a node's own copy of a stream, as its store holds it.
type StreamState struct {
	Msgs, FirstSeq, LastSeq uint64
}

// StreamState returns the node's local state of stream; ok is false if the
// node is down or holds no replica of it.
func (n *ClusterNode) StreamState(stream string) (st StreamState, ok bool) {
	s := n.server()
	if s == nil {
		return st, false
	}
	ad, err := s.JszAccount(&server.JSzOptions{Account: account, Streams: true})
	if err != nil {
		return st, false
	}
	for _, sd := range ad.Streams {
		if sd.Name == stream {
			return StreamState{Msgs: sd.State.Msgs, FirstSeq: sd.State.FirstSeq, LastSeq: sd.State.LastSeq}, true
		}
	}
	return st, false
}

// WaitStreamCurrent waits until the node's replica of stream is current
// with its Raft group and holds want.
func (n *ClusterNode) WaitStreamCurrent(stream string, want StreamState) {
	n.c.tb.Helper()
	var got StreamState
	n.c.waitFor(fmt.Sprintf("%s to catch up on stream %s (want %+v)", n.name, stream, want), func() bool {
		s := n.server()
		if s == nil || !s.JetStreamIsStreamCurrent(account, stream) {
			return false
		}
		var ok bool
		got, ok = n.StreamState(stream)
		return ok && got == want
	})
}

func (n *ClusterNode) server() *server.Server {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.srv == nil || !n.srv.Running() {
		return nil
	}
	return n.srv
}

func (n *ClusterNode) start() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.srv != nil && n.srv.Running() {
		return nil
	}
	opts := &server.Options{
		ServerName: n.name,
		Host:       "127.0.0.1",
		Port:       n.port,
		JetStream:  true,
		StoreDir:   n.storeDir,
		NoSigs:     true,
		MaxPayload: 8 << 20,
		Cluster: server.ClusterOpts{
			Name:      n.c.name,
			Host:      "127.0.0.1",
			Port:      n.clusterPort,
			Advertise: n.advertise,
		},
		Routes: n.routes,
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		return fmt.Errorf("new server %s: %w", n.name, err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(15 * time.Second) {
		srv.Shutdown()
		srv.WaitForShutdown()
		return fmt.Errorf("server %s on port %d not ready after 15s", n.name, n.port)
	}
	n.srv = srv
	return nil
}

func (n *ClusterNode) shutdown() {
	n.mu.Lock()
	srv := n.srv
	n.srv = nil
	n.mu.Unlock()
	if srv != nil {
		srv.Shutdown()
		srv.WaitForShutdown()
	}
}

func connect(tb testing.TB, urls string, opts []nats.Option) *nats.Conn {
	tb.Helper()
	base := []nats.Option{
		nats.MaxReconnects(-1),
		nats.ReconnectWait(50 * time.Millisecond),
		nats.Timeout(2 * time.Second),
	}
	nc, err := nats.Connect(urls, append(base, opts...)...)
	if err != nil {
		tb.Fatalf("natstest: connect: %v", err)
	}
	tb.Cleanup(nc.Close)
	return nc
}

func newJetStream(tb testing.TB, nc *nats.Conn) (jetstream.JetStream, *nats.Conn) {
	tb.Helper()
	js, err := jetstream.New(nc)
	if err != nil {
		tb.Fatalf("natstest: jetstream: %v", err)
	}
	return js, nc
}

// PublishEventually publishes until JetStream acknowledges, as a service's
// publisher does across a leader election, and returns the ack. It fails
// the test if no ack came within the cluster wait.
func PublishEventually(tb testing.TB, js jetstream.JetStream, msg *nats.Msg) *jetstream.PubAck {
	tb.Helper()
	deadline := time.Now().Add(clusterWait)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		ack, err := js.PublishMsg(ctx, msg)
		cancel()
		if err == nil {
			return ack
		}
		if time.Now().After(deadline) {
			tb.Fatalf("natstest: publish %s: no ack within %v: %v", msg.Subject, clusterWait, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("pick a port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// closedPort returns a loopback address where nothing listens.
func closedPort() (string, error) {
	p, err := freePort()
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("127.0.0.1:%d", p), nil
}
