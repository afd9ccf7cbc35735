// Command lifecycle is the example for Scheduler and Signals: a durable
// consumer of its own on inthub's integration lifecycle events
// (integration.created, .updated, .deleted, .health_changed) that keeps a
// picture of every integration, applies each event once, and keeps the
// order in which the catalog committed the changes of one integration.
//
//	go run . --durable scheduler-integrations
//
// Stop it and start it again: the durable consumer resumes where it was
// acknowledged, and nothing published in between is missed as long as the
// stream still holds it (7 days by default). It uses inthub.dev/events and
// nats.go only, as a team outside inthub would. See events/GUIDE.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"inthub.dev/events"
)

// streamIntegrations is the JetStream stream inthub provisions for
// integration.>.
const streamIntegrations = "INTEGRATIONS"

// subjects are the events a scheduler needs; integration.health_checked,
// one per check, is the health-poller's report to the catalog and far more
// numerous.
var subjects = []string{
	events.SubjectIntegrationCreated,
	events.SubjectIntegrationUpdated,
	events.SubjectIntegrationDeleted,
	events.SubjectIntegrationHealthChanged,
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "lifecycle:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("lifecycle", flag.ContinueOnError)
	natsURL := fs.String("nats-url", envOr("NATS_URL", "nats://127.0.0.1:4250"), "NATS server")
	durable := fs.String("durable", "lifecycle-example", "name of your durable consumer: one per team and purpose, shared by your replicas")
	if err := fs.Parse(args); err != nil {
		return err
	}
	nc, err := nats.Connect(*natsURL, nats.Name(*durable), nats.MaxReconnects(-1))
	if err != nil {
		return fmt.Errorf("connect to NATS: %w", err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	v := newView(stdout, slog.New(slog.NewJSONHandler(os.Stderr, nil)))
	return follow(ctx, js, *durable, v)
}

// consumer creates the durable consumer, or finds it as it was left.
func consumer(ctx context.Context, js jetstream.JetStream, durable string) (jetstream.Consumer, error) {
	c, err := js.CreateOrUpdateConsumer(ctx, streamIntegrations, jetstream.ConsumerConfig{
		Durable:        durable,
		FilterSubjects: subjects,
		// The first start reads all the history the stream still holds;
		// later starts resume after the last acknowledged event.
		DeliverPolicy: jetstream.DeliverAllPolicy,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       30 * time.Second,
		// One event in flight: a redelivery cannot overtake a later event,
		// so every integration's events arrive in commit order. To go
		// faster, partition by integration id instead (one consumer per
		// partition with a subject-independent filter, or your own queue
		// per integration), never by plain concurrency.
		MaxAckPending: 1,
	})
	if err != nil {
		return nil, fmt.Errorf("consumer %s on stream %s: %w", durable, streamIntegrations, err)
	}
	return c, nil
}

// follow applies events to v until ctx ends.
func follow(ctx context.Context, js jetstream.JetStream, durable string, v *view) error {
	c, err := consumer(ctx, js, durable)
	if err != nil {
		return err
	}
	cc, err := c.Consume(v.handle)
	if err != nil {
		return err
	}
	<-ctx.Done()
	// Let the event in hand finish, so its ack is not lost.
	cc.Drain()
	<-cc.Closed()
	return nil
}

// integration is what the example keeps of each one; a scheduler would
// keep it in its own database.
type integration struct {
	Type, Name string
	Version    int64
	Health     events.HealthStatus
	HealthAt   time.Time
	Deleted    bool
}

// view is the consumer's picture of the integrations, and the record of
// the events it has applied.
type view struct {
	mu   sync.Mutex
	out  io.Writer
	log  *slog.Logger
	byID map[string]*integration
	// applied holds source + id of every event applied. A real consumer
	// stores it in the same transaction as the effect, and keeps it at
	// least as long as the stream keeps messages.
	applied map[string]bool
	// duplicates counts events dropped as already applied.
	duplicates int
}

func newView(out io.Writer, log *slog.Logger) *view {
	return &view{out: out, log: log, byID: map[string]*integration{}, applied: map[string]bool{}}
}

// errRetry asks for the event again later; the example never returns it,
// but a consumer whose database is down would.
var errRetry = errors.New("retry later")

func (v *view) handle(m jetstream.Msg) {
	ev, err := events.Parse(m.Data())
	if err != nil {
		// Poison: no retry can fix it. Term tells the server to stop
		// redelivering; keep the body to report it.
		v.log.Error("event refused", "error", err.Error(), "subject", m.Subject())
		_ = m.Term()
		return
	}
	switch err := v.apply(ev); {
	case errors.Is(err, errRetry):
		_ = m.NakWithDelay(5 * time.Second)
		return
	case err != nil:
		v.log.Error("event refused", "error", err.Error(), "id", ev.ID, "type", ev.Type)
		_ = m.Term()
		return
	}
	// A lost ack gets the event redelivered; apply then drops it as seen.
	_ = m.Ack()
}

// apply changes the picture for one event, at most once per event.
func (v *view) apply(ev events.Event) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	// An event may come twice: redelivered after a lost ack, or replayed
	// from the DLQ by an operator (same id, new message id).
	key := ev.Source + " " + ev.ID
	if v.applied[key] {
		v.duplicates++
		return nil
	}
	line, err := v.change(ev)
	if err != nil {
		return err
	}
	v.applied[key] = true
	if line != "" {
		fmt.Fprintln(v.out, line)
	}
	return nil
}

func (v *view) change(ev events.Event) (string, error) {
	switch ev.Type {
	case events.SubjectIntegrationCreated, events.SubjectIntegrationUpdated:
		in, err := integrationOf(ev)
		if err != nil {
			return "", err
		}
		cur := v.get(in.ID)
		// version grows by one per change: an older copy (a replay of an
		// old event after newer ones) changes nothing.
		if cur.Deleted || in.Version <= cur.Version {
			return "", nil
		}
		cur.Type, cur.Name, cur.Version = in.Type, in.Name, in.Version
		return fmt.Sprintf("%s %s v%d %s", ev.Type, in.ID, in.Version, in.Name), nil
	case events.SubjectIntegrationDeleted:
		var p events.IntegrationDeleted
		if err := ev.Decode(&p); err != nil {
			return "", err
		}
		cur := v.get(p.ID)
		if cur.Deleted {
			return "", nil
		}
		cur.Deleted = true // a tombstone: nothing brings it back
		return fmt.Sprintf("%s %s %s", ev.Type, p.ID, p.Name), nil
	case events.SubjectIntegrationHealthChanged:
		var p events.HealthChanged
		if err := ev.Decode(&p); err != nil {
			return "", err
		}
		cur := v.get(p.IntegrationID)
		if cur.Deleted || !p.CheckedAt.After(cur.HealthAt) {
			return "", nil
		}
		cur.Health, cur.HealthAt = p.Status, p.CheckedAt
		return fmt.Sprintf("%s %s %s → %s", ev.Type, p.IntegrationID, p.PreviousStatus, p.Status), nil
	}
	return "", nil // a subject this consumer does not filter on
}

func (v *view) get(id string) *integration {
	in, ok := v.byID[id]
	if !ok {
		in = &integration{}
		v.byID[id] = in
	}
	return in
}

// integrationOf reads a created or updated payload: the two share a shape,
// and Decode refuses the payload type of the other subject.
func integrationOf(ev events.Event) (events.Integration, error) {
	if ev.Type == events.SubjectIntegrationCreated {
		var c events.IntegrationCreated
		err := ev.Decode(&c)
		return c.Integration, err
	}
	var u events.IntegrationUpdated
	err := ev.Decode(&u)
	return u.Integration, err
}

func envOr(name, def string) string {
	if v, ok := os.LookupEnv(name); ok {
		return v
	}
	return def
}
