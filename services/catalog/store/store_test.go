package store

import (
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

func TestInTenant(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	a := newTenant()

	for _, bad := range []string{"", "x", "00000000-0000-0000-0000-000000000000", "{" + a + "}"} {
		err := e.store.InTenant(ctx, bad, func(pgx.Tx) error { t.Fatal("ran with a bad tenant"); return nil })
		wantErr(t, err, ErrInvalid)
	}

	// The tenant is set, in canonical form, for the transaction.
	err := e.store.InTenant(ctx, a, func(tx pgx.Tx) error {
		var got string
		if err := tx.QueryRow(ctx, `SELECT current_setting('app.tenant_id')`).Scan(&got); err != nil {
			return err
		}
		if got != a {
			t.Errorf("tenant setting %q, want %q", got, a)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	// Serialization failures and deadlocks are retried with a new
	// transaction; other errors are not; retries are bounded.
	for _, c := range []struct {
		code      string
		failures  int
		wantRuns  int
		wantError bool
	}{
		{"40001", 2, 3, false},
		{"40P01", 1, 2, false},
		{"40001", 100, maxAttempts, true},
		{"23505", 1, 1, true},
	} {
		runs := 0
		err := e.store.InTenant(ctx, a, func(tx pgx.Tx) error {
			runs++
			if runs <= c.failures {
				return &pgconn.PgError{Code: c.code}
			}
			return nil
		})
		if runs != c.wantRuns || (err != nil) != c.wantError {
			t.Errorf("%s ×%d: ran %d times, err %v; want %d runs", c.code, c.failures, runs, err, c.wantRuns)
		}
	}

	// A real deadlock: two transactions lock two rows in opposite order;
	// PostgreSQL aborts one (40P01) and InTenant runs it again.
	x, y := mustCreate(t, e.store, a, "x"), mustCreate(t, e.store, a, "y")
	lockedX, lockedY := make(chan struct{}), make(chan struct{})
	var runs [2]int
	lockBoth := func(n int, first, second string, mine, theirs chan struct{}) func(pgx.Tx) error {
		return func(tx pgx.Tx) error {
			runs[n]++
			if _, err := tx.Exec(ctx, `SELECT 1 FROM integrations WHERE id = $1 FOR UPDATE`, first); err != nil {
				return err
			}
			if runs[n] == 1 {
				close(mine)
				<-theirs
			}
			_, err := tx.Exec(ctx, `SELECT 1 FROM integrations WHERE id = $1 FOR UPDATE`, second)
			return err
		}
	}
	done := make(chan error, 1)
	go func() { done <- e.store.InTenant(ctx, a, lockBoth(0, x.ID, y.ID, lockedX, lockedY)) }()
	err = e.store.InTenant(ctx, a, lockBoth(1, y.ID, x.ID, lockedY, lockedX))
	if err2 := <-done; err != nil || err2 != nil {
		t.Fatalf("after a deadlock: %v, %v", err, err2)
	}
	if runs[0]+runs[1] != 3 {
		t.Fatalf("runs %v: want one transaction retried once", runs)
	}
}
