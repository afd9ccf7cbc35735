package store

import (
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestProfilesCRUD(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	a := newTenant()
	p1, err := e.store.CreateProfile(ctx, a, "alice", ProfileInput{Name: "Production GitHub", IntegrationType: "scm.github",
		DefaultConfig: json.RawMessage(`{"endpoint":"https://ghe.example.com"}`), IsDefault: true})
	if err != nil || !p1.IsDefault || p1.Version != 1 {
		t.Fatalf("create: %+v %v", p1, err)
	}
	_, err = e.store.CreateProfile(ctx, a, "alice", ProfileInput{Name: "Production GitHub", IntegrationType: "registry.harbor"})
	var ce *ConflictError
	if !errors.As(err, &ce) || ce.Field != "name" {
		t.Fatalf("duplicate name: %v", err)
	}
	_, err = e.store.CreateProfile(ctx, a, "alice", ProfileInput{Name: "x", IntegrationType: "scm.nope"})
	wantErr(t, err, ErrUnknownType)

	// A new default of the same type takes over, in the same transaction.
	p2, err := e.store.CreateProfile(ctx, a, "bob", ProfileInput{Name: "Staging GitHub", IntegrationType: "scm.github", IsDefault: true})
	if err != nil {
		t.Fatal(err)
	}
	got1, err := e.store.GetProfile(ctx, a, p1.ID)
	if err != nil || got1.IsDefault || got1.Version != 2 {
		t.Fatalf("previous default: %+v %v", got1, err)
	}
	_, err = e.store.UpdateProfile(ctx, a, "bob", p1.ID, 1, ProfileInput{Name: "P", IntegrationType: "scm.github"})
	wantErr(t, err, ErrVersionMismatch)
	u1, err := e.store.UpdateProfile(ctx, a, "bob", p1.ID, 2, ProfileInput{Name: "Prod", IntegrationType: "scm.github", IsDefault: true})
	if err != nil || u1.Version != 3 || !u1.IsDefault || u1.Name != "Prod" {
		t.Fatalf("update: %+v %v", u1, err)
	}
	if got2, _ := e.store.GetProfile(ctx, a, p2.ID); got2.IsDefault {
		t.Fatal("two defaults of one type")
	}
	if err := e.store.MarkProfileUsed(ctx, a, p2.ID); err != nil {
		t.Fatal(err)
	}
	if got2, _ := e.store.GetProfile(ctx, a, p2.ID); got2.LastUsedAt == nil || got2.Version != 2 {
		t.Fatalf("mark used: %+v", got2)
	}
	items, next, err := e.store.ListProfiles(ctx, a, ProfileListOptions{Limit: 1})
	if err != nil || len(items) != 1 || next == "" || items[0].ID != p1.ID {
		t.Fatalf("list page 1: %+v %q %v", items, next, err)
	}
	items, next, err = e.store.ListProfiles(ctx, a, ProfileListOptions{Limit: 1, Cursor: next})
	if err != nil || len(items) != 1 || next != "" || items[0].ID != p2.ID {
		t.Fatalf("list page 2: %+v %q %v", items, next, err)
	}
	if _, err := e.store.DeleteProfile(ctx, a, "carol", p1.ID, 1); !errors.Is(err, ErrVersionMismatch) {
		t.Fatalf("stale delete: %v", err)
	}
	if _, err := e.store.DeleteProfile(ctx, a, "carol", p1.ID, 3); err != nil {
		t.Fatal(err)
	}
	_, err = e.store.GetProfile(ctx, a, p1.ID)
	wantErr(t, err, ErrNotFound)
	if n := countRows(t, e.owner, `SELECT count(*) FROM connection_profiles WHERE id = $1`, p1.ID); n != 0 {
		t.Fatal("profile delete is not a hard delete")
	}

	var actions []string
	rows, err := e.owner.Query(ctx, `SELECT action || ':' || entity_id FROM audit_logs WHERE tenant_id = $1 AND entity_type = 'profile' ORDER BY id`, a)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var s string
		_ = rows.Scan(&s)
		actions = append(actions, s)
	}
	rows.Close()
	want := []string{
		"profile.create:" + p1.ID,
		"profile.update:" + p1.ID, // lost the default to p2
		"profile.create:" + p2.ID,
		"profile.update:" + p2.ID, // lost the default to p1
		"profile.update:" + p1.ID,
		"profile.delete:" + p1.ID,
	}
	if strings.Join(actions, ",") != strings.Join(want, ",") {
		t.Fatalf("audit\n%v\nwant\n%v", actions, want)
	}
}

// Concurrent writers of a type's default serialise: all succeed, one wins.
func TestProfileDefaultConcurrent(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	a := newTenant()
	var wg sync.WaitGroup
	errs := make(chan error, 10)
	for i := range 10 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := e.store.CreateProfile(ctx, a, "alice", ProfileInput{Name: fmt.Sprintf("p%d", i), IntegrationType: "scm.github", IsDefault: true})
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if n := countRows(t, e.owner, `SELECT count(*) FROM connection_profiles WHERE tenant_id = $1 AND is_default`, a); n != 1 {
		t.Fatalf("%d defaults, want 1", n)
	}
}

