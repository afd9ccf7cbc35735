package enrichment_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	"inthub.dev/events"
	"inthub.dev/pkg/authref"
	"inthub.dev/pkg/bus"
	"inthub.dev/pkg/natstest"
	"inthub.dev/pkg/pgtest"
	"inthub.dev/services/enrichment"
	"inthub.dev/services/enrichment/ingress"
	"inthub.dev/services/enrichment/internal/snstest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, natstest.LeakOptions(
		goleak.IgnoreTopFunction("net/http.(*persistConn).readLoop"),
		goleak.IgnoreTopFunction("net/http.(*persistConn).writeLoop"),
		goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"),
	)...)
}

const (
	tenantA  = "0b5a3bb0-6a43-4d7e-9a39-6f1f9d9a00a1"
	tenantB  = "0b5a3bb0-6a43-4d7e-9a39-6f1f9d9a00b2"
	ghA      = "0190f1c2-7a3b-7c4d-8e5f-0a1b2c3d4e01"
	glA      = "0190f1c2-7a3b-7c4d-8e5f-0a1b2c3d4e02"
	cwA      = "0190f1c2-7a3b-7c4d-8e5f-0a1b2c3d4e03"
	ghB      = "0190f1c2-7a3b-7c4d-8e5f-0a1b2c3d4e04"
	secret   = "It's a Secret to Everybody"
	secretEV = "ENRICHMENT_TEST_WEBHOOK_SECRET"
)

type env struct {
	t   testing.TB
	ctx context.Context
	srv *natstest.Server
	js  jetstream.JetStream
	nc  *nats.Conn
	svc *enrichment.Service
	hc  *http.Client
	ca  *snstest.CA
}

// topic is the SNS topic the CloudWatch integration allows.
const topic = "arn:aws:sns:eu-west-1:123456789012:alarms"

func integration(id, tenant, typ, config string) events.Integration {
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	return events.Integration{ID: id, TenantID: tenant, Type: typ, Name: "it-" + id[len(id)-2:], Config: json.RawMessage(config),
		Status: "active", HealthStatus: events.HealthHealthy, Version: 1, CreatedAt: t0, UpdatedAt: t0}
}

// newEnv starts NATS, PostgreSQL and the service with every role, and
// registers four integrations: GitHub, GitLab and CloudWatch of tenant A,
// GitHub of tenant B, all with the same webhook secret.
func newEnv(t *testing.T, tweak func(*enrichment.Config)) *env {
	t.Helper()
	t.Setenv(secretEV, secret)
	srv := natstest.Start(t)
	js, nc := srv.JetStream()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	if err := bus.Provision(ctx, js, bus.DefaultStreamSettings()); err != nil {
		t.Fatal(err)
	}
	kv, err := js.KeyValue(ctx, bus.BucketIntegrations)
	if err != nil {
		t.Fatal(err)
	}
	hook := `"webhookSecret":"authref://env/` + secretEV + `"`
	for _, in := range []events.Integration{
		integration(ghA, tenantA, "scm.github", `{"appId":1,"installationId":2,"privateKey":"authref://env/K",`+hook+`}`),
		integration(glA, tenantA, "scm.gitlab", `{"token":"authref://env/T",`+hook+`}`),
		integration(cwA, tenantA, "monitoring.cloudwatch", `{"snsTopicArns":["`+topic+`"]}`),
		integration(ghB, tenantB, "scm.github", `{"appId":1,"installationId":3,"privateKey":"authref://env/K",`+hook+`}`),
	} {
		b, _ := json.Marshal(in)
		if _, err := kv.Put(ctx, bus.IntegrationKey(in.TenantID, in.ID), b); err != nil {
			t.Fatal(err)
		}
	}
	db := pgtest.New(t)
	ca := snstest.NewCA(t, time.Now())
	cfg := enrichment.Config{Listen: "127.0.0.1:0", WebhookListen: "127.0.0.1:0", DataDir: t.TempDir(),
		DatabaseURL: db.OwnerURL, Resolver: authref.NewResolver(authref.WithTTL(0)),
		SNS:               ingress.SNSConfig{Roots: ca.Pool, Get: (&snstest.Fetcher{Cert: ca.LeafPEM}).Get},
		PublishRetryEvery: 50 * time.Millisecond}
	if tweak != nil {
		tweak(&cfg)
	}
	svc, err := enrichment.New(cfg, nc)
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- svc.Run(runCtx) }()
	var once sync.Once
	t.Cleanup(func() {
		once.Do(func() {
			stop()
			if err := <-done; err != nil {
				t.Errorf("Run: %v", err)
			}
		})
	})
	select {
	case <-svc.Ready():
	case err := <-done:
		t.Fatalf("Run returned before ready: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("service not ready within 30s")
	}
	hc := &http.Client{Timeout: 30 * time.Second}
	t.Cleanup(hc.CloseIdleConnections)
	return &env{t: t, ctx: ctx, srv: srv, js: js, nc: nc, svc: svc, hc: hc, ca: ca}
}

