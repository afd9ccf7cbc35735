// Package fleet runs the real inthub services the examples talk to, in the
// test process: an embedded JetStream server, a fresh PostgreSQL database,
// the catalog (HTTP API, outbox) and the annotation worker. The examples
// themselves know none of this; they get a NATS URL, as they would in
// production.
//
// The annotation worker posts through a stand-in provider registered under
// the type test.inmemory, so the integrations are made through the
// catalog's API like any other and reach the worker the way they do in
// production (outbox → INTEGRATIONS_STATE). The stand-in records each post
// and fails permanently for an integration whose config says
// failWith "permanent", as a provider refusing a request would.
package fleet

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"inthub.dev/pkg/bus"
	"inthub.dev/pkg/connectors"
	"inthub.dev/pkg/egress"
	"inthub.dev/pkg/fault"
	"inthub.dev/pkg/natstest"
	"inthub.dev/pkg/pgtest"
	"inthub.dev/services/annotation"
	"inthub.dev/services/catalog"
	"inthub.dev/services/catalog/auth"
)

// Tenant is the tenant of every integration the fleet makes.
const Tenant = "6a0e7c1d-3b2f-4e5a-9c8d-7f6e5d4c3b2a"

// Fleet is the running services.
type Fleet struct {
	t     testing.TB
	NATS  *natstest.Server
	api   string
	token string
	http  *http.Client
	Posts *Posts
}

// Start runs the catalog until the test ends.
func Start(t testing.TB) *Fleet {
	t.Helper()
	db := pgtest.New(t)
	srv := natstest.Start(t)
	secret := make([]byte, 32)
	if _, err := rand.Read(secret); err != nil {
		t.Fatal(err)
	}
	cat, err := catalog.New(catalog.Config{
		Listen:         "127.0.0.1:0",
		DatabaseURL:    db.OwnerURL,
		SkipMigrations: true, // pgtest migrated it
		Streams:        bus.DefaultStreamSettings(),
		Auth:           auth.Config{Issuer: "examples", Audience: "inthub", DevMode: true, DevHS256Secret: secret},
	}, srv.Connect())
	if err != nil {
		t.Fatal(err)
	}
	f := &Fleet{t: t, NATS: srv, Posts: &Posts{byRequest: map[string]int{}},
		http: &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}}
	f.run("catalog", cat.Run, cat.Ready())
	f.api = "http://" + cat.Addr().String() + "/api/v1"
	if f.token, err = auth.DevToken(secret, "examples", "inthub", "examples", Tenant,
		[]string{"integrations:read", "integrations:write"}, time.Hour); err != nil {
		t.Fatal(err)
	}

	return f
}

// StartAnnotation runs the annotation worker until the test ends, once the
// integrations given have reached INTEGRATIONS_STATE: the worker is ready
// only once it has loaded that bucket, so it then knows them.
func (f *Fleet) StartAnnotation(ids ...string) {
	f.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	js, _ := f.NATS.JetStream()
	kv, err := js.KeyValue(ctx, bus.BucketIntegrations)
	if err != nil {
		f.t.Fatal(err)
	}
	for _, id := range ids {
		for {
			if _, err := kv.Get(ctx, bus.IntegrationKey(Tenant, id)); err == nil {
				break
			}
			select {
			case <-ctx.Done():
				f.t.Fatalf("integration %s not in %s within 30s", id, bus.BucketIntegrations)
			case <-time.After(20 * time.Millisecond):
			}
		}
	}
	reg := connectors.NewRegistry()
	reg.Register(connectors.Info{Type: "test.inmemory", Provider: "example", ConfigSchema: []byte(`{"type":"object"}`)},
		func(cfg connectors.Config) (connectors.Connector, error) {
			return &provider{posts: f.Posts, cfg: cfg}, nil
		})
	w, err := annotation.New(annotation.Config{
		Listen: "-", DataDir: f.t.TempDir(), Registry: reg,
		Egress: egress.Policy{AllowLoopback: true, AllowHTTP: true},
		// Budgets that never make a test wait.
		AccountBudget: annotation.Budget{PerSecond: 1000}, HostBudget: annotation.Budget{PerSecond: 1000},
		Streams: bus.DefaultStreamSettings(),
	}, f.NATS.Connect())
	if err != nil {
		f.t.Fatal(err)
	}
	f.run("annotation", w.Run, w.Ready())
}

// run runs a service until the test ends and waits for it to be ready.
func (f *Fleet) run(name string, run func(context.Context) error, ready <-chan struct{}) {
	f.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx) }()
	f.t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil && !errors.Is(err, context.Canceled) {
				f.t.Errorf("%s: %v", name, err)
			}
		case <-time.After(30 * time.Second):
			f.t.Errorf("%s did not stop within 30s", name)
		}
	})
	select {
	case <-ready:
	case err := <-done:
		f.t.Fatalf("%s stopped before it was ready: %v", name, err)
	case <-time.After(30 * time.Second):
		f.t.Fatalf("%s not ready within 30s", name)
	}
}

