package main

import (
	"context"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	"inthub.dev/events"
	"inthub.dev/events/examples/internal/fleet"
	"inthub.dev/pkg/bus"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m, fleet.LeakOptions()...) }

// TestStreamName: the example names the stream by hand, as another team
// would; it must be the one inthub provisions.
func TestStreamName(t *testing.T) {
	for _, s := range subjects {
		if got := bus.StreamFor(s); got != streamIntegrations {
			t.Errorf("%s is in stream %q, the example reads %q", s, got, streamIntegrations)
		}
	}
}

// TestLifecycle runs the example against the real catalog: changes made
// before the consumer first started (history), while it ran, and while it
// was away all arrive, each applied once and, per integration, in the order
// they were made; a replayed duplicate and a poison message change nothing
// and hold nothing up.
func TestLifecycle(t *testing.T) {
	f := fleet.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	js, _ := f.NATS.JetStream()
	out := &lines{}
	v := newView(out, slog.New(slog.NewTextHandler(io.Discard, nil)))

	// start runs the consumer until the returned stop is called, as a
	// process of the consuming team would (its view being its database).
	start := func() (stop func()) {
		cctx, ccancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- follow(cctx, js, "scheduler-example", v) }()
		return func() {
			ccancel()
			if err := <-done; err != nil {
				t.Errorf("follow: %v", err)
			}
		}
	}

	// History: made before the consumer exists.
	a := f.Create("sched-a", map[string]any{})
	b := f.Create("sched-b", map[string]any{})
	f.Rename(a.ID, "sched-a2", map[string]any{})
	checked(t, ctx, js, a.ID, events.HealthHealthy) // the catalog announces unknown → healthy

	stop := start()
	out.waitFor(t, "integration.health_changed "+a.ID)
	stop()

	// While it is away.
	f.Rename(b.ID, "sched-b2", map[string]any{})
	f.Delete(a.ID)
	f.Rename(b.ID, "sched-b3", map[string]any{})

	stop = start()
	defer func() { stop() }()
	out.waitFor(t, "integration.updated "+b.ID+" v3")

	// A dead letter replayed by an operator: the same event, a new message id.
	stream, err := js.Stream(ctx, streamIntegrations)
	if err != nil {
		t.Fatal(err)
	}
	last, err := stream.GetLastMsgForSubject(ctx, events.SubjectIntegrationUpdated)
	if err != nil {
		t.Fatal(err)
	}
	replay := &nats.Msg{Subject: last.Subject, Data: last.Data, Header: nats.Header{}}
	replay.Header.Set(jetstream.MsgIDHeader, uuid.NewString())
	replay.Header.Set("Inthub-Replay-Of", "1")
	if _, err := js.PublishMsg(ctx, replay); err != nil {
		t.Fatal(err)
	}
	// Poison: not an event at all.
	if _, err := js.Publish(ctx, events.SubjectIntegrationUpdated, []byte(`{"not":"an event"}`)); err != nil {
		t.Fatal(err)
	}
	// Both are behind us once an event published after them arrives (one
	// event in flight at a time).
	c := f.Create("sched-c", map[string]any{})
	out.waitFor(t, "integration.created "+c.ID)

	v.mu.Lock()
	dups := v.duplicates
	v.mu.Unlock()
	if dups != 1 {
		t.Errorf("%d events dropped as duplicates, want 1 (the replay)", dups)
	}

	got := out.all()
	want := map[string][]string{
		a.ID: {
			"integration.created " + a.ID + " v1 sched-a",
			"integration.updated " + a.ID + " v2 sched-a2",
			"integration.health_changed " + a.ID + " unknown → healthy",
			"integration.deleted " + a.ID + " sched-a2",
		},
		b.ID: {
			"integration.created " + b.ID + " v1 sched-b",
			"integration.updated " + b.ID + " v2 sched-b2",
			"integration.updated " + b.ID + " v3 sched-b3",
		},
		c.ID: {"integration.created " + c.ID + " v1 sched-c"},
	}
	for id, w := range want {
		var mine []string
		for _, l := range got {
			if strings.Contains(l, " "+id+" ") {
				mine = append(mine, l)
			}
		}
		if !slices.Equal(mine, w) {
			t.Errorf("integration %s: applied\n  %s\nwant, in this order, each once:\n  %s", id, strings.Join(mine, "\n  "), strings.Join(w, "\n  "))
		}
	}
	if n := len(want[a.ID]) + len(want[b.ID]) + len(want[c.ID]); len(got) != n {
		t.Errorf("%d changes applied, want %d:\n  %s", len(got), n, strings.Join(got, "\n  "))
	}
}

// checked publishes a health check result as the health-poller does.
func checked(t *testing.T, ctx context.Context, js jetstream.JetStream, id string, status events.HealthStatus) {
	t.Helper()
	ev, err := events.New(events.SubjectIntegrationHealthChecked, "inthub/health-poller", fleet.Tenant, events.HealthChecked{
		IntegrationID: id, TenantID: fleet.Tenant, Type: "test.inmemory", Status: status, LatencyMs: 3,
		CheckedAt: time.Now().UTC(),
	})
	if err != nil {
		t.Fatal(err)
	}
	b, err := ev.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, ev.Type, b, jetstream.WithMsgID(ev.ID)); err != nil {
		t.Fatal(err)
	}
}

// lines collects what the view prints.
type lines struct {
	mu  sync.Mutex
	buf strings.Builder
}

func (l *lines) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *lines) all() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.FieldsFunc(l.buf.String(), func(r rune) bool { return r == '\n' })
}

func (l *lines) waitFor(t *testing.T, prefix string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if slices.ContainsFunc(l.all(), func(s string) bool { return strings.HasPrefix(s, prefix) }) {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("no %q within 30s; so far:\n  %s", prefix, strings.Join(l.all(), "\n  "))
}
