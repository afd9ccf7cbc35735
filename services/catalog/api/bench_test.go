package api

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
)

// The catalog API's numbers of docs/benchmarks.md ("Catalog API"):
//
//	cd services && go test -run '^$' -bench . -benchtime 2000x -count 3 ./catalog/api/
//
// Each benchmark seeds one database with benchTenants tenants of
// benchPerTenant live integrations each, then measures one tenant's
// requests through the real HTTP stack (httptest server, JWT verification,
// huma, store, RLS transaction). Two sub-benchmarks share the seed:
//   - seq: one client, one request at a time: the service's own latency;
//   - conc8: 8 concurrent clients (b.RunParallel): throughput, and the
//     latency that includes queueing for the 2 CPUs and the pool's
//     connections.
//
// Every request's wall time is kept; p50-ms and p99-ms are reported with
// ops/s. Seeding happens only here, so `go test ./catalog/api/` (which runs
// no benchmark) does not pay for it.

const (
	benchTenants   = 10
	benchPerTenant = 10_000
	// benchClients is the concurrency of the conc8 sub-benchmarks.
	benchClients = 8
	// Every harborEvery-th seeded integration is a Harbor one, the rest
	// in-memory: ListByType pages through a quarter of the tenant.
	harborEvery = 4
)

// benchEnv is a seeded catalog API and the tenant whose requests are
// measured.
type benchEnv struct {
	*env
	c      caller
	client *http.Client
	ids    []string // the tenant's seeded integration ids
}

func newBenchEnv(b *testing.B) *benchEnv {
	b.Helper()
	e := newEnv(b)
	ctx := context.Background()
	tenants := make([]string, benchTenants)
	start := time.Now()
	for i := range tenants {
		tenants[i] = uuid.NewString()
		// One statement per tenant, as the table owner (no RLS), with
		// distinct created_at values a second apart like real arrivals.
		_, err := e.owner.Exec(ctx, `
			INSERT INTO integrations (tenant_id, type, name, config, auth_ref, created_at, updated_at, created_by)
			SELECT $1::uuid,
			       CASE WHEN g % $4 = 0 THEN $3 ELSE $2 END,
			       'seed-' || g,
			       CASE WHEN g % $4 = 0
			            THEN jsonb_build_object('endpoint', 'https://harbor.example.com', 'username', 'robot$ci-' || g,
			                                    'password', 'authref://vault/secret/data/harbor#password')
			            ELSE jsonb_build_object('healthy', true, 'token', 'authref://env/MEM_TOKEN') END,
			       CASE WHEN g % $4 = 0 THEN 'authref://vault/secret/data/harbor#robot' END,
			       ts, ts, 'user-seed'
			FROM generate_series(1, $5::int) g,
			     LATERAL (SELECT now() - make_interval(secs => $5::int - g) AS ts) t`,
			tenants[i], typeMem, typeHarbor, harborEvery, benchPerTenant)
		if err != nil {
			b.Fatalf("seed tenant %d: %v", i, err)
		}
	}
	// What autovacuum would have done on a table this size: statistics for
	// the planner, and hint bits and the visibility map set.
	if _, err := e.owner.Exec(ctx, "VACUUM (ANALYZE) integrations"); err != nil {
		b.Fatalf("vacuum analyze: %v", err)
	}
	// The measured tenant is one in the middle, not the first inserted.
	tenant := tenants[benchTenants/2]
	rows, err := e.owner.Query(ctx, `SELECT id::text FROM integrations WHERE tenant_id = $1 AND deleted_at IS NULL`, tenant)
	if err != nil {
		b.Fatal(err)
	}
	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			b.Fatal(err)
		}
		ids = append(ids, id)
	}
	if err := rows.Err(); err != nil {
		b.Fatal(err)
	}
	if len(ids) != benchPerTenant {
		b.Fatalf("seeded %d integrations in the tenant, want %d", len(ids), benchPerTenant)
	}
	b.Logf("seeded %d tenants × %d integrations in %v", benchTenants, benchPerTenant, time.Since(start).Round(time.Millisecond))

	// http.DefaultTransport keeps 2 idle connections per host: 8 clients
	// would then dial a new connection for most requests and measure that.
	tr := &http.Transport{MaxIdleConns: 2 * benchClients, MaxIdleConnsPerHost: 2 * benchClients, IdleConnTimeout: time.Minute}
	b.Cleanup(tr.CloseIdleConnections)
	return &benchEnv{env: e, c: e.caller(tenant), client: &http.Client{Transport: tr, Timeout: 30 * time.Second}, ids: ids}
}

