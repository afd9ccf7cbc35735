package configcheck

import (
	"encoding/base64"
	"encoding/hex"
	"math/rand/v2"
	"testing"
)

func TestLooksRandom(t *testing.T) {
	// A fixed seed keeps the count, and so the test, deterministic.
	src := rand.NewChaCha8([32]byte{1})
	randomB64 := func() string {
		b := make([]byte, 30)
		src.Read(b)
		return base64.RawURLEncoding.EncodeToString(b)
	}
	randomHex := func() string {
		b := make([]byte, 20)
		src.Read(b)
		return hex.EncodeToString(b)
	}
	// Random keys must be caught almost always; a miss now and then (about
	// 2 % at 40 characters) is the price of few false alarms, so count
	// rather than require.
	misses := 0
	for range 1000 {
		if !looksRandom(randomB64()) {
			misses++
		}
		if !looksRandom(randomHex()) {
			misses++
		}
	}
	t.Logf("%d of 2000 random keys missed", misses)
	if misses > 60 {
		t.Errorf("%d of 2000 random keys missed", misses)
	}
	for _, s := range []string{
		"0190f1c2-7a3b-7c4d-8e5f-0a1b2c3d4e5f",
		"/api/v4/projects/acme-platform-services/repository",
		"MyVeryLongProjectNameForRelease2024",
		"registry.example.com/acme/platform/api-gateway",
		"ThisIsAnOrdinaryCamelCaseIdentifier",
		"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa11",
		"robot$acme+ci-pipeline-readonly-account",
		"https://ghe.example.com/api/v3/app/installations",
		"projects/acme-prod-1234/locations/europe-west1",
	} {
		if looksRandom(s) || secretShape(s, true) != "" {
			t.Errorf("%q taken for a key", s)
		}
	}
}
