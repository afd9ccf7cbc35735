package ingress_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"inthub.dev/events"
	"inthub.dev/pkg/fault"
	"inthub.dev/services/enrichment/ingress"
)

const (
	tenant   = "0b5a3bb0-6a43-4d7e-9a39-6f1f9d9a00a1"
	ghID     = "0190f1c2-7a3b-7c4d-8e5f-0a1b2c3d4e01"
	glID     = "0190f1c2-7a3b-7c4d-8e5f-0a1b2c3d4e02"
	noSecret = "0190f1c2-7a3b-7c4d-8e5f-0a1b2c3d4e03"
	vaultID  = "0190f1c2-7a3b-7c4d-8e5f-0a1b2c3d4e04"
	secret   = "It's a Secret to Everybody"
	delivery = "72d3162e-cc78-11e3-81ab-4c9367dc0958"
)

type integrations map[string]events.Integration

func (m integrations) Lookup(id string) (events.Integration, bool) { in, ok := m[id]; return in, ok }

type secrets map[string]string

func (s secrets) Resolve(_ context.Context, ref string) ([]byte, error) {
	if ref == "authref://vault/down#x" {
		return nil, fault.Transient(errors.New("vault unreachable"))
	}
	v, ok := s[ref]
	if !ok {
		return nil, fault.Permanent(errors.New("no such secret"))
	}
	return []byte(v), nil
}

type publisher struct {
	mu   sync.Mutex
	evs  []events.Event
	fail error
}

func (p *publisher) Publish(_ context.Context, ev events.Event) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.fail != nil {
		return p.fail
	}
	if err := ev.Validate(); err != nil {
		return fault.Permanent(err)
	}
	p.evs = append(p.evs, ev)
	return nil
}

func (p *publisher) published() []events.Event {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]events.Event(nil), p.evs...)
}

func integration(id, typ, config string) events.Integration {
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	return events.Integration{ID: id, TenantID: tenant, Type: typ, Name: "n-" + id[len(id)-2:], Config: json.RawMessage(config),
		Status: "active", HealthStatus: events.HealthHealthy, Version: 1, CreatedAt: t0, UpdatedAt: t0}
}

