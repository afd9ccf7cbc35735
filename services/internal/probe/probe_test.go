package probe_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"inthub.dev/services/internal/probe"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func get(t *testing.T, h http.Handler, path string) (int, probe.Body, http.Header) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
	var b probe.Body
	if rec.Code != http.StatusOK || path != "/metrics" {
		if err := json.Unmarshal(rec.Body.Bytes(), &b); err != nil {
			t.Fatalf("%s: body %q: %v", path, rec.Body, err)
		}
	}
	return rec.Code, b, rec.Header()
}

func TestReadyzReportsEveryCheck(t *testing.T) {
	started := make(chan struct{})
	reg := prometheus.NewRegistry()
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "probe_test_total", Help: "x"})
	reg.MustRegister(c)
	h := probe.Mux(reg,
		probe.Closed("started", started, "not started yet"),
		probe.Check{Name: "partitions", Func: func(*http.Request) (string, bool) { return "3 of 64 held", true }},
	)

	code, b, hdr := get(t, h, "/healthz")
	if code != http.StatusOK || b.Status != "ok" {
		t.Errorf("/healthz = %d %+v, want 200 ok", code, b)
	}
	if hdr.Get("Cache-Control") != "no-store" {
		t.Errorf("/healthz Cache-Control = %q", hdr.Get("Cache-Control"))
	}

	code, b, _ = get(t, h, "/readyz")
	if code != http.StatusServiceUnavailable || b.Status != "unavailable" || b.Checks["started"] != "not started yet" ||
		b.Checks["partitions"] != "3 of 64 held" {
		t.Errorf("/readyz before start = %d %+v", code, b)
	}

	close(started)
	code, b, _ = get(t, h, "/readyz")
	if code != http.StatusOK || b.Status != "ok" || b.Checks["started"] != "ok" {
		t.Errorf("/readyz after start = %d %+v", code, b)
	}

	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), "probe_test_total 0") {
		t.Errorf("/metrics = %d %q", rec.Code, rec.Body)
	}
}
