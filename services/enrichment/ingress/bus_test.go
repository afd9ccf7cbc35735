package ingress_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"inthub.dev/pkg/bus"
	"inthub.dev/pkg/natstest"
	"inthub.dev/pkg/spool"
	"inthub.dev/services/enrichment/ingress"
)

// onBus is a handler that publishes through a real bus.Publisher with a
// spool to an embedded JetStream server.
func onBus(t *testing.T) (*natstest.Server, jetstream.JetStream, *bus.Publisher, *ingress.Handler) {
	t.Helper()
	srv := natstest.Start(t)
	js, nc := srv.JetStream()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := bus.Provision(ctx, js, bus.DefaultStreamSettings()); err != nil {
		t.Fatal(err)
	}
	sp, err := spool.Open(filepath.Join(t.TempDir(), "spool.db"))
	if err != nil {
		t.Fatal(err)
	}
	pub, err := bus.NewPublisher(nc, bus.PublisherConfig{Spool: sp, RetryEvery: 50 * time.Millisecond, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		pub.Close()
		sp.Close()
	})
	return srv, js, pub, newHandler(t, pub)
}

// ingestCount is the number of messages on subject in INGEST.
func ingestCount(t *testing.T, js jetstream.JetStream, subject string) uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := js.Stream(ctx, bus.StreamIngest)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx, jetstream.WithSubjectFilter(subject))
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Subjects[subject]
}

// TestRedeliveredThreeTimes: the same GitHub delivery posted three times is
// accepted three times and stored once (JetStream's duplicate window).
func TestRedeliveredThreeTimes(t *testing.T) {
	_, js, _, h := onBus(t)
	for i := range 3 {
		if w := post(t, h, ghReq("push", pushBody)); w.Code != 202 {
			t.Fatalf("post %d: status %d %s", i, w.Code, w.Body)
		}
	}
	if n := ingestCount(t, js, "ingest.github.push"); n != 1 {
		t.Fatalf("%d ingest messages, want 1", n)
	}
	// Another delivery of the same body is another event.
	if w := post(t, h, with(ghReq("push", pushBody), "X-GitHub-Delivery", "another")); w.Code != 202 {
		t.Fatal(w.Code)
	}
	if n := ingestCount(t, js, "ingest.github.push"); n != 2 {
		t.Fatalf("%d ingest messages, want 2", n)
	}
}

// TestBusDown: with NATS stopped the delivery is answered 202 only once it
// is in the spool, and reaches the stream when NATS is back.
func TestBusDown(t *testing.T) {
	srv, js, pub, h := onBus(t)
	srv.Stop()
	if w := post(t, h, ghReq("push", pushBody)); w.Code != 202 {
		t.Fatalf("status %d %s", w.Code, w.Body)
	}
	if pub.Spooled() != 1 {
		t.Fatalf("spooled %d, want 1: the 202 came before the event was durable", pub.Spooled())
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for pub.Spooled() > 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if n := ingestCount(t, js, "ingest.github.push"); n != 1 {
		t.Fatalf("%d ingest messages after NATS came back, want 1 (spooled %d)", n, pub.Spooled())
	}
	// The provider retries (it did get a 202, but a retry must still be
	// harmless): still one message.
	if w := post(t, h, ghReq("push", pushBody)); w.Code != 202 {
		t.Fatal(w.Code)
	}
	if n := ingestCount(t, js, "ingest.github.push"); n != 1 {
		t.Fatalf("%d ingest messages, want 1", n)
	}
}
