// Command annotate is the example for Scanner: it publishes one
// scm.annotation.requested (a sticky pull-request comment) and waits for
// its outcome, scm.annotation.completed or scm.annotation.failed, matched by
// request id.
//
//	go run . --tenant <uuid> --integration <uuid> --repo acme/api --pr 42 --body 'scan: 0 findings' --key scan
//
// It uses inthub.dev/events and nats.go only, as a team outside inthub
// would. See events/GUIDE.md for what each outcome means.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"inthub.dev/events"
)

// streamSCM is the JetStream stream inthub provisions for scm.>: requests
// and outcomes both live there.
const streamSCM = "SCM"

// source names the publisher in every request (the CloudEvents source).
const source = "scanner-example"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "annotate:", err)
		os.Exit(1)
	}
}

// errFailed reports an outcome of scm.annotation.failed.
var errFailed = errors.New("the annotation failed")

func run(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("annotate", flag.ContinueOnError)
	natsURL := fs.String("nats-url", envOr("NATS_URL", "nats://127.0.0.1:4250"), "NATS server")
	tenant := fs.String("tenant", "", "tenant id of the integration (required: failures are reported only for requests that carry it)")
	integration := fs.String("integration", "", "integration id (required)")
	repo := fs.String("repo", "", "repository OWNER/NAME (GitLab: the full group path, then the project)")
	pr := fs.Int("pr", 0, "pull (merge) request number")
	body := fs.String("body", "", "comment body")
	key := fs.String("key", "", "sticky comment key: the comment with this key is edited instead of adding another")
	wait := fs.Duration("wait", 30*time.Second, "how long to wait for the outcome")
	if err := fs.Parse(args); err != nil {
		return err
	}
	i := strings.LastIndex(*repo, "/")
	if i <= 0 || i == len(*repo)-1 {
		return fmt.Errorf("--repo %q: want OWNER/NAME", *repo)
	}
	req := events.AnnotationRequested{
		IntegrationID: *integration,
		Operation:     events.OpComment,
		Repository:    events.Repository{Owner: (*repo)[:i], Name: (*repo)[i+1:]},
		PullRequest:   *pr,
		Comment:       &events.Comment{Body: *body, Key: *key, UpdateExisting: *key != ""},
	}

	nc, err := nats.Connect(*natsURL, nats.Name(source))
	if err != nil {
		return fmt.Errorf("connect to NATS: %w", err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	w, err := newWaiter(ctx, js)
	if err != nil {
		return err
	}
	defer w.close()

	ctx, cancel := context.WithTimeout(ctx, *wait)
	defer cancel()
	id, out, err := w.request(ctx, js, *tenant, req)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "request %s\n", id)
	switch {
	case out.Completed != nil:
		c := out.Completed
		fmt.Fprintf(stdout, "completed: %s (attempts %d)\n", c.URL, c.Attempts)
		return nil
	case out.Failed.Spooled:
		// Not final: inthub posts it once the integration is healthy again,
		// and a completed with the same request id follows.
		fmt.Fprintf(stdout, "spooled: %s; it will be posted when the integration is healthy again\n", out.Failed.Error)
		return nil
	default:
		f := out.Failed
		fmt.Fprintf(stdout, "failed (%s, dead-lettered %v): %s\n", f.ErrorClass, f.DeadLettered, f.Error)
		return errFailed
	}
}

// outcome is one result event of a request: exactly one field is set.
type outcome struct {
	Completed *events.AnnotationCompleted
	Failed    *events.AnnotationFailed
}

// waiter hands each outcome to the request waiting for its id. One per
// process: it reads every outcome published after it started, through an
// ephemeral consumer of its own (a durable one shared by replicas would
// deliver an outcome to whichever replica asks first).
type waiter struct {
	mu      sync.Mutex
	pending map[string]chan outcome
	cc      jetstream.ConsumeContext
}

func newWaiter(ctx context.Context, js jetstream.JetStream) (*waiter, error) {
	// Created, and so listening, before the first request is published: a
	// fast outcome cannot be missed.
	cons, err := js.CreateConsumer(ctx, streamSCM, jetstream.ConsumerConfig{
		FilterSubjects: []string{events.SubjectAnnotationCompleted, events.SubjectAnnotationFailed},
		DeliverPolicy:  jetstream.DeliverNewPolicy,
		AckPolicy:      jetstream.AckNonePolicy,
		// The server removes the consumer once this process is gone.
		InactiveThreshold: time.Minute,
	})
	if err != nil {
		return nil, fmt.Errorf("listen for outcomes on stream %s: %w", streamSCM, err)
	}
	w := &waiter{pending: map[string]chan outcome{}}
	if w.cc, err = cons.Consume(w.deliver); err != nil {
		return nil, fmt.Errorf("listen for outcomes: %w", err)
	}
	return w, nil
}

func (w *waiter) close() { w.cc.Stop() }

func (w *waiter) deliver(m jetstream.Msg) {
	ev, err := events.Parse(m.Data())
	if err != nil {
		return // not a valid outcome: nothing to match
	}
	var id string
	var o outcome
	switch ev.Type {
	case events.SubjectAnnotationCompleted:
		o.Completed = new(events.AnnotationCompleted)
		err = ev.Decode(o.Completed)
		id = o.Completed.RequestID
	case events.SubjectAnnotationFailed:
		o.Failed = new(events.AnnotationFailed)
		err = ev.Decode(o.Failed)
		id = o.Failed.RequestID
	default:
		return
	}
	if err != nil {
		return
	}
	w.mu.Lock()
	ch := w.pending[id]
	w.mu.Unlock()
	if ch != nil {
		select {
		case ch <- o:
		default: // more outcomes than anyone reads: the first ones decide
		}
	}
}

// request publishes req and waits for its outcome: completed, failed, or,
// when ctx ends after the request was spooled, that failed with spooled set.
func (w *waiter) request(ctx context.Context, js jetstream.JetStream, tenant string, req events.AnnotationRequested) (string, outcome, error) {
	// New validates against the schema, so a mistake is caught here, with
	// the field named, rather than dead-lettered by inthub.
	ev, err := events.New(events.SubjectAnnotationRequested, source, tenant, req)
	if err != nil {
		return "", outcome{}, err
	}
	body, err := ev.Marshal()
	if err != nil {
		return "", outcome{}, err
	}
	ch := make(chan outcome, 4)
	w.mu.Lock()
	w.pending[ev.ID] = ch
	w.mu.Unlock()
	defer func() {
		w.mu.Lock()
		delete(w.pending, ev.ID)
		w.mu.Unlock()
	}()

	// The message id is the event id: if an ack is lost and the publish is
	// retried, JetStream drops the copy (2-minute duplicate window).
	for attempt := 1; ; attempt++ {
		_, err = js.Publish(ctx, ev.Type, body, jetstream.WithMsgID(ev.ID))
		if err == nil || attempt == 3 || ctx.Err() != nil {
			break
		}
		select {
		case <-time.After(time.Duration(attempt) * 500 * time.Millisecond):
		case <-ctx.Done():
		}
	}
	if err != nil {
		return ev.ID, outcome{}, fmt.Errorf("publish %s: %w", ev.ID, err)
	}

	var spooled *outcome
	for {
		select {
		case o := <-ch:
			if o.Failed != nil && o.Failed.Spooled {
				spooled = &o // not final: a completed may follow
				continue
			}
			return ev.ID, o, nil
		case <-ctx.Done():
			if spooled != nil {
				return ev.ID, *spooled, nil
			}
			return ev.ID, outcome{}, fmt.Errorf("no outcome for request %s: %w", ev.ID, ctx.Err())
		}
	}
}

func envOr(name, def string) string {
	if v, ok := os.LookupEnv(name); ok {
		return v
	}
	return def
}
