package health_test

import (
	"context"
	"encoding/json"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	"inthub.dev/events"
	"inthub.dev/pkg/bus"
	"inthub.dev/pkg/natstest"
	"inthub.dev/pkg/pgtest"
	"inthub.dev/services/catalog/health"
	"inthub.dev/services/catalog/store"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const tenant = "0b5a3bb0-6a43-4d7e-9a39-6f1f9d9a0001"

type countingRecorder struct {
	health.Recorder
	calls atomic.Int32
}

func (c *countingRecorder) RecordHealth(ctx context.Context, ev events.Event) (bool, error) {
	c.calls.Add(1)
	return c.Recorder.RecordHealth(ctx, ev)
}

func TestHealthHistoryFromTheBus(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	db := pgtest.New(t)
	if err := store.SeedTypes(ctx, pgtest.Pool(t, db.OwnerURL), []store.IntegrationType{{
		ID: "test.inmemory", DisplayName: "In-memory", Provider: "inmemory", ConfigSchema: json.RawMessage(`{"type":"object"}`), Builtin: true,
	}}); err != nil {
		t.Fatal(err)
	}
	st := store.New(pgtest.Pool(t, db.AppURL))
	it, err := st.CreateIntegration(ctx, tenant, "tester", store.IntegrationInput{Type: "test.inmemory", Name: "one", Config: json.RawMessage(`{}`)})
	if err != nil {
		t.Fatal(err)
	}

	srv := natstest.Start(t)
	js, nc := srv.JetStream()
	if err := bus.Provision(ctx, js, bus.DefaultStreamSettings()); err != nil {
		t.Fatal(err)
	}
	rec := &countingRecorder{Recorder: st}
	w, err := health.NewConsumer(js, rec, nil, func(c *bus.WorkerConfig) {
		c.Redelivery = func(uint64) time.Duration { return 10 * time.Millisecond }
	})
	if err != nil {
		t.Fatal(err)
	}
	wctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- w.Run(wctx) }()
	defer func() {
		stop()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()

	checkedAt := time.Now().UTC().Add(-time.Minute)
	publish := func(integrationID string, status events.HealthStatus, n int, twice bool) {
		t.Helper()
		ev, err := events.New(events.SubjectIntegrationHealthChecked, "inthub/health-poller", tenant, events.HealthChecked{
			IntegrationID: integrationID, TenantID: tenant, Type: "test.inmemory", Status: status,
			LatencyMs: 5, Message: "check " + strconv.Itoa(n), CheckedAt: checkedAt.Add(time.Duration(n) * time.Second),
		})
		if err != nil {
			t.Fatal(err)
		}
		body, _ := ev.Marshal()
		copies := 1
		if twice {
			copies = 2
		}
		for range copies {
			// No Nats-Msg-Id: the stream keeps both copies, as after a
			// redelivery outside the duplicate window.
			if _, err := js.PublishMsg(ctx, &nats.Msg{Subject: ev.Type, Data: body,
				Header: nats.Header{bus.HeaderIntegrationID: {integrationID}, bus.HeaderTenantID: {tenant}}}); err != nil {
				t.Fatal(err)
			}
		}
	}
	// One step at a time: the consumer handles messages concurrently, and
	// a check older than the last recorded one changes nothing but the
	// history (see store.RecordHealth).
	waitCalls := func(n int32, dlqWant uint64) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for rec.calls.Load() < n || !settled(t, js) || dlq(t, js) != dlqWant {
			if time.Now().After(deadline) {
				t.Fatalf("calls=%d (want %d) dlq=%d", rec.calls.Load(), n, dlq(t, js))
			}
			<-time.After(10 * time.Millisecond)
		}
	}
	publish(it.ID, events.HealthHealthy, 1, true)
	waitCalls(2, 0)
	publish(it.ID, events.HealthUnhealthy, 2, false)
	waitCalls(3, 0)
	publish(it.ID, events.HealthUnhealthy, 3, true)
	waitCalls(5, 0)
	publish(it.ID, events.HealthHealthy, 4, false)
	waitCalls(6, 0)
	publish("8f1d2c3e-0000-4000-8000-000000000404", events.HealthHealthy, 5, false) // unknown integration
	waitCalls(7, 1)
	// A result that arrives after its integration was deleted is
	// dropped: acknowledged, not dead-lettered.
	gone, err := st.CreateIntegration(ctx, tenant, "tester", store.IntegrationInput{Type: "test.inmemory", Name: "gone", Config: json.RawMessage(`{}`)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.DeleteIntegration(ctx, tenant, "tester", gone.ID, 0); err != nil {
		t.Fatal(err)
	}
	publish(gone.ID, events.HealthHealthy, 6, false)
	waitCalls(8, 1)

	latest, history, _, err := st.HealthHistory(ctx, tenant, it.ID, 100, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(history) != 4 {
		t.Fatalf("history has %d rows, want 4 (duplicates dropped)", len(history))
	}
	if latest == nil || latest.Status != "healthy" {
		t.Fatalf("latest %+v", latest)
	}
	got, err := st.GetIntegration(ctx, tenant, it.ID)
	if err != nil || got.HealthStatus != "healthy" {
		t.Fatalf("integration health %q, %v", got.HealthStatus, err)
	}
	owner := pgtest.Pool(t, db.OwnerURL)
	var changed int
	if err := owner.QueryRow(ctx, `SELECT count(*) FROM outbox WHERE subject = $1`, events.SubjectIntegrationHealthChanged).Scan(&changed); err != nil {
		t.Fatal(err)
	}
	// unknown → healthy, healthy → unhealthy, unhealthy → healthy
	if changed != 3 {
		t.Fatalf("%d health_changed events, want 3", changed)
	}
	_ = nc
}

func settled(t *testing.T, js jetstream.JetStream) bool {
	t.Helper()
	c, err := js.Consumer(context.Background(), bus.StreamIntegrations, health.Durable)
	if err != nil {
		return false
	}
	info, err := c.Info(context.Background())
	return err == nil && info.NumPending == 0 && info.NumAckPending == 0
}

func dlq(t *testing.T, js jetstream.JetStream) uint64 {
	t.Helper()
	s, err := js.Stream(context.Background(), bus.StreamDLQ)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Msgs
}
