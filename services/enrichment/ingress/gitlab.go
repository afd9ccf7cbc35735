package ingress

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"net/http"
)

// gitlab checks X-Gitlab-Token (the webhook's secret token, sent as is) and
// reads X-Gitlab-Event and the body's object_kind.
type gitlab struct{}

func (gitlab) name() string            { return "gitlab" }
func (gitlab) integrationType() string { return "scm.gitlab" }

// gitlabEvents maps the X-Gitlab-Event header of each ingested hook to the
// object_kind its body must carry.
var gitlabEvents = map[string]string{
	"Push Hook":          "push",
	"Merge Request Hook": "merge_request",
	"Deployment Hook":    "deployment",
	"Release Hook":       "release",
}

var gitlabHeaders = []string{
	"X-Gitlab-Event", "X-Gitlab-Instance", "X-Gitlab-Webhook-UUID", "X-Gitlab-Event-UUID", "Idempotency-Key", "User-Agent",
}

// VerifyGitLab reports whether token (the X-Gitlab-Token value) equals the
// secret, in time independent of where they differ and of their lengths
// (both are hashed first). An empty secret never verifies.
func VerifyGitLab(secret []byte, token string) bool {
	if len(secret) == 0 {
		return false
	}
	a := sha256.Sum256(secret)
	b := sha256.Sum256([]byte(token))
	return subtle.ConstantTimeCompare(a[:], b[:]) == 1
}

func (gitlab) verify(secret []byte, h http.Header, _ []byte) bool {
	return VerifyGitLab(secret, h.Get("X-Gitlab-Token"))
}

func (gitlab) parse(h http.Header, body []byte) (delivery, error) {
	event := h.Get("X-Gitlab-Event")
	if event == "" {
		return delivery{}, badRequest("missing X-Gitlab-Event")
	}
	kind, ok := gitlabEvents[event]
	if !ok {
		return delivery{}, nil
	}
	payload, err := ParseGitLabBody(kind, body)
	if err != nil {
		return delivery{}, err
	}
	id, err := gitlabDeliveryID(h, body)
	if err != nil {
		return delivery{}, err
	}
	return delivery{kind: kind, id: id, payload: payload, headers: keep(h, gitlabHeaders)}, nil
}

// ParseGitLabBody returns the JSON document of a GitLab hook whose
// X-Gitlab-Event says kind; its object_kind must agree.
func ParseGitLabBody(kind string, body []byte) (json.RawMessage, error) {
	payload, err := jsonObject(body)
	if err != nil {
		return nil, err
	}
	var p struct {
		ObjectKind string `json:"object_kind"`
	}
	if err := json.Unmarshal(payload, &p); err != nil {
		return nil, badRequest("object_kind must be a string")
	}
	if p.ObjectKind != kind {
		return nil, badRequest("object_kind does not match X-Gitlab-Event")
	}
	return payload, nil
}

// gitlabDeliveryID is the id that stays the same when GitLab retries a
// delivery: Idempotency-Key (GitLab 17.4 and later), else
// X-Gitlab-Event-UUID, else, for older GitLab, the body's hash (the same on
// a retry, different between events).
func gitlabDeliveryID(h http.Header, body []byte) (string, error) {
	for _, name := range []string{"Idempotency-Key", "X-Gitlab-Event-UUID"} {
		if v := h.Get(name); v != "" {
			id, err := deliveryID(v)
			if err != nil {
				return "", badRequest("%s: %v", name, err)
			}
			return id, nil
		}
	}
	sum := sha256.Sum256(body)
	return "sha256:" + hex.EncodeToString(sum[:]), nil
}
