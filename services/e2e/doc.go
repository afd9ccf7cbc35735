// Package e2e runs the fleet the way it is deployed: the catalog, the
// health-poller, the annotation worker and (for the data journey) the
// enrichment service as separate processes, built from
// services/cmd once per test run, against a fresh PostgreSQL database and an
// embedded NATS server that the tests stop and restart, with fake GitHub and
// GitLab servers as the providers. Its tests walk the journeys of the teams
// that use inthub (Scanner, Scheduler/Signals, ops) and inject faults under
// load (kill -9 of a worker or of the catalog, a NATS restart, PostgreSQL
// connections cut, a provider failing a fifth of its calls), then count on
// the fake and on the streams that every accepted request ended exactly once:
// posted, dead-lettered or spooled.
//
// BenchmarkFleet (make bench-e2e) drives a load through the same fleet and
// reports throughput and latency.
//
// Everything lives in _test.go files: nothing here is a library.
package e2e
