package e2e_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"inthub.dev/events"
	"inthub.dev/pkg/bus"
	"inthub.dev/pkg/connectors/gitlab/gitlabtest"
	"inthub.dev/pkg/egress"
	"inthub.dev/pkg/natstest"
	"inthub.dev/pkg/pgtest"
	"inthub.dev/services/annotation"
	"inthub.dev/services/catalog"
	"inthub.dev/services/catalog/auth"
	"inthub.dev/services/healthpoller"
)

// spans is every span the fleet ended, whichever service ended it: one
// in-memory recorder behind one TracerProvider per service, each with its
// own service.name, as each binary has its own.
type spans struct {
	t   *testing.T
	rec *tracetest.SpanRecorder
}

func newSpans(t *testing.T) *spans { return &spans{t: t, rec: tracetest.NewSpanRecorder()} }

func (s *spans) provider(service string) trace.TracerProvider {
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(s.rec),
		sdktrace.WithResource(resource.NewSchemaless(attribute.String("service.name", service))))
	s.t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	return tp
}

// span is what a test asserts on: who ended it, under what name, in which
// trace.
type span struct {
	service, name string
	kind          trace.SpanKind
	sc            trace.SpanContext
	parent        trace.SpanContext
	attrs         map[attribute.Key]string
}

func (s span) String() string {
	return fmt.Sprintf("%s %q (%s) %s/%s under %s", s.service, s.name, s.kind, s.sc.TraceID(), s.sc.SpanID(), s.parent.SpanID())
}

func (s *spans) all() []span {
	var out []span
	for _, r := range s.rec.Ended() {
		sp := span{name: r.Name(), kind: r.SpanKind(), sc: r.SpanContext(), parent: r.Parent(), attrs: map[attribute.Key]string{}}
		for _, kv := range r.Resource().Attributes() {
			if kv.Key == "service.name" {
				sp.service = kv.Value.AsString()
			}
		}
		for _, kv := range r.Attributes() {
			sp.attrs[kv.Key] = kv.Value.String()
		}
		out = append(out, sp)
	}
	return out
}

// in returns the spans of trace id.
func (s *spans) in(id trace.TraceID) []span {
	var out []span
	for _, sp := range s.all() {
		if sp.sc.TraceID() == id {
			out = append(out, sp)
		}
	}
	return out
}

// hop is a span a trace must contain: a service's span of that name (and
// kind, when set) whose attributes include attrs.
type hop struct {
	service, name string
	kind          trace.SpanKind
	attrs         map[attribute.Key]string
}

func (h hop) String() string { return fmt.Sprintf("%s %q", h.service, h.name) }

func (h hop) matches(sp span) bool {
	if sp.service != h.service || sp.name != h.name || (h.kind != trace.SpanKindUnspecified && sp.kind != h.kind) {
		return false
	}
	for k, v := range h.attrs {
		if sp.attrs[k] != v {
			return false
		}
	}
	return true
}

