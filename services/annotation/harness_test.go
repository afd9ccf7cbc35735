package annotation_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	"inthub.dev/events"
	"inthub.dev/pkg/bus"
	"inthub.dev/pkg/connectors"
	"inthub.dev/pkg/deadletter"
	"inthub.dev/pkg/egress"
	"inthub.dev/pkg/natstest"
	"inthub.dev/services/annotation"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, natstest.LeakOptions(
		goleak.IgnoreTopFunction("net/http.(*persistConn).readLoop"),
		goleak.IgnoreTopFunction("net/http.(*persistConn).writeLoop"),
		goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"),
	)...)
}

const (
	tenantA = "0b5a3bb0-6a43-4d7e-9a39-6f1f9d9a00a1"
	tenantB = "0b5a3bb0-6a43-4d7e-9a39-6f1f9d9a00b2"
	sha1    = "0123456789abcdef0123456789abcdef01234567"
	sha2    = "89abcdef0123456789abcdef0123456789abcdef"
)

// recorder is a fake provider behind the test type "test.recorder": it
// records every Annotate call and the effects a real provider would show,
// and fails as the test says. One recorder serves every integration.
type recorder struct {
	mu      sync.Mutex
	calls   []call
	effects map[string]int // request id → times posted
	fail    func(req connectors.AnnotationRequest, n int) error
	writes  func(req connectors.AnnotationRequest) int
	url     func(id string) string
	// rateLimit, when set, is the provider's rate limit as each
	// successful post reports it.
	rateLimit func() *connectors.RateLimit
}

type call struct {
	at  time.Time
	req connectors.AnnotationRequest
	err error
}

func newRecorder() *recorder { return &recorder{effects: map[string]int{}} }

func (r *recorder) setFail(f func(req connectors.AnnotationRequest, n int) error) {
	r.mu.Lock()
	r.fail = f
	r.mu.Unlock()
}

func (r *recorder) snapshot() ([]call, map[string]int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	cs := append([]call(nil), r.calls...)
	es := make(map[string]int, len(r.effects))
	for k, v := range r.effects {
		es[k] = v
	}
	return cs, es
}

type recConn struct {
	r   *recorder
	cfg connectors.Config
}

func (c *recConn) Type() string     { return "test.recorder" }
func (c *recConn) Provider() string { return "recorder" }
func (c *recConn) Validate() error  { return nil }
func (c *recConn) Close() error     { return nil }
func (c *recConn) TestConnection(context.Context) connectors.Result {
	return connectors.Result{Status: connectors.StatusHealthy}
}
func (c *recConn) CheckHealth(context.Context) connectors.Result {
	return connectors.Result{Status: connectors.StatusHealthy}
}
func (c *recConn) AnnotationScope() (string, string) { return "recorder.example", c.cfg.IntegrationID }
func (c *recConn) Writes(req connectors.AnnotationRequest) int {
	c.r.mu.Lock()
	w := c.r.writes
	c.r.mu.Unlock()
	if w != nil {
		return w(req)
	}
	return 1
}

func (c *recConn) Annotate(ctx context.Context, req connectors.AnnotationRequest) (connectors.Posted, error) {
	r := c.r
	r.mu.Lock()
	defer r.mu.Unlock()
	var err error
	if r.fail != nil {
		err = r.fail(req, len(r.calls))
	}
	r.calls = append(r.calls, call{at: time.Now(), req: req, err: err})
	if err != nil {
		return connectors.Posted{}, err
	}
	r.effects[req.ID]++
	url := "https://recorder.example/" + req.ID
	if r.url != nil {
		url = r.url(req.ID)
	}
	var rl *connectors.RateLimit
	if r.rateLimit != nil {
		rl = r.rateLimit()
	}
	return connectors.Posted{URL: url, ExternalID: req.ID, Writes: 1, RateLimit: rl}, nil
}

