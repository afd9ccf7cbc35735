package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"inthub.dev/events"
)

func TestVersionSemantics(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	a := newTenant()
	it := mustCreate(t, e.store, a, "prod")
	if it.Version != 1 {
		t.Fatalf("created at version %d, want 1", it.Version)
	}
	in := IntegrationInput{Name: "prod-2", Config: json.RawMessage(`{"endpoint":"https://ghe.example.com"}`)}

	u1, err := e.store.UpdateIntegration(ctx, a, "bob", it.ID, 1, in)
	if err != nil {
		t.Fatal(err)
	}
	if u1.Version != 2 || u1.Name != "prod-2" || u1.Type != "scm.github" || u1.AuthRef != "" || u1.Status != "active" {
		t.Fatalf("after update: %+v", u1)
	}
	if !u1.UpdatedAt.After(it.UpdatedAt) && !u1.UpdatedAt.Equal(it.UpdatedAt) || !u1.CreatedAt.Equal(it.CreatedAt) {
		t.Fatalf("timestamps: %v %v -> %v %v", it.CreatedAt, it.UpdatedAt, u1.CreatedAt, u1.UpdatedAt)
	}
	_, err = e.store.UpdateIntegration(ctx, a, "bob", it.ID, 1, in)
	wantErr(t, err, ErrVersionMismatch)
	u2, err := e.store.UpdateIntegration(ctx, a, "bob", it.ID, 0, in) // unconditional
	if err != nil || u2.Version != 3 {
		t.Fatalf("unconditional update: %v, version %d", err, u2.Version)
	}
	_, err = e.store.UpdateIntegration(ctx, a, "bob", it.ID, 0, IntegrationInput{Type: "registry.harbor", Name: "x"})
	var ce *ConflictError
	if !errors.As(err, &ce) || ce.Field != "type" {
		t.Fatalf("type change: %v, want ConflictError{type}", err)
	}
	_, err = e.store.UpdateIntegration(ctx, a, "bob", it.ID, 0, IntegrationInput{Type: "scm.github", Name: "x", Status: "bogus"})
	var ie *InvalidError
	if !errors.As(err, &ie) || ie.Field != "status" {
		t.Fatalf("bad status: %v", err)
	}
	_, err = e.store.DeleteIntegration(ctx, a, "bob", it.ID, 2)
	wantErr(t, err, ErrVersionMismatch)
	d, err := e.store.DeleteIntegration(ctx, a, "bob", it.ID, 3)
	if err != nil || d.Version != 4 || d.DeletedAt == nil {
		t.Fatalf("delete: %v, %+v", err, d)
	}
	for name, f := range map[string]func() error{
		"get":    func() error { _, err := e.store.GetIntegration(ctx, a, it.ID); return err },
		"update": func() error { _, err := e.store.UpdateIntegration(ctx, a, "bob", it.ID, 0, in); return err },
		"delete": func() error { _, err := e.store.DeleteIntegration(ctx, a, "bob", it.ID, 4); return err },
		"malformed id": func() error {
			_, err := e.store.GetIntegration(ctx, a, "not-a-uuid")
			return err
		},
	} {
		t.Run("deleted/"+name, func(t *testing.T) { wantErr(t, f(), ErrNotFound) })
	}
	// A failed write changes nothing: three changes, three events.
	if n := len(outboxRows(t, e.owner, a)); n != 4 {
		t.Fatalf("%d outbox rows, want 4 (create, 2 updates, delete)", n)
	}
}

func TestCreateValidation(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	a := newTenant()
	cases := []struct {
		name  string
		in    IntegrationInput
		field string
		err   error
	}{
		{"unknown type", IntegrationInput{Type: "scm.nope", Name: "x"}, "", ErrUnknownType},
		{"no type", IntegrationInput{Name: "x"}, "type", ErrInvalid},
		{"empty name", IntegrationInput{Type: "scm.github"}, "name", ErrInvalid},
		{"config array", IntegrationInput{Type: "scm.github", Name: "x", Config: json.RawMessage(`[1]`)}, "config", ErrInvalid},
		{"bad authref", IntegrationInput{Type: "scm.github", Name: "x", AuthRef: "hunter2"}, "authRef", ErrInvalid},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := e.store.CreateIntegration(ctx, a, "alice", c.in)
			wantErr(t, err, c.err)
			var ie *InvalidError
			if c.field != "" && (!errors.As(err, &ie) || ie.Field != c.field) {
				t.Fatalf("error %v does not name %s", err, c.field)
			}
		})
	}
	if _, err := e.store.CreateIntegration(ctx, "not-a-tenant", "alice", IntegrationInput{Type: "scm.github", Name: "x"}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("bad tenant: %v", err)
	}
	if n := countRows(t, e.owner, `SELECT count(*) FROM integrations`); n != 0 {
		t.Fatalf("%d rows after refused creates", n)
	}
}

