package correlate_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"

	"inthub.dev/events"
	"inthub.dev/services/enrichment/correlate"
)

// BenchmarkScore scores a request against the largest candidate set the
// store hands over (500), a tenth of which share a key.
func BenchmarkScore(b *testing.B) {
	at := time.Date(2025, 1, 2, 10, 5, 0, 0, time.UTC)
	var cands []correlate.Record
	for i := range 500 {
		service := fmt.Sprintf("svc-%d", i%10)
		cands = append(cands, correlate.Record{EventID: uuid.NewString(), TenantID: tenantA, Category: "delivery",
			Kind: "deployment.created", Summary: "s", SourceIntegration: ghInt, OccurredAt: at.Add(time.Duration(i-250) * 15 * time.Second),
			Hints: []events.CorrelationHint{hint(events.HintResourceID, "service", service, 0.8),
				hint(events.HintResourceID, "commit", uuid.NewString(), 1), hint(events.HintMetadata, "environment", "production", 0.6)},
			Links: []events.EvidenceLink{{Type: events.LinkDeployment, URL: "https://github.com/acme/" + service + "/deployments/" + fmt.Sprint(i), Description: "d"}}})
	}
	req := events.EnrichmentRequested{TenantID: tenantA, EventID: uuid.NewString(), At: at,
		Keys: []events.CorrelationHint{hint(events.HintResourceID, "service", "svc-3", 0.8), hint(events.HintMetadata, "environment", "production", 1)}}
	b.ReportAllocs()
	for b.Loop() {
		out := correlate.Score("r", req, cands, correlate.Params{}, 2*time.Hour, at)
		if len(out.Matches) != 10 {
			b.Fatalf("%d matches", len(out.Matches))
		}
	}
}