func TestDefaultsNeverReuseSecrets(t *testing.T) {
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var mu sync.Mutex
	tick := 0
	clock := func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		tick++
		return base.Add(time.Duration(tick) * time.Second)
	}
	e := newEnv(t, WithClock(clock))
	ctx := ctxT(t)
	a := newTenant()
	secret := []string{"privateKey", "webhook.secret"}
	cfg := func(endpoint string) json.RawMessage {
		return json.RawMessage(fmt.Sprintf(`{"endpoint":%q,"appId":12345678901234567,"privateKey":"authref://vault/gh#key",
			"authRef":"authref://env/X","webhook":{"secret":"authref://env/WH","path":"/hook"},
			"extra":{"token":"AuthRef://file/tok","keep":[1,"authref://env/Y","z"]}}`, endpoint))
	}
	check := func(label, wantEndpoint string) {
		t.Helper()
		d, err := e.store.Defaults(ctx, a, "scm.github", secret)
		if err != nil {
			t.Fatal(err)
		}
		s := string(d)
		for _, bad := range []string{"privateKey", "authRef", "authref", "AuthRef", `"secret"`, `"token"`} {
			if strings.Contains(s, bad) {
				t.Fatalf("%s: defaults %s contain %s", label, s, bad)
			}
		}
		var m map[string]any
		_ = json.Unmarshal(d, &m)
		if m["endpoint"] != wantEndpoint {
			t.Fatalf("%s: defaults %s, want endpoint %s", label, s, wantEndpoint)
		}
		if !strings.Contains(s, `"appId":12345678901234567`) || !strings.Contains(s, `"path":"/hook"`) || !strings.Contains(s, `"keep":[1,"z"]`) {
			t.Fatalf("%s: defaults %s lost a non-secret field", label, s)
		}
	}

	if d, err := e.store.Defaults(ctx, a, "scm.github", secret); err != nil || string(d) != "{}" {
		t.Fatalf("nothing to default from: %s %v", d, err)
	}
	// Source 3: the latest live integration of the type.
	if _, err := e.store.CreateIntegration(ctx, a, "alice", IntegrationInput{Type: "scm.github", Name: "old", Config: cfg("https://old")}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.store.CreateIntegration(ctx, a, "alice", IntegrationInput{Type: "scm.github", Name: "new", Config: cfg("https://new"), AuthRef: "authref://env/T"}); err != nil {
		t.Fatal(err)
	}
	check("latest integration", "https://new")
	// Source 2: the most recently used profile.
	p1, _ := e.store.CreateProfile(ctx, a, "alice", ProfileInput{Name: "one", IntegrationType: "scm.github", DefaultConfig: cfg("https://one")})
	p2, _ := e.store.CreateProfile(ctx, a, "alice", ProfileInput{Name: "two", IntegrationType: "scm.github", DefaultConfig: cfg("https://two")})
	check("unused profiles do not count", "https://new")
	_ = e.store.MarkProfileUsed(ctx, a, p2.ID)
	_ = e.store.MarkProfileUsed(ctx, a, p1.ID)
	check("last used profile", "https://one")
	// Source 1: the default profile.
	if _, err := e.store.CreateProfile(ctx, a, "alice", ProfileInput{Name: "def", IntegrationType: "scm.github", DefaultConfig: cfg("https://def"), IsDefault: true}); err != nil {
		t.Fatal(err)
	}
	check("default profile", "https://def")
}

// Property: whatever the config, stripSecrets leaves no named secret
// field, no authRef key and no AuthRef value, and keeps everything else.
func TestPropertyDefaultsStripSecrets(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 11))
	keys := []string{"endpoint", "password", "token", "authRef", "nested", "opts", "privateKey", "region"}
	var gen func(depth int) map[string]any
	gen = func(depth int) map[string]any {
		m := map[string]any{}
		for range r.IntN(5) {
			k := keys[r.IntN(len(keys))]
			switch r.IntN(4) {
			case 0:
				m[k] = "authref://vault/p#" + k
			case 1:
				m[k] = "plain-" + k
			case 2:
				if depth < 3 {
					m[k] = gen(depth + 1)
				} else {
					m[k] = 1.5
				}
			default:
				m[k] = []any{"authref://env/A", "v", 2.0}
			}
		}
		return m
	}
	for i := range 200 {
		doc := gen(0)
		raw, _ := json.Marshal(doc)
		secrets := []string{"password", "nested.token", "nested.nested.privateKey"}
		out, err := stripSecrets(raw, secrets)
		if err != nil {
			t.Fatal(err)
		}
		var got map[string]any
		_ = json.Unmarshal(out, &got)
		if strings.Contains(strings.ToLower(string(out)), "authref") {
			t.Fatalf("case %d: %s → %s keeps an AuthRef", i, raw, out)
		}
		if _, ok := got["password"]; ok {
			t.Fatalf("case %d: %s → %s keeps password", i, raw, out)
		}
		if n, ok := got["nested"].(map[string]any); ok {
			if _, ok := n["token"]; ok {
				t.Fatalf("case %d: keeps nested.token", i)
			}
			if nn, ok := n["nested"].(map[string]any); ok {
				if _, ok := nn["privateKey"]; ok {
					t.Fatalf("case %d: keeps nested.nested.privateKey", i)
				}
			}
		}
		// Plain top-level values not named secret survive.
		for k, v := range doc {
			if s, ok := v.(string); ok && strings.HasPrefix(s, "plain-") && k != "password" && k != "authRef" && got[k] != v {
				t.Fatalf("case %d: lost %s", i, k)
			}
		}
	}
}
