package annotation_test

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"inthub.dev/events"
	"inthub.dev/pkg/connectors"
	"inthub.dev/pkg/connectors/github"
	"inthub.dev/pkg/connectors/github/githubtest"
	"inthub.dev/schemas"
	"inthub.dev/services/annotation"
)

// BenchmarkWorkerGitHub drives requests through the worker against fake
// GitHub installations answering after 50 ms, with no rate limit and no
// write budget in the way, and reports requests per second and API calls
// per request. Writes to one installation are serialised (GitHub's rule),
// so throughput grows with the number of installations.
//
//	cd services && go test -run '^$' -bench WorkerGitHub -benchtime 200x ./annotation/
func BenchmarkWorkerGitHub(b *testing.B) {
	for _, bc := range []struct {
		name          string
		installations int
		req           func(id string, i int) events.AnnotationRequested
	}{
		{"status/1-installation", 1, func(id string, i int) events.AnnotationRequested { return status(id, fmt.Sprint("c", i)) }},
		{"status/8-installations", 8, func(id string, i int) events.AnnotationRequested { return status(id, fmt.Sprint("c", i)) }},
		{"sticky-comment/8-installations", 8, func(id string, i int) events.AnnotationRequested {
			return comment(id, 1+i%20, "scan", fmt.Sprint("body ", i))
		}},
		{"check-run-120-annotations/8-installations", 8, func(id string, i int) events.AnnotationRequested {
			r := checkRun(id, 120)
			r.CheckRun.ExternalID = fmt.Sprint("run-", i)
			return r
		}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			e := newEnv(b)
			var ids []string
			var srvs []*githubtest.Server
			byID := map[string]*githubtest.Server{}
			for k := range bc.installations {
				srv := githubtest.New(b, githubtest.Options{InstallationID: int64(100 + k), RateLimit: 1 << 30})
				srv.SetLatency(50 * time.Millisecond)
				id := newID()
				byID[id] = srv
				srvs = append(srvs, srv)
				ids = append(ids, id)
			}
			schema, _ := schemas.ConfigSchema(github.Type)
			e.reg.Register(github.Info(schema), func(cfg connectors.Config) (connectors.Connector, error) {
				cfg.HTTPClient = byID[cfg.IntegrationID].Client()
				return github.New(cfg)
			})
			for _, id := range ids {
				srv := byID[id]
				b.Setenv(fmt.Sprint("BENCH_KEY_", srv.InstallationID()), string(srv.KeyPEM()))
				in := integration(id, tenantA, github.Type, "active")
				in.Config, _ = json.Marshal(map[string]any{"endpoint": srv.Root(), "appId": srv.AppID(),
					"installationId": srv.InstallationID(), "privateKey": fmt.Sprint("authref://env/BENCH_KEY_", srv.InstallationID())})
				e.put(in)
			}
			unlimited := annotation.Budget{PerSecond: 1e6}
			e.start(annotation.Config{Concurrency: 16, AccountBudget: unlimited, HostBudget: unlimited})
			// Warm up: the installation token of each fake.
			for _, id := range ids {
				e.request(tenantA, status(id, "warm-up"))
			}
			eventually(e.t, time.Minute, "warm", func() bool { c, _ := e.results(); return len(c) == len(ids) })
			calls0 := 0
			for _, s := range srvs {
				calls0 += s.Requests(githubtest.RouteAll)
			}
			b.ResetTimer()
			start := time.Now()
			for i := range b.N {
				e.request(tenantA, bc.req(ids[i%len(ids)], i))
			}
			eventually(e.t, 10*time.Minute, "all done", func() bool { c, _ := e.results(); return len(c) == b.N+len(ids) })
			el := time.Since(start)
			b.StopTimer()
			calls := -calls0
			for _, s := range srvs {
				calls += s.Requests(githubtest.RouteAll)
			}
			b.ReportMetric(float64(b.N)/el.Seconds(), "req/s")
			b.ReportMetric(float64(calls)/float64(b.N), "calls/req")
		})
	}
}
