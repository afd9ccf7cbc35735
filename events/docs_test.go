package events_test

import (
	"os"
	"regexp"
	"strings"
	"testing"

	"inthub.dev/events"
)

// TestDocExamples keeps the examples in docs/events.md, which other teams
// copy, valid under the schemas that actually run.
func TestDocExamples(t *testing.T) {
	doc, err := os.ReadFile("../docs/events.md")
	if os.IsNotExist(err) {
		t.Skip("docs/events.md is not beside this module")
	}
	if err != nil {
		t.Fatal(err)
	}
	blocks := regexp.MustCompile("(?s)```json\n(.*?)```").FindAllSubmatch(doc, -1)
	seen := map[string]bool{}
	for i, b := range blocks {
		e, err := events.Parse(b[1])
		if err != nil {
			t.Errorf("example %d: %v", i+1, err)
			continue
		}
		seen[e.Type] = true
	}
	for _, s := range events.Subjects() {
		if !seen[s] && !strings.HasSuffix(s, ".updated") {
			t.Errorf("docs/events.md has no example of %s", s)
		}
	}
}
