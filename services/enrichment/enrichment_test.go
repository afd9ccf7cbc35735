package enrichment_test

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"inthub.dev/events"
	"inthub.dev/pkg/bus"
	"inthub.dev/services/enrichment"
	"inthub.dev/services/enrichment/ingress"
)

func counter(t testing.TB, e *env, name string) float64 {
	t.Helper()
	mfs, err := e.svc.Metrics().Gather()
	if err != nil {
		t.Fatal(err)
	}
	sum := 0.0
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, m := range mf.GetMetric() {
				sum += m.GetCounter().GetValue()
			}
		}
	}
	return sum
}

func sample(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile("mapping/testdata/samples/" + path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestSameDeliveryThreeTimes: one GitHub delivery posted three times is
// one ingest message and one canonical event, indexed once.
func TestSameDeliveryThreeTimes(t *testing.T) {
	e := newEnv(t, nil)
	body := sample(t, "github/push.json")
	for i := range 3 {
		if code := e.github(ghA, "push", "72d3162e-cc78-11e3-81ab-4c9367dc0958", body); code != 202 {
			t.Fatalf("post %d: status %d", i, code)
		}
	}
	e.waitFor("the push to be indexed", 30*time.Second, func() bool { return counter(t, e, "enrichment_indexed_total") >= 1 })
	if n := len(e.messages(bus.StreamIngest, "ingest.>")); n != 1 {
		t.Fatalf("%d ingest messages, want 1", n)
	}
	canon := e.eventsOn(bus.StreamEvents, "event.canonical.>")
	if len(canon) != 1 || canon[0].Type != events.SubjectCanonicalDelivery {
		t.Fatalf("canonical events %v, want one event.canonical.delivery", canon)
	}
	var c events.Canonical
	if err := canon[0].Decode(&c); err != nil {
		t.Fatal(err)
	}
	if c.IngestID != ingress.EventID("github", ghA, "72d3162e-cc78-11e3-81ab-4c9367dc0958") || c.Kind != "commit.pushed" ||
		c.TenantID != tenantA || c.Context.SourceIntegration != ghA {
		t.Fatalf("canonical %+v", c)
	}
	// A delivery system event (not system/security) is not auto-enriched.
	if n := len(e.messages(bus.StreamEvents, events.SubjectEnrichmentRequested)); n != 0 {
		t.Fatalf("%d enrichment requests for a push", n)
	}
}

// TestUnmappableGoesToDLQ: a verified delivery whose document the rules
// cannot map ends in the DLQ once, with the reason, the ingest message
// untouched; nothing canonical is published.
func TestUnmappableGoesToDLQ(t *testing.T) {
	e := newEnv(t, nil)
	if code := e.github(ghA, "push", "d-broken", []byte(`{"ref":"refs/heads/main","deleted":false}`)); code != 202 {
		t.Fatalf("status %d", code)
	}
	var dl []deadLetter
	e.waitFor("a dead letter", 30*time.Second, func() bool {
		dl = nil
		for _, m := range e.messages(bus.StreamDLQ, "dlq.ingest.>") {
			dl = append(dl, deadLetter{m.Subject(), m.Headers(), m.Data()})
		}
		return len(dl) > 0
	})
	ingest := e.messages(bus.StreamIngest, "ingest.>")
	if len(dl) != 1 || len(ingest) != 1 {
		t.Fatalf("%d dead letters, %d ingest messages; want 1 and 1", len(dl), len(ingest))
	}
	d := dl[0]
	if d.subject != "dlq.ingest.github.push" || d.header.Get(bus.HeaderErrorClass) != "permanent" ||
		!strings.Contains(d.header.Get(bus.HeaderLastError), "mapping: github: rules[1] (push)") {
		t.Fatalf("dead letter %s %v", d.subject, d.header)
	}
	if string(d.data) != string(ingest[0].Data()) {
		t.Fatal("the dead letter's body is not the ingest message")
	}
	if n := len(e.messages(bus.StreamEvents, "event.canonical.>")); n != 0 {
		t.Fatalf("%d canonical events", n)
	}
	if counter(t, e, "enrichment_mapping_failures_total") != 1 {
		t.Fatal("the failure is not counted")
	}
}

type deadLetter struct {
	subject string
	header  nats.Header
	data    []byte
}

func deploymentBody(repo, id, sha, env string, at time.Time) []byte {
	return []byte(fmt.Sprintf(`{"action":"created","deployment":{"url":"https://api.github.com/repos/acme/%[1]s/deployments/%[2]s",
	"id":%[2]s,"sha":"%[3]s","ref":"main","task":"deploy","payload":{},"environment":"%[4]s","description":null,
	"creator":{"login":"octocat"},"created_at":"%[5]s","updated_at":"%[5]s"},
	"repository":{"id":1,"name":"%[1]s","full_name":"acme/%[1]s","html_url":"https://github.com/acme/%[1]s"},
	"sender":{"login":"octocat"}}`, repo, id, sha, env, at.Format(time.RFC3339)))
}

func alarmBody(name, service string, at time.Time) []byte {
	return []byte(fmt.Sprintf(`{"AlarmName":"%[1]s","AlarmDescription":null,"AWSAccountId":"123456789012",
	"NewStateValue":"ALARM","NewStateReason":"Threshold Crossed","StateChangeTime":"%[3]s",
	"Region":"EU (Ireland)","AlarmArn":"arn:aws:cloudwatch:eu-west-1:123456789012:alarm:%[1]s","OldStateValue":"OK",
	"Trigger":{"MetricName":"HTTPCode_Target_5XX_Count","Namespace":"AWS/ApplicationELB",
	"Dimensions":[{"value":"%[2]s","name":"ServiceName"}]}}`, name, service, at.Format("2006-01-02T15:04:05.000-0700")))
}

// TestAlarmEnrichedEndToEnd is the scenario through the whole
// service: GitHub deployments by webhook (service checkout at 10:01, an
// unrelated one at 09:00, and tenant B's checkout at 10:04), then a
// CloudWatch alarm on checkout at 10:05 through the SNS subscription. The
// alarm is mapped, indexed, enriched on its own, and its event.enriched
// ranks the 10:01 deployment first, with nothing of tenant B.
func TestAlarmEnrichedEndToEnd(t *testing.T) {
	e := newEnv(t, nil)
	day := time.Now().UTC().Truncate(24 * time.Hour)
	at := func(h, m int) time.Time { return day.Add(time.Duration(h)*time.Hour + time.Duration(m)*time.Minute) }
	sha := strings.Repeat("ab", 20)
	for _, d := range []struct {
		integration, delivery string
		body                  []byte
	}{
		{ghA, "dep-1001", deploymentBody("checkout", "1001", sha, "production", at(10, 1))},
		{ghA, "dep-0900", deploymentBody("billing", "900", strings.Repeat("cd", 20), "production", at(9, 0))},
		{ghB, "dep-b", deploymentBody("checkout", "2002", sha, "production", at(10, 4))},
	} {
		if code := e.github(d.integration, "deployment", d.delivery, d.body); code != 202 {
			t.Fatalf("deployment %s: status %d", d.delivery, code)
		}
	}
	e.waitFor("three deployments indexed", 30*time.Second, func() bool { return counter(t, e, "enrichment_indexed_total") >= 3 })

	if code := e.sns(cwA, "sns-msg-1", string(alarmBody("checkout-5xx", "checkout", at(10, 5)))); code != 200 {
		t.Fatalf("SNS notification: status %d", code)
	}
	var enriched []events.Event
	e.waitFor("event.enriched", 30*time.Second, func() bool {
		enriched = e.eventsOn(bus.StreamEvents, events.SubjectEnriched)
		return len(enriched) > 0
	})
	if len(enriched) != 1 {
		t.Fatalf("%d event.enriched, want 1", len(enriched))
	}
	var out events.Enriched
	if err := enriched[0].Decode(&out); err != nil {
		t.Fatal(err)
	}
	canon := e.eventsOn(bus.StreamEvents, "event.canonical.>")
	kindOf, tenantOf := map[string]string{}, map[string]string{}
	var deploymentID string
	for _, ev := range canon {
		var c events.Canonical
		if err := ev.Decode(&c); err != nil {
			t.Fatal(err)
		}
		kindOf[ev.ID], tenantOf[ev.ID] = c.Kind+"@"+c.Context.OriginalTimestamp.Format("15:04"), c.TenantID
		if c.TenantID == tenantA && c.Context.ExternalID == "1001" {
			deploymentID = ev.ID
		}
	}
	if out.TenantID != tenantA || out.EventType != events.SubjectCanonicalSystem || len(out.Matches) == 0 {
		t.Fatalf("enriched %+v", out)
	}
	if out.Matches[0].EventID != deploymentID || out.Matches[0].Match != events.MatchKey || out.Matches[0].SourceIntegration != ghA {
		t.Fatalf("best match %+v (%s), want the 10:01 deployment %s", out.Matches[0], kindOf[out.Matches[0].EventID], deploymentID)
	}
	for _, m := range out.Matches {
		if tenantOf[m.EventID] != tenantA {
			t.Fatalf("match %s is of tenant %q", m.EventID, tenantOf[m.EventID])
		}
		if m.EventID != deploymentID && m.Score >= out.Matches[0].Score {
			t.Fatalf("%s (%s) scores %v, as high as the deployment", m.EventID, kindOf[m.EventID], m.Score)
		}
	}
	found := false
	for _, l := range out.EvidenceLinks {
		if l.URL == "https://github.com/acme/checkout/deployments" && l.SourceIntegration == ghA {
			found = true
		}
		if l.SourceIntegration == ghB {
			t.Fatalf("a link of tenant B: %+v", l)
		}
	}
	if !found {
		t.Fatalf("no link to the deployment in %+v", out.EvidenceLinks)
	}
}

// A CloudWatch metric sample is indexed, as evidence for the events around
// it, and never enriched on its own; an alarm of the same category is.
func TestMetricSamplesAreIndexedNotEnriched(t *testing.T) {
	e := newEnv(t, nil)
	at := time.Now().UTC().Add(-time.Hour).Truncate(time.Minute)
	canonical := func(kind, externalID string) events.Event {
		ev, err := events.New(events.SubjectCanonicalSystem, "test/canonical", tenantA, events.Canonical{
			TenantID: tenantA, Category: events.CategorySystem, Kind: kind, Provider: "cloudwatch",
			Summary: kind + " " + externalID, IngestID: uuid.NewString(),
			Context: events.IntegrationContext{SourceIntegration: cwA, ExternalID: externalID, OriginalTimestamp: at,
				CorrelationHints: []events.CorrelationHint{{Type: events.HintMetadata, Key: "service", Value: "checkout", Confidence: 0.6}}},
		})
		if err != nil {
			t.Fatal(err)
		}
		return ev
	}
	sample, alarm := canonical(enrichment.KindMetricSample, "latency@1"), canonical("alarm.alarm", "arn@1")
	for _, ev := range []events.Event{sample, alarm} {
		body, _ := ev.Marshal()
		if _, err := e.js.Publish(e.ctx, ev.Type, body, jetstream.WithMsgID(ev.ID)); err != nil {
			t.Fatal(err)
		}
	}
	e.waitFor("both indexed", 30*time.Second, func() bool { return counter(t, e, "enrichment_indexed_total") >= 2 })
	e.waitFor("the alarm enriched", 30*time.Second, func() bool { return len(e.eventsOn(bus.StreamEvents, events.SubjectEnriched)) >= 1 })
	for _, r := range e.eventsOn(bus.StreamEvents, events.SubjectEnrichmentRequested) {
		var req events.EnrichmentRequested
		if err := r.Decode(&req); err != nil {
			t.Fatal(err)
		}
		if req.EventID == sample.ID {
			t.Fatalf("the metric sample %s was sent for enrichment", sample.ID)
		}
	}
	if n := len(e.eventsOn(bus.StreamEvents, events.SubjectEnriched)); n != 1 {
		t.Fatalf("%d event.enriched, want 1 (the alarm's)", n)
	}
}
