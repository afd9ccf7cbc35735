package cloudwatch_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"inthub.dev/events"
	cwconn "inthub.dev/pkg/connectors/cloudwatch"
	"inthub.dev/pkg/connectors/cloudwatch/cloudwatchtest"
	"inthub.dev/pkg/egress"
	"inthub.dev/services/enrichment/cloudwatch"
	"inthub.dev/services/enrichment/ingress"
	"inthub.dev/services/enrichment/mapping"
)

var (
	lb       = map[string]string{"LoadBalancer": "app/checkout/50dc6c495c0c9188"}
	requests = cwconn.Metric{ID: "requests", Namespace: "AWS/ApplicationELB", MetricName: "RequestCount", Dimensions: lb,
		Stat: "Sum", PeriodSeconds: 60, Unit: "Count", Service: "checkout"}
	latency = cwconn.Metric{ID: "latency", Namespace: "AWS/ApplicationELB", MetricName: "TargetResponseTime", Dimensions: lb,
		Stat: "Maximum", PeriodSeconds: 300}
)

func metricIntegration(endpoint string, metrics ...cwconn.Metric) events.Integration {
	in := cwIntegration(endpoint, 1)
	b, _ := json.Marshal(cwconn.Config{Region: cloudwatchtest.DefaultRegion, Endpoint: endpoint, AccessKeyID: "authref://env/AK",
		SecretAccessKey: "authref://env/SK", Metrics: metrics})
	in.Config = b
	return in
}

// fill records, for every minute from 09:00 to 10:10 but 10:04, two
// requests datapoints (minute and minute+1) and a latency of minute/100 s.
func fill(cw *cloudwatchtest.Server) {
	t0 := time.Date(2026, 5, 6, 9, 0, 0, 0, time.UTC)
	for i := 0; i <= 70; i++ {
		at := t0.Add(time.Duration(i) * time.Minute)
		if at.Hour() == 10 && at.Minute() == 4 {
			continue // no requests, no datapoint: nothing to publish
		}
		cw.PutMetricData(
			cloudwatchtest.Datum{Namespace: "AWS/ApplicationELB", MetricName: "RequestCount", Dimensions: lb, Time: at.Add(10 * time.Second), Value: float64(at.Minute()), Unit: "Count"},
			cloudwatchtest.Datum{Namespace: "AWS/ApplicationELB", MetricName: "RequestCount", Dimensions: lb, Time: at.Add(40 * time.Second), Value: 1, Unit: "Count"},
			cloudwatchtest.Datum{Namespace: "AWS/ApplicationELB", MetricName: "TargetResponseTime", Dimensions: lb, Time: at.Add(20 * time.Second), Value: float64(at.Minute()) / 100},
		)
	}
}

func newMetricPoller(t *testing.T, in events.Integration, now *time.Time, catchUp time.Duration) (*cloudwatch.Poller, *publisher) {
	t.Helper()
	var c struct{ Endpoint string }
	_ = json.Unmarshal(in.Config, &c)
	pub := &publisher{}
	p, err := cloudwatch.New(cloudwatch.Config{Integrations: integrations{in}, Publisher: pub,
		Secrets:  secrets{"authref://env/AK": cloudwatchtest.DefaultAccessKey, "authref://env/SK": cloudwatchtest.DefaultSecretKey},
		Interval: time.Minute, MaxCatchUp: catchUp,
		Egress:  egress.Policy{AllowLoopback: true, AllowHTTP: true, AllowPorts: []int{portOf(t, c.Endpoint)}},
		Timeout: 5 * time.Second, Now: func() time.Time { return *now },
		Logger: slog.New(slog.NewTextHandler(testWriter{t}, nil))})
	if err != nil {
		t.Fatal(err)
	}
	return p, pub
}

// samples decodes published metric events as "id@hh:mm=value".
func samples(t *testing.T, evs []events.Event) []string {
	t.Helper()
	var out []string
	for _, ev := range evs {
		var in events.Ingested
		if err := ev.Decode(&in); err != nil {
			t.Fatal(err)
		}
		var s cloudwatch.Sample
		if err := json.Unmarshal(in.Payload, &s); err != nil {
			t.Fatal(err)
		}
		if ev.Type != events.SubjectIngestCloudWatchMetric || in.Via != events.ViaPoll || in.Kind != "metric" ||
			ev.ID != ingress.EventID("cloudwatch", cwID, in.DeliveryID) {
			t.Fatalf("event %s %s: %+v", ev.Type, ev.ID, in)
		}
		out = append(out, fmt.Sprintf("%s@%s=%g", s.ID, s.Timestamp.Format("15:04"), s.Value))
	}
	return out
}

