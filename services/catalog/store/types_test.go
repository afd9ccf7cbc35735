package store

import (
	"encoding/json"
	"slices"
	"testing"
)

func TestTypes(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	ts, err := e.store.ListTypes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, ty := range ts {
		ids = append(ids, ty.ID)
	}
	if !slices.Equal(ids, []string{"registry.harbor", "scm.github", "test.inmemory"}) {
		t.Fatalf("types %v", ids)
	}
	gh, err := e.store.GetType(ctx, "scm.github")
	if err != nil || gh.DisplayName != "GitHub" || !slices.Equal(gh.Capabilities, []string{"test", "health", "annotate"}) || !gh.Builtin {
		t.Fatalf("get: %+v %v", gh, err)
	}
	if im, _ := e.store.GetType(ctx, "test.inmemory"); im.Capabilities == nil {
		t.Fatal("nil capabilities")
	}
	_, err = e.store.GetType(ctx, "scm.nope")
	wantErr(t, err, ErrNotFound)

	// A plugin's type (not builtin) is not taken over by the seed; a
	// builtin's schema and capabilities are replaced by a new release's.
	if _, err := e.owner.Exec(ctx, `INSERT INTO integration_types (id, display_name, provider, config_schema, builtin)
		VALUES ('plugin.thing', 'Thing', 'acme', '{"type":"object"}', false)`); err != nil {
		t.Fatal(err)
	}
	next := []IntegrationType{
		{ID: "scm.github", DisplayName: "GitHub", Provider: "github", ConfigSchema: json.RawMessage(`{"type":"object","required":["endpoint"]}`), Capabilities: []string{"test"}, Builtin: true},
		{ID: "plugin.thing", DisplayName: "Hijacked", Provider: "x", ConfigSchema: json.RawMessage(`{}`), Builtin: true},
	}
	if err := SeedTypes(ctx, e.owner, next); err != nil {
		t.Fatal(err)
	}
	gh, _ = e.store.GetType(ctx, "scm.github")
	if !slices.Equal(gh.Capabilities, []string{"test"}) || !jsonEqual(t, gh.ConfigSchema, next[0].ConfigSchema) {
		t.Fatalf("reseed did not update: %+v", gh)
	}
	if th, _ := e.store.GetType(ctx, "plugin.thing"); th.DisplayName != "Thing" || th.Builtin {
		t.Fatalf("seed took over a plugin type: %+v", th)
	}
	// The app role may only read the global tables.
	if _, err := e.app.Exec(ctx, `UPDATE integration_types SET display_name = 'x'`); err == nil {
		t.Fatal("inthub_app can update integration_types")
	}
	if err := SeedTypes(ctx, e.app, next); err == nil {
		t.Fatal("SeedTypes worked as inthub_app")
	}
}
