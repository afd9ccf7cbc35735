package cli_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	"inthub.dev/pkg/bus"
	"inthub.dev/pkg/natstest"
	"inthub.dev/services/internal/cli"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, natstest.LeakOptions()...)
}

func TestNATSServers(t *testing.T) {
	for _, tc := range []struct {
		in, want string
		bad      string
	}{
		{in: "nats://a:4222", want: "nats://a:4222"},
		{in: " nats://a:4222, nats://b:4222 ,,tls://c:4222", want: "nats://a:4222,nats://b:4222,tls://c:4222"},
		{in: "a:4222,b:4222", want: "a:4222,b:4222"},
		{in: "nats://u:secret@a:4222", want: "nats://u:secret@a:4222"},
		{in: "", bad: "no NATS URL"},
		{in: " , ", bad: "no NATS URL"},
		{in: "http://a:4222", bad: "scheme"},
		{in: "nats://u:secret@:4222", bad: "want nats://host:port"},
		{in: "nats://a:4222;nats://b:4222", bad: "want nats://host:port"},
	} {
		got, err := cli.NATSServers(tc.in)
		if tc.bad != "" {
			if err == nil || !strings.Contains(err.Error(), tc.bad) || !errors.As(err, new(cli.UsageError)) {
				t.Errorf("NATSServers(%q) = %q, %v; want a usage error with %q", tc.in, got, err, tc.bad)
			}
			if err != nil && strings.Contains(err.Error(), "secret") {
				t.Errorf("NATSServers(%q): the error shows the password: %v", tc.in, err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("NATSServers(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}

var topoCmd = cli.Command{Name: "x", Head: "Usage: x\n", Options: cli.TopologyFlags()}

func TestTopologyFlags(t *testing.T) {
	for _, tc := range []struct {
		name     string
		args     []string
		env      map[string]string
		replicas int
		place    string
		bad      bool
	}{
		{name: "defaults", replicas: 1},
		{name: "cluster", args: []string{"--stream-replicas", "3", "--stream-placement", "cluster=east,tag=ssd"}, replicas: 3, place: "cluster=east,tag=ssd"},
		{name: "from env", env: map[string]string{"INTHUB_STREAM_REPLICAS": "3"}, replicas: 3},
		{name: "flag over env", args: []string{"--stream-replicas", "5"}, env: map[string]string{"INTHUB_STREAM_REPLICAS": "3"}, replicas: 5},
		{name: "zero", args: []string{"--stream-replicas", "0"}, bad: true},
		{name: "six", args: []string{"--stream-replicas", "6"}, bad: true},
		{name: "bad placement", args: []string{"--stream-placement", "east"}, bad: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			v, err := topoCmd.Parse(tc.args, &bytes.Buffer{}, &bytes.Buffer{})
			if err != nil {
				t.Fatal(err)
			}
			topo, err := v.Topology()
			if tc.bad {
				if !errors.As(err, new(cli.UsageError)) {
					t.Fatalf("Topology() = %+v, %v; want a usage error", topo, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if topo.Replicas != tc.replicas {
				t.Errorf("replicas %d, want %d", topo.Replicas, tc.replicas)
			}
			if got := bus.FormatPlacement(topo.Placement); got != tc.place {
				t.Errorf("placement %q, want %q", got, tc.place)
			}
		})
	}
}

// A service given every member of a cluster, the first of them down,
// connects; when the server it is connected to goes away it carries on
// with another member, and JetStream calls work again.
func TestConnectNATSAcrossClusterMembers(t *testing.T) {
	c := natstest.Cluster(t, 3)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "nats://" + l.Addr().String()
	l.Close()
	nodes := c.Nodes()
	nc, err := cli.ConnectNATS(fmt.Sprintf("%s, %s,%s", dead, nodes[0].URL(), nodes[1].URL()), "cli-test")
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a connection", nc.IsConnected)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "CLI", Subjects: []string{"cli.>"}, Replicas: 3}); err != nil {
		t.Fatal(err)
	}

	first := nc.ConnectedUrl()
	for _, n := range nodes {
		if n.URL() == first {
			n.Shutdown()
		}
	}
	waitFor(t, "a reconnection to another member", func() bool {
		return nc.IsConnected() && nc.ConnectedUrl() != first
	})
	c.WaitStreamLeader("CLI")
	msg := nats.NewMsg("cli.after")
	msg.Header.Set(jetstream.MsgIDHeader, "after")
	natstest.PublishEventually(t, js, msg)
	t.Logf("connected to %s, then to %s after its shutdown", first, nc.ConnectedUrl())
}

func waitFor(t *testing.T, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("waited 30s for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
