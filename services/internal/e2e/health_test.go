package e2e_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	"inthub.dev/events"
	"inthub.dev/pkg/bus"
	"inthub.dev/pkg/natstest"
	"inthub.dev/pkg/pgtest"
	"inthub.dev/services/catalog"
	"inthub.dev/services/catalog/auth"
	"inthub.dev/services/healthpoller"
	"inthub.dev/services/healthpoller/schedule"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, natstest.LeakOptions(
		goleak.IgnoreTopFunction("net/http.(*persistConn).readLoop"),
		goleak.IgnoreTopFunction("net/http.(*persistConn).writeLoop"),
	)...)
}

const tenant = "0b5a3bb0-6a43-4d7e-9a39-6f1f9d9a0e2e"

var secret = []byte("e2e-test-secret-0123456789abcdef-0123456789")

// fleet is a catalog and a health poller, each on its own NATS connection.
type fleet struct {
	t     *testing.T
	js    jetstream.JetStream
	base  string
	token string
	http  *http.Client
}

// runService runs svc.Run until the test ends, failing it if Run fails.
func runService(t *testing.T, name string, run func(context.Context) error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("%s: %v", name, err)
			}
		case <-time.After(30 * time.Second):
			t.Errorf("%s did not stop", name)
		}
	})
}

