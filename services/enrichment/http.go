package enrichment

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"

	"inthub.dev/services/internal/probe"
)

func (s *Service) opsHandler() http.Handler {
	// The ingress still accepts into the spool while NATS is away; the
	// nats check makes that visible to operators.
	postgres := probe.Check{Name: "postgres", Func: func(r *http.Request) (string, bool) {
		st := s.store.Load()
		if st == nil {
			return "not connected yet", false
		}
		if err := st.Ping(r.Context()); err != nil {
			return "unreachable", false
		}
		return "", true
	}}
	return probe.Mux(s.reg,
		probe.NATS(s.nc),
		probe.Closed("started", s.ready, "integrations, workers or index not ready yet"),
		postgres,
	)
}

type statsCollector struct {
	s                *Service
	spool, integrats *prometheus.Desc
}

func (s *Service) collector() prometheus.Collector {
	return &statsCollector{s: s,
		spool:     prometheus.NewDesc("enrichment_spool_depth", "Events waiting in the local spool for NATS.", nil, nil),
		integrats: prometheus.NewDesc("enrichment_integrations", "Integrations known to the ingress (from the INTEGRATIONS_STATE bucket).", nil, nil),
	}
}

func (c *statsCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.spool; ch <- c.integrats }

func (c *statsCollector) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(c.spool, prometheus.GaugeValue, float64(c.s.Spooled()))
	ch <- prometheus.MustNewConstMetric(c.integrats, prometheus.GaugeValue, float64(c.s.set.Len()))
}
