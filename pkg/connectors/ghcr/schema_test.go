package ghcr_test

import (
	"encoding/json"
	"slices"
	"testing"

	"inthub.dev/pkg/connectors/ghcr"
	"inthub.dev/schemas"
)

// TestSchema: the config schema the catalog validates with agrees with the
// connector on what a valid config is, and marks the secret.
func TestSchema(t *testing.T) {
	b, err := schemas.ConfigSchema(ghcr.Type)
	if err != nil {
		t.Fatal(err)
	}
	cv, err := schemas.CompileConfig(b, nil)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		conf  string
		valid bool
	}{
		{`{"username":"octocat","token":"authref://env/PAT"}`, true},
		{`{"username":"octocat","owner":"Acme","ownerType":"org","apiEndpoint":"https://ghe.example/api/v3"}`, true},
		{`{"token":"authref://env/PAT"}`, false},
		{`{"username":"octocat","token":"ghp_abc"}`, false},
		{`{"username":"octocat","ownerType":"team"}`, false},
		{`{"username":"octo/cat"}`, false},
	}
	for _, tt := range tests {
		var v any
		if err := json.Unmarshal([]byte(tt.conf), &v); err != nil {
			t.Fatal(err)
		}
		if err := cv.Validate(v); (err == nil) != tt.valid {
			t.Errorf("%s: Validate = %v, want valid %v", tt.conf, err, tt.valid)
		}
	}
	if secret, err := schemas.SecretFields(b); err != nil || !slices.Equal(secret, []string{"token"}) {
		t.Errorf("SecretFields = %q, %v", secret, err)
	}
}
