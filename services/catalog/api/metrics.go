package api

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
)

// metrics are the API's collectors. Names follow the seed
// (integration_crud_total) and Prometheus' conventions.
type metrics struct {
	crud     *prometheus.CounterVec
	duration *prometheus.HistogramVec
}

func newMetrics(reg *prometheus.Registry) (*metrics, error) {
	m := &metrics{
		crud: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "integration_crud_total",
			Help: "Catalog API operations on integrations and connection profiles that succeeded, by action.",
		}, []string{"action"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "catalog_http_request_duration_seconds",
			Help:    "Latency of the catalog's HTTP requests, by method, route pattern and status code.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}, []string{"method", "route", "code"}),
	}
	for _, c := range []prometheus.Collector{m.crud, m.duration} {
		if err := reg.Register(c); err != nil {
			var are prometheus.AlreadyRegisteredError
			if errors.As(err, &are) {
				return nil, errors.New("catalog api: metrics already registered in Deps.Metrics: give each API its own registry")
			}
			return nil, err
		}
	}
	return m, nil
}

func (m *metrics) handler(reg *prometheus.Registry) http.Handler {
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg})
}

type routeKey struct{}

// instrument records every request's latency. The route label is the
// ServeMux pattern that matched, never the raw path: ids in paths would
// make one series per integration. The mux stores the pattern in the
// request it is given, which middleware in between may have copied, so
// captureRoute (inside them) hands it back through the context.
func (m *metrics) instrument(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w}
		route := new(string)
		next.ServeHTTP(sw, r.WithContext(context.WithValue(r.Context(), routeKey{}, route)))
		label := *route
		if label == "" {
			label = "unmatched"
		}
		m.duration.WithLabelValues(r.Method, label, strconv.Itoa(sw.code())).Observe(time.Since(start).Seconds())
	})
}

// captureRoute wraps the mux; see instrument.
func captureRoute(mux http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mux.ServeHTTP(w, r)
		if route, ok := r.Context().Value(routeKey{}).(*string); ok {
			*route = r.Pattern
		}
		// The server span (if the catalog traces) is named by the route,
		// not the path: one name per operation, whatever the ids.
		if span := trace.SpanFromContext(r.Context()); r.Pattern != "" && span.IsRecording() {
			span.SetName(r.Pattern)
			if _, path, ok := strings.Cut(r.Pattern, " "); ok {
				span.SetAttributes(attribute.String("http.route", path))
			}
		}
	})
}

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) code() int {
	if w.status == 0 {
		return http.StatusOK
	}
	return w.status
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
