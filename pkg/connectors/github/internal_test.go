package github

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
)

func TestUploadsRoot(t *testing.T) {
	for in, want := range map[string]string{
		"github.com":                          "https://uploads.github.com/",
		"https://ghe.example.com":             "https://ghe.example.com/api/uploads/",
		"https://ghe.example.com/api/v3/":     "https://ghe.example.com/api/uploads/",
		"https://ghe.example.com:8443":        "https://ghe.example.com:8443/api/uploads/",
		"https://proxy.example.com/gh/api/v3": "https://proxy.example.com/gh/api/uploads/",
		"https://octocorp.ghe.com":            "https://uploads.octocorp.ghe.com/",
	} {
		e, err := normalize(in)
		if err != nil || e.uploads != want {
			t.Errorf("uploads of %q = %q, %v; want %q", in, e.uploads, err, want)
		}
	}
}

func TestLimitedBody(t *testing.T) {
	small := &limitedBody{rc: io.NopCloser(bytes.NewReader([]byte("hello"))), n: 5}
	if b, err := io.ReadAll(small); err != nil || string(b) != "hello" {
		t.Errorf("a body at the limit: %q, %v", b, err)
	}
	big := &limitedBody{rc: io.NopCloser(strings.NewReader("hello!")), n: 5}
	if _, err := io.ReadAll(big); !errors.Is(err, errBodyTooLarge) {
		t.Errorf("a body over the limit: %v, want errBodyTooLarge", err)
	}
}
