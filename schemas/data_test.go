package schemas_test

import (
	"errors"
	"strings"
	"testing"

	"inthub.dev/schemas"
)

// Samples of the data side's subjects (ingest.*, event.canonical.*,
// enrichment.requested, event.enriched), shaped as docs/enrichment.md
// documents them.

const bodySha = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"

func ingestDoc(provider, kind string) string {
	return `{"integrationId":"` + uuidA + `","tenantId":"` + uuidB + `","provider":"` + provider + `","kind":"` + kind + `",
		"deliveryId":"72d3162e-cc78-11e3-81ab-4c9367dc0958","via":"webhook","receivedAt":"2025-01-02T03:04:05.123Z",
		"headers":{"X-GitHub-Event":"` + kind + `"},"bodySha256":"` + bodySha + `","payload":{"ref":"refs/heads/main","zen":null}}`
}

// metricDoc is a polled CloudWatch datapoint (its payload has a schema of
// its own: CloudWatch sends no document for it).
var metricDoc = strings.NewReplacer(`"via":"webhook"`, `"via":"poll"`, `{"ref":"refs/heads/main","zen":null}`,
	`{"Id":"requests","Label":"RequestCount","Namespace":"AWS/ApplicationELB","MetricName":"RequestCount",
	"Dimensions":[{"Name":"LoadBalancer","Value":"app/checkout/50dc6c495c0c9188"}],"Stat":"Sum","Period":60,"Unit":"Count",
	"Timestamp":"2025-01-02T10:04:00Z","Value":1520,"Region":"eu-west-1","Service":"checkout"}`).Replace(ingestDoc("cloudwatch", "metric"))

const hints = `[{"type":"resource_id","key":"commit","value":"` + sha + `","confidence":1},
	{"type":"metadata","key":"tag","value":"team=payments","confidence":0.5}]`

func canonicalDoc(category string) string {
	return `{"tenantId":"` + uuidB + `","category":"` + category + `","kind":"deployment.success","provider":"github","severity":"info",
		"summary":"acme/api deployed to production","attributes":{"repository":"acme/api","environment":"production","number":7,"draft":false},
		"ingestId":"` + uuidA + `","context":{"sourceIntegration":"` + uuidA + `","externalId":"123456","originalTimestamp":"2025-01-02T10:01:00Z",
		"correlationHints":` + hints + `,
		"evidenceLinks":[{"type":"deployment","url":"https://github.com/acme/api/deployments","description":"production","metadata":{"sha":"` + sha + `"}}]}}`
}

const enrichedDoc = `{"tenantId":"` + uuidB + `","requestId":"` + uuidA + `","eventId":"` + uuidA + `","eventType":"event.canonical.system",
	"at":"2025-01-02T10:05:00Z","matches":[{"eventId":"` + uuidA + `","category":"delivery","kind":"deployment.created","summary":"s",
	"sourceIntegration":"` + uuidA + `","occurredAt":"2025-01-02T10:01:00Z","score":0.95,"match":"key","keys":["service=checkout"]}],
	"evidenceLinks":[{"type":"deployment","url":"https://github.com/acme/api/deployments/1","description":"d","sourceIntegration":"` + uuidA + `","confidence":0.95}],
	"correlationHints":[{"type":"resource_id","key":"commit","value":"` + sha + `","confidence":0.95,"sourceIntegration":"` + uuidA + `"}],
	"enrichmentMetadata":{"enrichedAt":"2025-01-02T10:05:01Z","windowSeconds":7200,"candidates":3}}`

func dataSamples() []struct{ name, doc string } {
	return []struct{ name, doc string }{
		{"ingest.github.push", ingestDoc("github", "push")},
		{"ingest.github.pull_request", ingestDoc("github", "pull_request")},
		{"ingest.github.deployment", ingestDoc("github", "deployment")},
		{"ingest.github.deployment_status", ingestDoc("github", "deployment_status")},
		{"ingest.github.release", ingestDoc("github", "release")},
		{"ingest.gitlab.push", ingestDoc("gitlab", "push")},
		{"ingest.gitlab.merge_request", ingestDoc("gitlab", "merge_request")},
		{"ingest.gitlab.deployment", ingestDoc("gitlab", "deployment")},
		{"ingest.gitlab.release", ingestDoc("gitlab", "release")},
		{"ingest.cloudwatch.alarm", strings.Replace(ingestDoc("cloudwatch", "alarm"), `"via":"webhook"`, `"via":"sns"`, 1)},
		{"ingest.cloudwatch.metric", metricDoc},
		{"event.canonical.delivery", canonicalDoc("delivery")},
		{"event.canonical.system", canonicalDoc("system")},
		{"event.canonical.security", canonicalDoc("security")},
		{"enrichment.requested", `{"tenantId":"` + uuidB + `","eventId":"` + uuidA + `","eventType":"event.canonical.system",
			"at":"2025-01-02T10:05:00Z","keys":` + hints + `,"windowSeconds":3600,"maxMatches":5}`},
		{"enrichment.requested", `{"tenantId":"` + uuidB + `","eventId":"` + uuidA + `","at":"2025-01-02T10:05:00Z","keys":[]}`},
		{"event.enriched", enrichedDoc},
	}
}

