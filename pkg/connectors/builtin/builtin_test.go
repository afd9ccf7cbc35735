package builtin_test

import (
	"slices"
	"testing"

	"go.uber.org/goleak"

	"inthub.dev/pkg/connectors"
	"inthub.dev/pkg/connectors/builtin"
	"inthub.dev/schemas"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// Every built-in provider is registered, under the id its config schema
// carries, with a provider name and that schema.
func TestDefaultListsTheBuiltins(t *testing.T) {
	var got []string
	for _, info := range connectors.Default().Types() {
		got = append(got, info.Type)
		if info.Provider == "" || info.DisplayName == "" {
			t.Errorf("%s: provider %q, display name %q; both must be set", info.Type, info.Provider, info.DisplayName)
		}
		want, err := schemas.ConfigSchema(info.Type)
		if err != nil {
			t.Errorf("%s: no built-in config schema: %v", info.Type, err)
			continue
		}
		if string(info.ConfigSchema) != string(want) {
			t.Errorf("%s: registered ConfigSchema differs from schemas/config/%s.json", info.Type, info.Type)
		}
	}
	if !slices.Equal(got, builtin.Types) {
		t.Errorf("Default().Types() = %v, want %v", got, builtin.Types)
	}
}
