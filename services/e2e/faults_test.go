package e2e_test

import (
	"context"
	"os"
	"sync"
	"testing"
	"time"

	"inthub.dev/pkg/connectors/github/githubtest"
)

// Load of every fault phase: annotation requests per second for loadFor,
// the fault injected faultAt after the start, and two workers changing
// integrations through the API meanwhile.
const (
	loadRate      = 15.0
	loadFor       = 6 * time.Second
	faultAt       = 1500 * time.Millisecond
	changeWorkers = 2
)

// faultFleet is a fleet with a subscriber and a GitHub integration for
// the load of fault phases.
type faultFleet struct {
	*fleet
	sig *signals
	gh  integration
}

func startFaultFleet(t *testing.T) *faultFleet {
	t.Helper()
	f := startFleet(t, fleetOptions{})
	ff := &faultFleet{fleet: f, sig: f.subscribe("e2e-faults"), gh: f.githubIntegration("faults-github", "")}
	f.warmUp(t, ff.gh, endPosted)
	return ff
}

// phase runs the load, injects the fault faultAt into it (inject may
// block: the load goes on meanwhile), waits until every accepted request
// and change has settled and checks them: each request posted once, in
// the DLQ once or in the spool once; each integration change announced
// once, in order. Every process must be up at the end.
func (ff *faultFleet) phase(t *testing.T, name string, settleFor time.Duration, inject func(t *testing.T)) {
	f := ff.fleet.with(t)
	// An offline integration of the phase's own: its breaker counts only
	// this phase's requests.
	offline := f.githubIntegration("offline-"+name, "offline")
	f.warmUp(t, offline, endSpool)

	start := time.Now()
	al := &annotationLoad{f: f, phase: name, github: ff.gh.ID, offline: offline.ID}
	// At most ten lifecycles a second per worker: load, not a flood that
	// would starve the other processes on a small CI machine.
	cl := &changeLoad{f: f, phase: name, pace: 100 * time.Millisecond}
	ctx, cancel := context.WithTimeout(f.ctx, loadFor)
	defer cancel()
	var wg sync.WaitGroup
	var loadErr error
	wg.Go(func() { loadErr = al.run(ctx, loadRate) })
	wg.Go(func() { cl.run(ctx, changeWorkers) })
	select {
	case <-time.After(faultAt):
		inject(t)
	case <-ctx.Done():
	}
	wg.Wait()
	if loadErr != nil {
		t.Fatalf("load: %v", loadErr)
	}
	loaded := time.Since(start)
	reqs := al.requests()
	_, summary := f.settle(t, reqs, settleFor)
	settled := time.Since(start)
	lcs, errs := cl.lifecycles()
	for _, e := range errs {
		t.Errorf("integration change not accepted: %s", e)
	}
	checkLifecycles(t, ff.sig, lcs, 60*time.Second)
	t.Logf("%s; %d integrations created, renamed and deleted; load done at %v, requests settled at %v, changes at %v",
		summary, len(lcs), loaded.Round(100*time.Millisecond), settled.Round(100*time.Millisecond),
		time.Since(start).Round(100*time.Millisecond))
	if os.Getenv("E2E_LOGS") != "" {
		for _, p := range []*process{f.catalog, f.poller, f.annotation} {
			t.Logf("%s:\n%s", p.name, p.tail(60))
		}
	}
	for _, p := range []*process{f.catalog, f.poller, f.annotation} {
		if !p.running() {
			t.Fatalf("%s is down: %v\n%s", p.name, p.exit(), p.tail(30))
		}
	}
}

