package store

import (
	"encoding/json"
	"errors"
	"testing"

	"github.com/jackc/pgx/v5"
)

func TestAuditSecretResolution(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	a, b := newTenant(), newTenant()
	it := mustCreate(t, e.store, a, "gh")

	for _, r := range []SecretResolution{
		{TenantID: a, IntegrationID: it.ID, Actor: "alice", Ref: "authref://env/GH_TOKEN", Scheme: "env"},
		{TenantID: a, IntegrationID: it.ID, Ref: "authref://env/GH_TOKEN", Scheme: "env", Cached: true},
		{TenantID: a, IntegrationID: it.ID, Ref: "authref://vault/gh#key", Scheme: "vault", Failed: true, ErrorClass: "transient"},
	} {
		if err := e.store.AuditSecretResolution(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	rows, err := e.owner.Query(ctx, `SELECT tenant_id::text, actor, entity_type, entity_id::text, before IS NULL, after
		FROM audit_logs WHERE action = $1 ORDER BY id`, ActionSecretResolve)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var got []map[string]any
	for rows.Next() {
		var tenant, actor, entityType, entityID string
		var noBefore bool
		var after []byte
		if err := rows.Scan(&tenant, &actor, &entityType, &entityID, &noBefore, &after); err != nil {
			t.Fatal(err)
		}
		if tenant != a || entityType != "integration" || entityID != it.ID || !noBefore {
			t.Errorf("row %s %s %s before-null=%v", tenant, entityType, entityID, noBefore)
		}
		var m map[string]any
		if err := json.Unmarshal(after, &m); err != nil {
			t.Fatal(err)
		}
		m["actor"] = actor
		got = append(got, m)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	want := []map[string]any{
		{"actor": "alice", "ref": "authref://env/GH_TOKEN", "scheme": "env", "cached": false, "ok": true},
		{"actor": DefaultSource, "ref": "authref://env/GH_TOKEN", "scheme": "env", "cached": true, "ok": true},
		{"actor": DefaultSource, "ref": "authref://vault/gh#key", "scheme": "vault", "cached": false, "ok": false, "errorClass": "transient"},
	}
	gb, _ := json.Marshal(got)
	wb, _ := json.Marshal(want)
	if string(gb) != string(wb) {
		t.Errorf("rows\n got %s\nwant %s", gb, wb)
	}

	// Tenant b's reads see none of them (row-level security), and bad ids
	// are refused before any write.
	var n int
	if err := e.store.InTenant(ctx, b, func(tx pgx.Tx) error {
		return tx.QueryRow(ctx, `SELECT count(*) FROM audit_logs WHERE action = $1`, ActionSecretResolve).Scan(&n)
	}); err != nil || n != 0 {
		t.Errorf("tenant b sees %d rows (%v)", n, err)
	}
	var ie *InvalidError
	if err := e.store.AuditSecretResolution(ctx, SecretResolution{TenantID: "nope", IntegrationID: it.ID}); !errors.As(err, &ie) {
		t.Errorf("bad tenant: %v", err)
	}
	if err := e.store.AuditSecretResolution(ctx, SecretResolution{TenantID: a, IntegrationID: "nope"}); !errors.As(err, &ie) {
		t.Errorf("bad integration id: %v", err)
	}
}
