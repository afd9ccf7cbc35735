package e2e_test

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"inthub.dev/events"
	"inthub.dev/pkg/bus"
)

const (
	// webhookSecretEnv holds the webhook secret of the journey's GitHub
	// integration (authref://env/...), in every process's environment.
	webhookSecretEnv = "E2E_WEBHOOK_SECRET"
	webhookSecret    = "e2e-webhook-secret-0123456789"
)

// TestDataJourney is Signals' side of the fleet: a GitHub integration
// registered through the catalog gets webhooks at the enrichment service,
// which answers only once the event is durable, drops a redelivery, maps
// deployments to canonical events, keeps accepting while NATS is down
// (into its spool) and publishes what it held once NATS is back; then an
// enrichment.requested about a commit gets the deployment of that commit
// as its best match.
func TestDataJourney(t *testing.T) {
	f := startFleet(t, fleetOptions{Enrichment: true})
	gh := f.create("scm.github", "webhooks", map[string]any{
		"endpoint": f.ghEndpoint, "appId": f.gh.AppID(), "installationId": f.gh.InstallationID(),
		"privateKey": f.ghKeyRef, "webhookSecret": "authref://env/" + webhookSecretEnv, "healthIntervalSeconds": 86400,
	}, "")
	f.waitKnown(gh)
	// The ingress's copy of the bucket follows the bucket: a ping is
	// answered 200 once it knows the integration, 404 before.
	ping := 0
	poll(t, 30*time.Second, "the enrichment service knows the integration", func() bool {
		ping++
		return f.webhook(t, gh.ID, "ping", fmt.Sprintf("ping-%d", ping), []byte(`{"zen":"Keep it logically awesome.","hook_id":1}`), "") == http.StatusOK
	})

	sha := strings.Repeat("e2", 20)
	at := time.Now().UTC().Add(-10 * time.Minute).Truncate(time.Second)

	t.Run("RedeliveryIsOneEvent", func(t *testing.T) {
		body := deploymentWebhook("checkout", 1001, sha, at)
		for i := range 3 {
			if code := f.webhook(t, gh.ID, "deployment", "dep-1001", body, ""); code != http.StatusAccepted {
				t.Fatalf("delivery %d: status %d, want 202", i+1, code)
			}
		}
		f.waitCanonical(t, 1, func(c events.Canonical) bool { return c.Context.ExternalID == "1001" })
	})

	t.Run("BadSignatureRefused", func(t *testing.T) {
		body := deploymentWebhook("checkout", 1002, sha, at)
		if code := f.webhook(t, gh.ID, "deployment", "dep-1002", body, "sha256="+strings.Repeat("0", 64)); code != http.StatusUnauthorized {
			t.Fatalf("forged signature: status %d, want 401", code)
		}
		ctx, cancel := context.WithTimeout(f.ctx, 10*time.Second)
		defer cancel()
		msgs, err := f.streamMsgs(ctx, bus.StreamIngest, events.SubjectIngestGitHubDeployment)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range msgs {
			if bytes.Contains(m.Data, []byte(`"id":1002`)) {
				t.Fatalf("a forged delivery reached %s", m.Subject)
			}
		}
	})

	t.Run("AcceptedWhileNATSIsDown", func(t *testing.T) {
		f.nats.Stop()
		body := deploymentWebhook("billing", 1003, strings.Repeat("b1", 20), at.Add(time.Minute))
		code := f.webhook(t, gh.ID, "deployment", "dep-1003", body, "")
		if err := f.nats.Start(); err != nil {
			t.Fatalf("NATS restart: %v", err)
		}
		if code != http.StatusAccepted {
			t.Fatalf("delivery while NATS is down: status %d, want 202 (spooled)", code)
		}
		f.waitCanonical(t, 1, func(c events.Canonical) bool { return c.Context.ExternalID == "1003" })
	})

	t.Run("EnrichedByCommit", func(t *testing.T) {
		req, err := events.New(events.SubjectEnrichmentRequested, "e2e/signals", tenant, events.EnrichmentRequested{
			TenantID: tenant, EventID: uuid.NewString(), EventType: events.SubjectCanonicalSystem, At: at.Add(4 * time.Minute),
			Keys: []events.CorrelationHint{{Type: events.HintResourceID, Key: "commit", Value: sha, Confidence: 1}},
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := f.publish(f.ctx, req); err != nil {
			t.Fatal(err)
		}
		var out events.Enriched
		poll(t, 30*time.Second, "event.enriched for the request", func() bool {
			for _, ev := range f.eventsOn(t, events.SubjectEnriched) {
				if err := ev.Decode(&out); err == nil && out.RequestID == req.ID {
					return true
				}
			}
			return false
		})
		if len(out.Matches) == 0 || out.Matches[0].Match != events.MatchKey || out.Matches[0].SourceIntegration != gh.ID {
			t.Fatalf("best match of %+v: want the deployment of commit %s by key, from %s", out.Matches, sha, gh.ID)
		}
		if out.TenantID != tenant {
			t.Fatalf("event.enriched of tenant %q", out.TenantID)
		}
	})
}

// webhook posts a GitHub delivery to the enrichment service, signed with
// the integration's secret unless signature is given, and returns the
// status code.
func (f *fleet) webhook(t testing.TB, integrationID, event, delivery string, body []byte, signature string) int {
	t.Helper()
	if signature == "" {
		m := hmac.New(sha256.New, []byte(webhookSecret))
		m.Write(body)
		signature = "sha256=" + hex.EncodeToString(m.Sum(nil))
	}
	req, err := http.NewRequestWithContext(f.ctx, http.MethodPost, f.webhooks+"/webhooks/github/"+integrationID, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-GitHub-Event", event)
	req.Header.Set("X-GitHub-Delivery", delivery)
	req.Header.Set("X-Hub-Signature-256", signature)
	resp, err := f.http.Do(req)
	if err != nil {
		t.Fatalf("POST webhook %s: %v", delivery, err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// eventsOn reads the events on subject of the EVENTS stream.
func (f *fleet) eventsOn(t testing.TB, subject string) []events.Event {
	t.Helper()
	ctx, cancel := context.WithTimeout(f.ctx, 10*time.Second)
	defer cancel()
	msgs, err := f.streamMsgs(ctx, bus.StreamEvents, subject)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]events.Event, 0, len(msgs))
	for _, m := range msgs {
		ev, err := events.Parse(m.Data)
		if err != nil {
			t.Fatalf("%s seq %d: %v", m.Subject, m.Sequence, err)
		}
		out = append(out, ev)
	}
	return out
}

// waitCanonical waits until the canonical delivery events matching are
// exactly n, and fails if more appear within a moment after that.
func (f *fleet) waitCanonical(t testing.TB, n int, match func(events.Canonical) bool) {
	t.Helper()
	count := func() int {
		k := 0
		for _, ev := range f.eventsOn(t, events.SubjectCanonicalDelivery) {
			var c events.Canonical
			if err := ev.Decode(&c); err != nil {
				t.Fatalf("canonical event %s: %v", ev.ID, err)
			}
			if c.TenantID != tenant {
				t.Fatalf("canonical event %s of tenant %q", ev.ID, c.TenantID)
			}
			if match(c) {
				k++
			}
		}
		return k
	}
	poll(t, 30*time.Second, fmt.Sprintf("%d canonical event(s)", n), func() bool { return count() >= n })
	// A duplicate would be mapped within the same moment as the first.
	if eventually(2*time.Second, func() bool { return count() > n }) {
		t.Fatalf("%d canonical events, want %d", count(), n)
	}
}

// deploymentWebhook is a GitHub deployment delivery (the shape of the
// documented sample) of repository acme/<repo>.
func deploymentWebhook(repo string, id int, sha string, at time.Time) []byte {
	return fmt.Appendf(nil, `{"action":"created","deployment":{"url":"https://api.github.com/repos/acme/%[1]s/deployments/%[2]d",
	"id":%[2]d,"sha":"%[3]s","ref":"main","task":"deploy","payload":{},"environment":"production","description":null,
	"creator":{"login":"octocat"},"created_at":"%[4]s","updated_at":"%[4]s"},
	"repository":{"id":1,"name":"%[1]s","full_name":"acme/%[1]s","html_url":"https://github.com/acme/%[1]s"},
	"sender":{"login":"octocat"}}`, repo, id, sha, at.Format(time.RFC3339))
}
