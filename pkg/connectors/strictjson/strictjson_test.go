package strictjson_test

import (
	"testing"

	"inthub.dev/pkg/connectors/strictjson"
)

func TestDecode(t *testing.T) {
	type conf struct {
		Endpoint string `json:"endpoint"`
	}
	tests := []struct {
		raw  string
		want string // the endpoint, or "error"
	}{
		{``, ""},
		{"  \n", ""},
		{`{"endpoint":"https://x"}`, "https://x"},
		{`{"endpoint":"https://x"}  `, "https://x"},
		{`{"endpoint":"https://x","extra":1}`, "error"},
		{`{"endpoint":"https://x"}{}`, "error"},
		{`{"endpoint":"https://x"} x`, "error"},
		{`[]`, "error"},
		{`{"endpoint":`, "error"},
	}
	for _, tt := range tests {
		var c conf
		err := strictjson.Decode([]byte(tt.raw), &c)
		got := c.Endpoint
		if err != nil {
			got = "error"
		}
		if got != tt.want {
			t.Errorf("Decode(%q) = %q (%v), want %q", tt.raw, got, err, tt.want)
		}
	}
}
