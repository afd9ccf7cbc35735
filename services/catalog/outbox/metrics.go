package outbox

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Collector exports the forwarder's counters and the outbox's backlog: the
// rows committed and not yet published, and the age of the oldest. The
// backlog is read from the table at scrape time (one indexed count), so it
// is the same on every replica and right after a restart.
func (f *Forwarder) Collector() prometheus.Collector {
	d := func(name, help string) *prometheus.Desc { return prometheus.NewDesc(name, help, nil, nil) }
	return &collector{f: f,
		published:    d("catalog_outbox_published_total", "Outbox rows published to JetStream and deleted by this replica."),
		deadLettered: d("catalog_outbox_dead_lettered_total", "Outbox rows JetStream refused for good, written to the DLQ and deleted."),
		errs:         d("catalog_outbox_errors_total", "Failed partition transactions (bus or database down)."),
		lag:          d("catalog_outbox_lag_seconds", "For the newest published row, time from its INSERT to its JetStream ack."),
		pending:      d("catalog_outbox_pending_rows", "Rows committed and not yet published (all replicas)."),
		oldest:       d("catalog_outbox_oldest_pending_seconds", "Age of the oldest row not yet published; 0 when none."),
		scrapeErrs:   d("catalog_outbox_scrape_errors", "1 when this scrape could not read the backlog from PostgreSQL."),
	}
}

type collector struct {
	f                                                               *Forwarder
	published, deadLettered, errs, lag, pending, oldest, scrapeErrs *prometheus.Desc
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.published, c.deadLettered, c.errs, c.lag, c.pending, c.oldest, c.scrapeErrs} {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	st := c.f.Stats()
	ch <- prometheus.MustNewConstMetric(c.published, prometheus.CounterValue, float64(st.Published))
	ch <- prometheus.MustNewConstMetric(c.deadLettered, prometheus.CounterValue, float64(st.DeadLettered))
	ch <- prometheus.MustNewConstMetric(c.errs, prometheus.CounterValue, float64(st.Errors))
	ch <- prometheus.MustNewConstMetric(c.lag, prometheus.GaugeValue, st.Lag.Seconds())

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	var n int64
	var age float64
	err := c.f.cfg.Pool.QueryRow(ctx, `SELECT count(*), COALESCE(EXTRACT(EPOCH FROM clock_timestamp() - min(created_at)), 0)::float8 FROM outbox`).Scan(&n, &age)
	failed := 0.0
	if err != nil {
		failed = 1
	} else {
		ch <- prometheus.MustNewConstMetric(c.pending, prometheus.GaugeValue, float64(n))
		ch <- prometheus.MustNewConstMetric(c.oldest, prometheus.GaugeValue, age)
	}
	ch <- prometheus.MustNewConstMetric(c.scrapeErrs, prometheus.GaugeValue, failed)
}
