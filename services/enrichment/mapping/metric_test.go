package mapping_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"inthub.dev/events"
	"inthub.dev/services/enrichment/correlate"
	"inthub.dev/services/enrichment/mapping"
)

func sample(t *testing.T, source, name string) []byte {
	t.Helper()
	b, err := os.ReadFile("testdata/samples/" + source + "/" + name + ".json")
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// The metric rules' hints are chosen for what enrichment does with them:
// an alarm on the checkout service at 10:05, with a sample of the checkout
// load balancer's 5xx count every minute for two hours around it (all
// sharing the alarm's service and resource), still ranks the GitHub
// deployment of checkout at 10:01 first, and above it every sample, which
// all match by tag and bring their metric links.
func TestMetricSamplesRankBelowTheDeployment(t *testing.T) {
	m, err := mapping.Default()
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	var cands []correlate.Record
	add := func(id, source, kind string, payload []byte) events.Canonical {
		t.Helper()
		c, err := m.Map(ctx, ingested(source, kind, payload), ingestID)
		if err != nil {
			t.Fatalf("%s: %v", id, err)
		}
		cands = append(cands, correlate.Record{EventID: id, TenantID: tenant, Category: c.Category, Kind: c.Kind, Provider: c.Provider,
			Summary: c.Summary, SourceIntegration: integration, OccurredAt: c.Context.OriginalTimestamp,
			Hints: c.Context.CorrelationHints, Links: c.Context.EvidenceLinks})
		return c
	}
	const deployment = "0190f1c2-0000-7000-8000-00000000d001"
	add(deployment, "github", "deployment", sample(t, "github", "deployment"))
	var doc map[string]any
	if err := json.Unmarshal(sample(t, "cloudwatch", "metric"), &doc); err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2025, 1, 2, 9, 5, 0, 0, time.UTC)
	for i := range 121 {
		doc["Timestamp"] = t0.Add(time.Duration(i) * time.Minute).Format(time.RFC3339)
		b, _ := json.Marshal(doc)
		add(fmt.Sprintf("0190f1c2-0000-7000-8000-%012d", i), "cloudwatch", "metric", b)
	}
	alarm := add("0190f1c2-0000-7000-8000-00000000a001", "cloudwatch", "alarm", sample(t, "cloudwatch", "alarm"))
	var keys []events.CorrelationHint
	for _, h := range alarm.Context.CorrelationHints {
		if h.Type != events.HintTemporal {
			keys = append(keys, h)
		}
	}
	out := correlate.Score("0190f1c2-0000-7000-8000-00000000e001", events.EnrichmentRequested{TenantID: tenant,
		EventID: "0190f1c2-0000-7000-8000-00000000a001", At: alarm.Context.OriginalTimestamp, Keys: keys},
		cands, correlate.Params{}, 2*time.Hour, time.Now())
	if len(out.Matches) < 2 || out.Matches[0].EventID != deployment || out.Matches[0].Match != events.MatchKey {
		t.Fatalf("matches %+v, want the deployment first", out.Matches)
	}
	for _, mt := range out.Matches[1:] {
		if mt.Kind != "metric.sample" || mt.Match != events.MatchTag || mt.Score >= out.Matches[0].Score {
			t.Errorf("match %+v after the deployment", mt)
		}
	}
	metricLinks := 0
	for _, l := range out.EvidenceLinks {
		if l.Type == events.LinkMetric && strings.Contains(l.URL, "HTTPCode_Target_5XX_Count") {
			metricLinks++
		}
	}
	if metricLinks == 0 {
		t.Errorf("no metric link among %+v", out.EvidenceLinks)
	}
}