// waitTrace waits until trace id holds every hop, and returns its spans.
func (s *spans) waitTrace(id trace.TraceID, within time.Duration, hops ...hop) []span {
	s.t.Helper()
	deadline := time.Now().Add(within)
	for {
		got := s.in(id)
		var missing []string
		for _, h := range hops {
			found := false
			for _, sp := range got {
				found = found || h.matches(sp)
			}
			if !found {
				missing = append(missing, h.String())
			}
		}
		if len(missing) == 0 {
			return got
		}
		if time.Now().After(deadline) {
			var have []string
			for _, sp := range got {
				have = append(have, sp.String())
			}
			s.t.Fatalf("trace %s lacks %s after %s; it has:\n  %s", id, strings.Join(missing, ", "), within, strings.Join(have, "\n  "))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

const (
	glTokenEnv = "INTHUB_E2E_TRACE_GITLAB_TOKEN"
	glToken    = "glpat-e2e-trace-000000000000"
	glProject  = "acme/platform/api"
	glMR       = 7
)

// TestOneTracePerJourney: the catalog, the health poller and the annotation
// worker, each on its own NATS connection and TracerProvider, against
// PostgreSQL, JetStream and a fake GitLab.
//
//   - POST /api/v1/integrations is one trace through the outbox, the bus
//     and every worker that reacts: the health poller's first check of the
//     new integration (its call to GitLab included) and its
//     health_checked, the catalog recording it, the health_changed it
//     announces through the outbox, the annotation worker receiving that.
//   - scm.annotation.requested, published by a traced Scanner, is one trace
//     down to the annotation worker's calls to GitLab and the completed
//     event.
func TestOneTracePerJourney(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	sp := newSpans(t)
	db := pgtest.New(t)
	srv := natstest.Start(t)

	gl := gitlabtest.New(t, gitlabtest.Options{})
	gl.AddProject(gitlabtest.Project{Path: glProject, Branches: []string{"main"}})
	gl.AddToken(glToken, gitlabtest.Token{User: "inthub-bot", Bot: true, Member: []string{glProject}})
	head, base := gitlabtest.SHA("trace-head"), gitlabtest.SHA("trace-base")
	gl.AddMergeRequest(glProject, gitlabtest.MergeRequest{IID: glMR,
		DiffRefs: gitlabtest.DiffRefs{BaseSHA: base, StartSHA: base, HeadSHA: head},
		Diffs: []gitlabtest.Diff{{OldPath: "main.go", NewPath: "main.go",
			Diff: "@@ -10,5 +10,6 @@ func main() {\n a\n-b\n+B\n+C\n c\n d\n e\n"}}})
	t.Setenv(glTokenEnv, glToken)
	_, port, err := net.SplitHostPort(gl.Addr())
	if err != nil {
		t.Fatal(err)
	}
	p, _ := strconv.Atoi(port)
	policy := egress.Policy{AllowLoopback: true, AllowHTTP: true, AllowPorts: []int{p}}

	cat, err := catalog.New(catalog.Config{
		Listen: "127.0.0.1:0", DatabaseURL: db.OwnerURL, SkipMigrations: true,
		Auth:   auth.Config{Issuer: "e2e", Audience: "inthub", DevMode: true, DevHS256Secret: secret},
		Egress: policy, TracerProvider: sp.provider("catalog"),
	}, srv.Connect())
	if err != nil {
		t.Fatal(err)
	}
	runService(t, "catalog", cat.Run)
	select {
	case <-cat.Ready():
	case <-ctx.Done():
		t.Fatal("catalog not ready")
	}
	poller, err := healthpoller.New(healthpoller.Config{
		Listen: "-", DataDir: t.TempDir(), IntervalOverride: time.Second,
		Egress: policy, TracerProvider: sp.provider("health-poller"),
	}, srv.Connect())
	if err != nil {
		t.Fatal(err)
	}
	runService(t, "health-poller", poller.Run)
	worker, err := annotation.New(annotation.Config{
		Listen: "-", DataDir: t.TempDir(), Egress: policy, TracerProvider: sp.provider("annotation"),
	}, srv.Connect())
	if err != nil {
		t.Fatal(err)
	}
	runService(t, "annotation", worker.Run)
	for name, ready := range map[string]<-chan struct{}{"health-poller": poller.Ready(), "annotation": worker.Ready()} {
		select {
		case <-ready:
		case <-ctx.Done():
			t.Fatalf("%s not ready", name)
		}
	}
	token, err := auth.DevToken(secret, "e2e", "inthub", "e2e-admin", tenant,
		[]string{"integrations:read", "integrations:write"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	f := &fleet{t: t, base: "http://" + cat.Addr().String(), token: token,
		http: &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}}

	// Journey 1: an integration created through the API.
	var created struct {
		ID string `json:"id"`
	}
	if code := f.call("POST", "/api/v1/integrations", map[string]any{
		"type": "scm.gitlab", "name": "traced",
		"config": map[string]any{"endpoint": gl.URL(), "token": "authref://env/" + glTokenEnv},
	}, &created); code != http.StatusCreated {
		t.Fatalf("create: %d", code)
	}
	var request span
	poll(t, 10*time.Second, "the catalog's server span of the create", func() bool {
		for _, s := range sp.all() {
			if s.service == "catalog" && s.kind == trace.SpanKindServer && s.name == "POST /api/v1/integrations" {
				request = s
				return true
			}
		}
		return false
	})
	if request.attrs["http.route"] != "/api/v1/integrations" || request.attrs["http.response.status_code"] != "201" {
		t.Errorf("server span attributes %v, want route /api/v1/integrations and status 201", request.attrs)
	}
	id := created.ID
	byID := map[attribute.Key]string{"inthub.integration_id": id}
	glHost := strings.TrimPrefix(gl.URL(), "http://")
	if u, err := url.Parse(gl.URL()); err == nil {
		glHost = u.Hostname()
	}
	got := sp.waitTrace(request.sc.TraceID(), 60*time.Second,
		hop{service: "catalog", name: events.SubjectIntegrationCreated + " publish", kind: trace.SpanKindProducer},
		hop{service: "health-poller", name: "health check", attrs: byID},
		hop{service: "health-poller", kind: trace.SpanKindClient, name: "GET gitlab",
			attrs: map[attribute.Key]string{"inthub.integration_id": id, "inthub.provider": "gitlab", "server.address": glHost}},
		hop{service: "health-poller", name: events.SubjectIntegrationHealthChecked + " publish", kind: trace.SpanKindProducer},
		hop{service: "catalog", name: events.SubjectIntegrationHealthChecked + " process", kind: trace.SpanKindConsumer},
		hop{service: "catalog", name: events.SubjectIntegrationHealthChanged + " publish", kind: trace.SpanKindProducer},
		hop{service: "annotation", name: events.SubjectIntegrationHealthChanged + " process", kind: trace.SpanKindConsumer},
	)
	// Every span of the trace hangs from the request: no orphan, one root.
	byIDs := map[trace.SpanID]span{}
	for _, s := range got {
		byIDs[s.sc.SpanID()] = s
	}
	for _, s := range got {
		if s.sc.SpanID() == request.sc.SpanID() {
			continue
		}
		if _, ok := byIDs[s.parent.SpanID()]; !ok {
			t.Errorf("span %s's parent is not in the trace", s)
		}
	}

	// Journey 2: Scanner asks for a note on the merge request.
	scanner := sp.provider("scanner")
	pub, err := bus.NewPublisher(srv.Connect(), bus.PublisherConfig{TracerProvider: scanner})
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	ev, err := events.New(events.SubjectAnnotationRequested, "stellaops/scanner", tenant, events.AnnotationRequested{
		IntegrationID: id, Operation: events.OpComment,
		Repository:  events.Repository{Owner: "acme/platform", Name: "api"},
		PullRequest: glMR, Comment: &events.Comment{Body: "2 findings", Key: "stellaops-scan", UpdateExisting: true},
	})
	if err != nil {
		t.Fatal(err)
	}
	sctx, scan := scanner.Tracer("scanner").Start(ctx, "scan finished")
	if err := pub.Publish(sctx, ev); err != nil {
		t.Fatal(err)
	}
	scan.End()
	got = sp.waitTrace(scan.SpanContext().TraceID(), 60*time.Second,
		hop{service: "scanner", name: events.SubjectAnnotationRequested + " publish", kind: trace.SpanKindProducer},
		hop{service: "annotation", name: events.SubjectAnnotationRequested + " process", kind: trace.SpanKindConsumer},
		hop{service: "annotation", kind: trace.SpanKindClient, name: "POST gitlab",
			attrs: map[attribute.Key]string{"inthub.integration_id": id, "inthub.provider": "gitlab", "server.address": glHost}},
		hop{service: "annotation", name: events.SubjectAnnotationCompleted + " publish", kind: trace.SpanKindProducer},
	)
	var process span
	for _, s := range got {
		if s.name == events.SubjectAnnotationRequested+" process" {
			process = s
		}
	}
	for _, s := range got {
		if s.kind == trace.SpanKindClient && s.parent.SpanID() != process.sc.SpanID() {
			// The provider calls are made inside the handler, under the
			// consumer span.
			t.Errorf("provider call %s is not a child of the consumer span %s", s, process)
		}
	}
	if n := gl.Writes(); n == 0 {
		t.Fatal("GitLab saw no write")
	}
}
