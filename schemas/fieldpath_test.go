package schemas

import "testing"

func TestFieldPath(t *testing.T) {
	instance := map[string]any{
		"checkRun": map[string]any{"annotations": []any{map[string]any{"level": "x"}}},
		"config":   map[string]any{"0": map[string]any{"a.b": 1}},
	}
	tests := []struct {
		tokens []string
		want   string
	}{
		{nil, ""},
		{[]string{"checkRun", "annotations", "0", "level"}, "checkRun.annotations[0].level"},
		{[]string{"config", "0", "a.b"}, `config["0"]["a.b"]`},
		{[]string{"missing", "deeper"}, "missing.deeper"},
	}
	for _, tt := range tests {
		if got := fieldPath(instance, tt.tokens); got != tt.want {
			t.Errorf("fieldPath(%q) = %q, want %q", tt.tokens, got, tt.want)
		}
	}
	if got := joinKey("", "id"); got != "id" {
		t.Errorf("joinKey = %q", got)
	}
	if got := joinKey("a", "x y"); got != `a["x y"]` {
		t.Errorf("joinKey = %q", got)
	}
}
