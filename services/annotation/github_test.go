package annotation_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"inthub.dev/events"
	"inthub.dev/pkg/connectors"
	"inthub.dev/pkg/connectors/github"
	"inthub.dev/pkg/connectors/github/githubtest"
	"inthub.dev/schemas"
	"inthub.dev/services/annotation"
)

const ghKeyEnv = "INTHUB_TEST_GITHUB_APP_KEY"

// withGitHub registers scm.github in the env's registry, talking to a fake
// GitHub, and stores an integration for it. The connector is the real one;
// only its HTTP client is the fake's (which resolves api.github.com to it).
func (e *env) withGitHub(opts githubtest.Options) (*githubtest.Server, string) {
	e.t.Helper()
	srv := githubtest.New(e.t, opts)
	e.t.Setenv(ghKeyEnv, string(srv.KeyPEM()))
	schema, err := schemas.ConfigSchema(github.Type)
	if err != nil {
		e.t.Fatal(err)
	}
	e.reg.Register(github.Info(schema), func(cfg connectors.Config) (connectors.Connector, error) {
		cfg.HTTPClient = srv.Client()
		return github.New(cfg)
	})
	id := newID()
	in := integration(id, tenantA, github.Type, "active")
	conf, _ := json.Marshal(map[string]any{"endpoint": srv.Root(), "appId": srv.AppID(),
		"installationId": srv.InstallationID(), "privateKey": "authref://env/" + ghKeyEnv, "timeoutSeconds": 5})
	in.Config = conf
	e.put(in)
	return srv, id
}

func TestGitHubStickyCommentOnceHoweverSent(t *testing.T) {
	e := newEnv(t)
	srv, id := e.withGitHub(githubtest.Options{})
	// The first write fails: that request is redelivered.
	srv.FailRandomly(githubtest.RouteCreateComment, 1, githubtest.ServerError(502))
	e.start(annotation.Config{})

	first := comment(id, 42, "stellaops-scan", "scan 1")
	e.request(tenantA, first)
	eventually(t, 20*time.Second, "the 502 seen", func() bool { return srv.Requests(githubtest.RouteCreateComment) >= 1 })
	srv.Clear()
	eventually(t, 30*time.Second, "first posted", func() bool { c, _ := e.results(); return len(c) == 1 })
	// Scanner re-sends three times, then one is replayed (same event, a new
	// message id, as `inthubctl dlq replay` publishes it).
	var last events.Event
	for i := 2; i <= 4; i++ {
		ev, err := events.New(events.SubjectAnnotationRequested, "stellaops/scanner", tenantA, comment(id, 42, "stellaops-scan", fmt.Sprintf("scan %d", i)))
		if err != nil {
			t.Fatal(err)
		}
		e.publishRaw(ev)
		eventually(t, 20*time.Second, "posted in turn", func() bool { c, _ := e.results(); return len(c) == i })
		last = ev
	}
	b, _ := last.Marshal()
	if _, err := e.js.Publish(e.ctx, events.SubjectAnnotationRequested, b); err != nil {
		t.Fatal(err)
	}
	e.request(tenantA, comment(id, 42, "other-key", "another tool"))
	eventually(t, 20*time.Second, "all six done", func() bool { c, _ := e.results(); return len(c) == 6 })

	cs := srv.Comments("acme/api", 42)
	if len(cs) != 2 {
		t.Fatalf("%d comments on the PR, want 2 (one per key): %+v", len(cs), cs)
	}
	var sticky githubtest.Comment
	for _, c := range cs {
		if strings.Contains(c.Body, connectors.CommentMarker("stellaops-scan")) {
			sticky = c
		}
	}
	if !strings.Contains(sticky.Body, "scan 4") || sticky.Edits != 3 {
		t.Errorf("sticky comment = %q with %d edits, want the last body after 3 edits (the replay is unchanged)", sticky.Body, sticky.Edits)
	}
	if n := srv.Writes(githubtest.RouteCreateComment); n != 2 {
		t.Errorf("%d comments created, want 2", n)
	}
}

