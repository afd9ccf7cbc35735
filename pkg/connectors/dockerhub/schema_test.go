package dockerhub_test

import (
	"encoding/json"
	"slices"
	"testing"

	"inthub.dev/pkg/connectors/dockerhub"
	"inthub.dev/schemas"
)

// TestSchema: the config schema the catalog validates with agrees with the
// connector on what a valid config is, and marks the secret.
func TestSchema(t *testing.T) {
	b, err := schemas.ConfigSchema(dockerhub.Type)
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
		{`{"username":"acme","token":"authref://env/PAT"}`, true},
		{`{"username":"acme"}`, true}, // the integration's AuthRef holds the token
		{`{"namespace":"library","probeRepository":"library/alpine"}`, true},
		{`{}`, false}, // anonymous needs a namespace
		{`{"token":"authref://env/PAT","namespace":"x"}`, false}, // a token needs its user
		{`{"username":"acme","token":"dckr_pat_abc"}`, false},
		{`{"namespace":"Library"}`, false},
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