func startFleet(t *testing.T, pollEvery time.Duration) *fleet {
	t.Helper()
	db := pgtest.New(t)
	srv := natstest.Start(t)
	js, _ := srv.JetStream()
	cat, err := catalog.New(catalog.Config{
		Listen:         "127.0.0.1:0",
		DatabaseURL:    db.OwnerURL,
		SkipMigrations: true, // pgtest migrated it
		Auth:           auth.Config{Issuer: "e2e", Audience: "inthub", DevMode: true, DevHS256Secret: secret},
	}, srv.Connect())
	if err != nil {
		t.Fatal(err)
	}
	runService(t, "catalog", cat.Run)
	select {
	case <-cat.Ready():
	case <-time.After(30 * time.Second):
		t.Fatal("catalog not ready")
	}
	poller, err := healthpoller.New(healthpoller.Config{
		Listen: "-", DataDir: t.TempDir(), IntervalOverride: pollEvery,
		// The scripted outage lasts more checks than the breaker's default
		// 5, which would then answer unhealthy for 10 minutes.
		Breaker: schedule.Breaker{Failures: 50},
	}, srv.Connect())
	if err != nil {
		t.Fatal(err)
	}
	runService(t, "health-poller", poller.Run)
	token, err := auth.DevToken(secret, "e2e", "inthub", "e2e-admin", tenant,
		[]string{"integrations:read", "integrations:write"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return &fleet{t: t, js: js, base: "http://" + cat.Addr().String(), token: token,
		http: &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}}
}

func (f *fleet) call(method, path string, body any, out any) int {
	f.t.Helper()
	var rd bytes.Buffer
	if body != nil {
		_ = json.NewEncoder(&rd).Encode(body)
	}
	req, _ := http.NewRequest(method, f.base+path, &rd)
	req.Header.Set("Authorization", "Bearer "+f.token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := f.http.Do(req)
	if err != nil {
		f.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if out != nil && json.Unmarshal(b, out) != nil {
		f.t.Fatalf("%s %s: %d %s", method, path, resp.StatusCode, b)
	}
	return resp.StatusCode
}

type healthView struct {
	Latest  *check  `json:"latest"`
	History []check `json:"history"`
}

type check struct {
	Status    string    `json:"status"`
	EventID   string    `json:"eventId"`
	CheckedAt time.Time `json:"checkedAt"`
}

// scriptAround returns a test.inmemory script, one step a second, that is
// healthy except for the seconds [from, to) from now: the step is the Unix
// second modulo the script's length, so the test has a minute before the
// script comes round again.
func scriptAround(now time.Time, from, to int) []string {
	script := make([]string, 60)
	for i := range script {
		script[i] = "healthy"
	}
	for s := from; s < to; s++ {
		script[(now.Unix()+int64(s))%60] = "unhealthy"
	}
	return script
}

// TestHealthEndToEnd: a catalog and a health poller; an in-memory
// integration scripted healthy → unhealthy → healthy. The catalog's history
// holds every check the poller published, and integration.health_changed
// announces the two transitions between healthy and unhealthy, each once
// (after the first, unknown → healthy, which any new integration has).
func TestHealthEndToEnd(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	f := startFleet(t, 500*time.Millisecond)

	// Our own durable consumer, as Scheduler or Signals would have.
	cons, err := f.js.CreateOrUpdateConsumer(ctx, bus.StreamIntegrations, jetstream.ConsumerConfig{
		Durable: "e2e-health-changed", AckPolicy: jetstream.AckExplicitPolicy,
		FilterSubjects: []string{events.SubjectIntegrationHealthChanged},
	})
	if err != nil {
		t.Fatal(err)
	}
	var changes []events.HealthChanged
	fetch := func() {
		t.Helper()
		batch, err := cons.FetchNoWait(100)
		if err != nil {
			t.Fatal(err)
		}
		for msg := range batch.Messages() {
			ev, err := events.Parse(msg.Data())
			if err != nil {
				t.Fatalf("health_changed does not parse: %v", err)
			}
			var hc events.HealthChanged
			if err := ev.Decode(&hc); err != nil {
				t.Fatal(err)
			}
			changes = append(changes, hc)
			if err := msg.Ack(); err != nil {
				t.Fatal(err)
			}
		}
	}

	var created struct {
		ID string `json:"id"`
	}
	if code := f.call("POST", "/api/v1/integrations", map[string]any{
		"type": "test.inmemory", "name": "flaky",
		"config": map[string]any{"script": scriptAround(time.Now(), 5, 9), "scriptStepSeconds": 1},
	}, &created); code != http.StatusCreated {
		t.Fatalf("create: %d", code)
	}
	id := created.ID

	if !eventually(60*time.Second, func() bool { fetch(); return len(changes) >= 3 }) {
		t.Fatalf("timed out waiting for healthy, unhealthy and healthy again to be announced; so far %+v", changes)
	}
	want := [][2]events.HealthStatus{
		{events.HealthUnknown, events.HealthHealthy},
		{events.HealthHealthy, events.HealthUnhealthy},
		{events.HealthUnhealthy, events.HealthHealthy},
	}
	if len(changes) != len(want) {
		t.Fatalf("%d health_changed: %+v", len(changes), changes)
	}
	for i, c := range changes {
		if c.IntegrationID != id || c.TenantID != tenant || c.PreviousStatus != want[i][0] || c.Status != want[i][1] {
			t.Errorf("health_changed %d = %+v, want %s → %s of %s", i, c, want[i][0], want[i][1], id)
		}
	}

	// Several more healthy checks recorded, and still no other change.
	recovered := changes[2].CheckedAt
	var h healthView
	poll(t, 30*time.Second, "five checks after the recovery in the history", func() bool {
		if code := f.call("GET", "/api/v1/integrations/"+id+"/health?limit=500", nil, &h); code != http.StatusOK {
			t.Fatalf("health: %d", code)
		}
		n := 0
		for _, c := range h.History {
			if c.CheckedAt.After(recovered) {
				n++
			}
		}
		return n >= 5
	})
	fetch()
	if len(changes) != 3 {
		t.Errorf("%d health_changed after more healthy checks, want still 3: %+v", len(changes), changes[3:])
	}

	// Every check the poller published is in the catalog's history, and the
	// history holds the script's story.
	published := publishedChecks(t, ctx, f.js, id)
	poll(t, 30*time.Second, "the catalog to record every published check", func() bool {
		if code := f.call("GET", "/api/v1/integrations/"+id+"/health?limit=500", nil, &h); code != http.StatusOK {
			t.Fatalf("health: %d", code)
		}
		have := map[string]bool{}
		for _, c := range h.History {
			have[c.EventID] = true
		}
		for _, eid := range published {
			if !have[eid] {
				return false
			}
		}
		return true
	})
	// Newest first: a healthy run (the recovery), unhealthy ones, and the
	// healthy run before.
	var runs []string
	for i := len(h.History) - 1; i >= 0; i-- {
		if s := h.History[i].Status; len(runs) == 0 || runs[len(runs)-1] != s {
			runs = append(runs, s)
		}
	}
	if fmt.Sprint(runs) != "[healthy unhealthy healthy]" {
		t.Errorf("history runs %v, want [healthy unhealthy healthy] (%d checks)", runs, len(h.History))
	}
	if len(published) < 10 || len(h.History) != len(published) {
		t.Errorf("%d checks published, %d in the history", len(published), len(h.History))
	}
	var it struct {
		HealthStatus string `json:"healthStatus"`
	}
	if code := f.call("GET", "/api/v1/integrations/"+id, nil, &it); code != http.StatusOK || it.HealthStatus != "healthy" {
		t.Errorf("integration reads %q (%d), want healthy", it.HealthStatus, code)
	}
}

// publishedChecks lists the ids of the integration.health_checked events
// on the stream for one integration.
func publishedChecks(t *testing.T, ctx context.Context, js jetstream.JetStream, id string) []string {
	t.Helper()
	cons, err := js.OrderedConsumer(ctx, bus.StreamIntegrations, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{events.SubjectIntegrationHealthChecked},
	})
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for {
		batch, err := cons.FetchNoWait(500)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for msg := range batch.Messages() {
			n++
			ev, err := events.Parse(msg.Data())
			if err != nil {
				t.Fatal(err)
			}
			if ev.IntegrationID() == id {
				ids = append(ids, ev.ID)
			}
		}
		if n == 0 {
			return ids
		}
	}
}

func poll(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	if !eventually(d, cond) {
		t.Fatalf("timed out after %v waiting for %s", d, what)
	}
}

// eventually polls cond until it holds (true) or d passes (false).
func eventually(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		<-time.After(100 * time.Millisecond)
	}
	return true
}
