package telemetry_test

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"inthub.dev/pkg/telemetry"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// The HTTP exporter's idle keep-alive connections are closed by the
		// collector's end, a moment after the test server stops.
		goleak.IgnoreTopFunction("net/http.(*persistConn).readLoop"),
		goleak.IgnoreTopFunction("net/http.(*persistConn).writeLoop"),
		goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"),
	)
}

// cleanEnv clears every variable that could make a test depend on the
// machine it runs on.
func cleanEnv(t *testing.T) {
	t.Helper()
	for _, k := range []string{
		telemetry.EnvEndpoint, telemetry.EnvTracesEndpoint, telemetry.EnvProtocol, telemetry.EnvTracesProtocol,
		telemetry.EnvTracesExporter, telemetry.EnvSDKDisabled,
		"OTEL_SERVICE_NAME", "OTEL_RESOURCE_ATTRIBUTES", "OTEL_TRACES_SAMPLER", "OTEL_TRACES_SAMPLER_ARG",
		"OTEL_EXPORTER_OTLP_HEADERS", "OTEL_EXPORTER_OTLP_TRACES_HEADERS", "OTEL_EXPORTER_OTLP_INSECURE",
	} {
		t.Setenv(k, "")
	}
}

func setup(t *testing.T, cfg telemetry.Config) *telemetry.Telemetry {
	t.Helper()
	tel, err := telemetry.Setup(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = tel.Shutdown(ctx)
	})
	return tel
}

// Without an endpoint, or when the environment turns tracing off, nothing
// is recorded and nothing is exported.
func TestOffUnlessAnEndpointIsSet(t *testing.T) {
	for _, tc := range []struct {
		name string
		env  map[string]string
	}{
		{"nothing set", nil},
		{"exporter none", map[string]string{telemetry.EnvEndpoint: "http://127.0.0.1:1", telemetry.EnvTracesExporter: "none"}},
		{"sdk disabled", map[string]string{telemetry.EnvEndpoint: "http://127.0.0.1:1", telemetry.EnvSDKDisabled: "true"}},
		{"only a protocol", map[string]string{telemetry.EnvProtocol: "grpc"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cleanEnv(t)
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			tel := setup(t, telemetry.Config{ServiceName: "catalog"})
			if tel.Enabled() {
				t.Fatalf("enabled (%s), want off", tel)
			}
			_, span := tel.TracerProvider().Tracer("test").Start(context.Background(), "x")
			defer span.End()
			if span.IsRecording() || span.SpanContext().IsValid() {
				t.Fatal("a span is recorded with tracing off")
			}
			if _, s := tel.Service("annotation").Tracer("test").Start(context.Background(), "y"); s.IsRecording() {
				t.Fatal("Service records with tracing off")
			}
		})
	}
}

func TestSetupRefusesWhatItCannotHonour(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  telemetry.Config
		env  map[string]string
		want string
	}{
		{"no service name", telemetry.Config{}, nil, "ServiceName is required"},
		{"json protocol", telemetry.Config{ServiceName: "s"},
			map[string]string{telemetry.EnvEndpoint: "http://127.0.0.1:1", telemetry.EnvProtocol: "http/json"}, "http/json"},
		{"traces protocol wins", telemetry.Config{ServiceName: "s"},
			map[string]string{telemetry.EnvEndpoint: "http://127.0.0.1:1", telemetry.EnvProtocol: "grpc", telemetry.EnvTracesProtocol: "thrift"}, "thrift"},
		{"console exporter", telemetry.Config{ServiceName: "s"},
			map[string]string{telemetry.EnvEndpoint: "http://127.0.0.1:1", telemetry.EnvTracesExporter: "console"}, "console"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cleanEnv(t)
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			tel, err := telemetry.Setup(context.Background(), tc.cfg)
			if err == nil {
				_ = tel.Shutdown(context.Background())
				t.Fatalf("Setup succeeded (%s), want an error naming %q", tel, tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q does not name %q", err, tc.want)
			}
		})
	}
}

// collector is a fake OTLP receiver: it keeps the export requests it got.
type collector struct {
	mu   sync.Mutex
	reqs []*coltracepb.ExportTraceServiceRequest
}

func (c *collector) add(r *coltracepb.ExportTraceServiceRequest) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.reqs = append(c.reqs, r)
}

// spans returns service name → span names, over every request received.
func (c *collector) spans() map[string][]string {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[string][]string{}
	for _, r := range c.reqs {
		for _, rs := range r.GetResourceSpans() {
			svc := ""
			for _, a := range rs.GetResource().GetAttributes() {
				if a.GetKey() == "service.name" {
					svc = a.GetValue().GetStringValue()
				}
			}
			for _, ss := range rs.GetScopeSpans() {
				for _, s := range ss.GetSpans() {
					out[svc] = append(out[svc], s.GetName())
				}
			}
		}
	}
	return out
}

