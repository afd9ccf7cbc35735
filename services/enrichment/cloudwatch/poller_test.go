package cloudwatch_test

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"inthub.dev/events"
	"inthub.dev/pkg/connectors/cloudwatch/cloudwatchtest"
	"inthub.dev/pkg/egress"
	"inthub.dev/services/enrichment/cloudwatch"
	"inthub.dev/services/enrichment/ingress"
	"inthub.dev/services/enrichment/mapping"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		goleak.IgnoreTopFunction("net/http.(*persistConn).readLoop"),
		goleak.IgnoreTopFunction("net/http.(*persistConn).writeLoop"),
		goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"))
}

const (
	tenant = "0b5a3bb0-6a43-4d7e-9a39-6f1f9d9a00a1"
	cwID   = "0190f1c2-7a3b-7c4d-8e5f-0a1b2c3d4e03"
	akid   = cloudwatchtest.DefaultAccessKey
)

// testWriter sends the poller's log to the test's.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(b)))
	return len(b), nil
}

type integrations []events.Integration

func (s integrations) All() []events.Integration { return s }

type secrets map[string]string

func (s secrets) Resolve(_ context.Context, ref string) ([]byte, error) {
	v, ok := s[ref]
	if !ok {
		return nil, errors.New("no such secret")
	}
	return []byte(v), nil
}

type publisher struct {
	mu  sync.Mutex
	evs []events.Event
}

func (p *publisher) Publish(_ context.Context, ev events.Event) error {
	if err := ev.Validate(); err != nil {
		return err
	}
	p.mu.Lock()
	p.evs = append(p.evs, ev)
	p.mu.Unlock()
	return nil
}

func (p *publisher) all() []events.Event {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]events.Event(nil), p.evs...)
}

func cwIntegration(endpoint string, version int64) events.Integration {
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	return events.Integration{ID: cwID, TenantID: tenant, Type: cloudwatch.IntegrationType, Name: "aws", Status: "active",
		HealthStatus: events.HealthHealthy, Version: version, CreatedAt: t0, UpdatedAt: t0,
		Config: json.RawMessage(`{"region":"eu-west-1","endpoint":"` + endpoint + `","accessKeyId":"authref://env/AK",
			"secretAccessKey":"authref://env/SK","pollAlarms":true}`)}
}

