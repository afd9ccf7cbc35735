package enrichment

import (
	"encoding/json"
	"net/http"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

type probe struct {
	Status string            `json:"status"`
	Checks map[string]string `json:"checks,omitempty"`
}

func (s *Service) opsHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeProbe(w, http.StatusOK, probe{Status: "ok"})
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		checks := map[string]string{"nats": "ok", "started": "ok"}
		ok := true
		if st := s.nc.Status(); st != nats.CONNECTED {
			// The ingress still accepts into the spool; readiness says
			// the bus is away so operators see it.
			checks["nats"] = st.String()
			ok = false
		}
		select {
		case <-s.ready:
		default:
			checks["started"] = "integrations, workers or index not ready yet"
			ok = false
		}
		if st := s.store.Load(); st != nil {
			if err := st.Ping(r.Context()); err != nil {
				checks["postgres"] = "unreachable"
				ok = false
			} else {
				checks["postgres"] = "ok"
			}
		}
		code, status := http.StatusOK, "ok"
		if !ok {
			code, status = http.StatusServiceUnavailable, "unavailable"
		}
		writeProbe(w, code, probe{Status: status, Checks: checks})
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.reg, promhttp.HandlerOpts{Registry: s.reg}))
	return mux
}

func writeProbe(w http.ResponseWriter, code int, p probe) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(p)
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
