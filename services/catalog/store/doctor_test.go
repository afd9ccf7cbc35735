package store

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

// TestDoctorRuns: runs are stored with their evidence and an audit row,
// listed newest first, invisible to another tenant (whose id for the
// integration is answered ErrNotFound, reads and writes alike), and
// refused for a deleted integration.
func TestDoctorRuns(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	tenant, other := newTenant(), newTenant()
	it := mustCreate(t, e.store, tenant, "gh")
	base := time.Date(2030, 5, 1, 12, 0, 0, 0, time.UTC)
	var ids []string
	for i, status := range []string{"unhealthy", "degraded", "healthy"} {
		run, err := e.store.RecordDoctorRun(ctx, tenant, DoctorRun{
			ID: uuid.NewString(), IntegrationID: it.ID, OverallStatus: status,
			Report:   json.RawMessage(`{"overallStatus":"` + status + `"}`),
			Evidence: `{"probe":"start"}` + "\n", DurationMs: int64(10 * i), RunAt: base.Add(time.Duration(i) * time.Minute), RunBy: "alice",
		})
		if err != nil {
			t.Fatalf("record %d: %v", i, err)
		}
		ids = append(ids, run.ID)
	}
	runs, err := e.store.DoctorRuns(ctx, tenant, it.ID, 2, true)
	if err != nil || len(runs) != 2 || runs[0].ID != ids[2] || runs[1].ID != ids[1] || runs[0].OverallStatus != "healthy" ||
		runs[0].Evidence != `{"probe":"start"}`+"\n" || !runs[0].RunAt.Equal(base.Add(2*time.Minute)) || runs[0].RunBy != "alice" {
		t.Fatalf("DoctorRuns = %+v, %v", runs, err)
	}
	if runs, _ := e.store.DoctorRuns(ctx, tenant, it.ID, 0, false); len(runs) != 3 || runs[0].Evidence != "" {
		t.Errorf("without evidence: %+v", runs)
	}
	var audits int
	if err := e.owner.QueryRow(ctx, `SELECT count(*) FROM audit_logs WHERE tenant_id = $1 AND action = 'integration.doctor' AND entity_id = $2`,
		tenant, it.ID).Scan(&audits); err != nil || audits != 3 {
		t.Errorf("audit rows %d, %v", audits, err)
	}

	if _, err := e.store.DoctorRuns(ctx, other, it.ID, 0, true); !errors.Is(err, ErrNotFound) {
		t.Errorf("another tenant reads: %v", err)
	}
	_, err = e.store.RecordDoctorRun(ctx, other, DoctorRun{ID: uuid.NewString(), IntegrationID: it.ID, OverallStatus: "healthy",
		Report: json.RawMessage(`{}`), RunBy: "mallory"})
	if !errors.Is(err, ErrNotFound) {
		t.Errorf("another tenant writes: %v", err)
	}
	// Row-level security, not only the WHERE clause: the other tenant's
	// transaction sees none of the rows.
	var n int
	if err := e.store.InTenant(context.Background(), other, func(tx pgx.Tx) error {
		return tx.QueryRow(ctx, `SELECT count(*) FROM doctor_checks`).Scan(&n)
	}); err != nil || n != 0 {
		t.Errorf("another tenant sees %d doctor rows (%v)", n, err)
	}

	if _, err := e.store.DeleteIntegration(ctx, tenant, "alice", it.ID, 0); err != nil {
		t.Fatal(err)
	}
	_, err = e.store.RecordDoctorRun(ctx, tenant, DoctorRun{ID: uuid.NewString(), IntegrationID: it.ID, OverallStatus: "healthy",
		Report: json.RawMessage(`{}`), RunBy: "alice"})
	if !errors.Is(err, ErrNotFound) {
		t.Errorf("a deleted integration: %v", err)
	}
}