// portOf is the port of the fake's URL, for the egress policy.
func portOf(t *testing.T, u string) int {
	t.Helper()
	_, ps, err := net.SplitHostPort(strings.TrimPrefix(u, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	n, _ := strconv.Atoi(ps)
	return n
}

func newPoller(t *testing.T, ins integrations, now *time.Time) (*cloudwatch.Poller, *publisher) {
	t.Helper()
	pub := &publisher{}
	var c struct{ Endpoint string }
	_ = json.Unmarshal(ins[0].Config, &c)
	port := portOf(t, strings.Replace(c.Endpoint, "user:pw@", "", 1))
	p, err := cloudwatch.New(cloudwatch.Config{Integrations: ins, Publisher: pub,
		Secrets:  secrets{"authref://env/AK": akid, "authref://env/SK": cloudwatchtest.DefaultSecretKey},
		Interval: time.Minute, Egress: egress.Policy{AllowLoopback: true, AllowHTTP: true, AllowPorts: []int{port}},
		Timeout: 5 * time.Second, Now: func() time.Time { return *now },
		Logger: slog.New(slog.NewTextHandler(testWriter{t}, nil))})
	if err != nil {
		t.Fatal(err)
	}
	return p, pub
}

// TestPollerTransitions: the first poll publishes only recent
// transitions, later polls each new one once, across pages; what is
// published maps with the default rules like an SNS alarm.
func TestPollerTransitions(t *testing.T) {
	cw := cloudwatchtest.New(t, cloudwatchtest.Options{AlarmPageSize: 2})
	now := time.Date(2026, 5, 6, 10, 5, 30, 0, time.UTC)
	cw.SetAlarm(cloudwatchtest.Alarm{Name: "checkout-5xx", State: "ALARM", Reason: "Threshold Crossed", Service: "checkout", At: now.Add(-30 * time.Second)})
	cw.SetAlarm(cloudwatchtest.Alarm{Name: "billing-5xx", State: "OK", Reason: "fine", Service: "billing", At: now.Add(-48 * time.Hour)})
	cw.SetAlarm(cloudwatchtest.Alarm{Name: "search-latency", State: "OK", Reason: "fine", Service: "search", At: now.Add(-time.Hour)})
	p, pub := newPoller(t, integrations{cwIntegration(cw.URL, 1)}, &now)
	ctx := context.Background()

	p.PollOnce(ctx)
	got := pub.all()
	if len(got) != 1 {
		t.Fatalf("first poll published %d, want only the recent transition", len(got))
	}
	var in events.Ingested
	if err := got[0].Decode(&in); err != nil {
		t.Fatal(err)
	}
	if in.Via != events.ViaPoll || in.IntegrationID != cwID || got[0].ID != ingress.EventID("cloudwatch", cwID, in.DeliveryID) {
		t.Fatalf("ingest %+v", in)
	}
	m, err := mapping.Default()
	if err != nil {
		t.Fatal(err)
	}
	c, err := m.Map(ctx, in, got[0].ID)
	if err != nil {
		t.Fatalf("a polled alarm does not map: %v", err)
	}
	if c.Kind != "alarm.alarm" || c.Severity != "critical" || !c.Context.OriginalTimestamp.Equal(now.Add(-30*time.Second)) {
		t.Fatalf("canonical %+v", c)
	}
	found := false
	for _, h := range c.Context.CorrelationHints {
		found = found || (h.Key == "service" && h.Value == "checkout")
	}
	if !found {
		t.Fatalf("no service hint in %+v", c.Context.CorrelationHints)
	}

	p.PollOnce(ctx) // nothing changed
	if n := len(pub.all()); n != 1 {
		t.Fatalf("an unchanged poll published: %d", n)
	}
	now = now.Add(time.Minute)
	cw.SetAlarm(cloudwatchtest.Alarm{Name: "billing-5xx", State: "ALARM", Reason: "Threshold Crossed", Service: "billing", At: now.Add(-10 * time.Second)})
	cw.SetAlarm(cloudwatchtest.Alarm{Name: "checkout-5xx", State: "OK", Reason: "recovered", Service: "checkout", At: now.Add(-5 * time.Second)})
	p.PollOnce(ctx)
	got = pub.all()
	if len(got) != 3 {
		t.Fatalf("%d events after two transitions, want 3", len(got))
	}
	var back events.Ingested
	for _, ev := range got[1:] {
		if err := ev.Decode(&back); err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(back.Payload), `"AlarmName":"checkout-5xx"`) && !strings.Contains(string(back.Payload), `"OldStateValue":"ALARM"`) {
			t.Fatalf("the recovery does not name the previous state: %s", back.Payload)
		}
	}
	// A second poller (another replica, a restart) makes the same ids.
	p2, pub2 := newPoller(t, integrations{cwIntegration(cw.URL, 1)}, &now)
	p2.PollOnce(ctx)
	ids := map[string]bool{}
	for _, ev := range got {
		ids[ev.ID] = true
	}
	for _, ev := range pub2.all() {
		if !ids[ev.ID] {
			t.Fatalf("a restarted poller published %s under a new id", ev.ID)
		}
	}
}

// TestPollerFailures: a wrong key (403), throttling and an endpoint the
// egress policy refuses are counted as failed polls and publish nothing;
// an integration without pollAlarms is never called.
func TestPollerFailures(t *testing.T) {
	now := time.Date(2026, 5, 6, 10, 5, 30, 0, time.UTC)
	cases := []struct {
		name  string
		opts  cloudwatchtest.Options
		setup func(*cloudwatchtest.Server) events.Integration
		calls bool
	}{
		{"wrong access key", cloudwatchtest.Options{AccessKey: "AKIDOTHER"}, func(f *cloudwatchtest.Server) events.Integration {
			return cwIntegration(f.URL, 1)
		}, true},
		{"wrong secret key", cloudwatchtest.Options{SecretKey: "another-secret"}, func(f *cloudwatchtest.Server) events.Integration {
			return cwIntegration(f.URL, 1)
		}, true},
		{"throttled", cloudwatchtest.Options{}, func(f *cloudwatchtest.Server) events.Integration {
			f.SetFault(cloudwatchtest.Throttle)
			return cwIntegration(f.URL, 1)
		}, true},
		{"endpoint with credentials", cloudwatchtest.Options{}, func(f *cloudwatchtest.Server) events.Integration {
			return cwIntegration(strings.Replace(f.URL, "http://", "http://user:pw@", 1), 1)
		}, false},
		{"not polled", cloudwatchtest.Options{}, func(f *cloudwatchtest.Server) events.Integration {
			in := cwIntegration(f.URL, 1)
			in.Config = json.RawMessage(strings.Replace(string(in.Config), `"pollAlarms":true`, `"pollAlarms":false`, 1))
			return in
		}, false},
		{"metrics in a config that does not parse", cloudwatchtest.Options{}, func(f *cloudwatchtest.Server) events.Integration {
			in := cwIntegration(f.URL, 1)
			in.Config = json.RawMessage(`{"region":"eu-west-1","endpoint":"` + f.URL + `","accessKeyId":"authref://env/AK",
				"secretAccessKey":"authref://env/SK","metrics":[{"id":"x","namespace":"N","metricName":"M","stat":"Sum","periodSeconds":90}]}`)
			return in
		}, false},
		{"not polled, SNS only", cloudwatchtest.Options{}, func(f *cloudwatchtest.Server) events.Integration {
			in := cwIntegration(f.URL, 1)
			in.Config = json.RawMessage(`{"endpoint":"` + f.URL + `","snsTopicArns":["arn:aws:sns:eu-west-1:123456789012:alarms"]}`)
			return in
		}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cw := cloudwatchtest.New(t, tc.opts)
			cw.SetAlarm(cloudwatchtest.Alarm{Name: "checkout-5xx", State: "ALARM", Reason: "x", Service: "checkout", At: now.Add(-time.Second)})
			p, pub := newPoller(t, integrations{tc.setup(cw)}, &now)
			p.PollOnce(context.Background())
			if len(pub.all()) != 0 {
				t.Fatal("published despite the failure")
			}
			calls := cw.Requests("")
			if (calls > 0) != tc.calls {
				t.Fatalf("%d calls to CloudWatch", calls)
			}
			reg := prometheus.NewRegistry()
			reg.MustRegister(p.Collectors()...)
			mfs, _ := reg.Gather()
			failed := 0.0
			for _, mf := range mfs {
				for _, m := range mf.GetMetric() {
					for _, l := range m.GetLabel() {
						if mf.GetName() == "enrichment_cloudwatch_polls_total" && l.GetValue() == "error" {
							failed += m.GetCounter().GetValue()
						}
					}
				}
			}
			if (failed == 1) != !strings.HasPrefix(tc.name, "not polled") {
				t.Fatalf("failed polls counted: %v", failed)
			}
		})
	}
}

// The egress policy applies at dial time: without AllowLoopback the fake
// on 127.0.0.1 is never reached.
func TestPollerEgress(t *testing.T) {
	cw := cloudwatchtest.New(t, cloudwatchtest.Options{})
	now := time.Now()
	cw.SetAlarm(cloudwatchtest.Alarm{Name: "checkout-5xx", State: "ALARM", Reason: "x", Service: "checkout", At: now})
	pub := &publisher{}
	p, err := cloudwatch.New(cloudwatch.Config{Integrations: integrations{cwIntegration(cw.URL, 1)}, Publisher: pub,
		Secrets: secrets{"authref://env/AK": akid, "authref://env/SK": "k"}, Egress: egress.Policy{AllowHTTP: true, AllowPorts: []int{portOf(t, cw.URL)}},
		Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	p.PollOnce(context.Background())
	if n := cw.Requests(""); n != 0 || len(pub.all()) != 0 {
		t.Fatalf("reached a loopback endpoint: %d requests", n)
	}
}
