package ingress

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"mime"
	"net/http"
	"net/url"
	"strings"
)

// github verifies X-Hub-Signature-256 (HMAC-SHA256 of the raw body with the
// webhook secret) and reads X-GitHub-Event and X-GitHub-Delivery.
type github struct{}

func (github) name() string            { return "github" }
func (github) integrationType() string { return "scm.github" }

// githubEvents are the events ingested; any other verified event is
// answered 202 and dropped.
var githubEvents = map[string]bool{
	"push": true, "pull_request": true, "deployment": true, "deployment_status": true, "release": true,
}

// githubHeaders are kept with the ingest event: they say what the delivery
// was, and none is a secret.
var githubHeaders = []string{
	"X-GitHub-Event", "X-GitHub-Hook-ID", "X-GitHub-Hook-Installation-Target-ID",
	"X-GitHub-Hook-Installation-Target-Type", "X-GitHub-Enterprise-Host", "X-GitHub-Enterprise-Version", "User-Agent",
}

// VerifyGitHub reports whether sig (the X-Hub-Signature-256 value,
// "sha256=<hex>") is the HMAC-SHA256 of body under secret. An empty secret
// never verifies: it would make the signature a public function of the body.
func VerifyGitHub(secret, body []byte, sig string) bool {
	if len(secret) == 0 {
		return false
	}
	hexSig, ok := strings.CutPrefix(sig, "sha256=")
	if !ok {
		return false
	}
	got, err := hex.DecodeString(hexSig)
	if err != nil || len(got) != sha256.Size {
		return false
	}
	mac := hmac.New(sha256.New, secret)
	mac.Write(body)
	return hmac.Equal(got, mac.Sum(nil))
}

func (github) verify(secret []byte, h http.Header, body []byte) bool {
	// Only the SHA-256 signature: X-Hub-Signature (SHA-1) is kept by GitHub
	// for old receivers and is not accepted here.
	return VerifyGitHub(secret, body, h.Get("X-Hub-Signature-256"))
}

func (github) parse(h http.Header, body []byte) (delivery, error) {
	event := h.Get("X-GitHub-Event")
	if event == "" {
		return delivery{}, badRequest("missing X-GitHub-Event")
	}
	if event == "ping" {
		return delivery{ping: true}, nil
	}
	if !githubEvents[event] {
		return delivery{}, nil
	}
	id, err := deliveryID(h.Get("X-GitHub-Delivery"))
	if err != nil {
		return delivery{}, badRequest("X-GitHub-Delivery: %v", err)
	}
	payload, err := ParseGitHubBody(h.Get("Content-Type"), body)
	if err != nil {
		return delivery{}, err
	}
	return delivery{kind: event, id: id, payload: payload, headers: keep(h, githubHeaders)}, nil
}

// ParseGitHubBody returns the JSON document of a GitHub delivery body:
// the body itself for content type application/json, the payload form field
// for application/x-www-form-urlencoded (both are webhook settings). The
// document must be a JSON object.
func ParseGitHubBody(contentType string, body []byte) (json.RawMessage, error) {
	mt, _, err := mime.ParseMediaType(contentType)
	if err != nil && contentType != "" {
		return nil, badRequest("unreadable Content-Type")
	}
	switch mt {
	case "application/x-www-form-urlencoded":
		form, err := url.ParseQuery(string(body))
		if err != nil {
			return nil, badRequest("form body does not parse")
		}
		if len(form["payload"]) != 1 {
			return nil, badRequest("form body must have exactly one payload field")
		}
		return jsonObject([]byte(form.Get("payload")))
	case "", "application/json":
		return jsonObject(body)
	default:
		return nil, badRequest("Content-Type must be application/json or application/x-www-form-urlencoded")
	}
}

// jsonObject checks that b is one JSON object and returns it compacted, as
// it will travel inside the event.
func jsonObject(b []byte) (json.RawMessage, error) {
	b = bytes.TrimSpace(b)
	if len(b) == 0 || b[0] != '{' {
		return nil, badRequest("body must be a JSON object")
	}
	if !json.Valid(b) {
		return nil, badRequest("body is not valid JSON")
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, b); err != nil {
		return nil, badRequest("body is not valid JSON")
	}
	return buf.Bytes(), nil
}

// deliveryID checks a provider's delivery id: printable ASCII, at most 200
// bytes (what the schema allows).
func deliveryID(s string) (string, error) {
	if s == "" {
		return "", errString("missing")
	}
	if len(s) > 200 {
		return "", errString("longer than 200 bytes")
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 0x21 || s[i] > 0x7e {
			return "", errString("must be printable ASCII")
		}
	}
	return s, nil
}

type errString string

func (e errString) Error() string { return string(e) }

// keep copies the named headers that are present.
func keep(h http.Header, names []string) map[string]string {
	out := map[string]string{}
	for _, n := range names {
		if v := h.Get(n); v != "" {
			if len(v) > 1024 {
				v = v[:1024]
			}
			out[n] = v
		}
	}
	return out
}
