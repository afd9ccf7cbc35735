package correlate_test

import (
	"context"
	"fmt"
	"math/rand"
	"reflect"
	"testing"
	"testing/quick"
	"time"

	"github.com/google/uuid"

	"inthub.dev/events"
	"inthub.dev/services/enrichment/correlate"
)

var (
	genTenants  = []string{tenantA, tenantB, "0b5a3bb0-6a43-4d7e-9a39-6f1f9d9a00c3"}
	genServices = []string{"checkout", "billing", "search"}
	genBase     = time.Date(2025, 1, 2, 10, 0, 0, 0, time.UTC)
)

func genHints(r *rand.Rand) []events.CorrelationHint {
	var hs []events.CorrelationHint
	for range r.Intn(4) {
		switch r.Intn(3) {
		case 0:
			hs = append(hs, hint(events.HintResourceID, "service", genServices[r.Intn(len(genServices))], float64(1+r.Intn(10))/10))
		case 1:
			hs = append(hs, hint(events.HintMetadata, "tag", fmt.Sprintf("team=t%d", r.Intn(3)), float64(1+r.Intn(10))/10))
		default:
			hs = append(hs, hint(events.HintTemporal, "service", genServices[r.Intn(len(genServices))], 0.5))
		}
	}
	return hs
}

// scenario is a random set of canonical events across three tenants that
// share services, tags and times, and a request from one of them.
type scenario struct {
	Events []events.Canonical
	Req    events.EnrichmentRequested
}

func (scenario) Generate(r *rand.Rand, _ int) reflect.Value {
	var s scenario
	for range 1 + r.Intn(8) {
		tenant := genTenants[r.Intn(len(genTenants))]
		integ := uuid.NewSHA1(uuid.NameSpaceOID, []byte(tenant+fmt.Sprint(r.Intn(2)))).String()
		s.Events = append(s.Events, events.Canonical{TenantID: tenant, Category: events.CategoryDelivery, Kind: "deployment.created",
			Provider: "github", Summary: "s", IngestID: uuid.NewString(),
			Context: events.IntegrationContext{SourceIntegration: integ, ExternalID: "x",
				OriginalTimestamp: genBase.Add(time.Duration(r.Intn(240)-120) * time.Minute), CorrelationHints: genHints(r),
				EvidenceLinks: []events.EvidenceLink{{Type: events.LinkDeployment, URL: "https://example.com/" + tenant + "/" + uuid.NewString(), Description: "d"}}}})
	}
	s.Req = events.EnrichmentRequested{TenantID: genTenants[r.Intn(len(genTenants))], EventID: uuid.NewString(),
		At: genBase.Add(time.Duration(r.Intn(120)-60) * time.Minute), Keys: genHints(r)}
	return reflect.ValueOf(s)
}

// TestPropertyTenantIsolation (the seed's Property 2, for enrichment): for
// any events of several tenants sharing keys and times, an answer holds
// matches, links and hints of the requesting tenant's events only. Each
// case indexes its events in PostgreSQL and enriches through RLS.
func TestPropertyTenantIsolation(t *testing.T) {
	s, _ := newStore(t)
	e := correlate.NewEnricher(s, correlate.Params{MaxMatches: 100})
	ctx := context.Background()
	// Every event indexed by any case, since all cases share the database.
	tenantOf := map[string]string{}
	linkTenant := map[string]string{}
	f := func(sc scenario) bool {
		for _, c := range sc.Events {
			id := index(t, s, c)
			tenantOf[id] = c.TenantID
			linkTenant[c.Context.EvidenceLinks[0].URL] = c.TenantID
		}
		out, err := e.Enrich(ctx, uuid.NewString(), sc.Req, genBase)
		if err != nil {
			t.Log(err)
			return false
		}
		for _, m := range out.Matches {
			if tenant := tenantOf[m.EventID]; tenant != sc.Req.TenantID {
				t.Logf("tenant %s got a match of tenant %q", sc.Req.TenantID, tenant)
				return false
			}
		}
		for _, l := range out.EvidenceLinks {
			if tenant, ok := linkTenant[l.URL]; ok && tenant != sc.Req.TenantID {
				t.Logf("tenant %s got a link of tenant %s", sc.Req.TenantID, tenant)
				return false
			}
		}
		_, err = events.New(events.SubjectEnriched, "inthub/test", sc.Req.TenantID, out)
		if err != nil {
			t.Logf("invalid answer: %v", err)
		}
		return err == nil
	}
	if err := quick.Check(f, &quick.Config{MaxCount: 100}); err != nil {
		t.Fatal(err)
	}
}

// TestPropertyEnrichmentConsistency (the seed's Properties 7 and 8): for
// any request and candidates, the answer ranks every key match above every
// tag match above every time-only match, never matches the event to
// itself, and attributes every link and hint to the integration of a
// matched event, with the confidence of that match at most.
func TestPropertyEnrichmentConsistency(t *testing.T) {
	rank := map[string]int{events.MatchKey: 3, events.MatchTag: 2, events.MatchTime: 1}
	f := func(sc scenario) bool {
		var cands []correlate.Record
		for i, c := range sc.Events {
			c.TenantID = sc.Req.TenantID
			id := uuid.NewSHA1(uuid.NameSpaceURL, []byte(fmt.Sprint(i))).String()
			if i == 0 {
				id = sc.Req.EventID
			}
			cands = append(cands, correlate.Record{EventID: id, TenantID: c.TenantID, Category: c.Category, Kind: c.Kind,
				Summary: c.Summary, SourceIntegration: c.Context.SourceIntegration, OccurredAt: c.Context.OriginalTimestamp,
				Hints: c.Context.CorrelationHints, Links: c.Context.EvidenceLinks})
		}
		out := correlate.Score(uuid.NewString(), sc.Req, cands, correlate.Params{MaxMatches: 100}, 2*time.Hour, genBase)
		bySource := map[string]float64{}
		for i, m := range out.Matches {
			if m.EventID == sc.Req.EventID {
				t.Log("matched itself")
				return false
			}
			if i > 0 {
				p := out.Matches[i-1]
				if rank[p.Match] < rank[m.Match] || p.Score < m.Score {
					t.Logf("%+v ranked before %+v", p, m)
					return false
				}
			}
			bySource[m.SourceIntegration] = max(bySource[m.SourceIntegration], m.Score)
		}
		for _, l := range out.EvidenceLinks {
			best, ok := bySource[l.SourceIntegration]
			if !ok || l.Confidence == nil || *l.Confidence > best {
				t.Logf("link %+v not attributed to a match", l)
				return false
			}
		}
		for _, h := range out.CorrelationHints {
			if best, ok := bySource[h.SourceIntegration]; !ok || h.Confidence > best {
				t.Logf("hint %+v not attributed to a match", h)
				return false
			}
		}
		return true
	}
	if err := quick.Check(f, &quick.Config{MaxCount: 300}); err != nil {
		t.Fatal(err)
	}
}