func counter(t *testing.T, p *cloudwatch.Poller, name string, labels ...string) float64 {
	t.Helper()
	reg := prometheus.NewRegistry()
	reg.MustRegister(p.Collectors()...)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	total := 0.0
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			got := map[string]string{}
			for _, l := range m.GetLabel() {
				got[l.GetName()] = l.GetValue()
			}
			match := true
			for i := 0; i+1 < len(labels); i += 2 {
				match = match && got[labels[i]] == labels[i+1]
			}
			if !match {
				continue
			}
			total += m.GetCounter().GetValue()
		}
	}
	return total
}

// TestPollerMetrics: each completed period (ended two minutes ago, for
// CloudWatch's ingestion delay) is published once, in order, with its
// statistic; the first poll goes back two intervals (at least one
// period); a period without data publishes nothing; another replica or a
// restart publishes the same ids; what is published validates and maps
// with the default rules.
func TestPollerMetrics(t *testing.T) {
	cw := cloudwatchtest.New(t, cloudwatchtest.Options{DatapointPageSize: 1}) // every datapoint its own page
	fill(cw)
	now := time.Date(2026, 5, 6, 10, 5, 30, 0, time.UTC)
	in := metricIntegration(cw.URL, requests, latency)
	p, pub := newMetricPoller(t, in, &now, 0)
	ctx := context.Background()

	p.PollOnce(ctx)
	// Settled up to 10:03:30: requests' minutes 10:01 and 10:02 (two
	// intervals back), latency's five minutes 09:55-10:00.
	want := []string{"requests@10:01=2", "requests@10:02=3", "latency@09:55=0.59"}
	if got := samples(t, pub.all()); !slices.Equal(got, want) {
		t.Fatalf("first poll published %v, want %v", got, want)
	}
	if n := cw.Requests("GetMetricData"); n < 3 {
		t.Errorf("%d GetMetricData calls; the one-datapoint pages were not followed", n)
	}
	if n := cw.Requests("DescribeAlarms"); n != 0 {
		t.Errorf("alarms polled without pollAlarms: %d calls", n)
	}

	p.PollOnce(ctx) // the same minute: nothing new
	if n := len(pub.all()); n != 3 {
		t.Fatalf("an unchanged poll published: %d events", n)
	}

	now = now.Add(2 * time.Minute) // 10:07:30, settled up to 10:05:30: 10:03, 10:04 (no data), latency's 10:00-10:05
	p.PollOnce(ctx)
	now = now.Add(3 * time.Minute) // 10:10:30, settled up to 10:08:30
	p.PollOnce(ctx)
	want = append(want, "requests@10:03=4", "latency@10:00=0.03", "requests@10:05=6", "requests@10:06=7", "requests@10:07=8")
	all := pub.all()
	if got := samples(t, all); !slices.Equal(got, want) {
		t.Fatalf("published %v, want %v", got, want)
	}
	if got := counter(t, p, "enrichment_cloudwatch_metric_samples_total"); got != 8 {
		t.Errorf("samples counted: %v", got)
	}
	if got := counter(t, p, "enrichment_cloudwatch_polls_total", "kind", "metrics", "outcome", "ok"); got != 4 {
		t.Errorf("ok metric polls counted: %v", got)
	}

	// A restarted poller (or a second replica) publishes what it sees under
	// the same ids.
	p2, pub2 := newMetricPoller(t, in, &now, 0)
	p2.PollOnce(ctx)
	ids := map[string]bool{}
	for _, ev := range all {
		ids[ev.ID] = true
	}
	again := pub2.all()
	if len(again) == 0 {
		t.Fatal("the restarted poller published nothing")
	}
	for _, ev := range again {
		if !ids[ev.ID] {
			t.Fatalf("the restarted poller published %v under a new id", samples(t, []events.Event{ev}))
		}
	}

	m, err := mapping.Default()
	if err != nil {
		t.Fatal(err)
	}
	var ing events.Ingested
	if err := all[0].Decode(&ing); err != nil {
		t.Fatal(err)
	}
	c, err := m.Map(ctx, ing, all[0].ID)
	if err != nil {
		t.Fatalf("a polled sample does not map: %v", err)
	}
	if _, err := events.New(events.CanonicalSubject(c.Category), "test", tenant, c); err != nil {
		t.Fatalf("canonical: %v", err)
	}
	if c.Category != events.CategorySystem || c.Kind != "metric.sample" || !c.Context.OriginalTimestamp.Equal(time.Date(2026, 5, 6, 10, 1, 0, 0, time.UTC)) ||
		len(c.Context.EvidenceLinks) != 1 || c.Context.EvidenceLinks[0].Type != events.LinkMetric {
		t.Fatalf("canonical %+v", c)
	}
	if !slices.ContainsFunc(c.Context.CorrelationHints, func(h events.CorrelationHint) bool { return h.Key == "service" && h.Value == "checkout" }) ||
		!slices.ContainsFunc(c.Context.CorrelationHints, func(h events.CorrelationHint) bool {
			return h.Key == "resource" && h.Value == lb["LoadBalancer"]
		}) {
		t.Fatalf("hints %+v", c.Context.CorrelationHints)
	}
}