func TestGitHubCheckRunWith237Annotations(t *testing.T) {
	e := newEnv(t)
	srv, id := e.withGitHub(githubtest.Options{})
	e.start(annotation.Config{})
	e.request(tenantA, checkRun(id, 237))
	eventually(t, 20*time.Second, "posted", func() bool { c, _ := e.results(); return len(c) == 1 })
	runs := srv.CheckRuns("acme/api")
	if len(runs) != 1 {
		t.Fatalf("%d check runs", len(runs))
	}
	r := runs[0]
	if len(r.Annotations) != 237 || r.Updates != 4 || srv.Writes(githubtest.RouteCreateCheckRun) != 1 || srv.Writes(githubtest.RouteUpdateCheckRun) != 4 {
		t.Fatalf("%d annotations, %d updates; creates %d", len(r.Annotations), r.Updates, srv.Writes(githubtest.RouteCreateCheckRun))
	}
	for i, a := range r.Annotations {
		if a.Message != fmt.Sprintf("finding %d", i) {
			t.Fatalf("annotation %d is %q: order lost", i, a.Message)
		}
	}
	c, _ := e.results()
	if c[0].URL != r.HTMLURL || c[0].ExternalID != fmt.Sprint(r.ID) {
		t.Errorf("completed %+v, run %d at %s", c[0], r.ID, r.HTMLURL)
	}
}

// GitHub's secondary rate limit starts in the middle of a burst of 100:
// the request that meets it is the only one sent inside the window; all
// 100 are posted afterwards, none twice.
func TestGitHubSecondaryLimitOnABurst(t *testing.T) {
	e := newEnv(t)
	srv, id := e.withGitHub(githubtest.Options{})
	e.start(annotation.Config{MaxDeliver: 20, AccountBudget: annotation.Budget{PerSecond: 50}})
	for i := range 100 {
		e.request(tenantA, status(id, fmt.Sprintf("ctx-%03d", i)))
		if i == 9 {
			eventually(t, 10*time.Second, "a few posted", func() bool { return srv.Writes(githubtest.RouteCreateStatus) >= 5 })
			srv.Penalize(10 * time.Second)
		}
	}
	eventually(t, 90*time.Second, "all 100 posted", func() bool { c, _ := e.results(); return len(c) == 100 })
	if v := srv.PenaltyViolations(); v > 1 {
		t.Errorf("%d requests sent inside the penalty window; only the one that met it may be", v)
	}
	sts := srv.Statuses("acme/api", sha1)
	seen := map[string]int{}
	for _, s := range sts {
		seen[s.Context]++
	}
	if len(seen) != 100 {
		t.Errorf("%d contexts posted, want 100", len(seen))
	}
	for c, n := range seen {
		if n != 1 {
			t.Errorf("context %s posted %d times", c, n)
		}
	}
	if len(e.dlq()) != 0 {
		t.Errorf("%d dead letters", len(e.dlq()))
	}
}

func TestGitHubDownSpoolsThenDrains(t *testing.T) {
	e := newEnv(t)
	srv, id := e.withGitHub(githubtest.Options{})
	e.start(annotation.Config{BreakerFailures: 2, BreakerOpenFor: 200 * time.Millisecond, OfflineAfter: 500 * time.Millisecond, MaxDeliver: 50})
	srv.Down()
	for i := range 6 {
		e.request(tenantA, status(id, fmt.Sprintf("down-%d", i)))
	}
	e.request(tenantA, checkRun(id, 60))
	eventually(t, 60*time.Second, "all seven spooled", func() bool { return len(e.spooled()) == 7 })
	if _, f := e.results(); len(f) != 7 || !f[0].Spooled {
		t.Fatalf("failed events: %+v", f)
	}
	srv.Up()
	hc, _ := events.New(events.SubjectIntegrationHealthChanged, "inthub/catalog", tenantA, events.HealthChanged{
		IntegrationID: id, TenantID: tenantA, Type: github.Type, Status: events.HealthHealthy,
		PreviousStatus: events.HealthUnhealthy, Message: "ok", CheckedAt: time.Now().UTC()})
	e.publishRaw(hc)
	eventually(t, 30*time.Second, "all posted", func() bool { c, _ := e.results(); return len(c) == 7 })
	if n := len(srv.Statuses("acme/api", sha1)); n != 6 {
		t.Errorf("%d statuses, want 6", n)
	}
	if runs := srv.CheckRuns("acme/api"); len(runs) != 1 || len(runs[0].Annotations) != 60 {
		t.Errorf("check runs %+v", runs)
	}
}

