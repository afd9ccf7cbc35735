package store

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// DoctorRun is one stored doctor run of an integration: its report (the
// pkg/doctor Report as JSON) and its JSONL evidence log.
type DoctorRun struct {
	ID            string          `json:"id"`
	IntegrationID string          `json:"integrationId"`
	OverallStatus string          `json:"overallStatus"`
	Report        json.RawMessage `json:"report"`
	Evidence      string          `json:"-"`
	DurationMs    int64           `json:"durationMs"`
	RunAt         time.Time       `json:"runAt"`
	RunBy         string          `json:"runBy"`
}

// maxEvidenceBytes bounds a stored evidence log: a run is a few dozen
// lines, and a pack that loops must not fill the table.
const maxEvidenceBytes = 1 << 20

// RecordDoctorRun stores a run of a live integration of the tenant, with
// an audit row (action integration.doctor, the verdict as "after"), in one
// transaction. A deleted or unknown integration is ErrNotFound. The run's
// id is the report's (a retry of the same record is a conflict, not a
// second row).
func (s *Store) RecordDoctorRun(ctx context.Context, tenantID string, run DoctorRun) (DoctorRun, error) {
	id, ok := parseID(run.ID)
	if !ok {
		return DoctorRun{}, &InvalidError{Field: "id", Reason: "must be a UUID"}
	}
	if len(run.Evidence) > maxEvidenceBytes {
		return DoctorRun{}, &InvalidError{Field: "evidence", Reason: fmt.Sprintf("larger than %d bytes", maxEvidenceBytes)}
	}
	run.ID = id
	run.RunAt = run.RunAt.UTC().Truncate(time.Microsecond)
	if run.RunAt.IsZero() {
		run.RunAt = s.now()
	}
	err := s.InTenant(ctx, tenantID, func(tx pgx.Tx) error {
		tid, _ := parseTenant(tenantID)
		it, err := s.getIntegration(ctx, tx, tid, run.IntegrationID, "FOR SHARE")
		if err != nil {
			return err
		}
		run.IntegrationID = it.ID
		if _, err := tx.Exec(ctx,
			`INSERT INTO doctor_checks (tenant_id, id, integration_id, overall_status, report, evidence, duration_ms, run_at, run_by)
			 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)`,
			tid, run.ID, it.ID, run.OverallStatus, run.Report, run.Evidence, run.DurationMs, run.RunAt, run.RunBy); err != nil {
			return fmt.Errorf("record doctor run: %w", mapPgError(err))
		}
		return s.audit(ctx, tx, tid, run.RunBy, "integration.doctor", "integration", it.ID, nil,
			map[string]any{"runId": run.ID, "overallStatus": run.OverallStatus}, s.now())
	})
	if err != nil {
		return DoctorRun{}, err
	}
	return run, nil
}

// DoctorRuns returns the latest runs of a live integration of the tenant,
// newest first; limit defaults to 50, at most 500. withEvidence loads the
// evidence logs too.
func (s *Store) DoctorRuns(ctx context.Context, tenantID, integrationID string, limit int, withEvidence bool) (runs []DoctorRun, err error) {
	limit = clampLimit(limit)
	evidence := `''`
	if withEvidence {
		evidence = `evidence`
	}
	err = s.InTenant(ctx, tenantID, func(tx pgx.Tx) error {
		runs = nil
		tid, _ := parseTenant(tenantID)
		it, err := s.getIntegration(ctx, tx, tid, integrationID, "")
		if err != nil {
			return err
		}
		rows, err := tx.Query(ctx,
			`SELECT id, integration_id, overall_status, report, `+evidence+`, duration_ms, run_at, run_by
			 FROM doctor_checks WHERE tenant_id = $1 AND integration_id = $2
			 ORDER BY run_at DESC, id DESC LIMIT $3`, tid, it.ID, limit)
		if err != nil {
			return fmt.Errorf("doctor runs: %w", err)
		}
		runs, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (DoctorRun, error) {
			var d DoctorRun
			err := r.Scan(&d.ID, &d.IntegrationID, &d.OverallStatus, &d.Report, &d.Evidence, &d.DurationMs, &d.RunAt, &d.RunBy)
			d.RunAt = d.RunAt.UTC()
			return d, err
		})
		if err != nil {
			return fmt.Errorf("doctor runs: %w", err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return runs, nil
}
