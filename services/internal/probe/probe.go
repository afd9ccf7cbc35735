// Package probe serves the operational endpoints every worker of the fleet
// has: /healthz (the process runs), /readyz (it can do its work, with the
// reason when it cannot) and /metrics. The catalog has its own, inside its
// API, because there they go through huma and the auth middleware.
package probe

import (
	"encoding/json"
	"net/http"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Check is one readiness condition. Func returns what to show for it
// ("" shows "ok") and whether it holds; it runs on every /readyz request,
// so it must be cheap and bounded by the request's context.
type Check struct {
	Name string
	Func func(r *http.Request) (detail string, ok bool)
}

// NATS holds while the connection is connected; a reconnecting worker is
// not ready, which is what an operator looking at a rollout wants to see.
func NATS(nc *nats.Conn) Check {
	return Check{Name: "nats", Func: func(*http.Request) (string, bool) {
		if st := nc.Status(); st != nats.CONNECTED {
			return st.String(), false
		}
		return "", true
	}}
}

// Closed holds once ch is closed; until then it shows waiting.
func Closed(name string, ch <-chan struct{}, waiting string) Check {
	return Check{Name: name, Func: func(*http.Request) (string, bool) {
		select {
		case <-ch:
			return "", true
		default:
			return waiting, false
		}
	}}
}

// Body is the JSON answer of /healthz and /readyz.
type Body struct {
	Status string            `json:"status"`
	Checks map[string]string `json:"checks,omitempty"`
}

// Mux returns a mux serving /healthz, /readyz with checks, and /metrics
// from reg. Callers may add routes of their own to it.
func Mux(reg *prometheus.Registry, checks ...Check) *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		write(w, http.StatusOK, Body{Status: "ok"})
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		b := Body{Status: "ok", Checks: make(map[string]string, len(checks))}
		code := http.StatusOK
		for _, c := range checks {
			detail, ok := c.Func(r)
			if detail == "" {
				detail = "ok"
			}
			b.Checks[c.Name] = detail
			if !ok {
				code, b.Status = http.StatusServiceUnavailable, "unavailable"
			}
		}
		write(w, code, b)
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	return mux
}

func write(w http.ResponseWriter, code int, b Body) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(b)
}
