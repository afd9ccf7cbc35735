package store

import (
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"inthub.dev/events"
)

// WithAfterCommit's callback runs after each committed transaction that
// wrote an outbox event, and not after reads, refused writes or
// rolled-back transactions: the catalog wakes the outbox forwarders there.
func TestWithAfterCommit(t *testing.T) {
	var calls atomic.Int64
	e := newEnv(t, WithAfterCommit(func() { calls.Add(1) }))
	ctx := ctxT(t)
	a := newTenant()
	var it Integration
	steps := []struct {
		name string
		do   func() error
		want int64 // callbacks this step adds
	}{
		{"create", func() (err error) {
			it, err = e.store.CreateIntegration(ctx, a, "alice", IntegrationInput{Type: "test.inmemory", Name: "woken"})
			return err
		}, 1},
		{"get", func() error { _, err := e.store.GetIntegration(ctx, a, it.ID); return err }, 0},
		{"list", func() error { _, _, err := e.store.ListIntegrations(ctx, a, ListOptions{}); return err }, 0},
		{"update", func() error {
			_, err := e.store.UpdateIntegration(ctx, a, "bob", it.ID, 1, IntegrationInput{Name: "woken-2"})
			return err
		}, 1},
		{"stale update refused", func() error {
			_, err := e.store.UpdateIntegration(ctx, a, "bob", it.ID, 1, IntegrationInput{Name: "woken-3"})
			if !errors.Is(err, ErrVersionMismatch) {
				return errors.New("stale update not refused")
			}
			return nil
		}, 0},
		{"event written, then rolled back", func() error {
			err := e.store.InTenant(ctx, a, func(tx pgx.Tx) error {
				if err := e.store.emit(ctx, tx, a, it.ID, events.SubjectIntegrationDeleted, events.IntegrationDeleted{
					ID: it.ID, TenantID: a, Type: it.Type, Name: it.Name, DeletedAt: time.Now().UTC()}); err != nil {
					return err
				}
				return errors.New("abort")
			})
			if err == nil || err.Error() != "abort" {
				return errors.New("transaction did not fail as arranged")
			}
			return nil
		}, 0},
		{"delete", func() error { _, err := e.store.DeleteIntegration(ctx, a, "bob", it.ID, 0); return err }, 1},
	}
	for _, st := range steps {
		before := calls.Load()
		if err := st.do(); err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		if got := calls.Load() - before; got != st.want {
			t.Errorf("%s: %d callbacks, want %d", st.name, got, st.want)
		}
	}
	if n := len(outboxRows(t, e.owner, a)); n != 3 {
		t.Errorf("%d outbox rows, want 3 (create, update, delete)", n)
	}
}