type env struct {
	t    testing.TB
	ctx  context.Context
	srv  *natstest.Server
	js   jetstream.JetStream
	nc   *nats.Conn
	kv   jetstream.KeyValue
	rec  *recorder
	reg  *connectors.Registry
	dl   *deadletter.Store
	svc  *annotation.Service
	stop func()
}

func newEnv(t testing.TB) *env {
	t.Helper()
	srv := natstest.Start(t)
	js, nc := srv.JetStream()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	if err := bus.Provision(ctx, js, bus.DefaultStreamSettings()); err != nil {
		t.Fatal(err)
	}
	kv, err := js.KeyValue(ctx, bus.BucketIntegrations)
	if err != nil {
		t.Fatal(err)
	}
	rec := newRecorder()
	reg := connectors.NewRegistry()
	reg.Register(connectors.Info{Type: "test.recorder", Provider: "recorder", ConfigSchema: []byte(`{"type":"object"}`)},
		func(cfg connectors.Config) (connectors.Connector, error) { return &recConn{r: rec, cfg: cfg}, nil })
	dl, err := deadletter.New(js)
	if err != nil {
		t.Fatal(err)
	}
	return &env{t: t, ctx: ctx, srv: srv, js: js, nc: nc, kv: kv, rec: rec, reg: reg, dl: dl}
}

// start runs a worker with cfg (Registry, DataDir and Listen filled in)
// until the test ends or stop is called.
func (e *env) start(cfg annotation.Config) *annotation.Service {
	e.t.Helper()
	if cfg.Registry == nil {
		cfg.Registry = e.reg
	}
	cfg.DataDir = e.t.TempDir()
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:0"
	}
	cfg.Egress = egress.Policy{AllowLoopback: true, AllowHTTP: true}
	if cfg.AccountBudget.PerSecond == 0 {
		cfg.AccountBudget = annotation.Budget{PerSecond: 1000}
	}
	if cfg.HostBudget.PerSecond == 0 {
		cfg.HostBudget = annotation.Budget{PerSecond: 1000}
	}
	svc, err := annotation.New(cfg, e.nc)
	if err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx) }()
	var once sync.Once
	e.stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				e.t.Errorf("Run: %v", err)
			}
		})
	}
	e.t.Cleanup(e.stop)
	select {
	case <-svc.Ready():
	case err := <-done:
		e.t.Fatalf("Run returned before ready: %v", err)
	case <-time.After(20 * time.Second):
		e.t.Fatal("worker not ready within 20s")
	}
	e.svc = svc
	return svc
}

func integration(id, tenant, typ, status string) events.Integration {
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	return events.Integration{ID: id, TenantID: tenant, Type: typ, Name: "it-" + id[:8], Config: json.RawMessage(`{}`),
		Status: status, HealthStatus: events.HealthHealthy, Version: 1, CreatedAt: t0, UpdatedAt: t0}
}

// put writes the integration as the catalog's outbox forwarder does.
func (e *env) put(in events.Integration) {
	e.t.Helper()
	b, err := json.Marshal(in)
	if err != nil {
		e.t.Fatal(err)
	}
	if _, err := e.kv.Put(e.ctx, bus.IntegrationKey(in.TenantID, in.ID), b); err != nil {
		e.t.Fatal(err)
	}
}

// request publishes an annotation request as Scanner does: plain
// JetStream, no inthub headers but the message id. It returns the event id.
func (e *env) request(tenant string, req events.AnnotationRequested) string {
	e.t.Helper()
	ev, err := events.New(events.SubjectAnnotationRequested, "stellaops/scanner", tenant, req)
	if err != nil {
		e.t.Fatal(err)
	}
	e.publishRaw(ev)
	return ev.ID
}

func (e *env) publishRaw(ev events.Event) {
	e.t.Helper()
	b, err := ev.Marshal()
	if err != nil {
		e.t.Fatal(err)
	}
	if _, err := e.js.PublishMsg(e.ctx, &nats.Msg{Subject: ev.Type, Data: b, Header: nats.Header{"Nats-Msg-Id": []string{ev.ID}}}); err != nil {
		e.t.Fatal(err)
	}
}

