package dockerhub_test

import (
	"testing"

	"inthub.dev/pkg/connectors/dockerhub"
	"inthub.dev/pkg/connectors/oci/ocitest"
)

// TestSchema: the config schema the catalog validates with agrees with the
// connector on what a valid config is, and marks the secret.
func TestSchema(t *testing.T) {
	ocitest.CheckSchema(t, dockerhub.Type, map[string]bool{
		`{"username":"acme","token":"authref://env/PAT"}`:            true,
		`{"username":"acme"}`:                                        true, // the integration's AuthRef holds the token
		`{"namespace":"library","probeRepository":"library/alpine"}`: true,
		`{}`: false, // anonymous needs a namespace
		`{"token":"authref://env/PAT","namespace":"x"}`: false, // a token needs its user
		`{"username":"acme","token":"dckr_pat_abc"}`:    false,
		`{"namespace":"Library"}`:                       false,
	}, "token")
}
