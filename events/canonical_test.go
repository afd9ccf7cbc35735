package events_test

import (
	"encoding/json"
	"errors"
	"math/rand"
	"os"
	"reflect"
	"regexp"
	"testing"
	"testing/quick"
	"time"

	"inthub.dev/events"
)

func TestParseIngestSubject(t *testing.T) {
	tests := []struct {
		subject, provider, kind string
		ok                      bool
	}{
		{"ingest.github.push", "github", "push", true},
		{"ingest.cloudwatch.alarm", "cloudwatch", "alarm", true},
		{"ingest.github", "", "", false},
		{"ingest..push", "", "", false},
		{"ingest.github.push.extra", "", "", false},
		{"event.canonical.system", "", "", false},
	}
	for _, tt := range tests {
		p, k, ok := events.ParseIngestSubject(tt.subject)
		if p != tt.provider || k != tt.kind || ok != tt.ok {
			t.Errorf("ParseIngestSubject(%q) = %q, %q, %v; want %q, %q, %v", tt.subject, p, k, ok, tt.provider, tt.kind, tt.ok)
		}
	}
	for _, s := range events.DataSubjects() {
		if p, k, ok := events.ParseIngestSubject(s); ok && events.IngestSubject(p, k) != s {
			t.Errorf("IngestSubject(ParseIngestSubject(%q)) = %q", s, events.IngestSubject(p, k))
		}
	}
}

func ingested(provider, kind string) events.Ingested {
	return events.Ingested{IntegrationID: integrationID, TenantID: tenantID, Provider: provider, Kind: kind,
		DeliveryID: "72d3162e-cc78-11e3-81ab-4c9367dc0958", Via: events.ViaWebhook, ReceivedAt: when,
		Headers:    map[string]string{"X-GitHub-Event": kind},
		BodySHA256: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
		Payload:    json.RawMessage(`{"ref":"refs/heads/main","after":"` + sha + `","n":1.5e3,"html":"<a href=\"x\">&</a>"}`)}
}

func canonical(category string) events.Canonical {
	c := 0.8
	return events.Canonical{TenantID: tenantID, Category: category, Kind: "deployment.success", Provider: "github",
		Severity: "info", Summary: "acme/api deployed <prod>",
		Attributes: map[string]any{"repository": "acme/api", "number": float64(7), "draft": false},
		IngestID:   requestID,
		Context: events.IntegrationContext{SourceIntegration: integrationID, ExternalID: "123", OriginalTimestamp: when,
			CorrelationHints: []events.CorrelationHint{{Type: events.HintResourceID, Key: "commit", Value: sha, Confidence: 1}},
			EvidenceLinks: []events.EvidenceLink{{Type: events.LinkDeployment, URL: "https://github.com/acme/api/deployments",
				Description: "production", Metadata: map[string]string{"sha": sha}, SourceIntegration: integrationID, Confidence: &c}},
		}}
}

// TestDataRoundTrip: a payload of each data subject is valid, survives the
// wire unchanged, and is refused under a subject of its family that pins
// another provider, kind or category.
func TestDataRoundTrip(t *testing.T) {
	enriched := events.Enriched{TenantID: tenantID, RequestID: requestID, EventID: integrationID, EventType: events.SubjectCanonicalSystem,
		At: when, Matches: []events.EnrichmentMatch{{EventID: requestID, Category: events.CategoryDelivery, Kind: "deployment.created",
			Summary: "s", SourceIntegration: integrationID, OccurredAt: when, Score: 0.9, Match: events.MatchKey, Keys: []string{"service=x"}}},
		EvidenceLinks:      canonical("delivery").Context.EvidenceLinks,
		CorrelationHints:   []events.CorrelationHint{{Type: events.HintResourceID, Key: "commit", Value: sha, Confidence: 0.9, SourceIntegration: integrationID}},
		EnrichmentMetadata: events.EnrichmentMetadata{EnrichedAt: when, WindowSeconds: 3600, Candidates: 2}}
	tests := []struct {
		subject, wrong string
		payload        any
		into           any
	}{
		{events.SubjectIngestGitHubPush, events.SubjectIngestGitHubRelease, ingested("github", "push"), &events.Ingested{}},
		{events.SubjectIngestGitLabMergeRequest, events.SubjectIngestGitHubPullRequest, ingested("gitlab", "merge_request"), &events.Ingested{}},
		{events.SubjectIngestCloudWatchAlarm, events.SubjectIngestGitHubPush, ingested("cloudwatch", "alarm"), &events.Ingested{}},
		{events.SubjectCanonicalDelivery, events.SubjectCanonicalSystem, canonical("delivery"), &events.Canonical{}},
		{events.SubjectCanonicalSecurity, events.SubjectCanonicalDelivery, canonical("security"), &events.Canonical{}},
		{events.SubjectEnrichmentRequested, events.SubjectEnriched, events.EnrichmentRequested{TenantID: tenantID, EventID: integrationID, At: when,
			Keys: []events.CorrelationHint{{Type: events.HintMetadata, Key: "tag", Value: "team=a", Confidence: 0.5}}}, &events.EnrichmentRequested{}},
		{events.SubjectEnriched, events.SubjectEnrichmentRequested, enriched, &events.Enriched{}},
	}
	for _, tt := range tests {
		t.Run(tt.subject, func(t *testing.T) {
			e, err := events.New(tt.subject, source, tenantID, tt.payload)
			if err != nil {
				t.Fatalf("New: %v", err)
			}
			b, err := e.Marshal()
			if err != nil {
				t.Fatal(err)
			}
			got, err := events.Parse(b)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if err := got.Decode(tt.into); err != nil {
				t.Fatalf("Decode: %v", err)
			}
			if d := reflect.ValueOf(tt.into).Elem().Interface(); !reflect.DeepEqual(d, tt.payload) {
				t.Fatalf("Decode = %+v\nwant %+v", d, tt.payload)
			}
			if _, err := events.New(tt.wrong, source, tenantID, tt.payload); err == nil {
				t.Fatalf("New under %s accepted the payload of %s", tt.wrong, tt.subject)
			}
			if _, err := events.New(tt.subject, source, "0190f1c2-7a3b-7c4d-8e5f-0a1b2c3d4e60", tt.payload); err == nil {
				t.Fatal("New accepted an envelope tenant that differs from data.tenantId")
			}
		})
	}
}