// Every change writes its audit row and its outbox event; the event is a
// valid CloudEvent whose integration equals the stored row.
func TestWritesCarryAuditAndOutbox(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	a := newTenant()
	created := mustCreate(t, e.store, a, "prod")
	updated, err := e.store.UpdateIntegration(ctx, a, "bob", created.ID, 1, IntegrationInput{
		Name: "prod", Config: json.RawMessage(`{"endpoint": "https://ghe.example.com",  "nested": {"a": [1, 2.5]}}`), Status: "disabled"})
	if err != nil {
		t.Fatal(err)
	}
	deleted, err := e.store.DeleteIntegration(ctx, a, "carol", created.ID, 2)
	if err != nil {
		t.Fatal(err)
	}

	type auditRow struct {
		Actor, Action, EntityType, EntityID string
		Before, After                       []byte
		At                                  time.Time
	}
	rows, err := e.owner.Query(ctx, `SELECT actor, action, entity_type, entity_id::text, before, after, at
		FROM audit_logs WHERE tenant_id = $1 ORDER BY id`, a)
	if err != nil {
		t.Fatal(err)
	}
	audits, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (auditRow, error) {
		var x auditRow
		err := r.Scan(&x.Actor, &x.Action, &x.EntityType, &x.EntityID, &x.Before, &x.After, &x.At)
		return x, err
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []struct {
		actor, action string
		before, after *Integration
	}{
		{"alice", "integration.create", nil, &created},
		{"bob", "integration.update", &created, &updated},
		{"carol", "integration.delete", &updated, &deleted},
	}
	if len(audits) != len(want) {
		t.Fatalf("%d audit rows, want %d", len(audits), len(want))
	}
	for i, w := range want {
		got := audits[i]
		if got.Actor != w.actor || got.Action != w.action || got.EntityType != "integration" || got.EntityID != created.ID {
			t.Errorf("audit %d = %+v", i, got)
		}
		for _, side := range []struct {
			name string
			got  []byte
			want *Integration
		}{{"before", got.Before, w.before}, {"after", got.After, w.after}} {
			if side.want == nil {
				if side.got != nil {
					t.Errorf("audit %d %s = %s, want NULL", i, side.name, side.got)
				}
				continue
			}
			wb, _ := json.Marshal(side.want)
			if !jsonEqual(t, side.got, wb) {
				t.Errorf("audit %d %s =\n%s\nwant\n%s", i, side.name, side.got, wb)
			}
		}
	}

	ob := outboxRows(t, e.owner, a)
	if len(ob) != 3 {
		t.Fatalf("%d outbox rows, want 3", len(ob))
	}
	h := fnv.New32a()
	h.Write([]byte(created.ID))
	for i, r := range ob {
		if r.AggregateID != created.ID || r.Partition != int(h.Sum32()%16) {
			t.Errorf("outbox %d: aggregate %s partition %d", i, r.AggregateID, r.Partition)
		}
	}
	for i, c := range []struct {
		subject string
		row     Integration
	}{{events.SubjectIntegrationCreated, created}, {events.SubjectIntegrationUpdated, updated}} {
		ev := parseOutbox(t, ob[i])
		if ev.Type != c.subject || ev.Source != DefaultSource {
			t.Fatalf("event %d: %s from %s", i, ev.Type, ev.Source)
		}
		var p events.IntegrationCreated // same shape as IntegrationUpdated
		if err := json.Unmarshal(ev.Data, &p); err != nil {
			t.Fatal(err)
		}
		got := p.Integration
		w := c.row.event()
		if !jsonEqual(t, got.Config, w.Config) {
			t.Errorf("event %d config %s, want %s", i, got.Config, w.Config)
		}
		got.Config, w.Config = nil, nil
		if fmt.Sprint(got) != fmt.Sprint(w) || !got.CreatedAt.Equal(w.CreatedAt) || !got.UpdatedAt.Equal(w.UpdatedAt) {
			t.Errorf("event %d integration\n%+v\nwant\n%+v", i, got, w)
		}
	}
	// What GetIntegration returns is what the event said.
	ev := parseOutbox(t, ob[2])
	var del events.IntegrationDeleted
	if err := ev.Decode(&del); err != nil {
		t.Fatal(err)
	}
	if del.ID != created.ID || del.TenantID != a || del.Name != "prod" || del.Type != "scm.github" || !del.DeletedAt.Equal(*deleted.DeletedAt) {
		t.Fatalf("deleted event %+v", del)
	}
	// The stored row still holds the config byte-for-byte as the event.
	var stored json.RawMessage
	if err := e.owner.QueryRow(ctx, `SELECT config FROM integrations WHERE id = $1`, created.ID).Scan(&stored); err != nil {
		t.Fatal(err)
	}
	if !jsonEqual(t, stored, updated.Config) {
		t.Fatalf("stored config %s, returned %s", stored, updated.Config)
	}
}

// A failing outbox insert rolls back the row change and the audit row: the
// three are one transaction. The failure is a real database error, from a
// trigger that the owner installs on the outbox.
func TestFailingOutboxRollsBackTheChange(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	a := newTenant()
	it := mustCreate(t, e.store, a, "prod")
	if _, err := e.owner.Exec(ctx, `
		CREATE FUNCTION outbox_fail() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN RAISE EXCEPTION 'outbox is failing'; END $$;
		CREATE TRIGGER outbox_fail BEFORE INSERT ON outbox FOR EACH ROW EXECUTE FUNCTION outbox_fail();`); err != nil {
		t.Fatal(err)
	}
	auditsBefore := countRows(t, e.owner, `SELECT count(*) FROM audit_logs`)

	_, err := e.store.CreateIntegration(ctx, a, "alice", IntegrationInput{Type: "scm.github", Name: "second"})
	if err == nil {
		t.Fatal("create succeeded with a failing outbox")
	}
	_, err = e.store.UpdateIntegration(ctx, a, "alice", it.ID, 1, IntegrationInput{Name: "renamed"})
	if err == nil {
		t.Fatal("update succeeded with a failing outbox")
	}
	_, err = e.store.DeleteIntegration(ctx, a, "alice", it.ID, 1)
	if err == nil {
		t.Fatal("delete succeeded with a failing outbox")
	}
	if n := countRows(t, e.owner, `SELECT count(*) FROM integrations`); n != 1 {
		t.Fatalf("%d integrations, want 1", n)
	}
	got, err := e.store.GetIntegration(ctx, a, it.ID)
	if err != nil || got.Version != 1 || got.Name != "prod" {
		t.Fatalf("row changed despite the failed outbox: %+v, %v", got, err)
	}
	if n := countRows(t, e.owner, `SELECT count(*) FROM audit_logs`); n != auditsBefore {
		t.Fatalf("%d audit rows, want %d", n, auditsBefore)
	}

	// And the injected inserter path: an error from the outbox writer.
	s := New(e.app)
	s.insertOutbox = func(context.Context, pgx.Tx, events.Event, string) error { return errors.New("injected") }
	if _, err := e.owner.Exec(ctx, `DROP TRIGGER outbox_fail ON outbox`); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateIntegration(ctx, a, "alice", IntegrationInput{Type: "scm.github", Name: "third"}); err == nil {
		t.Fatal("create succeeded with a failing outbox writer")
	}
	if n := countRows(t, e.owner, `SELECT count(*) FROM integrations`); n != 1 {
		t.Fatalf("%d integrations, want 1", n)
	}
}

func TestPagination(t *testing.T) {
	// Timestamps collide in groups of 7, so the id breaks ties.
	var tick atomic.Int64
	base := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	clock := func() time.Time { return base.Add(time.Duration(tick.Add(1)/7) * time.Millisecond) }
	e := newEnv(t, WithClock(clock))
	ctx := ctxT(t)
	a, other := newTenant(), newTenant()
	mustCreate(t, e.store, other, "noise")

	const n = 120
	want := map[string]bool{}
	harbor := 0
	for i := range n {
		typ := "scm.github"
		if i%3 == 0 {
			typ = "registry.harbor"
			harbor++
		}
		it, err := e.store.CreateIntegration(ctx, a, "alice", IntegrationInput{Type: typ, Name: fmt.Sprintf("i-%03d", i)})
		if err != nil {
			t.Fatal(err)
		}
		want[it.ID] = true
	}

	// Writers insert while the pages are read: rows before the cursor
	// (an old clock) and after it (a late clock).
	early := New(e.app, WithClock(func() time.Time { return base.Add(-time.Hour) }))
	late := New(e.app, WithClock(func() time.Time { return base.Add(time.Hour) }))
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var inserted atomic.Int64
	for w, s := range []*Store{early, late} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; ; j++ {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := s.CreateIntegration(ctx, a, "writer", IntegrationInput{Type: "scm.github", Name: fmt.Sprintf("w%d-%d", w, j)}); err != nil {
					t.Errorf("concurrent insert: %v", err)
					return
				}
				inserted.Add(1)
			}
		}()
	}

	seen := map[string]int{}
	var prev *Integration
	cursor := ""
	pages := 0
	for {
		items, next, err := e.store.ListIntegrations(ctx, a, ListOptions{Limit: 50, Cursor: cursor})
		if err != nil {
			t.Fatal(err)
		}
		pages++
		if next != "" && len(items) != 50 {
			t.Fatalf("page %d has %d items and a next cursor", pages, len(items))
		}
		for i := range items {
			it := items[i]
			seen[it.ID]++
			if it.TenantID != a {
				t.Fatalf("row of tenant %s in tenant %s's list", it.TenantID, a)
			}
			if prev != nil && (it.CreatedAt.Before(prev.CreatedAt) || it.CreatedAt.Equal(prev.CreatedAt) && it.ID <= prev.ID) {
				t.Fatalf("order broken: %v/%s after %v/%s", it.CreatedAt, it.ID, prev.CreatedAt, prev.ID)
			}
			prev = &it
		}
		if next == "" {
			break
		}
		cursor = next
		if pages > 100 {
			t.Fatal("pagination does not end")
		}
	}
	close(stop)
	wg.Wait()
	if inserted.Load() == 0 {
		t.Log("no concurrent insert happened during paging")
	}
	for id, c := range seen {
		if c != 1 {
			t.Errorf("%s listed %d times", id, c)
		}
	}
	for id := range want {
		if seen[id] != 1 {
			t.Errorf("%s missing from the pages", id)
		}
	}

	// The type filter, paged.
	got := 0
	cursor = ""
	for {
		items, next, err := e.store.ListIntegrations(ctx, a, ListOptions{Type: "registry.harbor", Limit: 10, Cursor: cursor})
		if err != nil {
			t.Fatal(err)
		}
		for _, it := range items {
			if it.Type != "registry.harbor" {
				t.Fatalf("type filter returned %s", it.Type)
			}
		}
		got += len(items)
		if next == "" {
			break
		}
		cursor = next
	}
	if got != harbor {
		t.Fatalf("type filter: %d rows, want %d", got, harbor)
	}

	// Defaults and bounds of the limit.
	items, _, err := e.store.ListIntegrations(ctx, a, ListOptions{})
	if err != nil || len(items) != defaultLimit {
		t.Fatalf("default limit: %d, %v", len(items), err)
	}
	items, _, err = e.store.ListIntegrations(ctx, a, ListOptions{Limit: 100000})
	if err != nil || len(items) > maxLimit {
		t.Fatalf("max limit: %d, %v", len(items), err)
	}

	for _, bad := range []string{"garbage!", "Zm9v", encodeCursor(base, "12")} {
		_, _, err := e.store.ListIntegrations(ctx, a, ListOptions{Cursor: bad})
		wantErr(t, err, ErrBadCursor)
	}
}