// results reads every scm.annotation.completed and .failed so far.
func (e *env) results() (completed []events.AnnotationCompleted, failed []events.AnnotationFailed) {
	e.t.Helper()
	cons, err := e.js.OrderedConsumer(e.ctx, bus.StreamSCM, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{events.SubjectAnnotationCompleted, events.SubjectAnnotationFailed},
	})
	if err != nil {
		e.t.Fatal(err)
	}
	for {
		batch, err := cons.FetchNoWait(1000)
		if err != nil {
			e.t.Fatal(err)
		}
		n := 0
		for m := range batch.Messages() {
			n++
			ev, err := events.Parse(m.Data())
			if err != nil {
				e.t.Fatalf("result event does not parse: %v", err)
			}
			switch ev.Type {
			case events.SubjectAnnotationCompleted:
				var c events.AnnotationCompleted
				if err := ev.Decode(&c); err != nil {
					e.t.Fatal(err)
				}
				completed = append(completed, c)
			default:
				var f events.AnnotationFailed
				if err := ev.Decode(&f); err != nil {
					e.t.Fatal(err)
				}
				failed = append(failed, f)
			}
		}
		if n == 0 {
			return completed, failed
		}
	}
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %s: %s", within, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (e *env) dlq() []deadletter.Letter {
	e.t.Helper()
	ls, err := e.dl.List(e.ctx, deadletter.Filter{Subject: events.SubjectAnnotationRequested})
	if err != nil {
		e.t.Fatal(err)
	}
	return ls
}

func (e *env) spooled() []deadletter.Letter {
	e.t.Helper()
	ls, err := e.dl.SpoolList(e.ctx, deadletter.Filter{Subject: events.SubjectAnnotationRequested})
	if err != nil {
		e.t.Fatal(err)
	}
	return ls
}

func (e *env) metric(name string) string {
	e.t.Helper()
	resp, err := http.Get("http://" + e.svc.Addr().String() + "/metrics")
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	var b strings.Builder
	buf := make([]byte, 64<<10)
	for {
		n, err := resp.Body.Read(buf)
		b.Write(buf[:n])
		if err != nil {
			break
		}
	}
	var lines []string
	for _, l := range strings.Split(b.String(), "\n") {
		if strings.HasPrefix(l, name) {
			lines = append(lines, l)
		}
	}
	return strings.Join(lines, "\n")
}

func newID() string { return uuid.NewString() }

func status(id string, ctxName string) events.AnnotationRequested {
	return events.AnnotationRequested{IntegrationID: id, Operation: events.OpStatus,
		Repository: events.Repository{Owner: "acme", Name: "api"}, CommitSHA: sha1,
		Status: &events.CommitStatus{State: "success", Context: ctxName, Description: "ok"}}
}

func comment(id string, pr int, key, body string) events.AnnotationRequested {
	return events.AnnotationRequested{IntegrationID: id, Operation: events.OpComment,
		Repository: events.Repository{Owner: "acme", Name: "api"}, PullRequest: pr,
		Comment: &events.Comment{Body: body, Key: key, UpdateExisting: key != ""}}
}

func checkRun(id string, n int) events.AnnotationRequested {
	as := make([]events.Annotation, n)
	for i := range as {
		as[i] = events.Annotation{Path: "main.go", StartLine: i + 1, EndLine: i + 1, Level: "warning", Message: fmt.Sprintf("finding %d", i)}
	}
	return events.AnnotationRequested{IntegrationID: id, Operation: events.OpCheckRun,
		Repository: events.Repository{Owner: "acme", Name: "api"}, CommitSHA: sha1, PullRequest: 7,
		CheckRun: &events.CheckRun{Name: "scan", Status: "completed", Conclusion: "failure", ExternalID: "scan-1",
			Summary: "3 findings", Annotations: as}}
}
