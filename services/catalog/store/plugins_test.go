package store

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"inthub.dev/events"
)

func quayPlugin(sum string) Plugin {
	return Plugin{ID: "quay", Type: "registry.quay", Version: "1.0.0", Capabilities: []string{"health", "repos"},
		Path: "/plugins/registry-quay", Checksum: strings.Repeat(sum, 64), Provider: "quay", DisplayName: "Quay",
		ConfigSchema: json.RawMessage(`{"type":"object"}`)}
}

// pluginEvents reads the plugin events of the outbox, in order, checking
// each is a valid event without a tenant on a row of PluginTenant.
func pluginEvents(t *testing.T, e *env) []events.Event {
	t.Helper()
	var out []events.Event
	for _, r := range outboxRows(t, e.owner, PluginTenant) {
		ev, err := events.Parse(r.Payload)
		if err != nil || ev.TenantID != "" || ev.Type != r.Subject {
			t.Fatalf("outbox row %+v: %v", r, err)
		}
		out = append(out, ev)
	}
	return out
}

func subjects(evs []events.Event) string {
	var s []string
	for _, e := range evs {
		s = append(s, e.Type)
	}
	return strings.Join(s, ",")
}

func TestSyncPlugins(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

	steps := []struct {
		name         string
		current      []Plugin
		registered   int
		unregistered int
		events       string // the outbox's plugin events so far
		typeRow      bool   // registry.quay in integration_types afterwards
	}{
		{"new plugin", []Plugin{quayPlugin("a")}, 1, 0, "plugin.registered", true},
		{"same again (a restart)", []Plugin{quayPlugin("a")}, 0, 0, "plugin.registered", true},
		{"binary replaced", []Plugin{quayPlugin("b")}, 1, 1, "plugin.registered,plugin.unregistered,plugin.registered", true},
		{"removed", nil, 0, 1, "plugin.registered,plugin.unregistered,plugin.registered,plugin.unregistered", false},
	}
	for _, st := range steps {
		ch, err := SyncPlugins(ctx, e.owner, st.current, "", now)
		if err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		if len(ch.Registered) != st.registered || len(ch.Unregistered) != st.unregistered {
			t.Fatalf("%s: changes = %+v", st.name, ch)
		}
		if got := subjects(pluginEvents(t, e)); got != st.events {
			t.Fatalf("%s: events %s, want %s", st.name, got, st.events)
		}
		_, err = e.store.GetType(ctx, "registry.quay")
		if (err == nil) != st.typeRow {
			t.Fatalf("%s: type row present = %v", st.name, err == nil)
		}
		ps, err := e.store.ListPlugins(ctx) // as inthub_app
		if err != nil || len(ps) != len(st.current) {
			t.Fatalf("%s: ListPlugins = %+v, %v", st.name, ps, err)
		}
	}

	evs := pluginEvents(t, e)
	var reg events.PluginRegistered
	if err := evs[2].Decode(&reg); err != nil || reg.Checksum != strings.Repeat("b", 64) || reg.Type != "registry.quay" ||
		!reg.RegisteredAt.Equal(now) {
		t.Fatalf("plugin.registered = %+v, %v", reg, err)
	}
	var unreg events.PluginUnregistered
	if err := evs[1].Decode(&unreg); err != nil || unreg.Checksum != strings.Repeat("a", 64) {
		t.Fatalf("plugin.unregistered = %+v, %v", unreg, err)
	}
}

// A removed plugin's type stays while integrations of it exist (their
// foreign key needs the row), and a plugin never takes a built-in type.
func TestSyncPluginsKeepsUsedTypesAndBuiltins(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	if _, err := SyncPlugins(ctx, e.owner, []Plugin{quayPlugin("a")}, "", time.Now()); err != nil {
		t.Fatal(err)
	}
	tenant := newTenant()
	if _, err := e.store.CreateIntegration(ctx, tenant, "alice", IntegrationInput{Type: "registry.quay", Name: "q",
		Config: json.RawMessage(`{}`)}); err != nil {
		t.Fatal(err)
	}
	if _, err := SyncPlugins(ctx, e.owner, nil, "", time.Now()); err != nil {
		t.Fatal(err)
	}
	if _, err := e.store.GetType(ctx, "registry.quay"); err != nil {
		t.Fatalf("type of a used plugin removed: %v", err)
	}
	if ps, _ := e.store.ListPlugins(ctx); len(ps) != 0 {
		t.Fatalf("plugins = %+v", ps)
	}

	builtin := quayPlugin("c")
	builtin.ID, builtin.Type = "impostor", "scm.github"
	if _, err := SyncPlugins(ctx, e.owner, []Plugin{builtin}, "", time.Now()); err == nil || !strings.Contains(err.Error(), "built-in") {
		t.Fatalf("plugin with a built-in type: %v", err)
	}
	t.Run("nothing of a refused sync is kept", func(t *testing.T) {
		if ps, _ := e.store.ListPlugins(context.Background()); len(ps) != 0 {
			t.Fatalf("plugins = %+v", ps)
		}
	})
}
