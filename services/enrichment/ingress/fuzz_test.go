package ingress_test

import (
	"encoding/json"
	"testing"

	"inthub.dev/services/enrichment/ingress"
)

// FuzzParseGitHubBody: whatever the body and content type, parsing never
// panics, and what it accepts is one JSON object.
func FuzzParseGitHubBody(f *testing.F) {
	f.Add("application/json", []byte(pushBody))
	f.Add("application/x-www-form-urlencoded", []byte("payload=%7B%22a%22%3A1%7D"))
	f.Add("application/json; charset=utf-8", []byte(" {\"a\":[1,{\"b\":null}]} \n"))
	f.Add("", []byte(`{"a":"\u0000"}`))
	f.Fuzz(func(t *testing.T, contentType string, body []byte) {
		doc, err := ingress.ParseGitHubBody(contentType, body)
		if err != nil {
			return
		}
		var m map[string]json.RawMessage
		if err := json.Unmarshal(doc, &m); err != nil {
			t.Fatalf("accepted %q as %q, which is not a JSON object: %v", body, doc, err)
		}
	})
}

// FuzzParseGitLabBody: parsing never panics; what it accepts is a JSON
// object whose object_kind is the kind of its X-Gitlab-Event.
func FuzzParseGitLabBody(f *testing.F) {
	f.Add("push", []byte(`{"object_kind":"push","checkout_sha":"abc"}`))
	f.Add("merge_request", []byte(`{"object_kind":"merge_request","object_attributes":{"iid":1}}`))
	f.Add("push", []byte(`{"object_kind":1}`))
	f.Add("release", []byte(`{"object_kind":"release","object_kind":"push"}`))
	f.Fuzz(func(t *testing.T, kind string, body []byte) {
		doc, err := ingress.ParseGitLabBody(kind, body)
		if err != nil {
			return
		}
		var m struct {
			ObjectKind string `json:"object_kind"`
		}
		if err := json.Unmarshal(doc, &m); err != nil || m.ObjectKind != kind {
			t.Fatalf("accepted %q for kind %q: %+v %v", body, kind, m, err)
		}
	})
}
