package store

import (
	"encoding/json"
	"errors"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"inthub.dev/events"
)

// tenantTables are the tables that carry tenant_id (checked against the
// catalog in TestAppRoleCannotBypassRLS, so a new table is not forgotten).
var tenantTables = []string{"integrations", "connection_profiles", "health_checks", "doctor_checks",
	"audit_logs", "idempotency_keys", "outbox"}

// DESIGN §10: another tenant's id answers as if it did not exist.
func TestCrossTenantAccessIsNotFound(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	a, b := newTenant(), newTenant()
	it := mustCreate(t, e.store, a, "prod")
	prof, err := e.store.CreateProfile(ctx, a, "alice", ProfileInput{Name: "p", IntegrationType: "scm.github", IsDefault: true})
	if err != nil {
		t.Fatal(err)
	}

	checks := []struct {
		name string
		do   func() error
	}{
		{"get", func() error { _, err := e.store.GetIntegration(ctx, b, it.ID); return err }},
		{"update", func() error {
			_, err := e.store.UpdateIntegration(ctx, b, "mallory", it.ID, 0, IntegrationInput{Name: "pwned"})
			return err
		}},
		{"update with version", func() error {
			_, err := e.store.UpdateIntegration(ctx, b, "mallory", it.ID, 1, IntegrationInput{Name: "pwned"})
			return err
		}},
		{"delete", func() error { _, err := e.store.DeleteIntegration(ctx, b, "mallory", it.ID, 0); return err }},
		{"health history", func() error { _, _, _, err := e.store.HealthHistory(ctx, b, it.ID, 10, ""); return err }},
		{"get profile", func() error { _, err := e.store.GetProfile(ctx, b, prof.ID); return err }},
		{"update profile", func() error {
			_, err := e.store.UpdateProfile(ctx, b, "mallory", prof.ID, 0, ProfileInput{Name: "x", IntegrationType: "scm.github"})
			return err
		}},
		{"delete profile", func() error { _, err := e.store.DeleteProfile(ctx, b, "mallory", prof.ID, 0); return err }},
		{"mark profile used", func() error { return e.store.MarkProfileUsed(ctx, b, prof.ID) }},
		{"record health", func() error {
			ev, err := events.New(events.SubjectIntegrationHealthChecked, "test", b, events.HealthChecked{
				IntegrationID: it.ID, TenantID: b, Type: "scm.github", Status: events.HealthUnhealthy, CheckedAt: e.store.now(),
			})
			if err != nil {
				return err
			}
			_, err = e.store.RecordHealth(ctx, ev)
			return err
		}},
	}
	for _, c := range checks {
		t.Run(c.name, func(t *testing.T) { wantErr(t, c.do(), ErrNotFound) })
	}

	items, _, err := e.store.ListIntegrations(ctx, b, ListOptions{})
	if err != nil || len(items) != 0 {
		t.Fatalf("tenant B lists %d integrations (%v), want 0", len(items), err)
	}
	got, err := e.store.GetIntegration(ctx, a, it.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Version != 1 || got.Name != "prod" || got.HealthStatus != "unknown" {
		t.Fatalf("tenant B changed tenant A's row: %+v", got)
	}
	if d, err := e.store.Defaults(ctx, b, "scm.github", nil); err != nil || string(d) != "{}" {
		t.Fatalf("tenant B's defaults = %s, %v; want {} (A's profile must not show)", d, err)
	}
	if n := countRows(t, e.owner, `SELECT count(*) FROM audit_logs WHERE tenant_id = $1`, b); n != 0 {
		t.Fatalf("%d audit rows for tenant B, want 0", n)
	}
}

// DESIGN §10: with no tenant set, inthub_app sees and writes nothing, so
// RLS is really on and not only the store's WHERE clauses.
func TestRLSWithoutTenantSeesNothing(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	a := newTenant()
	it := mustCreate(t, e.store, a, "prod")
	if _, err := e.store.CreateProfile(ctx, a, "alice", ProfileInput{Name: "p", IntegrationType: "scm.github"}); err != nil {
		t.Fatal(err)
	}
	ev, _ := events.New(events.SubjectIntegrationHealthChecked, "test", a, events.HealthChecked{
		IntegrationID: it.ID, TenantID: a, Type: "scm.github", Status: events.HealthHealthy, CheckedAt: e.store.now()})
	if _, err := e.store.RecordHealth(ctx, ev); err != nil {
		t.Fatal(err)
	}
	if _, _, err := e.store.Idempotent(ctx, a, "k", "h", func(pgx.Tx) (IdempotentResponse, error) {
		return IdempotentResponse{Status: 201, Body: json.RawMessage(`{}`)}, nil
	}); err != nil {
		t.Fatal(err)
	}

	for _, table := range []string{"integrations", "connection_profiles", "health_checks", "audit_logs", "idempotency_keys"} {
		t.Run(table, func(t *testing.T) {
			if n := countRows(t, e.owner, `SELECT count(*) FROM `+table); n == 0 {
				t.Fatalf("the owner sees no %s rows: the test would prove nothing", table)
			}
			// Plain query, no transaction, no setting.
			if n := countRows(t, e.app, `SELECT count(*) FROM `+table); n != 0 {
				t.Fatalf("inthub_app without a tenant sees %d %s rows", n, table)
			}
			// Filtering by the tenant explicitly does not help either.
			if n := countRows(t, e.app, `SELECT count(*) FROM `+table+` WHERE tenant_id = $1`, a); n != 0 {
				t.Fatalf("inthub_app without a tenant sees %d of tenant A's %s rows", n, table)
			}
		})
	}
	// The outbox is write-only for inthub_app: even reading it is refused.
	if _, err := e.app.Exec(ctx, `SELECT count(*) FROM outbox`); err == nil {
		t.Fatal("inthub_app can read the outbox")
	}
	// Writing as a tenant that is not set is refused by WITH CHECK.
	_, err := e.app.Exec(ctx, `INSERT INTO integrations (tenant_id, type, name, created_by) VALUES ($1, 'scm.github', 'x', 'm')`, a)
	if err == nil {
		t.Fatal("inthub_app inserted a row with no tenant set")
	}
	tag, err := e.app.Exec(ctx, `UPDATE integrations SET name = 'pwned'`)
	if err != nil || tag.RowsAffected() != 0 {
		t.Fatalf("update without tenant: %v rows, %v", tag.RowsAffected(), err)
	}
	// Another tenant set in a transaction sees nothing of A either.
	err = e.store.InTenant(ctx, newTenant(), func(tx pgx.Tx) error {
		var n int
		if err := tx.QueryRow(ctx, `SELECT count(*) FROM integrations`).Scan(&n); err != nil {
			return err
		}
		if n != 0 {
			t.Errorf("another tenant sees %d integrations", n)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// DESIGN §10: the uniqueness of names is per tenant, so tenant B can
// neither collide with nor detect tenant A's names, through the store or
// through ON CONFLICT.
func TestSameNameInTwoTenants(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	a, b := newTenant(), newTenant()
	mustCreate(t, e.store, a, "prod")
	itB := mustCreate(t, e.store, b, "prod") // not a conflict

	_, err := e.store.CreateIntegration(ctx, a, "alice", IntegrationInput{Type: "scm.github", Name: "prod"})
	var ce *ConflictError
	if !errors.As(err, &ce) || ce.Field != "name" || !errors.Is(err, ErrConflict) {
		t.Fatalf("duplicate in tenant A: %v, want ConflictError{name}", err)
	}

	// ON CONFLICT as tenant B on the live-name index: B's own row
	// conflicts, A's does not exist for B.
	err = e.store.InTenant(ctx, b, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `INSERT INTO integrations (tenant_id, type, name, created_by) VALUES ($1, 'scm.github', 'prod', 'bob')
			ON CONFLICT (tenant_id, name) WHERE deleted_at IS NULL DO NOTHING`, b)
		if err != nil {
			return err
		}
		if tag.RowsAffected() != 0 {
			t.Errorf("ON CONFLICT in B inserted a duplicate of B's own name")
		}
		tag, err = tx.Exec(ctx, `INSERT INTO integrations (tenant_id, type, name, created_by) VALUES ($1, 'scm.github', 'only-a', 'bob')
			ON CONFLICT (tenant_id, name) WHERE deleted_at IS NULL DO NOTHING`, b)
		if err != nil {
			return err
		}
		if tag.RowsAffected() != 1 {
			t.Errorf("ON CONFLICT in B saw a name of A")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	mustCreate(t, e.store, a, "only-a")

	// After B deletes its "prod", the name is free in B only.
	if _, err := e.store.DeleteIntegration(ctx, b, "bob", itB.ID, 0); err != nil {
		t.Fatal(err)
	}
	mustCreate(t, e.store, b, "prod")
	_, err = e.store.CreateIntegration(ctx, a, "alice", IntegrationInput{Type: "scm.github", Name: "prod"})
	wantErr(t, err, ErrConflict)
}

// DESIGN §10: set_config(..., true) is transaction-local, so the next
// borrower of the one pooled connection sees no tenant.
func TestPoolReuseDoesNotLeakTenant(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	a := newTenant()
	mustCreate(t, e.store, a, "prod")

	cfg, err := pgxpool.ParseConfig(e.db.AppURL)
	if err != nil {
		t.Fatal(err)
	}
	cfg.MaxConns = 1
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	s := New(pool)

	var pidIn, pidAfter, seen int
	err = s.InTenant(ctx, a, func(tx pgx.Tx) error {
		return tx.QueryRow(ctx, `SELECT pg_backend_pid(), (SELECT count(*) FROM integrations)`).Scan(&pidIn, &seen)
	})
	if err != nil {
		t.Fatal(err)
	}
	if seen != 1 {
		t.Fatalf("tenant A sees %d rows in its own transaction, want 1", seen)
	}
	var setting string
	var after int
	if err := pool.QueryRow(ctx, `SELECT pg_backend_pid(), current_setting('app.tenant_id', true), (SELECT count(*) FROM integrations)`).
		Scan(&pidAfter, &setting, &after); err != nil {
		t.Fatal(err)
	}
	if pidIn != pidAfter {
		t.Fatalf("not the same pooled connection (%d, %d): the test proves nothing", pidIn, pidAfter)
	}
	if setting != "" || after != 0 {
		t.Fatalf("after tenant A's transaction the connection has tenant %q and sees %d rows", setting, after)
	}
	// A failed transaction must not leak either.
	_ = s.InTenant(ctx, a, func(tx pgx.Tx) error { return errors.New("boom") })
	if err := pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM integrations)`).Scan(&after); err != nil || after != 0 {
		t.Fatalf("after a rolled back transaction: %d rows, %v", after, err)
	}
}

// DESIGN §10: the service's role cannot bypass RLS, owns nothing, and
// every table with a tenant_id forces RLS with a single, restrictive-enough
// policy set for inthub_app.
func TestAppRoleCannotBypassRLS(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	var super, bypass bool
	if err := e.app.QueryRow(ctx, `SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user`).Scan(&super, &bypass); err != nil {
		t.Fatal(err)
	}
	var user string
	_ = e.app.QueryRow(ctx, `SELECT current_user`).Scan(&user)
	if user != "inthub_app" || super || bypass {
		t.Fatalf("app pool connects as %s (superuser %v, bypassrls %v)", user, super, bypass)
	}
	owned := countRows(t, e.app, `SELECT count(*) FROM pg_class c JOIN pg_roles r ON r.oid = c.relowner WHERE r.rolname = 'inthub_app'`)
	if owned != 0 {
		t.Fatalf("inthub_app owns %d relations", owned)
	}
	// Membership would let it act as an owner.
	if n := countRows(t, e.app, `SELECT count(*) FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.member WHERE r.rolname = 'inthub_app'`); n != 0 {
		t.Fatalf("inthub_app is a member of %d roles", n)
	}

	rows, err := e.app.Query(ctx, `
		SELECT c.relname, c.relrowsecurity, c.relforcerowsecurity
		FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p')
		  AND EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attname = 'tenant_id' AND NOT a.attisdropped)
		ORDER BY 1`)
	if err != nil {
		t.Fatal(err)
	}
	found := map[string]bool{}
	for rows.Next() {
		var name string
		var rls, force bool
		if err := rows.Scan(&name, &rls, &force); err != nil {
			t.Fatal(err)
		}
		found[name] = true
		if !rls || !force {
			t.Errorf("%s: row security %v, forced %v", name, rls, force)
		}
	}
	rows.Close()
	for _, tt := range tenantTables {
		if !found[tt] {
			t.Errorf("table %s has no tenant_id or is missing", tt)
		}
	}
	if len(found) == 0 {
		t.Fatal("no tenant tables found")
	}
	// A permissive policy beside tenant_isolation would be OR-ed in: the
	// only policy that applies to inthub_app (or PUBLIC) must be it.
	prow, err := e.app.Query(ctx, `
		SELECT tablename, policyname, qual FROM pg_policies
		WHERE schemaname = 'public' AND ('inthub_app' = ANY (roles) OR 'public' = ANY (roles))`)
	if err != nil {
		t.Fatal(err)
	}
	defer prow.Close()
	for prow.Next() {
		var table, name string
		var qual *string
		if err := prow.Scan(&table, &name, &qual); err != nil {
			t.Fatal(err)
		}
		if name != "tenant_isolation" || qual == nil || *qual != "(tenant_id = app_tenant())" {
			t.Errorf("%s: policy %s (%v) applies to inthub_app", table, name, qual)
		}
	}
}
