package correlate_test

import (
	"context"
	"net/url"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/goleak"

	"inthub.dev/pkg/pgtest"
	"inthub.dev/services/enrichment/correlate"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"))
}

// db is a fresh database with the catalog's and the index's migrations,
// and the URL of the service's role.
type db struct {
	*pgtest.DB
	EnrichmentURL string
}

func newDB(t *testing.T) db {
	t.Helper()
	d := pgtest.New(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, d.OwnerURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	applied, err := correlate.Migrate(ctx, conn)
	if err != nil {
		t.Fatal(err)
	}
	if len(applied) == 0 {
		t.Fatal("no migration applied to a fresh database")
	}
	if again, err := correlate.Migrate(ctx, conn); err != nil || len(again) != 0 {
		t.Fatalf("second Migrate applied %v (%v)", again, err)
	}
	u, err := url.Parse(d.OwnerURL)
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.User(correlate.AppRole)
	return db{DB: d, EnrichmentURL: u.String()}
}

func newStore(t *testing.T) (*correlate.Store, db) {
	t.Helper()
	d := newDB(t)
	s, err := correlate.NewStore(pgtest.Pool(t, d.EnrichmentURL))
	if err != nil {
		t.Fatal(err)
	}
	return s, d
}
