package mapping_test

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"testing"

	"inthub.dev/services/enrichment/mapping"
)

// BenchmarkMap maps provider samples with the default rules (CEL
// evaluation, conversion of the document, hints and links).
func BenchmarkMap(b *testing.B) {
	m, err := mapping.Default()
	if err != nil {
		b.Fatal(err)
	}
	for _, s := range []struct{ name, source, kind, file string }{
		{"github-push-2-commits", "github", "push", "testdata/samples/github/push.json"},
		{"github-pull-request", "github", "pull_request", "testdata/samples/github/pull_request_merged.json"},
		{"gitlab-merge-request", "gitlab", "merge_request", "testdata/samples/gitlab/merge_request_open.json"},
		{"cloudwatch-alarm", "cloudwatch", "alarm", "testdata/samples/cloudwatch/alarm.json"},
	} {
		raw, err := os.ReadFile(s.file)
		if err != nil {
			b.Fatal(err)
		}
		var body bytes.Buffer
		if err := json.Compact(&body, raw); err != nil {
			b.Fatal(err)
		}
		in := ingested(s.source, s.kind, body.Bytes())
		b.Run(s.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := m.Map(context.Background(), in, ingestID); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
