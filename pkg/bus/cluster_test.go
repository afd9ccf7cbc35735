package bus

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"inthub.dev/events"
	"inthub.dev/pkg/natstest"
)

// provisionCluster starts a cluster of three and lays out the fleet's
// streams and buckets with three replicas, as a service started with
// --stream-replicas 3 does.
func provisionCluster(t *testing.T) (*natstest.TestCluster, jetstream.JetStream) {
	t.Helper()
	c := natstest.Cluster(t, 3)
	admin, _ := c.JetStream()
	st := DefaultStreamSettings()
	st.Topology = Topology{Replicas: 3}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := Provision(ctx, admin, st); err != nil {
		t.Fatal(err)
	}
	return c, admin
}

// stepDownConsumer asks the consumer's leader to hand its leadership over,
// as happens when its server is restarted or leaves. nc is connected
// beforehand: the race is with the worker's first pull.
func stepDownConsumer(t *testing.T, nc *nats.Conn, stream, durable string) {
	t.Helper()
	if _, err := nc.Request(fmt.Sprintf("$JS.API.CONSUMER.LEADER.STEPDOWN.%s.%s", stream, durable), nil, 10*time.Second); err != nil {
		t.Fatalf("step down the leader of %s: %v", durable, err)
	}
}

// A consumer leader change right after a worker started used to leave it
// silent for 30 s in about half of the runs: the new leader did not know
// the worker's first pull request, and nothing but two missed idle
// heartbeats (15 s each by the client's default) made the client pull
// again. Bench warm-ups on a fresh cluster timed out on it. The worker must
// handle a message published after such a change within a few seconds
// every time.
func TestClusterWorkerResumesAfterConsumerLeaderChange(t *testing.T) {
	c, _ := provisionCluster(t)
	admin := c.Connect()
	const runs = 4
	const within = 10 * time.Second
	for i := range runs {
		// Each run a fresh durable, and the worker on another server (not
		// necessarily the consumer's leader).
		js, _ := c.Node(i % 3).JetStream()
		got := make(chan struct{}, 1)
		cfg := testConfig(fmt.Sprintf("leader-change-%d", i))
		w := newWorker(t, js, cfg, events.SubjectIntegrationHealthChecked, func(context.Context, events.Event) error {
			select {
			case got <- struct{}{}:
			default:
			}
			return nil
		})
		stop := start(t, w)
		stepDownConsumer(t, admin, cfg.Stream, cfg.Service)

		_, pnc := c.Node((i + 1) % 3).JetStream()
		p, err := NewPublisher(pnc, PublisherConfig{})
		if err != nil {
			t.Fatal(err)
		}
		if err := p.Publish(context.Background(), healthEvent(t, i, "after the leader change")); err != nil {
			t.Fatal(err)
		}
		published := time.Now()
		select {
		case <-got:
			t.Logf("run %d: handled %v after it was published", i, time.Since(published).Round(time.Millisecond))
		case <-time.After(within):
			t.Fatalf("run %d: the worker handled nothing within %v of a publish after its consumer's leader changed", i, within)
		}
		stop()
		_ = p.Close()
	}
}
