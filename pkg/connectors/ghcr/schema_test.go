package ghcr_test

import (
	"testing"

	"inthub.dev/pkg/connectors/ghcr"
	"inthub.dev/pkg/connectors/oci/ocitest"
)

// TestSchema: the config schema the catalog validates with agrees with the
// connector on what a valid config is, and marks the secret.
func TestSchema(t *testing.T) {
	ocitest.CheckSchema(t, ghcr.Type, map[string]bool{
		`{"username":"octocat","token":"authref://env/PAT"}`:                                                 true,
		`{"username":"octocat","owner":"Acme","ownerType":"org","apiEndpoint":"https://ghe.example/api/v3"}`: true,
		`{"token":"authref://env/PAT"}`:                                                                      false,
		`{"username":"octocat","token":"ghp_abc"}`:                                                           false,
		`{"username":"octocat","ownerType":"team"}`:                                                          false,
		`{"username":"octo/cat"}`:                                                                            false,
	}, "token")
}
