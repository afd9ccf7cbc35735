package correlate_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"inthub.dev/events"
	"inthub.dev/pkg/fault"
	"inthub.dev/pkg/pgtest"
	"inthub.dev/services/enrichment/correlate"
)

const (
	tenantA = "0b5a3bb0-6a43-4d7e-9a39-6f1f9d9a00a1"
	tenantB = "0b5a3bb0-6a43-4d7e-9a39-6f1f9d9a00b2"
	ghInt   = "0190f1c2-7a3b-7c4d-8e5f-0a1b2c3d4e01"
	cwInt   = "0190f1c2-7a3b-7c4d-8e5f-0a1b2c3d4e02"
	ghIntB  = "0190f1c2-7a3b-7c4d-8e5f-0a1b2c3d4e03"
)

func hint(typ, key, value string, conf float64) events.CorrelationHint {
	return events.CorrelationHint{Type: typ, Key: key, Value: value, Confidence: conf}
}

func deployment(tenant, integration, service string, at time.Time) events.Canonical {
	return events.Canonical{TenantID: tenant, Category: events.CategoryDelivery, Kind: "deployment.created", Provider: "github",
		Summary: "deployment of " + service, IngestID: uuid.NewString(),
		Context: events.IntegrationContext{SourceIntegration: integration, ExternalID: uuid.NewString(), OriginalTimestamp: at,
			CorrelationHints: []events.CorrelationHint{
				hint(events.HintResourceID, "service", service, 0.8),
				hint(events.HintResourceID, "commit", strings.Repeat("a", 40), 1),
				hint(events.HintMetadata, "environment", "production", 0.6),
			},
			EvidenceLinks: []events.EvidenceLink{{Type: events.LinkDeployment, URL: "https://github.com/acme/" + service + "/deployments",
				Description: "deployment of " + service}}}}
}

func index(t *testing.T, s *correlate.Store, c events.Canonical) string {
	t.Helper()
	id := uuid.NewString()
	if err := s.Index(context.Background(), id, c); err != nil {
		t.Fatal(err)
	}
	return id
}

// TestAlarmEnrichedByDeployment is the scenario: a CloudWatch alarm
// at 10:05 on service X; a GitHub deployment of X at 10:01, an unrelated
// deployment at 09:00, and another tenant's deployment of X at 10:04. The
// enriched alarm links the 10:01 deployment with the highest confidence
// and holds nothing of the other tenant.
func TestAlarmEnrichedByDeployment(t *testing.T) {
	s, _ := newStore(t)
	day := time.Date(2025, 1, 2, 0, 0, 0, 0, time.UTC)
	at := func(h, m int) time.Time { return day.Add(time.Duration(h)*time.Hour + time.Duration(m)*time.Minute) }
	dep := index(t, s, deployment(tenantA, ghInt, "checkout", at(10, 1)))
	unrelated := index(t, s, deployment(tenantA, ghInt, "billing", at(9, 0)))
	other := deployment(tenantB, ghIntB, "checkout", at(10, 4))
	other.Context.EvidenceLinks[0].URL = "https://github.com/tenant-b/checkout/deployments"
	otherID := index(t, s, other)
	alarm := events.Canonical{TenantID: tenantA, Category: events.CategorySystem, Kind: "alarm.alarm", Provider: "cloudwatch",
		Summary: "checkout-5xx in ALARM", IngestID: uuid.NewString(),
		Context: events.IntegrationContext{SourceIntegration: cwInt, ExternalID: "arn@10:05", OriginalTimestamp: at(10, 5),
			CorrelationHints: []events.CorrelationHint{hint(events.HintResourceID, "service", "Checkout", 0.8)}}}
	alarmID := index(t, s, alarm)

	e := correlate.NewEnricher(s, correlate.Params{})
	req := events.EnrichmentRequested{TenantID: tenantA, EventID: alarmID, EventType: events.SubjectCanonicalSystem,
		At: at(10, 5), Keys: alarm.Context.CorrelationHints}
	out, err := e.Enrich(context.Background(), uuid.NewString(), req, at(10, 6))
	if err != nil {
		t.Fatal(err)
	}
	if len(out.Matches) == 0 || out.Matches[0].EventID != dep {
		t.Fatalf("best match %+v, want the 10:01 deployment %s", out.Matches, dep)
	}
	if out.Matches[0].Match != events.MatchKey || out.Matches[0].SourceIntegration != ghInt {
		t.Fatalf("best match %+v", out.Matches[0])
	}
	for _, m := range out.Matches[1:] {
		if m.Score >= out.Matches[0].Score {
			t.Fatalf("%s scores %v, not below the deployment's %v", m.EventID, m.Score, out.Matches[0].Score)
		}
	}
	for _, m := range out.Matches {
		if m.EventID == otherID || m.EventID == alarmID {
			t.Fatalf("matched %s (another tenant's, or the alarm itself)", m.EventID)
		}
		if m.EventID == unrelated && m.Score >= out.Matches[0].Score {
			t.Fatal("the unrelated deployment scores as high")
		}
	}
	if len(out.EvidenceLinks) == 0 || out.EvidenceLinks[0].URL != "https://github.com/acme/checkout/deployments" ||
		out.EvidenceLinks[0].SourceIntegration != ghInt || *out.EvidenceLinks[0].Confidence != out.Matches[0].Score {
		t.Fatalf("links %+v", out.EvidenceLinks)
	}
	for _, l := range out.EvidenceLinks {
		if strings.Contains(l.URL, "tenant-b") {
			t.Fatal("a link of another tenant")
		}
	}
	if _, err := events.New(events.SubjectEnriched, "inthub/test", tenantA, out); err != nil {
		t.Fatalf("the answer does not validate: %v", err)
	}
}