func TestGitHubRefusalsDeadLetterOnce(t *testing.T) {
	for _, tc := range []struct {
		name   string
		fault  *githubtest.Fault
		req    func(id string) events.AnnotationRequested
		reason string
	}{
		{"401", ptr(githubtest.Unauthorized()), func(id string) events.AnnotationRequested { return status(id, "c") }, "401"},
		{"404 repository", nil, func(id string) events.AnnotationRequested {
			r := status(id, "c")
			r.Repository.Name = "nope"
			return r
		}, "404"},
		{"404 pull request", nil, func(id string) events.AnnotationRequested { return comment(id, 4242, "k", "x") }, "404"},
		{"422", ptr(githubtest.Fault{Status: 422, Message: "Validation Failed", Errors: []string{"sha is not a commit"}}),
			func(id string) events.AnnotationRequested { return status(id, "c") }, "422"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			srv, id := e.withGitHub(githubtest.Options{})
			if tc.fault != nil {
				srv.Fail(githubtest.RouteCreateStatus, *tc.fault)
			}
			e.start(annotation.Config{})
			rid := e.request(tenantA, tc.req(id))
			eventually(t, 20*time.Second, "dead-lettered", func() bool { return len(e.dlq()) == 1 })
			eventually(t, 10*time.Second, "failed event", func() bool { _, f := e.results(); return len(f) == 1 })
			l := e.dlq()[0]
			if l.ErrorClass != "permanent" || l.DeliveryCount != 1 || !strings.Contains(l.LastError, tc.reason) {
				t.Errorf("dead letter %s after %d: %q", l.ErrorClass, l.DeliveryCount, l.LastError)
			}
			_, f := e.results()
			if f[0].RequestID != rid || !f[0].DeadLettered || f[0].Provider != "github" {
				t.Errorf("failed %+v", f[0])
			}
		})
	}
}

func ptr[T any](v T) *T { return &v }

// The worker dies with requests in flight (its connection cut, nothing
// acked); a new one takes over. Every sticky comment and check run exists
// once, with every annotation once: retries find what the first attempt
// wrote.
func TestGitHubWorkerKilledMidLoad(t *testing.T) {
	e := newEnv(t)
	srv, id := e.withGitHub(githubtest.Options{})
	srv.SetLatency(30 * time.Millisecond)
	first := e.startOwn(annotation.Config{AckWait: 2 * time.Second, Concurrency: 4})
	const n = 12
	for i := range n {
		e.request(tenantA, comment(id, i+1, "scan", fmt.Sprintf("body %d", i)))
		cr := checkRun(id, 120)
		cr.CheckRun.ExternalID = fmt.Sprintf("run-%d", i)
		cr.CommitSHA = sha2
		e.request(tenantA, cr)
	}
	eventually(t, 30*time.Second, "some posted", func() bool {
		return srv.Writes(githubtest.RouteCreateComment)+srv.Writes(githubtest.RouteCreateCheckRun) >= 6
	})
	first.kill()
	e.startOwn(annotation.Config{AckWait: 2 * time.Second, Concurrency: 4})
	eventually(t, 90*time.Second, "every request completed", func() bool {
		c, _ := e.results()
		done := map[string]bool{}
		for _, x := range c {
			done[x.RequestID] = true
		}
		return len(done) == 2*n
	})
	for pr := 1; pr <= n; pr++ {
		if cs := srv.Comments("acme/api", pr); len(cs) != 1 {
			t.Errorf("PR %d has %d comments", pr, len(cs))
		}
	}
	runs := srv.CheckRuns("acme/api")
	if len(runs) != n {
		t.Errorf("%d check runs, want %d", len(runs), n)
	}
	for _, r := range runs {
		if len(r.Annotations) != 120 {
			t.Errorf("run %s has %d annotations, want 120", r.ExternalID, len(r.Annotations))
		}
	}
	// A request the killed worker completed but did not ack is completed
	// again by the next one, under the same event id: one event each.
	c, _ := e.results()
	per := map[string]int{}
	for _, x := range c {
		per[x.RequestID]++
	}
	for rid, k := range per {
		if k != 1 {
			t.Errorf("request %s: %d scm.annotation.completed, want 1", rid, k)
		}
	}
}

type running struct{ kill func() }

// startOwn runs a worker on a NATS connection of its own; kill cuts the
// connection first (acks in flight are lost, as in a crash), then stops it.
func (e *env) startOwn(cfg annotation.Config) running {
	e.t.Helper()
	nc := e.srv.Connect()
	cfg.Registry = e.reg
	cfg.DataDir = e.t.TempDir()
	cfg.Listen = "-"
	if cfg.AccountBudget.PerSecond == 0 {
		cfg.AccountBudget = annotation.Budget{PerSecond: 1000}
		cfg.HostBudget = annotation.Budget{PerSecond: 1000}
	}
	svc, err := annotation.New(cfg, nc)
	if err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = svc.Run(ctx); close(done) }()
	var once sync.Once
	kill := func() {
		once.Do(func() {
			nc.Close()
			cancel()
			<-done
		})
	}
	e.t.Cleanup(kill)
	select {
	case <-svc.Ready():
	case <-time.After(20 * time.Second):
		e.t.Fatal("worker not ready")
	}
	return running{kill: kill}
}