// TestFaults injects, under load and one after the other in one fleet:
// kill -9 of the annotation worker (at the worst moment, three times),
// kill -9 of the catalog, a NATS restart, and every PostgreSQL connection
// cut (twice). After each, the requests and changes of the phase are
// counted on the fake GitHub and on the streams.
func TestFaults(t *testing.T) {
	t.Parallel()
	ff := startFaultFleet(t)
	f := ff.fleet
	t.Run("KillAnnotationWorker", func(t *testing.T) {
		ff.phase(t, "KillAnnotationWorker", 90*time.Second, func(t *testing.T) {
			// Three crashes, each right after GitHub carried out a write
			// and before the worker saw the answer or acked the request:
			// the request comes back, and only finding what it posted
			// keeps the effect single.
			for _, route := range []githubtest.Route{githubtest.RouteCreateComment, githubtest.RouteCreateStatus,
				githubtest.RouteCreateCheckRun} {
				select {
				case err := <-f.ghProxy.arm(f.annotation.sigkill, route):
					if err != nil {
						t.Fatalf("kill after %s: %v", route, err)
					}
				case <-time.After(10 * time.Second):
					t.Fatalf("no %s within 10s to crash the worker on", route)
				}
				f.annotation.restart(t, 60*time.Second)
			}
		})
	})
	t.Run("KillCatalog", func(t *testing.T) {
		ff.phase(t, "KillCatalog", 90*time.Second, func(t *testing.T) {
			f.catalog.kill(t)
			<-time.After(time.Second) // down for a second while the changes are retried
			f.catalog.restart(t, 60*time.Second)
		})
	})
	t.Run("RestartNATS", func(t *testing.T) {
		ff.phase(t, "RestartNATS", 90*time.Second, func(t *testing.T) {
			f.nats.Stop()
			<-time.After(2 * time.Second) // down for two seconds
			if err := f.nats.Start(); err != nil {
				t.Fatalf("NATS restart: %v", err)
			}
		})
	})
	t.Run("CutPostgres", func(t *testing.T) {
		ff.phase(t, "CutPostgres", 90*time.Second, func(t *testing.T) {
			n := f.cutPostgres()
			<-time.After(time.Second)
			n += f.cutPostgres()
			if n == 0 {
				t.Errorf("no PostgreSQL connection to cut: is the catalog connected?")
			}
			t.Logf("%d PostgreSQL connections terminated", n)
		})
	})
}

// TestFlakyGitHub: a fifth of GitHub's answers fail — 5xx on most routes,
// 429 and the secondary rate limit (403 with Retry-After) on some writes
// — for the whole load; then GitHub recovers, and every request must end
// once. Redelivery backs off exponentially (1s, 2s, 4s, ...: a request
// unlucky several times settles late, and deferrals behind a provider's
// Retry-After grow the same way), so this runs in a fleet of its own, in
// parallel with the other tests.
func TestFlakyGitHub(t *testing.T) {
	t.Parallel()
	ff := startFaultFleet(t)
	gh := ff.fleet.gh
	for _, r := range []githubtest.Route{githubtest.RouteAccessTokens, githubtest.RouteListComments,
		githubtest.RouteListCheckRuns, githubtest.RouteListAnnotations} {
		gh.FailRandomly(r, 0.2, githubtest.ServerError(503))
	}
	gh.FailRandomly(githubtest.RouteCreateComment, 0.2, githubtest.ServerError(502))
	gh.FailRandomly(githubtest.RouteEditComment, 0.2, githubtest.ServerError(500))
	gh.FailRandomly(githubtest.RouteCreateStatus, 0.2, githubtest.TooManyRequests(time.Second))
	gh.FailRandomly(githubtest.RouteCreateCheckRun, 0.2, githubtest.SecondaryLimit(time.Second))
	gh.FailRandomly(githubtest.RouteUpdateCheckRun, 0.2, githubtest.ServerError(502))
	defer gh.Clear()
	var failedCalls int
	ff.phase(t, "FlakyGitHub", 150*time.Second, func(*testing.T) {
		<-time.After(loadFor - faultAt) // failing until the load ends
		for _, r := range []githubtest.Route{githubtest.RouteCreateComment, githubtest.RouteCreateStatus, githubtest.RouteCreateCheckRun} {
			failedCalls += gh.Requests(r) - gh.Writes(r)
		}
		gh.Clear()
	})
	if failedCalls == 0 {
		t.Errorf("no write failed: the faults were not injected")
	}
	t.Logf("%d create calls failed during the load", failedCalls)
}
