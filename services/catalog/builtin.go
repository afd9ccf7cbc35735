package catalog

import (
	"encoding/json"
	"fmt"

	"inthub.dev/pkg/connectors"
	_ "inthub.dev/pkg/connectors/builtin" // the providers this build ships
	"inthub.dev/services/catalog/store"
)

// BuiltinTypes returns the integration types of the connectors compiled
// into this build, as the connectors declare them (config schema and
// capabilities included), for seeding integration_types at start.
func BuiltinTypes() ([]store.IntegrationType, error) {
	infos := connectors.Default().Types()
	out := make([]store.IntegrationType, 0, len(infos))
	for _, in := range infos {
		if len(in.ConfigSchema) == 0 {
			return nil, fmt.Errorf("catalog: connector %s declares no config schema", in.Type)
		}
		out = append(out, store.IntegrationType{
			ID: in.Type, DisplayName: in.DisplayName, Description: in.Description, Provider: in.Provider,
			ConfigSchema: json.RawMessage(in.ConfigSchema), Capabilities: in.Capabilities, Builtin: true,
		})
	}
	return out, nil
}
