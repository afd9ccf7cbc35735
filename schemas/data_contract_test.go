package schemas

import (
	"slices"
	"strings"
	"testing"
)

// TestDataContractFields pins the properties of the data side's schemas to
// the field names docs/enrichment.md publishes (the seed's
// IntegrationContext among them), as TestContractFields does for DESIGN §5.
func TestDataContractFields(t *testing.T) {
	ingest := []string{"integrationId", "tenantId", "provider", "kind", "deliveryId", "via", "receivedAt", "headers", "bodySha256", "payload"}
	canonical := []string{"tenantId", "category", "kind", "provider", "severity", "summary", "attributes", "ingestId", "context"}
	context := []string{"sourceIntegration", "externalId", "originalTimestamp", "correlationHints", "evidenceLinks", "enrichmentMetadata"}
	hint := []string{"type", "key", "value", "confidence", "sourceIntegration"}
	link := []string{"type", "url", "description", "metadata", "sourceIntegration", "confidence"}
	want := map[string][]string{
		"event.canonical.delivery":                            canonical,
		"event.canonical.system":                              canonical,
		"event.canonical.security":                            canonical,
		"event.canonical.delivery context":                    context,
		"event.canonical.delivery context correlationHints[]": hint,
		"event.canonical.delivery context evidenceLinks[]":    link,
		"event.canonical.delivery context enrichmentMetadata": {"enrichedAt", "windowSeconds", "candidates"},
		"enrichment.requested":                                {"tenantId", "eventId", "eventType", "at", "keys", "windowSeconds", "maxMatches"},
		"enrichment.requested keys[]":                         hint,
		"event.enriched":                                      {"tenantId", "requestId", "eventId", "eventType", "at", "matches", "evidenceLinks", "correlationHints", "enrichmentMetadata"},
		"event.enriched matches[]":                            {"eventId", "category", "kind", "summary", "sourceIntegration", "occurredAt", "score", "match", "keys"},
	}
	for _, s := range []string{"ingest.github.push", "ingest.github.pull_request", "ingest.github.deployment", "ingest.github.deployment_status",
		"ingest.github.release", "ingest.gitlab.push", "ingest.gitlab.merge_request", "ingest.gitlab.deployment", "ingest.gitlab.release",
		"ingest.cloudwatch.alarm", "ingest.cloudwatch.metric"} {
		want[s] = ingest
	}
	for key, fields := range want {
		path := strings.Fields(key)
		url := baseURL + fileOf(path[0])
		sch := load(t, url, "")
		for _, p := range path[1:] {
			p, items := strings.CutSuffix(p, "[]")
			url, sch = resolve(t, url, sch)
			sch = sch["properties"].(map[string]any)[p].(map[string]any)
			if items {
				sch = sch["items"].(map[string]any)
			}
		}
		url, sch = resolve(t, url, sch)
		// attributedLink and attributedHint refer once more.
		_, sch = resolve(t, url, sch)
		var got []string
		for k := range sch["properties"].(map[string]any) {
			got = append(got, k)
		}
		slices.Sort(got)
		fields = slices.Sorted(slices.Values(fields))
		if !slices.Equal(got, fields) {
			t.Errorf("%s: properties %q, want %q", key, got, fields)
		}
		if sch["additionalProperties"] != false {
			t.Errorf("%s: not closed (additionalProperties is not false)", key)
		}
	}
}