// TestPollerMetricsCatchUp: a failed read (throttled) is counted and
// publishes nothing; the next poll that works reads the periods missed,
// as far back as MaxCatchUp.
func TestPollerMetricsCatchUp(t *testing.T) {
	cw := cloudwatchtest.New(t, cloudwatchtest.Options{})
	fill(cw)
	now := time.Date(2026, 5, 6, 9, 30, 30, 0, time.UTC)
	p, pub := newMetricPoller(t, metricIntegration(cw.URL, requests), &now, 5*time.Minute)
	ctx := context.Background()
	p.PollOnce(ctx)
	if got := samples(t, pub.all()); !slices.Equal(got, []string{"requests@09:26=27", "requests@09:27=28"}) {
		t.Fatalf("first poll: %v", got)
	}
	cw.SetFault(cloudwatchtest.Throttle)
	for range 3 {
		now = now.Add(time.Minute)
		p.PollOnce(ctx)
	}
	if n := len(pub.all()); n != 2 {
		t.Fatalf("published while throttled: %d", n)
	}
	if got := counter(t, p, "enrichment_cloudwatch_polls_total", "kind", "metrics", "outcome", "error"); got != 3 {
		t.Errorf("failed metric polls counted: %v", got)
	}
	cw.SetFault(cloudwatchtest.NoFault)
	now = now.Add(5 * time.Minute) // 09:38:30: settled to 09:36; 09:28-09:30 are older than 5 minutes
	p.PollOnce(ctx)
	want := []string{"requests@09:26=27", "requests@09:27=28", "requests@09:31=32", "requests@09:32=33", "requests@09:33=34",
		"requests@09:34=35", "requests@09:35=36"}
	if got := samples(t, pub.all()); !slices.Equal(got, want) {
		t.Fatalf("after the throttling: %v, want %v", got, want)
	}
}

// A metric whose definition changes starts over (first-poll lookback);
// the others keep their place.
func TestPollerMetricsConfigChange(t *testing.T) {
	cw := cloudwatchtest.New(t, cloudwatchtest.Options{})
	fill(cw)
	now := time.Date(2026, 5, 6, 9, 30, 30, 0, time.UTC)
	in := metricIntegration(cw.URL, requests)
	set := &mutableSet{in: in}
	pub := &publisher{}
	p, err := cloudwatch.New(cloudwatch.Config{Integrations: set, Publisher: pub,
		Secrets: secrets{"authref://env/AK": cloudwatchtest.DefaultAccessKey, "authref://env/SK": cloudwatchtest.DefaultSecretKey},
		Egress:  egress.Policy{AllowLoopback: true, AllowHTTP: true, AllowPorts: []int{portOf(t, cw.URL)}},
		Now:     func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	p.PollOnce(ctx)
	maxRequests := requests
	maxRequests.Stat = "Maximum"
	changed := metricIntegration(cw.URL, maxRequests)
	changed.Version = 2
	set.in = changed
	p.PollOnce(ctx) // same minute, new definition: read again from the lookback
	got := samples(t, pub.all())
	if want := []string{"requests@09:26=27", "requests@09:27=28", "requests@09:26=26", "requests@09:27=27"}; !slices.Equal(got, want) {
		t.Fatalf("published %v, want %v", got, want)
	}
	if pub.all()[0].ID != pub.all()[2].ID {
		// Same metric id, period and start: the same delivery, which
		// JetStream drops within its duplicate window.
		t.Errorf("a redefined metric's period has a new id")
	}
}

type mutableSet struct{ in events.Integration }

func (s *mutableSet) All() []events.Integration { return []events.Integration{s.in} }