// httpCollector serves POST /v1/traces as an OpenTelemetry Collector's
// OTLP/HTTP receiver does: protobuf only, anything else refused.
func httpCollector(t *testing.T) (*collector, string) {
	t.Helper()
	c := &collector{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.URL.Path != "/v1/traces" {
			http.NotFound(w, r)
			return
		}
		if ct := r.Header.Get("Content-Type"); ct != "application/x-protobuf" {
			http.Error(w, "unsupported content type "+ct, http.StatusUnsupportedMediaType)
			return
		}
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		var req coltracepb.ExportTraceServiceRequest
		if err := proto.Unmarshal(body, &req); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		c.add(&req)
		out, _ := proto.Marshal(&coltracepb.ExportTraceServiceResponse{})
		w.Header().Set("Content-Type", "application/x-protobuf")
		_, _ = w.Write(out)
	}))
	t.Cleanup(srv.Close)
	return c, srv.URL
}

type grpcCollector struct {
	coltracepb.UnimplementedTraceServiceServer
	c *collector
}

func (g grpcCollector) Export(_ context.Context, r *coltracepb.ExportTraceServiceRequest) (*coltracepb.ExportTraceServiceResponse, error) {
	g.c.add(r)
	return &coltracepb.ExportTraceServiceResponse{}, nil
}

func startGRPCCollector(t *testing.T) (*collector, string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c := &collector{}
	srv := grpc.NewServer()
	coltracepb.RegisterTraceServiceServer(srv, grpcCollector{c: c})
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(srv.Stop)
	return c, "http://" + ln.Addr().String()
}

// With an endpoint, spans reach the collector by the protocol asked for,
// under the service's name, at the latest when Shutdown flushes.
func TestExportsToTheEndpoint(t *testing.T) {
	for _, tc := range []struct {
		name     string
		protocol string
		start    func(*testing.T) (*collector, string)
	}{
		{"http/protobuf by default", "", httpCollector},
		{"http/protobuf", "http/protobuf", httpCollector},
		{"grpc", "grpc", startGRPCCollector},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cleanEnv(t)
			c, endpoint := tc.start(t)
			t.Setenv(telemetry.EnvEndpoint, endpoint)
			t.Setenv(telemetry.EnvProtocol, tc.protocol)
			tel, err := telemetry.Setup(context.Background(), telemetry.Config{ServiceName: "health-poller"})
			if err != nil {
				t.Fatal(err)
			}
			if !tel.Enabled() || !strings.Contains(tel.String(), endpoint) {
				t.Fatalf("Enabled %v, %q: want on, naming %s", tel.Enabled(), tel, endpoint)
			}
			ctx, parent := tel.TracerProvider().Tracer("test").Start(context.Background(), "health check")
			_, child := tel.TracerProvider().Tracer("test").Start(ctx, "GET /api/v4/user", trace.WithSpanKind(trace.SpanKindClient))
			child.End()
			parent.End()
			_, other := tel.Service("annotation").Tracer("test").Start(context.Background(), "scm.annotation.requested process")
			other.End()
			sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := tel.Shutdown(sctx); err != nil {
				t.Fatal(err)
			}
			got := c.spans()
			if want := []string{"GET /api/v4/user", "health check"}; strings.Join(got["health-poller"], ",") != strings.Join(want, ",") {
				t.Fatalf("health-poller's spans at the collector: %q, want %q (all: %v)", got["health-poller"], want, got)
			}
			if want := "scm.annotation.requested process"; len(got["annotation"]) != 1 || got["annotation"][0] != want {
				t.Fatalf("annotation's spans at the collector: %q, want [%q]", got["annotation"], want)
			}
			// After Shutdown nothing more is recorded.
			if _, s := tel.TracerProvider().Tracer("test").Start(context.Background(), "late"); s.IsRecording() {
				t.Fatal("a span is recorded after Shutdown")
			}
			if err := tel.Shutdown(sctx); err != nil {
				t.Fatalf("second Shutdown: %v", err)
			}
		})
	}
}

// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is a full URL, used as it is (no
// /v1/traces appended), and wins over the general endpoint.
func TestTracesEndpointWins(t *testing.T) {
	cleanEnv(t)
	c, endpoint := httpCollector(t)
	t.Setenv(telemetry.EnvEndpoint, "http://127.0.0.1:1")
	t.Setenv(telemetry.EnvTracesEndpoint, endpoint+"/v1/traces")
	tel, err := telemetry.Setup(context.Background(), telemetry.Config{ServiceName: "catalog"})
	if err != nil {
		t.Fatal(err)
	}
	_, s := tel.TracerProvider().Tracer("test").Start(context.Background(), "POST /api/v1/integrations")
	s.End()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := tel.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if got := c.spans()["catalog"]; len(got) != 1 {
		t.Fatalf("catalog's spans at the collector: %q, want one", got)
	}
}

