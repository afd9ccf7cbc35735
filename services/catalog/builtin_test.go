package catalog_test

import (
	"testing"

	"inthub.dev/schemas"
	"inthub.dev/services/catalog"
)

// Every config schema shipped in schemas/config belongs to a connector
// that this build registers, and the other way round.
func TestBuiltinTypesMatchConfigSchemas(t *testing.T) {
	types, err := catalog.BuiltinTypes()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, ty := range types {
		got[ty.ID] = true
		if ty.DisplayName == "" || ty.Provider == "" || len(ty.Capabilities) == 0 {
			t.Errorf("%s: incomplete description %+v", ty.ID, ty)
		}
	}
	for _, id := range schemas.ConfigTypes() {
		if !got[id] {
			t.Errorf("schema for %s but no connector", id)
		}
		delete(got, id)
	}
	for id := range got {
		t.Errorf("connector %s has no schema in schemas/config", id)
	}
}
