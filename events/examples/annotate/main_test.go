package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

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
	if got := bus.StreamFor(events.SubjectAnnotationCompleted); got != streamSCM {
		t.Fatalf("scm.annotation.completed is in stream %q, the example reads %q", got, streamSCM)
	}
}

// TestAnnotate runs the example against the real catalog and annotation
// worker: a request that is posted ends in completed, one the provider
// refuses in failed (dead-lettered), each matched by its request id.
func TestAnnotate(t *testing.T) {
	f := fleet.Start(t)
	ok := f.Create("scm-ok", map[string]any{})
	refusing := f.Create("scm-refusing", map[string]any{"failWith": "permanent"})
	f.StartAnnotation(ok.ID, refusing.ID)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	args := func(integration string, extra ...string) []string {
		return append([]string{"--nats-url", f.NATS.URL(), "--tenant", fleet.Tenant, "--integration", integration,
			"--repo", "acme/api", "--pr", "42", "--body", "scan: 0 findings", "--wait", "30s"}, extra...)
	}
	requestRE := regexp.MustCompile(`(?m)^request ([0-9a-f-]{36})$`)

	t.Run("completed", func(t *testing.T) {
		var out bytes.Buffer
		if err := run(ctx, args(ok.ID, "--key", "scan"), &out); err != nil {
			t.Fatalf("run: %v\n%s", err, out.String())
		}
		m := requestRE.FindStringSubmatch(out.String())
		if m == nil {
			t.Fatalf("no request id in the output:\n%s", out.String())
		}
		if !strings.Contains(out.String(), "completed: https://scm.example/acme/api/pull/42#comment-") {
			t.Errorf("output:\n%s", out.String())
		}
		if n := f.Posts.Count(m[1]); n != 1 {
			t.Errorf("request %s posted %d times, want once", m[1], n)
		}
	})

	t.Run("failed", func(t *testing.T) {
		var out bytes.Buffer
		err := run(ctx, args(refusing.ID), &out)
		if !errors.Is(err, errFailed) {
			t.Fatalf("run: %v, want errFailed\n%s", err, out.String())
		}
		if !strings.Contains(out.String(), "failed (permanent, dead-lettered true): ") || !strings.Contains(out.String(), "404 Not Found") {
			t.Errorf("output:\n%s", out.String())
		}
	})

	t.Run("invalid request is refused before it is sent", func(t *testing.T) {
		var out bytes.Buffer
		err := run(ctx, []string{"--nats-url", f.NATS.URL(), "--tenant", fleet.Tenant, "--integration", ok.ID,
			"--repo", "acme/api", "--body", "no pull request"}, &out)
		var ve *events.ValidationError
		if !errors.As(err, &ve) || !strings.Contains(ve.Field, "pullRequest") {
			t.Fatalf("run: %v, want a validation error naming pullRequest", err)
		}
		if out.Len() != 0 {
			t.Errorf("printed %q", out.String())
		}
	})

	// One waiter, many requests in flight: each gets its own outcome,
	// whatever order the outcomes arrive in.
	t.Run("concurrent requests", func(t *testing.T) {
		js, _ := f.NATS.JetStream()
		w, err := newWaiter(ctx, js)
		if err != nil {
			t.Fatal(err)
		}
		defer w.close()
		var wg sync.WaitGroup
		for pr := 1; pr <= 12; pr++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				integration := ok.ID
				if pr%4 == 0 {
					integration = refusing.ID
				}
				id, o, err := w.request(ctx, js, fleet.Tenant, events.AnnotationRequested{
					IntegrationID: integration, Operation: events.OpComment,
					Repository: events.Repository{Owner: "acme", Name: "api"}, PullRequest: pr,
					Comment: &events.Comment{Body: fmt.Sprintf("scan of #%d", pr)},
				})
				switch {
				case err != nil:
					t.Errorf("#%d: %v", pr, err)
				case pr%4 == 0 && (o.Failed == nil || o.Failed.RequestID != id || !o.Failed.DeadLettered):
					t.Errorf("#%d (request %s): %+v, want failed and dead-lettered", pr, id, o)
				case pr%4 != 0 && (o.Completed == nil || o.Completed.RequestID != id ||
					!strings.Contains(o.Completed.URL, fmt.Sprintf("/pull/%d#", pr))):
					t.Errorf("#%d (request %s): %+v, want its completed", pr, id, o)
				}
			}()
		}
		wg.Wait()
	})
}

// TestNoOutcome: a request nobody answers ends when the wait does, with
// the request id in the error, so it can be looked up later.
func TestNoOutcome(t *testing.T) {
	srv := fleet.StartNATS(t)
	js, _ := srv.JetStream()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	w, err := newWaiter(ctx, js)
	if err != nil {
		t.Fatal(err)
	}
	defer w.close()
	short, cancelShort := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancelShort()
	id, _, err := w.request(short, js, fleet.Tenant, events.AnnotationRequested{
		IntegrationID: "0b5a3bb0-6a43-4d7e-9a39-6f1f9d9a00a1", Operation: events.OpStatus,
		Repository: events.Repository{Owner: "acme", Name: "api"}, CommitSHA: strings.Repeat("ab", 20),
		Status: &events.CommitStatus{State: "success", Context: "scan"},
	})
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), id) {
		t.Fatalf("err = %v, want a deadline naming request %s", err, id)
	}
	// The request itself is in the stream, with the event id as message id.
	msg, err := js.Stream(ctx, streamSCM)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := msg.GetLastMsgForSubject(ctx, events.SubjectAnnotationRequested)
	if err != nil {
		t.Fatal(err)
	}
	if got := raw.Header.Get(jetstream.MsgIDHeader); got != id {
		t.Errorf("Nats-Msg-Id %q, want the event id %s", got, id)
	}
}
