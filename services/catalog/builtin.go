package catalog

import (
	"encoding/json"
	"fmt"

	"inthub.dev/schemas"
	"inthub.dev/services/catalog/store"
)

// builtinTypes describes the integration types this build knows. Their
// config schemas live in schemas/config; the connectors issue moves this
// list next to the connectors, which will declare their own.
var builtinTypes = []store.IntegrationType{
	{ID: "scm.github", DisplayName: "GitHub App", Provider: "github",
		Description:  "GitHub.com or GitHub Enterprise Server through a GitHub App installation",
		Capabilities: []string{"repos", "branches", "status", "comment", "check_run", "webhooks"}},
	{ID: "scm.gitlab", DisplayName: "GitLab", Provider: "gitlab",
		Description:  "GitLab.com or self-managed GitLab with a personal/project access token or a CI job token",
		Capabilities: []string{"repos", "branches", "status", "comment", "webhooks"}},
	{ID: "registry.harbor", DisplayName: "Harbor", Provider: "harbor",
		Description:  "Harbor registry with a robot account",
		Capabilities: []string{"repos", "tags", "digest", "manifest"}},
	{ID: "registry.oci", DisplayName: "OCI registry", Provider: "oci",
		Description:  "Any registry speaking the OCI distribution API",
		Capabilities: []string{"repos", "tags", "digest", "manifest"}},
	{ID: "test.inmemory", DisplayName: "In-memory (test double)", Provider: "inmemory",
		Description:  "Deterministic double for tests and offline development",
		Capabilities: []string{"repos", "branches", "tags", "status", "comment", "check_run"}},
}

// BuiltinTypes returns the built-in types with their config schemas.
func BuiltinTypes() ([]store.IntegrationType, error) {
	out := make([]store.IntegrationType, 0, len(builtinTypes))
	for _, t := range builtinTypes {
		schema, err := schemas.ConfigSchema(t.ID)
		if err != nil {
			return nil, fmt.Errorf("catalog: config schema of %s: %w", t.ID, err)
		}
		t.ConfigSchema = json.RawMessage(schema)
		t.Builtin = true
		out = append(out, t)
	}
	return out, nil
}
