package outbox_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"inthub.dev/pkg/pgtest"
	"inthub.dev/services/catalog/outbox"
)

// listener is a LISTEN connection on the outbox channel, standing for
// another replica's forwarder.
type listener struct {
	t    testing.TB
	conn *pgx.Conn
}

func listen(t testing.TB, url string) *listener {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close(context.Background()) })
	if _, err := conn.Exec(ctx, "LISTEN "+outbox.Channel); err != nil {
		t.Fatal(err)
	}
	return &listener{t: t, conn: conn}
}

// count waits up to first for a notification, then counts notifications
// until none has come for quiet (60 windows of the default 5 ms: a
// notification still pending would have gone out by then).
func (l *listener) count(first, quiet time.Duration) int {
	l.t.Helper()
	n := 0
	wait := first
	for {
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		nf, err := l.conn.WaitForNotification(ctx)
		cancel()
		if errors.Is(err, context.DeadlineExceeded) {
			return n
		}
		if err != nil {
			l.t.Fatalf("wait for notification: %v", err)
		}
		if nf.Channel != outbox.Channel || nf.Payload != "" {
			l.t.Errorf("notification on %q with payload %q", nf.Channel, nf.Payload)
		}
		n++
		wait = quiet
	}
}

// A burst of 100 requests goes out as one or two notifications (the
// first at once, the rest together at the end of the window); a request
// after a quiet spell goes out on its own.
func TestNotifierCoalescesABurst(t *testing.T) {
	db := pgtest.New(t)
	l := listen(t, db.OwnerURL)
	n := notifier(t, pgtest.Pool(t, db.AppURL))
	run(t, n)

	start := time.Now()
	for range 100 {
		n.Notify()
	}
	burst := time.Since(start)
	got := l.count(5*time.Second, 300*time.Millisecond)
	// Leading edge, trailing edge, and one more per window the burst
	// itself lasted (a loaded machine can stretch it).
	most := 2 + int(burst/outbox.DefaultNotifyWindow)
	if got < 1 || got > most {
		t.Fatalf("100 requests in %v gave %d notifications, want 1 to %d", burst, got, most)
	}
	eventually(t, 5*time.Second, func() string { return fmt.Sprintf("stats %+v, %d received", n.Stats(), got) },
		func() bool { s := n.Stats(); return s.Sent == uint64(got) && s.Failed == 0 })

	n.Notify()
	if again := l.count(5*time.Second, 300*time.Millisecond); again != 1 {
		t.Errorf("a lone request after the burst gave %d notifications, want 1", again)
	}
	t.Logf("burst of 100 in %v: %d notifications", burst, got)
}

// A notify that fails (the database refuses connections) is counted and
// logged, and Run goes on: the next request is sent once the database is
// back.
func TestNotifierSurvivesAFailedNotify(t *testing.T) {
	db := pgtest.New(t)
	l := listen(t, db.OwnerURL)
	// The notifier's pool has no connection yet: its first notify must
	// connect, and that is what the database refuses.
	n := notifier(t, pgtest.Pool(t, db.AppURL))
	run(t, n)

	admin := pgtest.Pool(t, pgtest.AdminURL())
	allow := func(yes bool) {
		t.Helper()
		if _, err := admin.Exec(context.Background(),
			fmt.Sprintf("ALTER DATABASE %s WITH ALLOW_CONNECTIONS %t", pgx.Identifier{db.Name}.Sanitize(), yes)); err != nil {
			t.Fatal(err)
		}
	}
	allow(false)
	t.Cleanup(func() { allow(true) })

	n.Notify()
	eventually(t, 10*time.Second, func() string { return fmt.Sprintf("stats %+v", n.Stats()) },
		func() bool { return n.Stats().Failed >= 1 })
	if s := n.Stats(); s.Sent != 0 {
		t.Fatalf("stats %+v: sent while the database refused connections", s)
	}

	allow(true)
	n.Notify()
	if got := l.count(10*time.Second, 300*time.Millisecond); got != 1 {
		t.Fatalf("after the database came back: %d notifications, want 1; stats %+v", got, n.Stats())
	}
	if s := n.Stats(); s.Sent != 1 {
		t.Errorf("stats %+v, want 1 sent", s)
	}
}

// A commit that writes outbox rows notifies no one by itself (migration
// 0002 dropped the trigger whose notify serialised every write); the
// listener does hear a Notifier, so the silence is not a deaf listener.
func TestCommitDoesNotNotify(t *testing.T) {
	e := newEnv(t)
	l := listen(t, e.db.OwnerURL)
	ctx := context.Background()
	in, err := e.create(ctx, tenants[0], "silent")
	if err != nil {
		t.Fatal(err)
	}
	if err := e.update(ctx, in); err != nil {
		t.Fatal(err)
	}
	if got := l.count(500*time.Millisecond, 0); got != 0 {
		t.Fatalf("%d notifications from two commits with outbox rows, want none", got)
	}
	n := notifier(t, e.app)
	run(t, n)
	n.Notify()
	if got := l.count(5*time.Second, 300*time.Millisecond); got != 1 {
		t.Fatalf("%d notifications from the Notifier, want 1", got)
	}
}
