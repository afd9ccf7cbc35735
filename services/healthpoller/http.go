package healthpoller

import (
	"fmt"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"

	"inthub.dev/services/healthpoller/schedule"
	"inthub.dev/services/internal/probe"
)

func (s *Service) handler() http.Handler {
	partitions := probe.Check{Name: "partitions", Func: func(*http.Request) (string, bool) {
		select {
		case <-s.part.Ready():
			ls := s.part.Stats()
			return fmt.Sprintf("%d of %d held, %d replicas", ls.Owned, ls.Partitions, ls.Members), true
		default:
			return "leases not taken yet", false
		}
	}}
	return probe.Mux(s.reg,
		probe.NATS(s.nc),
		probe.Closed("integrations", s.ready, "snapshot not loaded yet"),
		partitions,
	)
}

// statsCollector exports the scheduler's and the spool's state at scrape
// time, so the scheduler keeps no Prometheus types on its hot path.
type statsCollector struct {
	s                                             *Service
	lag, lagMax, targets, inflight, queued, spool *prometheus.Desc
	open, skipped, timeouts, short, reportErrs    *prometheus.Desc
	owned, members, leaseLost                     *prometheus.Desc
	status                                        *prometheus.Desc
}

func (s *Service) collector() prometheus.Collector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(name, help, labels, nil)
	}
	return &statsCollector{
		s:          s,
		lag:        d("integration_health_scheduling_lag_seconds", "Time from a check's due time to its start, over every check since start, by quantile (0.5, 0.99).", "quantile"),
		lagMax:     d("integration_health_scheduling_lag_max_seconds", "Largest scheduling lag since start."),
		targets:    d("integration_health_scheduled", "Integrations on the schedule."),
		inflight:   d("integration_health_checks_in_flight", "Checks running now."),
		queued:     d("integration_health_checks_queued", "Checks due and waiting for a slot."),
		spool:      d("integration_health_spool_depth", "Results waiting in the local spool for NATS."),
		open:       d("integration_health_breakers_open", "Integrations whose circuit breaker is open."),
		skipped:    d("integration_health_checks_skipped_total", "Due checks skipped because the previous one was still running or waiting."),
		timeouts:   d("integration_health_check_timeouts_total", "Checks that ran into their timeout."),
		short:      d("integration_health_short_circuited_total", "Results reported by an open breaker without calling the provider."),
		reportErrs: d("integration_health_report_errors_total", "Results neither published nor spooled."),
		owned:      d("integration_health_partitions_owned", "Partitions of the integrations whose checks this replica holds the lease of."),
		members:    d("integration_health_replicas", "Health-poller replicas seen alive at the last lease round."),
		leaseLost:  d("integration_health_partitions_lost_total", "Leases that expired while this replica could not renew them."),
		status: d("integration_health_status", "Integrations this replica checks, by type, tenant and the status last reported "+
			"(unknown: not checked yet, or the last result is older than twice the interval). Sum over replicas.",
			"type", "tenant", "status"),
	}
}

func (c *statsCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.lag, c.lagMax, c.targets, c.inflight, c.queued, c.spool, c.open, c.skipped, c.timeouts, c.short, c.reportErrs,
		c.owned, c.members, c.leaseLost, c.status} {
		ch <- d
	}
}

func (c *statsCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.s.Stats()
	ss := st.Schedule
	g := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	ctr := func(d *prometheus.Desc, v uint64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v))
	}
	g(c.lag, ss.LagP50.Seconds(), "0.5")
	g(c.lag, ss.LagP99.Seconds(), "0.99")
	g(c.lagMax, ss.LagMax.Seconds())
	g(c.targets, float64(ss.Targets))
	g(c.inflight, float64(ss.InFlight))
	g(c.queued, float64(ss.Queued))
	g(c.spool, float64(st.Spooled))
	g(c.open, float64(ss.BreakersOpen))
	ctr(c.skipped, ss.Skipped)
	ctr(c.timeouts, ss.Timeouts)
	ctr(c.short, ss.ShortCircuited)
	ctr(c.reportErrs, st.PublishErrors)
	g(c.owned, float64(st.Leases.Owned))
	g(c.members, float64(st.Leases.Members))
	ctr(c.leaseLost, st.Leases.Lost)

	c.s.mu.Lock()
	sched := c.s.sched
	c.s.mu.Unlock()
	if sched == nil {
		return
	}
	counts := map[[3]string]int{}
	sched.Statuses(func(t schedule.Target, status string) { counts[[3]string{t.Type, t.TenantID, status}]++ })
	for k, n := range counts {
		g(c.status, float64(n), k[0], k[1], k[2])
	}
}
