package bus

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"inthub.dev/events"
	"inthub.dev/pkg/fault"
)

// gauges scrapes c and returns each gauge by name and label values.
func gauges(t *testing.T, c prometheus.Collector) map[string]float64 {
	t.Helper()
	reg := prometheus.NewRegistry()
	reg.MustRegister(c)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			out[mf.GetName()+labelString(m.GetLabel())] = m.GetGauge().GetValue()
		}
	}
	return out
}

func labelString(ls []*dto.LabelPair) string {
	s := ""
	for _, l := range ls {
		s += "," + l.GetName() + "=" + l.GetValue()
	}
	if s == "" {
		return ""
	}
	return "{" + s[1:] + "}"
}

// The collector reports what JetStream says: messages held by a busy
// handler are ack-pending, a permanent failure is a DLQ message, a
// breaker tripped by transient failures is open, and a consumer that does
// not exist is a scrape error rather than a failed scrape.
func TestCollectorReportsTheBus(t *testing.T) {
	e := newEnv(t)
	release := make(chan struct{})
	w := newWorker(t, e.js, testConfig("m1"), events.SubjectIntegrationHealthChecked, func(ctx context.Context, ev events.Event) error {
		if messageOf(t, ev) == "bad" {
			return fault.Permanent(errors.New("422 unprocessable"))
		}
		select {
		case <-release:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	})
	start(t, w)
	trip := NewBreakers(BreakerPolicy{Failures: 1, OpenFor: time.Hour}, nil)
	_, _ = trip.get("sick").Execute(func() ([]*message.Message, error) { return nil, fault.Transient(errors.New("503")) })
	trip.get("well")

	c := NewCollector(e.js, CollectorConfig{
		Consumers: []ConsumerRef{{StreamIntegrations, "m1"}, {StreamIntegrations, "nobody"}},
		Streams:   []string{StreamDLQ, StreamSpool},
		Breakers:  []*Breakers{trip, w.Breakers()},
	})
	e.publish(healthEvent(t, 1, "slow"), healthEvent(t, 2, "slow"), healthEvent(t, 3, "bad"))

	const ackPending = "bus_consumer_ack_pending_messages{consumer=m1,stream=INTEGRATIONS}"
	var g map[string]float64
	eventually(t, 10*time.Second, "two held, one dead-lettered", func() bool {
		g = gauges(t, c)
		return g[ackPending] == 2 && g["bus_stream_messages{stream=DLQ}"] == 1
	})
	for k, want := range map[string]float64{
		"bus_consumer_pending_messages{consumer=m1,stream=INTEGRATIONS}": 0,
		"bus_stream_messages{stream=SPOOL}":                              0,
		"bus_breakers{state=open}":                                       1,
		"bus_breakers{state=closed}":                                     4, // "well" and the worker's three integrations
		"bus_scrape_errors{what=consumer}":                               1,
		"bus_scrape_errors{what=stream}":                                 0,
	} {
		if got, ok := g[k]; !ok || got != want {
			t.Errorf("%s = %v (reported %v), want %v", k, got, ok, want)
		}
	}
	close(release)
	eventually(t, 10*time.Second, "nothing pending", func() bool { return gauges(t, c)[ackPending] == 0 })
}