// OTEL_SERVICE_NAME renames the binary's own service (an operator's
// choice), but not a service named explicitly with Service.
func TestServiceNames(t *testing.T) {
	cleanEnv(t)
	t.Setenv("OTEL_SERVICE_NAME", "catalog-eu")
	t.Setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment.name=staging")
	exp := tracetest.NewInMemoryExporter()
	tel := setup(t, telemetry.Config{ServiceName: "catalog", Exporter: exp})
	if tel.Service("x") != tel.Service("x") {
		t.Fatal("Service returns a new provider for the same name")
	}
	_, a := tel.TracerProvider().Tracer("test").Start(context.Background(), "a")
	a.End()
	_, b := tel.Service("health-poller").Tracer("test").Start(context.Background(), "b")
	b.End()
	// The caller's exporter gets each span as it ends.
	got := map[string]string{}
	env := map[string]string{}
	for _, s := range exp.GetSpans() {
		for _, kv := range s.Resource.Attributes() {
			switch kv.Key {
			case "service.name":
				got[s.Name] = kv.Value.AsString()
			case "deployment.environment.name":
				env[s.Name] = kv.Value.AsString()
			}
		}
	}
	if got["a"] != "catalog-eu" || got["b"] != "health-poller" {
		t.Fatalf("service names %v, want a: catalog-eu (OTEL_SERVICE_NAME), b: health-poller", got)
	}
	if env["a"] != "staging" || env["b"] != "staging" {
		t.Fatalf("OTEL_RESOURCE_ATTRIBUTES not on every span: %v", env)
	}
	// The caller owns its exporter: Shutdown leaves what it holds.
	if err := tel.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := len(exp.GetSpans()); n != 2 {
		t.Fatalf("%d spans in the caller's exporter after Shutdown, want 2", n)
	}
	if _, s := tel.Service("late").Tracer("test").Start(context.Background(), "c"); s.IsRecording() {
		t.Fatal("Service records after Shutdown")
	}
}

// Close flushes what is buffered, and does not hold the exit for long
// when the collector is gone: it logs instead.
func TestCloseFlushesOrLogs(t *testing.T) {
	cleanEnv(t)
	c, endpoint := httpCollector(t)
	t.Setenv(telemetry.EnvEndpoint, endpoint)
	tel, err := telemetry.Setup(context.Background(), telemetry.Config{ServiceName: "annotation"})
	if err != nil {
		t.Fatal(err)
	}
	_, s := tel.TracerProvider().Tracer("test").Start(context.Background(), "x")
	s.End()
	var logs strings.Builder
	tel.Close(slog.New(slog.NewTextHandler(&logs, nil)))
	if got := c.spans()["annotation"]; len(got) != 1 || logs.Len() != 0 {
		t.Fatalf("collector got %q, logs %q; want the span and no complaint", got, logs.String())
	}

	// A collector that takes no connections: Close returns within its
	// bound and says so.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	t.Setenv(telemetry.EnvEndpoint, "http://"+addr)
	var exportLogs syncBuilder
	tel, err = telemetry.Setup(context.Background(), telemetry.Config{ServiceName: "annotation",
		Logger: slog.New(slog.NewTextHandler(&exportLogs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	_, s = tel.TracerProvider().Tracer("test").Start(context.Background(), "lost")
	s.End()
	logs.Reset()
	start := time.Now()
	tel.Close(slog.New(slog.NewTextHandler(&logs, nil)))
	if d := time.Since(start); d > telemetry.CloseTimeout+2*time.Second {
		t.Fatalf("Close took %s, want at most about %s", d, telemetry.CloseTimeout)
	}
	if !strings.Contains(logs.String(), "spans not flushed") {
		t.Fatalf("logs %q, want the failed flush reported", logs.String())
	}
	if !strings.Contains(exportLogs.String(), "spans not exported") {
		t.Fatalf("the service's log %q, want the failed export reported", exportLogs.String())
	}
}

type syncBuilder struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuilder) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuilder) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// A nil Telemetry (a test that set none up) hands out no-op providers.
func TestNilTelemetryIsOff(t *testing.T) {
	var tel *telemetry.Telemetry
	if _, s := tel.Service("catalog").Tracer("test").Start(context.Background(), "x"); s.IsRecording() {
		t.Fatal("a nil Telemetry records")
	}
}

// The propagator carries the W3C traceparent header.
func TestPropagatorIsW3C(t *testing.T) {
	fields := telemetry.Propagator().Fields()
	if !strings.Contains(strings.Join(fields, ","), "traceparent") {
		t.Fatalf("propagator fields %v, want traceparent", fields)
	}
}