func newHandler(t *testing.T, pub ingress.Publisher) *ingress.Handler {
	t.Helper()
	h, err := ingress.New(ingress.Config{
		Integrations: integrations{
			ghID:     integration(ghID, "scm.github", `{"appId":1,"installationId":2,"privateKey":"authref://env/K","webhookSecret":"authref://env/GH_HOOK"}`),
			glID:     integration(glID, "scm.gitlab", `{"token":"authref://env/T","webhookSecret":"authref://env/GL_HOOK"}`),
			noSecret: integration(noSecret, "scm.github", `{"appId":1,"installationId":2,"privateKey":"authref://env/K"}`),
			vaultID:  integration(vaultID, "scm.github", `{"appId":1,"installationId":2,"privateKey":"authref://env/K","webhookSecret":"authref://vault/down#x"}`),
		},
		Secrets:   secrets{"authref://env/GH_HOOK": secret, "authref://env/GL_HOOK": secret},
		Publisher: pub,
		MaxBody:   4096,
		Now:       func() time.Time { return time.Date(2026, 5, 6, 7, 8, 9, 0, time.UTC) },
	})
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func sign(secret string, body []byte) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write(body)
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

// GitHub's documented test vector for X-Hub-Signature-256.
func TestVerifyGitHubDocumentedVector(t *testing.T) {
	const want = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
	if !ingress.VerifyGitHub([]byte(secret), []byte("Hello, World!"), want) {
		t.Fatal("GitHub's documented signature does not verify")
	}
}

func TestVerifyGitHub(t *testing.T) {
	body := []byte(`{"zen":"Design for failure."}`)
	good := sign(secret, body)
	flipped := []byte(good)
	flipped[len(flipped)-1] ^= 1
	tests := []struct {
		name   string
		secret string
		body   []byte
		sig    string
		want   bool
	}{
		{"valid", secret, body, good, true},
		{"upper-case hex", secret, body, "sha256=" + strings.ToUpper(strings.TrimPrefix(good, "sha256=")), true},
		{"wrong secret", "another secret", body, good, false},
		{"empty secret", "", body, sign("", body), false},
		{"body changed by one byte", secret, append([]byte{' '}, body...), good, false},
		{"signature changed by one bit", secret, body, string(flipped), false},
		{"missing", secret, body, "", false},
		{"sha1 label", secret, body, "sha1=" + strings.TrimPrefix(good, "sha256="), false},
		{"no label", secret, body, strings.TrimPrefix(good, "sha256="), false},
		{"truncated", secret, body, good[:len(good)-2], false},
		{"not hex", secret, body, "sha256=" + strings.Repeat("zz", 32), false},
		{"too long", secret, body, good + "00", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ingress.VerifyGitHub([]byte(tt.secret), tt.body, tt.sig); got != tt.want {
				t.Fatalf("VerifyGitHub = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestVerifyGitLab(t *testing.T) {
	tests := []struct {
		name, secret, token string
		want                bool
	}{
		{"equal", secret, secret, true},
		{"different", secret, "It's a secret to everybody", false},
		{"prefix", secret, secret[:5], false},
		{"longer", secret, secret + "x", false},
		{"missing", secret, "", false},
		{"empty secret and token", "", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ingress.VerifyGitLab([]byte(tt.secret), tt.token); got != tt.want {
				t.Fatalf("VerifyGitLab = %v, want %v", got, tt.want)
			}
		})
	}
}

type req struct {
	path   string
	header map[string]string
	body   string
}

func post(t *testing.T, h http.Handler, r req) *httptest.ResponseRecorder {
	t.Helper()
	hr := httptest.NewRequest(http.MethodPost, r.path, strings.NewReader(r.body))
	for k, v := range r.header {
		hr.Header.Set(k, v)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, hr)
	return w
}

const pushBody = `{"ref":"refs/heads/main","after":"0123456789abcdef0123456789abcdef01234567","repository":{"full_name":"acme/api"}}`

func ghReq(event, body string) req {
	return req{path: "/webhooks/github/" + ghID, body: body, header: map[string]string{
		"Content-Type": "application/json", "X-GitHub-Event": event, "X-GitHub-Delivery": delivery,
		"X-Hub-Signature-256": sign(secret, []byte(body)), "X-GitHub-Hook-ID": "292430182", "User-Agent": "GitHub-Hookshot/044aadd",
	}}
}

func glReq(event, body string) req {
	return req{path: "/webhooks/gitlab/" + glID, body: body, header: map[string]string{
		"Content-Type": "application/json", "X-Gitlab-Event": event, "X-Gitlab-Token": secret,
		"Idempotency-Key": "f6b2c0f4-7d2c-4e1b-9a57-6c2f0d6a1b11",
	}}
}

func with(r req, k, v string) req {
	h := map[string]string{}
	for a, b := range r.header {
		h[a] = b
	}
	if v == "" {
		delete(h, k)
	} else {
		h[k] = v
	}
	r.header = h
	return r
}

func TestHandler(t *testing.T) {
	big := `{"x":"` + strings.Repeat("a", 5000) + `"}`
	form := "payload=" + url.QueryEscape(pushBody)
	tests := []struct {
		name      string
		r         req
		code      int
		kind      string // published subject, "" = nothing
		outcome   string
		sigFailed bool
	}{
		{"github push", ghReq("push", pushBody), 202, "ingest.github.push", "accepted", false},
		{"github form-encoded", with(with(ghReq("push", form), "Content-Type", "application/x-www-form-urlencoded"), "X-Hub-Signature-256", sign(secret, []byte(form))), 202, "ingest.github.push", "accepted", false},
		{"github pull_request", ghReq("pull_request", `{"action":"opened"}`), 202, "ingest.github.pull_request", "accepted", false},
		{"github deployment_status", ghReq("deployment_status", `{"deployment_status":{}}`), 202, "ingest.github.deployment_status", "accepted", false},
		{"github ping", ghReq("ping", `{"zen":"Keep it logically awesome."}`), 200, "", "ping", false},
		{"github event not ingested", ghReq("issues", `{"action":"opened"}`), 202, "", "ignored", false},
		{"github bad signature", with(ghReq("push", pushBody), "X-Hub-Signature-256", sign("wrong", []byte(pushBody))), 401, "", "bad_signature", true},
		{"github no signature", with(ghReq("push", pushBody), "X-Hub-Signature-256", ""), 401, "", "bad_signature", true},
		{"github bad signature on ping", with(ghReq("ping", `{}`), "X-Hub-Signature-256", sign("wrong", []byte(`{}`))), 401, "", "bad_signature", true},
		{"github no delivery id", with(ghReq("push", pushBody), "X-GitHub-Delivery", ""), 400, "", "bad_request", false},
		{"github not JSON", ghReq("push", `not json`), 400, "", "bad_request", false},
		{"github JSON array", ghReq("push", `[1,2]`), 400, "", "bad_request", false},
		{"github unknown integration", func() req {
			r := ghReq("push", pushBody)
			r.path = "/webhooks/github/0190f1c2-7a3b-7c4d-8e5f-0a1b2c3d4eff"
			return r
		}(), 404, "", "unknown_integration", false},
		{"gitlab integration on the github path", func() req { r := ghReq("push", pushBody); r.path = "/webhooks/github/" + glID; return r }(), 404, "", "unknown_integration", false},
		{"github body too large", ghReq("push", big), 413, "", "too_large", false},
		{"github integration without webhookSecret", func() req { r := ghReq("push", pushBody); r.path = "/webhooks/github/" + noSecret; return r }(), 401, "", "bad_signature", true},
		{"github secret store down", func() req { r := ghReq("push", pushBody); r.path = "/webhooks/github/" + vaultID; return r }(), 503, "", "secret_unavailable", false},
		{"gitlab push", glReq("Push Hook", `{"object_kind":"push","checkout_sha":"abc"}`), 202, "ingest.gitlab.push", "accepted", false},
		{"gitlab merge request", glReq("Merge Request Hook", `{"object_kind":"merge_request"}`), 202, "ingest.gitlab.merge_request", "accepted", false},
		{"gitlab wrong token", with(glReq("Push Hook", `{"object_kind":"push"}`), "X-Gitlab-Token", "guess"), 401, "", "bad_signature", true},
		{"gitlab no token", with(glReq("Push Hook", `{"object_kind":"push"}`), "X-Gitlab-Token", ""), 401, "", "bad_signature", true},
		{"gitlab object_kind disagrees", glReq("Push Hook", `{"object_kind":"merge_request"}`), 400, "", "bad_request", false},
		{"gitlab hook not ingested", glReq("Issue Hook", `{"object_kind":"issue"}`), 202, "", "ignored", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pub := &publisher{}
			h := newHandler(t, pub)
			w := post(t, h, tt.r)
			if w.Code != tt.code {
				t.Fatalf("status %d (%s), want %d", w.Code, w.Body, tt.code)
			}
			got := pub.published()
			if tt.kind == "" {
				if len(got) != 0 {
					t.Fatalf("published %d events, want none", len(got))
				}
			} else if len(got) != 1 || got[0].Type != tt.kind {
				t.Fatalf("published %v, want one %s", got, tt.kind)
			}
			provider := strings.Split(tt.r.path, "/")[2]
			if n := counter(t, h, "enrichment_webhook_requests_total", "provider", provider, "outcome", tt.outcome); n != 1 {
				t.Errorf("outcome %s counted %v times", tt.outcome, n)
			}
			sig := counter(t, h, "enrichment_webhook_signature_failures_total", "provider", provider)
			if (sig == 1) != tt.sigFailed {
				t.Errorf("signature failures = %v, want failed=%v", sig, tt.sigFailed)
			}
			if strings.Contains(w.Body.String(), secret) {
				t.Error("the response echoes the secret")
			}
		})
	}
}

// counter reads a counter of h by its labels, given as name, value pairs;
// 0 when the series does not exist.
func counter(t *testing.T, h *ingress.Handler, name string, labels ...string) float64 {
	t.Helper()
	reg := prometheus.NewRegistry()
	reg.MustRegister(h.Collectors()...)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			got := map[string]string{}
			for _, lp := range m.GetLabel() {
				got[lp.GetName()] = lp.GetValue()
			}
			for i := 0; i+1 < len(labels); i += 2 {
				if got[labels[i]] != labels[i+1] {
					continue next
				}
			}
			return m.GetCounter().GetValue()
		}
	}
	return 0
}