// Integration is the part of the catalog's answer the examples need.
type Integration struct {
	ID      string `json:"id"`
	Name    string `json:"name"`
	Version int64  `json:"version"`
}

// Create registers a test.inmemory integration with config.
func (f *Fleet) Create(name string, config map[string]any) Integration {
	f.t.Helper()
	var in Integration
	f.call(http.MethodPost, "/integrations", map[string]any{"type": "test.inmemory", "name": name, "config": config}, &in, http.StatusCreated)
	return in
}

// Rename changes an integration's name (a new version).
func (f *Fleet) Rename(id, name string, config map[string]any) Integration {
	f.t.Helper()
	var in Integration
	f.call(http.MethodPut, "/integrations/"+id, map[string]any{"type": "test.inmemory", "name": name, "config": config}, &in, http.StatusOK)
	return in
}

// Delete deletes an integration.
func (f *Fleet) Delete(id string) {
	f.t.Helper()
	f.call(http.MethodDelete, "/integrations/"+id, nil, nil, http.StatusNoContent)
}

func (f *Fleet) call(method, path string, body, out any, want int) {
	f.t.Helper()
	var rd io.Reader = http.NoBody
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			f.t.Fatal(err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, f.api+path, rd)
	if err != nil {
		f.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+f.token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := f.http.Do(req)
	if err != nil {
		f.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != want {
		f.t.Fatalf("%s %s: %d, want %d: %s", method, path, resp.StatusCode, want, b)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			f.t.Fatalf("%s %s: %v: %s", method, path, err, b)
		}
	}
}

// Posts counts what the stand-in provider posted, by request id.
type Posts struct {
	mu        sync.Mutex
	byRequest map[string]int
}

// Count is how often the request was posted.
func (p *Posts) Count(requestID string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.byRequest[requestID]
}

// provider is the stand-in SCM host behind test.inmemory.
type provider struct {
	posts *Posts
	cfg   connectors.Config
}

var (
	_ connectors.Connector = (*provider)(nil)
	_ connectors.Annotator = (*provider)(nil)
)

func (p *provider) Type() string     { return "test.inmemory" }
func (p *provider) Provider() string { return "example" }
func (p *provider) Validate() error  { return nil }
func (p *provider) Close() error     { return nil }
func (p *provider) TestConnection(context.Context) connectors.Result {
	return connectors.Result{Status: connectors.StatusHealthy}
}
func (p *provider) CheckHealth(context.Context) connectors.Result {
	return connectors.Result{Status: connectors.StatusHealthy}
}
func (p *provider) AnnotationScope() (string, string) {
	return "scm.example", p.cfg.IntegrationID
}
func (p *provider) Writes(connectors.AnnotationRequest) int { return 1 }

func (p *provider) Annotate(_ context.Context, req connectors.AnnotationRequest) (connectors.Posted, error) {
	var cfg struct {
		FailWith string `json:"failWith"`
	}
	_ = json.Unmarshal(p.cfg.Config, &cfg)
	if cfg.FailWith == "permanent" {
		// What a host answers for a pull request that does not exist.
		return connectors.Posted{}, fault.Permanent(fmt.Errorf("%s/%s#%d: 404 Not Found",
			req.Repository.Owner, req.Repository.Name, req.PullRequest))
	}
	p.posts.mu.Lock()
	p.posts.byRequest[req.ID]++
	p.posts.mu.Unlock()
	return connectors.Posted{
		URL:        fmt.Sprintf("https://scm.example/%s/%s/pull/%d#comment-%s", req.Repository.Owner, req.Repository.Name, req.PullRequest, req.ID[:8]),
		ExternalID: req.ID[:8], Writes: 1,
	}, nil
}

// StartNATS runs only the embedded JetStream server, with inthub's streams
// provisioned.
func StartNATS(t testing.TB) *natstest.Server {
	t.Helper()
	srv := natstest.Start(t)
	js, _ := srv.JetStream()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := bus.Provision(ctx, js, bus.DefaultStreamSettings()); err != nil {
		t.Fatal(err)
	}
	return srv
}

// LeakOptions are the goroutines a test may leave behind: the embedded NATS
// server's and the HTTP client's, which outlive a test by design.
func LeakOptions() []goleak.Option {
	return []goleak.Option{
		goleak.IgnoreTopFunction("github.com/nats-io/nats-server/v2/server.(*Server).startGoRoutine.func1"),
		goleak.IgnoreAnyFunction("github.com/nats-io/nats-server/v2/server.(*fileStore).syncBlocks"),
		goleak.IgnoreAnyFunction("github.com/nats-io/nats-server/v2/server.ipQueue[...].pop"),
		goleak.IgnoreTopFunction("time.Sleep"),
		goleak.IgnoreTopFunction("net/http.(*persistConn).readLoop"),
		goleak.IgnoreTopFunction("net/http.(*persistConn).writeLoop"),
		goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"),
	}
}
