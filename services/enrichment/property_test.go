package enrichment_test

import (
	"encoding/json"
	"fmt"
	"math/rand"
	"testing"
	"testing/quick"
	"time"

	"inthub.dev/events"
	"inthub.dev/pkg/bus"
	"inthub.dev/services/enrichment/ingress"
)

// webhook is one generated delivery: a provider sample, maybe with a
// top-level field removed (which may or may not break its mapping), maybe
// a redelivery of an earlier one, maybe badly signed.
type webhook struct {
	Provider, Event, Integration, Delivery string
	Body                                   []byte
	BadSignature                           bool
}

var samples = []struct{ provider, event, file string }{
	{"github", "push", "github/push.json"},
	{"github", "push", "github/push_branch_deleted.json"},
	{"github", "pull_request", "github/pull_request_opened.json"},
	{"github", "pull_request", "github/pull_request_merged.json"},
	{"github", "deployment", "github/deployment.json"},
	{"github", "deployment_status", "github/deployment_status_failure.json"},
	{"github", "release", "github/release_published.json"},
	{"gitlab", "Push Hook", "gitlab/push.json"},
	{"gitlab", "Merge Request Hook", "gitlab/merge_request_open.json"},
	{"gitlab", "Deployment Hook", "gitlab/deployment.json"},
	{"gitlab", "Release Hook", "gitlab/release_create.json"},
}

type generator struct {
	t      *testing.T
	bodies [][]byte
	sent   []webhook
}

func (g *generator) next(r *rand.Rand) webhook {
	if len(g.sent) > 0 && r.Intn(8) == 0 {
		return g.sent[r.Intn(len(g.sent))] // a redelivery, byte for byte
	}
	i := r.Intn(len(samples))
	s := samples[i]
	var doc map[string]any
	if err := json.Unmarshal(g.bodies[i], &doc); err != nil {
		g.t.Fatal(err)
	}
	if r.Intn(3) == 0 {
		keys := make([]string, 0, len(doc))
		for k := range doc {
			if k != "object_kind" { // the ingress checks it: a 400, not a mapping case
				keys = append(keys, k)
			}
		}
		delete(doc, keys[r.Intn(len(keys))])
	}
	body, _ := json.Marshal(doc)
	w := webhook{Provider: s.provider, Event: s.event, Body: body, Delivery: fmt.Sprintf("gen-%d-%d", len(g.sent), r.Int63()),
		BadSignature: r.Intn(10) == 0}
	w.Integration = ghA
	if s.provider == "gitlab" {
		w.Integration = glA
	}
	return w
}

// TestPropertyEveryAcceptedWebhookEndsOnce (the seed's Property 4 and the
// bus's conservation law, for the data side): over generated deliveries —
// mapped, unmappable, redelivered, badly signed — every delivery that got
// a 2xx ends as exactly one canonical event or exactly one dead letter,
// and a refused one as neither.
func TestPropertyEveryAcceptedWebhookEndsOnce(t *testing.T) {
	e := newEnv(t, nil)
	g := &generator{t: t}
	for _, s := range samples {
		g.bodies = append(g.bodies, sample(t, s.file))
	}
	accepted := map[string]bool{} // ingest event ids
	refused := map[string]bool{}
	f := func(seed int64) bool {
		w := g.next(rand.New(rand.NewSource(seed)))
		g.sent = append(g.sent, w)
		var code int
		id := ingress.EventID(w.Provider, w.Integration, w.Delivery)
		switch {
		case w.BadSignature:
			code = e.post("/webhooks/"+w.Provider+"/"+w.Integration, w.Body, map[string]string{
				"X-GitHub-Event": w.Event, "X-GitHub-Delivery": w.Delivery, "X-Hub-Signature-256": "sha256=" + fmt.Sprintf("%064x", seed),
				"X-Gitlab-Event": w.Event, "Idempotency-Key": w.Delivery, "X-Gitlab-Token": "guess"})
			if code != 401 {
				t.Logf("badly signed delivery: status %d", code)
				return false
			}
			refused[id] = true
			return true
		case w.Provider == "github":
			code = e.github(w.Integration, w.Event, w.Delivery, w.Body)
		default:
			code = e.gitlab(w.Integration, w.Event, w.Delivery, w.Body)
		}
		if code != 202 {
			t.Logf("%s %s: status %d", w.Provider, w.Event, code)
			return false
		}
		accepted[id] = true
		return true
	}
	if err := quick.Check(f, &quick.Config{MaxCount: 120}); err != nil {
		t.Fatal(err)
	}

	outcomes := func() (map[string]int, int) {
		got := map[string]int{}
		for _, ev := range e.eventsOn(bus.StreamEvents, "event.canonical.>") {
			var c events.Canonical
			if err := ev.Decode(&c); err != nil {
				t.Fatal(err)
			}
			got[c.IngestID]++
		}
		for _, m := range e.messages(bus.StreamDLQ, "dlq.ingest.>") {
			got[m.Headers().Get(bus.HeaderOriginalMsgID)]++
		}
		total := 0
		for _, n := range got {
			total += n
		}
		return got, total
	}
	var got map[string]int
	e.waitFor("every accepted delivery to end somewhere", 60*time.Second, func() bool {
		var total int
		got, total = outcomes()
		return total >= len(accepted)
	})
	for id := range accepted {
		if got[id] != 1 {
			t.Errorf("accepted delivery %s ended %d times", id, got[id])
		}
	}
	for id, n := range got {
		if !accepted[id] {
			t.Errorf("%s ended %d times but was never accepted (refused: %v)", id, n, refused[id])
		}
	}
	if n := len(e.messages(bus.StreamIngest, "ingest.>")); n != len(accepted) {
		t.Errorf("%d ingest messages for %d accepted deliveries", n, len(accepted))
	}
	mapped, failed := counter(t, e, "enrichment_mapped_total"), counter(t, e, "enrichment_mapping_failures_total")
	t.Logf("%d deliveries: %d accepted (%v mapped, %v dead-lettered), %d refused", len(g.sent), len(accepted), mapped, failed, len(refused))
	if failed == 0 || mapped == 0 {
		t.Error("the generator did not exercise both outcomes")
	}
}
