package store

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// createOnce is what the API's POST handler does inside Idempotent: the
// integration, its audit row, its outbox row and the key in one
// transaction.
func createOnce(s *Store, tenant, name string, calls *atomic.Int64) func(pgx.Tx) (IdempotentResponse, error) {
	return func(tx pgx.Tx) (IdempotentResponse, error) {
		calls.Add(1)
		it, err := s.CreateIntegrationTx(context.Background(), tx, tenant, "alice", IntegrationInput{Type: "scm.github", Name: name})
		if err != nil {
			return IdempotentResponse{}, err
		}
		body, _ := json.Marshal(it)
		return IdempotentResponse{Status: 201, Body: body, Headers: map[string]string{"Location": "/api/v1/integrations/" + it.ID}}, nil
	}
}

func TestIdempotentReplay(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	a, b := newTenant(), newTenant()
	var calls atomic.Int64

	r1, replayed, err := e.store.Idempotent(ctx, a, "key-1", "hash-1", createOnce(e.store, a, "prod", &calls))
	if err != nil || replayed || r1.Status != 201 {
		t.Fatalf("first: %+v replayed=%v %v", r1, replayed, err)
	}
	r2, replayed, err := e.store.Idempotent(ctx, a, "key-1", "hash-1", createOnce(e.store, a, "prod", &calls))
	if err != nil || !replayed {
		t.Fatalf("second: replayed=%v %v", replayed, err)
	}
	if r2.Status != 201 || !jsonEqual(t, r1.Body, r2.Body) || r2.Headers["Location"] != r1.Headers["Location"] {
		t.Fatalf("replay %+v differs from %+v", r2, r1)
	}
	if calls.Load() != 1 {
		t.Fatalf("handler ran %d times", calls.Load())
	}
	_, _, err = e.store.Idempotent(ctx, a, "key-1", "hash-2", createOnce(e.store, a, "prod", &calls))
	wantErr(t, err, ErrIdempotencyMismatch)

	// The same key in another tenant is another key.
	_, replayed, err = e.store.Idempotent(ctx, b, "key-1", "hash-1", createOnce(e.store, b, "prod", &calls))
	if err != nil || replayed {
		t.Fatalf("tenant B, same key: replayed=%v %v", replayed, err)
	}
	if n := countRows(t, e.owner, `SELECT count(*) FROM integrations WHERE tenant_id = $1`, a); n != 1 {
		t.Fatalf("%d integrations in A, want 1", n)
	}
	if n := len(outboxRows(t, e.owner, a)); n != 1 {
		t.Fatalf("%d outbox rows in A, want 1", n)
	}

	// A failing handler stores nothing, and the key can be used again.
	boom := errors.New("boom")
	_, _, err = e.store.Idempotent(ctx, a, "key-2", "h", func(pgx.Tx) (IdempotentResponse, error) { return IdempotentResponse{}, boom })
	wantErr(t, err, boom)
	// A handler that fails after a write: the write is rolled back too.
	_, _, err = e.store.Idempotent(ctx, a, "key-2", "h", func(tx pgx.Tx) (IdempotentResponse, error) {
		if _, err := createOnce(e.store, a, "rolled-back", &calls)(tx); err != nil {
			return IdempotentResponse{}, err
		}
		return IdempotentResponse{}, boom
	})
	wantErr(t, err, boom)
	if n := countRows(t, e.owner, `SELECT count(*) FROM integrations WHERE name = 'rolled-back'`); n != 0 {
		t.Fatal("the write of a failed idempotent handler committed")
	}
	_, replayed, err = e.store.Idempotent(ctx, a, "key-2", "h", createOnce(e.store, a, "second", &calls))
	if err != nil || replayed {
		t.Fatalf("key after failure: replayed=%v %v", replayed, err)
	}
	// A conflict inside the handler is the handler's error, not stored.
	_, _, err = e.store.Idempotent(ctx, a, "key-3", "h", createOnce(e.store, a, "second", &calls))
	wantErr(t, err, ErrConflict)
	if n := countRows(t, e.owner, `SELECT count(*) FROM idempotency_keys WHERE key = 'key-3'`); n != 0 {
		t.Fatal("a failed request's key was stored")
	}
	_, _, err = e.store.Idempotent(ctx, a, "", "h", createOnce(e.store, a, "x", &calls))
	wantErr(t, err, ErrInvalid)
}

