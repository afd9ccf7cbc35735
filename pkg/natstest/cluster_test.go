package natstest_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	"inthub.dev/pkg/natstest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, natstest.LeakOptions()...)
}

const stream = "ORDERS"

func createR3(t *testing.T, js jetstream.JetStream) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{
		Name: stream, Subjects: []string{"orders.>"}, Storage: jetstream.FileStorage, Replicas: 3,
	}); err != nil {
		t.Fatalf("create stream: %v", err)
	}
}

// publishN publishes orders from..to-1 with their number as Nats-Msg-Id, so
// a retry across an election cannot store one twice.
func publishN(t *testing.T, js jetstream.JetStream, from, to int) {
	t.Helper()
	for i := from; i < to; i++ {
		msg := nats.NewMsg(fmt.Sprintf("orders.%d", i))
		msg.Data = fmt.Appendf(nil, "order %d", i)
		msg.Header.Set(jetstream.MsgIDHeader, fmt.Sprint(i))
		natstest.PublishEventually(t, js, msg)
	}
}

// wantMsgs checks that the stream holds orders 0..n-1 at seqs 1..n. The
// JetStream API answers 503 for a moment after a node rejoins, so it asks
// until it gets an answer.
func wantMsgs(t *testing.T, js jetstream.JetStream, n uint64) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		err := checkMsgs(js, n)
		if err == nil {
			return
		}
		var apiErr *jetstream.APIError
		if errors.As(err, &apiErr) && apiErr.Code != 503 || time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func checkMsgs(js jetstream.JetStream, n uint64) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return fmt.Errorf("stream: %w", err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		return fmt.Errorf("stream info: %w", err)
	}
	if info.State.Msgs != n || info.State.LastSeq != n {
		return fmt.Errorf("stream holds %d messages up to seq %d, want %d", info.State.Msgs, info.State.LastSeq, n)
	}
	for _, seq := range []uint64{1, n} {
		m, err := s.GetMsg(ctx, seq)
		if err != nil {
			return fmt.Errorf("get message %d: %w", seq, err)
		}
		if want := fmt.Sprintf("order %d", seq-1); string(m.Data) != want {
			return fmt.Errorf("message %d = %q, want %q", seq, m.Data, want)
		}
	}
	return nil
}

func TestClusterReplicatedStreamSurvivesLeaderDeath(t *testing.T) {
	for _, tt := range []struct {
		name string
		kill func(*natstest.ClusterNode)
	}{
		// Shutdown hands the leadership over on its way out.
		{"shutdown", (*natstest.ClusterNode).Shutdown},
		// Crash does not: the followers wait out an election timeout.
		{"crash", (*natstest.ClusterNode).Crash},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := natstest.Cluster(t, 3)
			js, _ := c.JetStream()
			createR3(t, js)
			publishN(t, js, 0, 50)

			old := c.WaitStreamLeader(stream)
			killed := time.Now()
			tt.kill(old)
			leader := c.WaitStreamLeader(stream)
			elected := time.Since(killed)
			if leader == old {
				t.Fatalf("leader is still %s after its death", old.Name())
			}
			// The client was connected to any node, perhaps the dead one:
			// the first ack also measures its failover.
			first := natstest.PublishEventually(t, js, orderMsg(50))
			resumed := time.Since(killed)
			if first.Sequence != 51 {
				t.Fatalf("first publish after failover stored at seq %d, want 51", first.Sequence)
			}
			publishN(t, js, 51, 100)
			wantMsgs(t, js, 100)
			t.Logf("stream leader %s lost (%s): %s elected after %v, first publish acked after %v",
				old.Name(), tt.name, leader.Name(), elected.Round(time.Millisecond), resumed.Round(time.Millisecond))
		})
	}
}

func orderMsg(i int) *nats.Msg {
	msg := nats.NewMsg(fmt.Sprintf("orders.%d", i))
	msg.Data = fmt.Appendf(nil, "order %d", i)
	msg.Header.Set(jetstream.MsgIDHeader, fmt.Sprint(i))
	return msg
}

func TestClusterRestartedNodeCatchesUp(t *testing.T) {
	c := natstest.Cluster(t, 3)
	js, _ := c.JetStream()
	createR3(t, js)
	publishN(t, js, 0, 20)

	// A follower: the stream keeps its leader, so this measures catching up
	// alone. Its replica is current before it goes down.
	leader := c.WaitStreamLeader(stream)
	var follower *natstest.ClusterNode
	for _, n := range c.Nodes() {
		if n != leader {
			follower = n
			break
		}
	}
	follower.WaitStreamCurrent(stream, natstest.StreamState{Msgs: 20, FirstSeq: 1, LastSeq: 20})
	follower.Shutdown()
	publishN(t, js, 20, 120) // two of three: still a quorum
	down := time.Now()
	follower.Restart()
	follower.WaitStreamCurrent(stream, natstest.StreamState{Msgs: 120, FirstSeq: 1, LastSeq: 120})
	t.Logf("%s restarted and caught up on 100 messages in %v", follower.Name(), time.Since(down).Round(time.Millisecond))

	// Its copy is a real one: with the leader gone, the restarted node and
	// the third make the quorum that serves the stream.
	leader.Shutdown()
	c.WaitStreamLeader(stream)
	wantMsgs(t, js, 120)
}

func TestClusterPartitionedMinorityCannotWrite(t *testing.T) {
	c := natstest.Cluster(t, 3)
	js, _ := c.JetStream()
	createR3(t, js)
	publishN(t, js, 0, 10)

	// Isolate the leader itself: it keeps running and, for a while, still
	// believes it leads. It must not acknowledge a write it cannot
	// replicate.
	old := c.WaitStreamLeader(stream)
	isolatedJS, _ := old.JetStream()
	c.Partition(old)
	cut := time.Now()

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	ack, err := isolatedJS.PublishMsg(ctx, orderMsg(1000))
	cancel()
	if err == nil {
		t.Fatalf("the isolated node acknowledged a write (seq %d)", ack.Sequence)
	}
	t.Logf("publish through the isolated node: %v", err)

	// The majority elects its own leader and takes writes.
	leader := c.WaitStreamLeader(stream, old)
	elected := time.Since(cut)
	var others []string
	for _, n := range c.Nodes() {
		if n != old {
			others = append(others, n.URL())
		}
	}
	nc, err := nats.Connect(strings.Join(others, ","), nats.MaxReconnects(-1))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	mjs, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	publishN(t, mjs, 10, 20)

	// Healed, the old leader follows the new one: the write it could not
	// replicate is gone, the majority's writes are there.
	c.Heal(old)
	for _, n := range c.Nodes() {
		n.WaitStreamCurrent(stream, natstest.StreamState{Msgs: 20, FirstSeq: 1, LastSeq: 20})
	}
	wantMsgs(t, mjs, 20)
	t.Logf("leader %s partitioned away: %s elected by the majority after %v", old.Name(), leader.Name(), elected.Round(time.Millisecond))
}