func sign(body []byte) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write(body)
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

// github posts a GitHub delivery and returns the status code.
func (e *env) github(integrationID, event, delivery string, body []byte) int {
	e.t.Helper()
	return e.post("/webhooks/github/"+integrationID, body, map[string]string{
		"X-GitHub-Event": event, "X-GitHub-Delivery": delivery, "X-Hub-Signature-256": sign(body)})
}

func (e *env) gitlab(integrationID, event, delivery string, body []byte) int {
	e.t.Helper()
	return e.post("/webhooks/gitlab/"+integrationID, body, map[string]string{
		"X-Gitlab-Event": event, "Idempotency-Key": delivery, "X-Gitlab-Token": secret})
}

// sns posts an SNS notification of message, signed by the test CA.
func (e *env) sns(integrationID, id, message string) int {
	e.t.Helper()
	m := e.ca.Sign(e.t, snstest.Notification(id, topic, "ALARM", message, time.Now()), "2", "2")
	return e.post("/webhooks/sns/"+integrationID, m.JSON(), map[string]string{"X-Amz-Sns-Message-Type": "Notification"})
}

func (e *env) post(path string, body []byte, h map[string]string) int {
	e.t.Helper()
	req, err := http.NewRequest(http.MethodPost, "http://"+e.svc.WebhookAddr().String()+path, strings.NewReader(string(body)))
	if err != nil {
		e.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	for k, v := range h {
		req.Header.Set(k, v)
	}
	resp, err := e.hc.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// messages reads every message of stream on the filter subjects so far.
func (e *env) messages(stream string, filter ...string) []jetstream.Msg {
	e.t.Helper()
	cons, err := e.js.OrderedConsumer(e.ctx, stream, jetstream.OrderedConsumerConfig{FilterSubjects: filter})
	if err != nil {
		e.t.Fatal(err)
	}
	var out []jetstream.Msg
	for {
		batch, err := cons.FetchNoWait(1000)
		if err != nil {
			e.t.Fatal(err)
		}
		n := 0
		for m := range batch.Messages() {
			out = append(out, m)
			n++
		}
		if n == 0 {
			return out
		}
	}
}

// eventsOn parses every message of stream on the filter subjects.
func (e *env) eventsOn(stream string, filter ...string) []events.Event {
	e.t.Helper()
	var out []events.Event
	for _, m := range e.messages(stream, filter...) {
		ev, err := events.Parse(m.Data())
		if err != nil {
			e.t.Fatalf("%s: %v", m.Subject(), err)
		}
		out = append(out, ev)
	}
	return out
}

// waitFor polls cond until it holds or the deadline passes.
func (e *env) waitFor(what string, d time.Duration, cond func() bool) {
	e.t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			e.t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(25 * time.Millisecond)
	}
}