// Ten concurrent requests with one key create exactly one integration;
// the nine others wait on the claim and replay its response.
func TestIdempotentConcurrentSameKey(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	a := newTenant()
	var calls atomic.Int64
	const n = 10
	type result struct {
		resp     IdempotentResponse
		replayed bool
		err      error
	}
	results := make([]result, n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			r, rep, err := e.store.Idempotent(ctx, a, "same-key", "same-hash", func(tx pgx.Tx) (IdempotentResponse, error) {
				// Hold the claim a little so that the others really wait
				// on it rather than arriving after the commit.
				if _, err := tx.Exec(ctx, `SELECT pg_sleep(0.05)`); err != nil {
					return IdempotentResponse{}, err
				}
				return createOnce(e.store, a, "prod", &calls)(tx)
			})
			results[i] = result{r, rep, err}
		}()
	}
	close(start)
	wg.Wait()
	fresh := 0
	for i, r := range results {
		if r.err != nil {
			t.Fatalf("request %d: %v", i, r.err)
		}
		if !r.replayed {
			fresh++
		}
		if !jsonEqual(t, r.resp.Body, results[0].resp.Body) {
			t.Fatalf("request %d got another body", i)
		}
	}
	if fresh != 1 || calls.Load() != 1 {
		t.Fatalf("%d fresh responses, handler ran %d times; want 1 and 1", fresh, calls.Load())
	}
	if c := countRows(t, e.owner, `SELECT count(*) FROM integrations WHERE tenant_id = $1`, a); c != 1 {
		t.Fatalf("%d integrations, want exactly 1", c)
	}
	if c := len(outboxRows(t, e.owner, a)); c != 1 {
		t.Fatalf("%d outbox rows, want 1", c)
	}
}

func TestIdempotencyKeysExpire(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	e := newEnv(t, WithClock(clock))
	ctx := ctxT(t)
	a, b := newTenant(), newTenant()
	var calls atomic.Int64
	do := func(tx pgx.Tx) (IdempotentResponse, error) {
		calls.Add(1)
		return IdempotentResponse{Status: 202, Body: json.RawMessage(`{"ok":true}`)}, nil
	}
	for _, tenant := range []string{a, b} {
		if _, _, err := e.store.Idempotent(ctx, tenant, "k", "h", do); err != nil {
			t.Fatal(err)
		}
	}
	advance(IdempotencyTTL - time.Minute)
	if _, replayed, err := e.store.Idempotent(ctx, a, "k", "h", do); err != nil || !replayed {
		t.Fatalf("within the TTL: replayed=%v %v", replayed, err)
	}
	advance(2 * time.Minute)
	// Expired: the key is free again, even with another request.
	if _, replayed, err := e.store.Idempotent(ctx, a, "k", "other", do); err != nil || replayed {
		t.Fatalf("after the TTL: replayed=%v %v", replayed, err)
	}
	if calls.Load() != 3 {
		t.Fatalf("handler ran %d times, want 3", calls.Load())
	}
	// Purge is per tenant: B's old key goes, A's fresh one stays.
	n, err := e.store.PurgeIdempotencyKeys(ctx, b, clock().Add(-IdempotencyTTL))
	if err != nil || n != 1 {
		t.Fatalf("purge B: %d, %v", n, err)
	}
	n, err = e.store.PurgeIdempotencyKeys(ctx, a, clock().Add(-IdempotencyTTL))
	if err != nil || n != 0 {
		t.Fatalf("purge A: %d, %v", n, err)
	}
	if c := countRows(t, e.owner, `SELECT count(*) FROM idempotency_keys`); c != 1 {
		t.Fatalf("%d keys left, want 1", c)
	}
}