func TestDataInvalid(t *testing.T) {
	v := validator(t)
	tests := []struct {
		schema, doc string
		field       string
		reason      string
	}{
		{"ingest.github.push", ingestDoc("github", "pull_request"), "kind", `value must be "push"`},
		{"ingest.gitlab.push", ingestDoc("github", "push"), "provider", `value must be "gitlab"`},
		{"ingest.github.push", strings.Replace(ingestDoc("github", "push"), `"via":"webhook"`, `"via":"carrier-pigeon"`, 1), "via", "must be one of"},
		{"ingest.github.push", strings.Replace(ingestDoc("github", "push"), bodySha, "ABC", 1), "bodySha256", "64 lowercase hex"},
		{"ingest.github.push", strings.Replace(ingestDoc("github", "push"), `"payload":{"ref":"refs/heads/main","zen":null}`, `"payload":[1]`, 1), "payload", "must be object"},
		{"ingest.github.push", strings.Replace(ingestDoc("github", "push"), `"headers"`, `"signature":"sha256=x","headers"`, 1), "signature", "unknown field"},
		{"ingest.cloudwatch.metric", strings.Replace(metricDoc, `"via":"poll"`, `"via":"webhook"`, 1), "via", `value must be "poll"`},
		{"ingest.cloudwatch.metric", strings.Replace(metricDoc, `"Value":1520,`, ``, 1), "payload.Value", "required"},
		{"ingest.cloudwatch.metric", strings.Replace(metricDoc, `"Value":1520`, `"Value":"1520"`, 1), "payload.Value", "must be number"},
		{"event.canonical.system", canonicalDoc("delivery"), "category", `value must be "system"`},
		{"event.canonical.delivery", strings.Replace(canonicalDoc("delivery"), `"kind":"deployment.success"`, `"kind":"Deployment Success"`, 1), "kind", "lowercase dot-separated"},
		{"event.canonical.delivery", strings.Replace(canonicalDoc("delivery"), `"confidence":1}`, `"confidence":1.5}`, 1), "context.correlationHints[0].confidence", "<= 1"},
		{"event.canonical.delivery", strings.Replace(canonicalDoc("delivery"), `"type":"deployment","url"`, `"type":"ticket","url"`, 1), "context.evidenceLinks[0].type", "must be one of"},
		{"event.canonical.delivery", strings.Replace(canonicalDoc("delivery"), `"https://github.com/acme/api/deployments"`, `"javascript:alert(1)"`, 1), "context.evidenceLinks[0].url", "http(s) URL"},
		{"event.canonical.delivery", strings.Replace(canonicalDoc("delivery"), `"number":7`, `"nested":{"a":1}`, 1), "attributes.nested", "must be boolean or number or string, got object"},
		{"event.canonical.delivery", strings.Replace(canonicalDoc("delivery"), `"originalTimestamp":"2025-01-02T10:01:00Z",`, ``, 1), "context.originalTimestamp", "required"},
		{"event.enriched", strings.Replace(enrichedDoc, `"confidence":0.95}],`, `"confidence":0.95}],"x":1,`, 1), "x", "unknown field"},
		{"event.enriched", strings.Replace(enrichedDoc, `"description":"d","sourceIntegration":"`+uuidA+`",`, `"description":"d",`, 1), "evidenceLinks[0].sourceIntegration", "required"},
		{"event.enriched", strings.Replace(enrichedDoc, `"match":"key"`, `"match":"vibes"`, 1), "matches[0].match", "must be one of"},
		{"enrichment.requested", `{"tenantId":"` + uuidB + `","eventId":"` + uuidA + `","at":"2025-01-02T10:05:00Z"}`, "keys", "required"},
	}
	for _, tt := range tests {
		t.Run(tt.schema+"/"+tt.field, func(t *testing.T) {
			err := v.ValidateJSON(tt.schema, []byte(tt.doc))
			var fe *schemas.FieldError
			if !errors.As(err, &fe) {
				t.Fatalf("error %v (%T) is not a *FieldError", err, err)
			}
			if fe.Field != tt.field || !strings.Contains(fe.Reason, tt.reason) {
				t.Fatalf("first error = %q, want field %q with reason containing %q (all: %v)", fe.Error(), tt.field, tt.reason, err)
			}
		})
	}
}
