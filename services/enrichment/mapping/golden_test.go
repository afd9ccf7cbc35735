package mapping_test

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"inthub.dev/events"
	"inthub.dev/services/enrichment/mapping"
)

var update = flag.Bool("update", false, "rewrite the golden files from the current rules")

const (
	tenant      = "0b5a3bb0-6a43-4d7e-9a39-6f1f9d9a00a1"
	integration = "0190f1c2-7a3b-7c4d-8e5f-0a1b2c3d4e01"
	ingestID    = "4b4f3c4e-6a1d-5c55-9f7e-0f1b5e3b2a10"
)

var received = time.Date(2025, 1, 2, 10, 0, 3, 118000000, time.UTC)

func ingested(provider, kind string, payload []byte) events.Ingested {
	return events.Ingested{IntegrationID: integration, TenantID: tenant, Provider: provider, Kind: kind,
		DeliveryID: "d-1", Via: events.ViaWebhook, ReceivedAt: received,
		BodySHA256: strings.Repeat("0", 64), Payload: payload}
}

// kindOf is the longest kind of source that prefixes a sample's file name
// (deployment_status_failure.json is a deployment_status).
func kindOf(m *mapping.Mapper, source, name string) string {
	best := ""
	for _, k := range m.Kinds(source) {
		if (name == k || strings.HasPrefix(name, k+"_")) && len(k) > len(best) {
			best = k
		}
	}
	return best
}

// TestGolden maps every committed provider sample with the default rules
// and compares the canonical event with its golden file; every result must
// validate against the schema of its subject. Run with -update after a
// deliberate change of the rules, and read the diff.
func TestGolden(t *testing.T) {
	m, err := mapping.Default()
	if err != nil {
		t.Fatal(err)
	}
	samples, err := filepath.Glob("testdata/samples/*/*.json")
	if err != nil || len(samples) == 0 {
		t.Fatalf("no samples: %v", err)
	}
	covered := map[string]bool{}
	for _, path := range samples {
		source := filepath.Base(filepath.Dir(path))
		name := strings.TrimSuffix(filepath.Base(path), ".json")
		t.Run(source+"/"+name, func(t *testing.T) {
			kind := kindOf(m, source, name)
			if kind == "" {
				t.Fatalf("no rule kind of %s prefixes %s", source, name)
			}
			covered[source+"."+kind] = true
			body, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			var compact bytes.Buffer
			if err := json.Compact(&compact, body); err != nil {
				t.Fatal(err)
			}
			c, err := m.Map(context.Background(), ingested(source, kind, compact.Bytes()), ingestID)
			if err != nil {
				t.Fatalf("Map: %v", err)
			}
			ev, err := events.New(events.CanonicalSubject(c.Category), "inthub/enrichment", tenant, c)
			if err != nil {
				t.Fatalf("the canonical event does not validate: %v", err)
			}
			got, err := json.MarshalIndent(json.RawMessage(ev.Data), "", "  ")
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, '\n')
			golden := filepath.Join("testdata", "golden", source, name+".json")
			if *update {
				if err := os.MkdirAll(filepath.Dir(golden), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(golden, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test -update to create it)", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("canonical event differs from %s:\n got: %s\nwant: %s", golden, got, want)
			}
		})
	}
	// Every shipped rule kind has at least one sample.
	for _, source := range m.Sources() {
		for _, k := range m.Kinds(source) {
			if !covered[source+"."+k] {
				t.Errorf("no sample for %s.%s in testdata/samples/%s", source, k, source)
			}
		}
	}
	if !slices.Equal(m.Sources(), []string{"cloudwatch", "github", "gitlab"}) {
		t.Errorf("sources %v", m.Sources())
	}
}
