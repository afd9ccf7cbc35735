package annotation

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"

	"inthub.dev/services/internal/probe"
)

type metrics struct {
	total        *prometheus.CounterVec
	duration     *prometheus.HistogramVec
	fallbacks    *prometheus.CounterVec
	deferred     *prometheus.CounterVec
	writes       *prometheus.CounterVec
	reads        *prometheus.CounterVec
	spoolDropped prometheus.Counter
}

func (m *metrics) register(reg prometheus.Registerer) error {
	m.total = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "scm_annotation_total",
		Help: "Annotation requests by provider, operation and what became of them (completed, retry, dead_lettered, spooled).",
	}, []string{"provider", "operation", "status"})
	m.duration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "scm_annotation_duration_seconds",
		Help:    "Time to post a completed annotation request, by provider and operation.",
		Buckets: prometheus.DefBuckets,
	}, []string{"provider", "operation"})
	m.fallbacks = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "scm_annotation_fallback_total",
		Help: "Requests posted in a cheaper form because the write budget was short, by provider and form (summary, comment).",
	}, []string{"provider", "level"})
	m.deferred = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "scm_annotation_deferred_total",
		Help: "Deliveries deferred to a reserved write slot (budget short or provider penalty), by provider.",
	}, []string{"provider"})
	m.writes = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "scm_annotation_api_writes_total", Help: "Write calls to the provider's API.",
	}, []string{"provider"})
	m.reads = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "scm_annotation_api_reads_total", Help: "Read calls (lookups) to the provider's API.",
	}, []string{"provider"})
	m.spoolDropped = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "scm_annotation_spool_superseded_total",
		Help: "Spooled requests dropped at drain because a newer one for the same target superseded them.",
	})
	for _, c := range []prometheus.Collector{m.total, m.duration, m.fallbacks, m.deferred, m.writes, m.reads, m.spoolDropped} {
		if err := reg.Register(c); err != nil {
			return err
		}
	}
	return nil
}

func (s *Service) handler() http.Handler {
	return probe.Mux(s.reg,
		probe.NATS(s.nc),
		probe.Closed("consumer", s.ready, "integrations not loaded or consumer not running yet"),
	)
}