type genHint struct{ events.CorrelationHint }

func (genHint) Generate(r *rand.Rand, _ int) reflect.Value {
	return reflect.ValueOf(genHint{events.CorrelationHint{
		Type:       pick(r, events.HintResourceID, events.HintTemporal, events.HintMetadata),
		Key:        pick(r, "commit", "repository", "service", "tag", "environment", "deployment"),
		Value:      "v" + randString(r, 100),
		Confidence: float64(r.Intn(1001)) / 1000,
	}})
}

// TestPropertyCanonicalRoundTrip: any canonical event with well-formed
// hints reaches a consumer unchanged, in each category.
func TestPropertyCanonicalRoundTrip(t *testing.T) {
	f := func(hs []genHint, summary string, cat uint8, at uint32) bool {
		c := canonical(pick(rand.New(rand.NewSource(int64(cat))), events.CategoryDelivery, events.CategorySystem, events.CategorySecurity))
		c.Summary = "s" + summary
		c.Context.OriginalTimestamp = time.Unix(int64(at), 0).UTC()
		c.Context.CorrelationHints = nil
		for _, h := range hs {
			c.Context.CorrelationHints = append(c.Context.CorrelationHints, h.CorrelationHint)
		}
		if len(c.Context.CorrelationHints) > 200 {
			c.Context.CorrelationHints = c.Context.CorrelationHints[:200]
		}
		e, err := events.New(events.CanonicalSubject(c.Category), source, tenantID, c)
		if err != nil {
			var ve *events.ValidationError
			// A summary over 1000 code points is the one refusal expected.
			if errors.As(err, &ve) && ve.Field == "data.summary" {
				return true
			}
			t.Logf("New: %v", err)
			return false
		}
		b, _ := e.Marshal()
		got, err := events.Parse(b)
		if err != nil {
			t.Logf("Parse: %v", err)
			return false
		}
		var back events.Canonical
		if err := got.Decode(&back); err != nil {
			t.Logf("Decode: %v", err)
			return false
		}
		if len(back.Context.CorrelationHints) == 0 && c.Context.CorrelationHints == nil {
			// A nil list goes out as [] (the schema wants an array).
			back.Context.CorrelationHints = nil
		}
		return reflect.DeepEqual(back, c)
	}
	if err := quick.Check(f, &quick.Config{MaxCount: 200}); err != nil {
		t.Fatal(err)
	}
}

// TestEnrichmentDocExamples keeps the examples in docs/enrichment.md, which
// other teams copy, valid under the schemas that actually run, one at
// least per data subject.
func TestEnrichmentDocExamples(t *testing.T) {
	doc, err := os.ReadFile("../docs/enrichment.md")
	if os.IsNotExist(err) {
		t.Skip("docs/enrichment.md is not beside this module")
	}
	if err != nil {
		t.Fatal(err)
	}
	blocks := regexp.MustCompile("(?s)```json\n(.*?)```").FindAllSubmatch(doc, -1)
	seen := map[string]bool{}
	for i, b := range blocks {
		e, err := events.Parse(b[1])
		if err != nil {
			t.Errorf("example %d: %v", i+1, err)
			continue
		}
		seen[e.Type] = true
	}
	for _, s := range []string{events.SubjectIngestGitHubPush, events.SubjectCanonicalDelivery, events.SubjectCanonicalSystem,
		events.SubjectEnrichmentRequested, events.SubjectEnriched} {
		if !seen[s] {
			t.Errorf("docs/enrichment.md has no example of %s", s)
		}
	}
}