// TestRowLevelSecurity: the service's role owns nothing and cannot bypass
// RLS; without a tenant it sees nothing; it cannot write another tenant's
// rows even by naming them.
func TestRowLevelSecurity(t *testing.T) {
	s, d := newStore(t)
	index(t, s, deployment(tenantA, ghInt, "checkout", time.Now().UTC()))
	ctx := context.Background()
	owner, err := pgx.Connect(ctx, d.OwnerURL)
	if err != nil {
		t.Fatal(err)
	}
	defer owner.Close(ctx)
	var super, bypass, force bool
	if err := owner.QueryRow(ctx, `SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = $1`, correlate.AppRole).Scan(&super, &bypass); err != nil {
		t.Fatal(err)
	}
	if err := owner.QueryRow(ctx, `SELECT relforcerowsecurity FROM pg_class WHERE oid = 'enrichment.events'::regclass`).Scan(&force); err != nil {
		t.Fatal(err)
	}
	if super || bypass || !force {
		t.Fatalf("superuser %v, bypassrls %v, force rls %v", super, bypass, force)
	}
	app := pgtest.Pool(t, d.EnrichmentURL)
	var n int
	if err := app.QueryRow(ctx, "SELECT count(*) FROM enrichment.events").Scan(&n); err != nil || n != 0 {
		t.Fatalf("without a tenant: %d rows (%v)", n, err)
	}
	err = pgx.BeginFunc(ctx, app, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SELECT set_config('app.tenant_id', $1, true)", tenantB); err != nil {
			return err
		}
		if err := tx.QueryRow(ctx, "SELECT count(*) FROM enrichment.events").Scan(&n); err != nil || n != 0 {
			t.Errorf("tenant B sees %d rows (%v)", n, err)
		}
		_, err := tx.Exec(ctx, `INSERT INTO enrichment.events (tenant_id, event_id, category, kind, provider, summary,
			source_integration, occurred_at, keys, hints, links) VALUES ($1, gen_random_uuid(), 'delivery', 'k', 'p', 's',
			$2, now(), '{}', '[]', '[]')`, tenantA, ghInt)
		return err
	})
	if err == nil || !strings.Contains(err.Error(), "row-level security") {
		t.Fatalf("tenant B wrote a row of tenant A: %v", err)
	}
	// Through the store, the same refusal is permanent (a DLQ, not a retry).
	c := deployment(tenantA, ghInt, "x", time.Now().UTC())
	c.TenantID = "not-a-uuid"
	if err := s.Index(ctx, uuid.NewString(), c); fault.ClassOf(err) != fault.ClassPermanent {
		t.Fatalf("Index of a bad tenant: %v (%v), want permanent", err, fault.ClassOf(err))
	}
	if _, err := app.Exec(ctx, "DELETE FROM enrichment.events"); err == nil {
		t.Fatal("the service's role may DELETE directly")
	}
}

func TestIndexIsIdempotentAndPurge(t *testing.T) {
	s, _ := newStore(t)
	ctx := context.Background()
	c := deployment(tenantA, ghInt, "checkout", time.Now().UTC())
	id := uuid.NewString()
	for range 3 {
		if err := s.Index(ctx, id, c); err != nil {
			t.Fatal(err)
		}
	}
	now := time.Now().UTC()
	got, err := s.Candidates(ctx, tenantA, uuid.NewString(), nil, now, now.Add(-time.Hour), now.Add(time.Hour), 10)
	if err != nil || len(got) != 1 {
		t.Fatalf("candidates %v (%v), want the one event", got, err)
	}
	if n, err := s.Purge(ctx, time.Now().Add(-time.Hour)); err != nil || n != 0 {
		t.Fatalf("purged %d (%v) of events indexed just now", n, err)
	}
	if n, err := s.Purge(ctx, time.Now().Add(time.Hour)); err != nil || n != 1 {
		t.Fatalf("purged %d (%v), want 1", n, err)
	}
}
