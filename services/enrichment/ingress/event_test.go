package ingress_test

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"strings"
	"testing"

	"inthub.dev/events"
	"inthub.dev/pkg/fault"
	"inthub.dev/services/enrichment/ingress"
)

// TestAcceptedEvent: what is published is the provider's document with its
// delivery metadata, under an id that depends only on (provider,
// integration, delivery), and none of the credentials.
func TestAcceptedEvent(t *testing.T) {
	pub := &publisher{}
	h := newHandler(t, pub)
	body := "{\n  \"ref\": \"refs/heads/main\",\n  \"after\": \"0123456789abcdef0123456789abcdef01234567\"\n}\n"
	for range 2 {
		if w := post(t, h, ghReq("push", body)); w.Code != 202 || !strings.Contains(w.Body.String(), ingress.EventID("github", ghID, delivery)) {
			t.Fatalf("status %d %s", w.Code, w.Body)
		}
	}
	evs := pub.published()
	if len(evs) != 2 || evs[0].ID != evs[1].ID {
		t.Fatalf("a redelivery got another id: %v", evs)
	}
	ev := evs[0]
	if ev.ID != ingress.EventID("github", ghID, delivery) || ev.TenantID != tenant || ev.Source != ingress.Source {
		t.Fatalf("envelope %+v", ev)
	}
	var in events.Ingested
	if err := ev.Decode(&in); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256([]byte(body))
	if in.IntegrationID != ghID || in.TenantID != tenant || in.Provider != "github" || in.Kind != "push" ||
		in.DeliveryID != delivery || in.Via != events.ViaWebhook || in.BodySHA256 != hex.EncodeToString(sum[:]) {
		t.Fatalf("payload %+v", in)
	}
	if string(in.Payload) != `{"ref":"refs/heads/main","after":"0123456789abcdef0123456789abcdef01234567"}` {
		t.Fatalf("document %s", in.Payload)
	}
	if in.Headers["X-GitHub-Hook-ID"] != "292430182" || in.Headers["X-GitHub-Event"] != "push" {
		t.Fatalf("headers %v", in.Headers)
	}
	for k := range in.Headers {
		if strings.Contains(strings.ToLower(k), "signature") || strings.Contains(strings.ToLower(k), "token") {
			t.Fatalf("header %s kept", k)
		}
	}
}

func TestEventIDs(t *testing.T) {
	a := ingress.EventID("github", ghID, delivery)
	for _, other := range []string{
		ingress.EventID("github", glID, delivery),
		ingress.EventID("gitlab", ghID, delivery),
		ingress.EventID("github", ghID, delivery+"0"),
	} {
		if other == a {
			t.Fatalf("ids collide: %s", a)
		}
	}
	if a != ingress.EventID("github", ghID, delivery) {
		t.Fatal("EventID is not deterministic")
	}
}

// TestPublishFailure: when the event cannot be made durable the provider
// gets a 5xx and retries; it never gets a 2xx for a lost event.
func TestPublishFailure(t *testing.T) {
	pub := &publisher{fail: fault.Offline(errors.New("bus down and spool failed"))}
	h := newHandler(t, pub)
	if w := post(t, h, ghReq("push", pushBody)); w.Code != 503 {
		t.Fatalf("status %d, want 503", w.Code)
	}
	if got := counter(t, h, "enrichment_webhook_requests_total", "provider", "github", "outcome", "publish_failed"); got != 1 {
		t.Fatalf("publish_failed = %v", got)
	}
}

func TestGitLabDeliveryID(t *testing.T) {
	body := `{"object_kind":"push"}`
	tests := []struct {
		name   string
		r      req
		wantID string
	}{
		{"idempotency key", glReq("Push Hook", body), "f6b2c0f4-7d2c-4e1b-9a57-6c2f0d6a1b11"},
		{"event uuid", with(with(glReq("Push Hook", body), "Idempotency-Key", ""), "X-Gitlab-Event-UUID", "e1"), "e1"},
		{"body hash", with(glReq("Push Hook", body), "Idempotency-Key", ""), func() string {
			s := sha256.Sum256([]byte(body))
			return "sha256:" + hex.EncodeToString(s[:])
		}()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pub := &publisher{}
			if w := post(t, newHandler(t, pub), tt.r); w.Code != 202 {
				t.Fatalf("status %d %s", w.Code, w.Body)
			}
			var in events.Ingested
			if err := pub.published()[0].Decode(&in); err != nil {
				t.Fatal(err)
			}
			if in.DeliveryID != tt.wantID {
				t.Fatalf("deliveryId %q, want %q", in.DeliveryID, tt.wantID)
			}
		})
	}
}

type notReady struct{ integrations }

func (notReady) Ready() <-chan struct{} { return make(chan struct{}) }

// TestNotReady: before the integrations are loaded every delivery is a
// 503 with Retry-After, not a 404 the provider would not retry.
func TestNotReady(t *testing.T) {
	pub := &publisher{}
	h, err := ingress.New(ingress.Config{Integrations: notReady{integrations{ghID: integration(ghID, "scm.github", `{}`)}},
		Secrets: secrets{}, Publisher: pub})
	if err != nil {
		t.Fatal(err)
	}
	w := post(t, h, ghReq("push", pushBody))
	if w.Code != 503 || w.Header().Get("Retry-After") == "" || len(pub.published()) != 0 {
		t.Fatalf("status %d, Retry-After %q", w.Code, w.Header().Get("Retry-After"))
	}
}
