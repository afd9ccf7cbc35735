package main

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/protobuf/proto"
)

// otlpSpan is a span as a collector received it.
type otlpSpan struct {
	service, name, trace string
}

// fakeCollector is an OTLP/HTTP receiver that keeps what it is sent; it
// takes protobuf on POST /v1/traces only, as the Collector's receiver.
type fakeCollector struct {
	mu    sync.Mutex
	spans []otlpSpan
}

func (c *fakeCollector) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost || r.URL.Path != "/v1/traces" || r.Header.Get("Content-Type") != "application/x-protobuf" {
		http.Error(w, "not an OTLP/HTTP protobuf export", http.StatusBadRequest)
		return
	}
	body, err := io.ReadAll(r.Body)
	var req coltracepb.ExportTraceServiceRequest
	if err == nil {
		err = proto.Unmarshal(body, &req)
	}
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	c.mu.Lock()
	for _, rs := range req.GetResourceSpans() {
		svc := ""
		for _, a := range rs.GetResource().GetAttributes() {
			if a.GetKey() == "service.name" {
				svc = a.GetValue().GetStringValue()
			}
		}
		for _, ss := range rs.GetScopeSpans() {
			for _, s := range ss.GetSpans() {
				c.spans = append(c.spans, otlpSpan{service: svc, name: s.GetName(), trace: string(s.GetTraceId())})
			}
		}
	}
	c.mu.Unlock()
	out, _ := proto.Marshal(&coltracepb.ExportTraceServiceResponse{})
	w.Header().Set("Content-Type", "application/x-protobuf")
	_, _ = w.Write(out)
}

// traces groups the received spans by trace, as "service name" strings.
func (c *fakeCollector) traces() map[string][]string {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[string][]string{}
	for _, s := range c.spans {
		out[s.trace] = append(out[s.trace], s.service+" "+s.name)
	}
	return out
}

// TestDevExportsOneTracePerChange: with OTEL_EXPORTER_OTLP_ENDPOINT set,
// `inthub dev` exports every service's spans, each under its own
// service.name, and the demo's creates are traces that reach the health
// poller's check and the catalog's recording of it.
func TestDevExportsOneTracePerChange(t *testing.T) {
	col := &fakeCollector{}
	srv := httptest.NewServer(col)
	t.Cleanup(srv.Close)
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", srv.URL)
	t.Setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "")
	t.Setenv("OTEL_TRACES_EXPORTER", "")
	t.Setenv("OTEL_SDK_DISABLED", "")
	t.Setenv("OTEL_BSP_SCHEDULE_DELAY", "100")

	r := startDev(t, fleet, "--nats-url=", "--data-dir", t.TempDir(), "--nats-port", "0", "--database-url", testDatabase(t),
		"--catalog-listen", "127.0.0.1:0", "--health-poller-listen", "127.0.0.1:0", "--annotation-listen", "127.0.0.1:0",
		"--enrichment-listen", "127.0.0.1:0", "--webhook-listen", "127.0.0.1:0", "--health-interval", "1s")
	r.demoLines(t)
	want := []string{
		"catalog POST /api/v1/integrations",
		"catalog integration.created publish",
		"health-poller health check",
		"health-poller integration.health_checked publish",
		"catalog integration.health_checked process",
	}
	complete := func() (string, bool) {
		for id, spans := range col.traces() {
			have := strings.Join(spans, "\n")
			ok := true
			for _, w := range want {
				ok = ok && strings.Contains(have+"\n", w+"\n")
			}
			if ok {
				return id, true
			}
		}
		return "", false
	}
	eventually(t, "a demo create traced to the catalog's recording of its first check", 60*time.Second, func() error {
		if _, ok := complete(); !ok {
			return fmt.Errorf("no trace has all of %q yet; %d traces", want, len(col.traces()))
		}
		return nil
	})
	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(r.stderr.String(), `"msg":"tracing","service":"inthub-dev","exporter":"otlp http/protobuf to `+srv.URL) {
		t.Errorf("the log does not say where spans go:\n%s", r.stderr.String())
	}
}