// request sends one request as the tenant and returns the status and body;
// it is safe for concurrent use.
func (be *benchEnv) request(method, path string, body []byte) (int, []byte, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(context.Background(), method, be.http.URL+path, rd)
	if err != nil {
		return 0, nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Authorization", "Bearer "+be.c.token)
	res, err := be.client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	return res.StatusCode, b, err
}

// cursors walks every page of a listing once and returns the cursor of
// each page ("" for the first), so that a benchmark can start at any depth.
func (be *benchEnv) cursors(b *testing.B, path string, want int) []string {
	b.Helper()
	cursors := []string{""}
	seen := 0
	for cur := ""; ; {
		p := path + "?limit=50"
		if cur != "" {
			p += "&cursor=" + cur
		}
		status, body, err := be.request(http.MethodGet, p, nil)
		if err != nil || status != http.StatusOK {
			b.Fatalf("GET %s: %d %s %v", p, status, body, err)
		}
		var page IntegrationList
		if err := json.Unmarshal(body, &page); err != nil {
			b.Fatal(err)
		}
		seen += len(page.Items)
		if page.NextCursor == "" {
			break
		}
		cur = page.NextCursor
		cursors = append(cursors, cur)
	}
	if seen != want {
		b.Fatalf("walked %d integrations in %s, want %d", seen, path, want)
	}
	return cursors
}

// op is one measured request; it returns an error for a wrong answer.
type op func(rng *rand.Rand) error

// measure runs the seq and conc8 sub-benchmarks of newOp, which is called
// once per run to prepare what the requests need (outside the clock).
func measure(b *testing.B, newOp func(b *testing.B) op) {
	b.Run("seq", func(b *testing.B) {
		do := newOp(b)
		rng := rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))
		var lat []time.Duration
		start := time.Now()
		for b.Loop() {
			t0 := time.Now()
			if err := do(rng); err != nil {
				b.Fatal(err)
			}
			lat = append(lat, time.Since(t0))
		}
		report(b, lat, time.Since(start))
	})
	b.Run(fmt.Sprintf("conc%d", benchClients), func(b *testing.B) {
		do := newOp(b)
		// RunParallel starts parallelism × GOMAXPROCS goroutines.
		b.SetParallelism(max(1, int(math.Ceil(float64(benchClients)/float64(runtime.GOMAXPROCS(0))))))
		var (
			mu    sync.Mutex
			lat   = make([]time.Duration, 0, b.N)
			fails atomic.Int64
		)
		b.ResetTimer()
		start := time.Now()
		b.RunParallel(func(pb *testing.PB) {
			rng := rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))
			var mine []time.Duration
			for pb.Next() {
				t0 := time.Now()
				if err := do(rng); err != nil {
					if fails.Add(1) <= 3 {
						b.Error(err)
					}
					continue
				}
				mine = append(mine, time.Since(t0))
			}
			mu.Lock()
			lat = append(lat, mine...)
			mu.Unlock()
		})
		elapsed := time.Since(start)
		b.StopTimer()
		if n := fails.Load(); n > 0 {
			b.Fatalf("%d of %d requests failed", n, b.N)
		}
		report(b, lat, elapsed)
	})
}

// report adds the latency percentiles (nearest rank) and the throughput.
func report(b *testing.B, lat []time.Duration, elapsed time.Duration) {
	if len(lat) == 0 {
		return
	}
	slices.Sort(lat)
	pct := func(p float64) float64 {
		i := int(math.Ceil(p*float64(len(lat)))) - 1
		return float64(lat[max(i, 0)]) / float64(time.Millisecond)
	}
	b.ReportMetric(pct(0.50), "p50-ms")
	b.ReportMetric(pct(0.99), "p99-ms")
	b.ReportMetric(float64(len(lat))/elapsed.Seconds(), "ops/s")
}

// BenchmarkCreate posts integrations with unique names (no
// Idempotency-Key): config check, insert, audit row and outbox row in one
// transaction. The tenant grows past its 10,000 during the run.
func BenchmarkCreate(b *testing.B) {
	be := newBenchEnv(b)
	var n atomic.Int64
	run := uuid.NewString()[:8]
	measure(b, func(b *testing.B) op {
		return func(*rand.Rand) error {
			body, err := json.Marshal(memInput(fmt.Sprintf("bench-%s-%d", run, n.Add(1))))
			if err != nil {
				return err
			}
			status, res, err := be.request(http.MethodPost, "/api/v1/integrations", body)
			if err != nil {
				return err
			}
			if status != http.StatusCreated {
				return fmt.Errorf("POST: %d %s", status, res)
			}
			return nil
		}
	})
}

// BenchmarkGet reads integrations at random among the tenant's 10,000.
func BenchmarkGet(b *testing.B) {
	be := newBenchEnv(b)
	measure(b, func(b *testing.B) op {
		return func(rng *rand.Rand) error {
			id := be.ids[rng.IntN(len(be.ids))]
			status, res, err := be.request(http.MethodGet, "/api/v1/integrations/"+id, nil)
			if err != nil {
				return err
			}
			if status != http.StatusOK {
				return fmt.Errorf("GET %s: %d %s", id, status, res)
			}
			return nil
		}
	})
}

// BenchmarkListPage reads pages of 50 at random depths of the tenant's
// listing (200 pages), by cursors taken in one walk beforehand.
func BenchmarkListPage(b *testing.B) {
	be := newBenchEnv(b)
	const path = "/api/v1/integrations"
	cursors := be.cursors(b, path, benchPerTenant)
	measure(b, listOp(be, path, cursors))
}

// BenchmarkListByType is BenchmarkListPage through
// /integrations/by-type/{type}, for the type of a quarter of the tenant's
// integrations (50 pages).
func BenchmarkListByType(b *testing.B) {
	be := newBenchEnv(b)
	path := "/api/v1/integrations/by-type/" + typeHarbor
	cursors := be.cursors(b, path, benchPerTenant/harborEvery)
	measure(b, listOp(be, path, cursors))
}

func listOp(be *benchEnv, path string, cursors []string) func(*testing.B) op {
	return func(*testing.B) op {
		return func(rng *rand.Rand) error {
			i := rng.IntN(len(cursors))
			p := path + "?limit=50"
			if cursors[i] != "" {
				p += "&cursor=" + cursors[i]
			}
			status, res, err := be.request(http.MethodGet, p, nil)
			if err != nil {
				return err
			}
			if status != http.StatusOK {
				return fmt.Errorf("GET %s (page %d): %d %s", p, i, status, res)
			}
			return nil
		}
	}
}
