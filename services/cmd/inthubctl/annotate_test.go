package main

import (
	"errors"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"inthub.dev/events"
	"inthub.dev/pkg/bus"
)

const (
	annTenant      = "0b5a3bb0-6a43-4d7e-9a39-6f1f9d9a0001"
	annIntegration = "5f0c7a4e-1111-4222-8333-444455556666"
)

// worker answers every scm.annotation.requested like the annotation
// worker: completed, or failed when the body says "fail".
func (f *fixture) worker() {
	f.t.Helper()
	cons, err := f.js.CreateOrUpdateConsumer(f.ctx, bus.StreamSCM, jetstream.ConsumerConfig{
		Durable: "fake-worker", FilterSubjects: []string{events.SubjectAnnotationRequested}, AckPolicy: jetstream.AckExplicitPolicy,
	})
	if err != nil {
		f.t.Fatal(err)
	}
	cc, err := cons.Consume(func(m jetstream.Msg) {
		_ = m.Ack()
		ev, err := events.Parse(m.Data())
		if err != nil {
			f.t.Errorf("request does not parse: %v", err)
			return
		}
		var req events.AnnotationRequested
		_ = ev.Decode(&req)
		var out events.Event
		if req.Comment != nil && strings.Contains(req.Comment.Body, "fail") {
			out, err = events.New(events.SubjectAnnotationFailed, "fake", ev.TenantID, events.AnnotationFailed{
				RequestID: ev.ID, IntegrationID: req.IntegrationID, Operation: req.Operation, Provider: "github",
				ErrorClass: "permanent", Error: "422 Validation Failed", Attempts: 1, DeadLettered: true})
		} else {
			out, err = events.New(events.SubjectAnnotationCompleted, "fake", ev.TenantID, events.AnnotationCompleted{
				RequestID: ev.ID, IntegrationID: req.IntegrationID, Operation: req.Operation, Provider: "github",
				URL: "https://github.example/acme/api/pull/42#issuecomment-1", Attempts: 1})
		}
		if err != nil {
			f.t.Error(err)
			return
		}
		b, _ := out.Marshal()
		// The test may be over (its connection closed) by the time a
		// late answer goes out; nobody waits for that one.
		if _, err := f.js.Publish(f.ctx, out.Type, b); err != nil && !errors.Is(err, nats.ErrConnectionClosed) && f.ctx.Err() == nil {
			f.t.Error(err)
		}
	})
	if err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(cc.Stop)
}

func TestAnnotate(t *testing.T) {
	f := newFixture(t)
	f.worker()
	base := []string{"annotate", "--tenant", annTenant, "--integration", annIntegration, "--repo", "acme/api"}

	r := f.run(append(base, "--pr", "42", "--comment", "0 findings", "--key", "scan")...)
	if r.code != exitOK || !strings.Contains(r.stdout, "scm.annotation.completed") || !strings.Contains(r.stdout, "issuecomment-1") {
		t.Fatalf("comment: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	r = f.run(append(base, "--pr", "42", "--comment", "please fail")...)
	if r.code != exitError || !strings.Contains(r.stdout, "scm.annotation.failed") || !strings.Contains(r.stderr, "dlq list") {
		t.Fatalf("failed: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}

	for name, args := range map[string][]string{
		"no operation":    {},
		"two operations":  {"--comment", "x", "--status", "success", "--pr", "1"},
		"bad repo":        {"--comment", "x", "--pr", "1", "--repo", "noslash"},
		"comment sans PR": {"--comment", "x"},
		"short sha":       {"--status", "success", "--sha", "abc"},
		"unknown state":   {"--status", "great", "--sha", strings.Repeat("a", 40)},
		"unexpected arg":  {"--comment", "x", "--pr", "1", "extra"},
	} {
		r := f.run(append(append([]string{}, base...), args...)...)
		if r.code != exitUsage {
			t.Errorf("%s: exit %d, want %d\n%s", name, r.code, exitUsage, r.stderr)
		}
	}
	r = f.run("annotate", "--integration", annIntegration, "--repo", "a/b", "--comment", "x", "--pr", "1")
	if r.code != exitUsage || !strings.Contains(r.stderr, "--tenant") {
		t.Errorf("missing tenant: %d %s", r.code, r.stderr)
	}
}

func TestAnnotateWithoutWorkerTimesOut(t *testing.T) {
	f := newFixture(t)
	r := f.run("annotate", "--tenant", annTenant, "--integration", annIntegration, "--repo", "acme/api",
		"--sha", strings.Repeat("ab", 20), "--status", "success", "--wait", "2500ms")
	if r.code != exitError || !strings.Contains(r.stderr, "no result") || !strings.Contains(r.stdout, "published") {
		t.Fatalf("exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	r = f.run("annotate", "--tenant", annTenant, "--integration", annIntegration, "--repo", "acme/api",
		"--sha", strings.Repeat("ab", 20), "--check-run", "scan", "--wait", "0")
	if r.code != exitOK || !strings.Contains(r.stdout, "check_run") {
		t.Fatalf("--wait 0: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
}
