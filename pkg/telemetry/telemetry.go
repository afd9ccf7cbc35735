// Package telemetry sets up OpenTelemetry tracing for an inthub binary from
// the standard OTEL_* environment: an OTLP exporter when
// OTEL_EXPORTER_OTLP_ENDPOINT (or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) is
// set, no tracing at all otherwise.
//
// Nothing here is global: Setup returns the TracerProvider, and each
// service takes it in its Config and hands it to the bus worker, the
// publisher, its HTTP server and the connectors' HTTP client. The W3C
// trace context (traceparent) is the one propagation format, on HTTP and
// on the bus alike.
//
// Use, in a binary's run:
//
//	tel, err := telemetry.Setup(ctx, telemetry.Config{ServiceName: "catalog"})
//	if err != nil { return err }
//	defer tel.Close(log) // flushes what is buffered, at most CloseTimeout
//	cfg.TracerProvider = tel.TracerProvider()
//
// The SDK reads the rest of the standard environment itself: the
// exporter's headers, timeout, compression and certificate
// (OTEL_EXPORTER_OTLP_*), the sampler (OTEL_TRACES_SAMPLER, default
// parentbased_always_on), the batch processor (OTEL_BSP_*) and the
// resource (OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES).
package telemetry

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// Environment variables Setup reads itself (the SDK reads the others).
const (
	EnvEndpoint        = "OTEL_EXPORTER_OTLP_ENDPOINT"
	EnvTracesEndpoint  = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
	EnvProtocol        = "OTEL_EXPORTER_OTLP_PROTOCOL"
	EnvTracesProtocol  = "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"
	EnvTracesExporter  = "OTEL_TRACES_EXPORTER"
	EnvSDKDisabled     = "OTEL_SDK_DISABLED"
	protocolHTTP       = "http/protobuf"
	protocolGRPC       = "grpc"
	serviceNameAttrKey = "service.name"
)

// Config configures Setup.
type Config struct {
	// ServiceName is the resource's service.name ("catalog",
	// "health-poller", ...) unless OTEL_SERVICE_NAME or
	// OTEL_RESOURCE_ATTRIBUTES names one. Required.
	ServiceName string
	// Exporter, when set, receives every span whatever the environment
	// says, synchronously as each span ends; the caller owns it (Shutdown
	// does not shut it down). For tests: tracetest.NewInMemoryExporter().
	Exporter sdktrace.SpanExporter
	// Logger is told when spans cannot be exported (the collector down),
	// at most once per ExportErrorEvery (default: discard).
	Logger *slog.Logger
}

// ExportErrorEvery is the least time between two logs of failed exports;
// the count of failures in between is in the next one.
const ExportErrorEvery = 30 * time.Second

// Telemetry is the tracing of one process. Its methods are safe for
// concurrent use.
type Telemetry struct {
	res      *resource.Resource // from the environment, without service.name defaults
	exporter sdktrace.SpanExporter
	shared   *shared // what the providers export through
	owned    bool    // Shutdown shuts the exporter down
	sync     bool    // a span is exported as it ends (Config.Exporter)
	desc     string

	mu       sync.Mutex
	main     trace.TracerProvider
	sdkMain  *sdktrace.TracerProvider            // main, when exporting
	services map[string]*sdktrace.TracerProvider // by Service(name)
	shut     bool
}

// Setup reads the environment and returns the process's tracing. With no
// OTLP endpoint configured (or OTEL_TRACES_EXPORTER=none, or
// OTEL_SDK_DISABLED=true) it returns a Telemetry whose providers are
// no-ops and cost nothing. A value it cannot honour (a protocol or an
// exporter it does not know) is an error, not a silent fallback.
func Setup(ctx context.Context, cfg Config) (*Telemetry, error) {
	if cfg.ServiceName == "" {
		return nil, errors.New("telemetry: Config.ServiceName is required (it names the service in every trace)")
	}
	t := &Telemetry{services: map[string]*sdktrace.TracerProvider{}}
	switch {
	case cfg.Exporter != nil:
		t.exporter, t.sync, t.desc = cfg.Exporter, true, "the caller's exporter"
	default:
		exp, desc, err := exporterFromEnv(ctx)
		if err != nil {
			return nil, err
		}
		t.exporter, t.owned, t.desc = exp, true, desc
	}
	if t.exporter == nil {
		t.main = noop.NewTracerProvider()
		return t, nil
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	t.shared = &shared{SpanExporter: t.exporter, log: log}
	// Resource errors are partial: a malformed OTEL_RESOURCE_ATTRIBUTES
	// still yields the attributes that parsed. Refusing to start over it
	// would be worse than a trace missing an attribute, but a typo should
	// not go unnoticed either.
	res, err := resource.New(ctx, resource.WithTelemetrySDK(), resource.WithFromEnv())
	if err != nil && res == nil {
		t.shutdownExporter(ctx)
		return nil, fmt.Errorf("telemetry: resource: %w", err)
	}
	t.res = res
	t.sdkMain = t.provider(cfg.ServiceName, false)
	t.main = t.sdkMain
	return t, nil
}

// exporterFromEnv is the exporter the environment asks for, nil for none.
func exporterFromEnv(ctx context.Context) (sdktrace.SpanExporter, string, error) {
	if strings.EqualFold(strings.TrimSpace(os.Getenv(EnvSDKDisabled)), "true") {
		return nil, "disabled (" + EnvSDKDisabled + ")", nil
	}
	switch e := strings.TrimSpace(os.Getenv(EnvTracesExporter)); e {
	case "", "otlp":
	case "none":
		return nil, "none (" + EnvTracesExporter + "=none)", nil
	default:
		return nil, "", fmt.Errorf("telemetry: %s=%q is not supported: use otlp (with %s) or none", EnvTracesExporter, e, EnvEndpoint)
	}
	endpoint := firstEnv(EnvTracesEndpoint, EnvEndpoint)
	if endpoint == "" {
		return nil, "none (" + EnvEndpoint + " is not set)", nil
	}
	protocol := firstEnv(EnvTracesProtocol, EnvProtocol)
	if protocol == "" {
		protocol = protocolHTTP // the specification's default
	}
	var (
		exp sdktrace.SpanExporter
		err error
	)
	switch protocol {
	case protocolHTTP:
		exp, err = otlptracehttp.New(ctx)
	case protocolGRPC:
		exp, err = otlptracegrpc.New(ctx)
	default:
		return nil, "", fmt.Errorf("telemetry: %s=%q is not supported: use %s (port 4318) or %s (port 4317)",
			EnvProtocol, protocol, protocolHTTP, protocolGRPC)
	}
	if err != nil {
		return nil, "", fmt.Errorf("telemetry: OTLP exporter (%s): %w", protocol, err)
	}
	return exp, "otlp " + protocol + " to " + endpoint, nil
}

func firstEnv(keys ...string) string {
	for _, k := range keys {
		if v := strings.TrimSpace(os.Getenv(k)); v != "" {
			return v
		}
	}
	return ""
}

// provider makes a TracerProvider for one service on the shared
// exporter. explicit makes name win over OTEL_SERVICE_NAME (Service);
// otherwise the environment wins (TracerProvider).
func (t *Telemetry) provider(name string, explicit bool) *sdktrace.TracerProvider {
	svc := resource.NewSchemaless(attribute.String(serviceNameAttrKey, name))
	var res *resource.Resource
	var err error
	if explicit {
		res, err = resource.Merge(t.res, svc)
	} else {
		res, err = resource.Merge(svc, t.res)
	}
	if err != nil {
		// Only conflicting schema URLs fail a merge, and svc has none.
		res = svc
	}
	exp := t.shared
	var proc sdktrace.SpanProcessor
	if t.sync {
		proc = sdktrace.NewSimpleSpanProcessor(exp)
	} else {
		proc = sdktrace.NewBatchSpanProcessor(exp)
	}
	return sdktrace.NewTracerProvider(sdktrace.WithResource(res), sdktrace.WithSpanProcessor(proc))
}

// TracerProvider is the provider of Config.ServiceName.
func (t *Telemetry) TracerProvider() trace.TracerProvider {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.main
}

// Service is the provider of another service run by the same process
// (`inthub dev` runs the whole fleet in one): the same exporter, with
// service.name set to name, so that each service still shows as itself in
// a trace. Asking twice for one name returns the same provider. After
// Shutdown, and on a nil Telemetry, it returns a no-op provider.
func (t *Telemetry) Service(name string) trace.TracerProvider {
	if t == nil {
		return noop.NewTracerProvider()
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.exporter == nil || t.shut {
		return noop.NewTracerProvider()
	}
	tp, ok := t.services[name]
	if !ok {
		tp = t.provider(name, true)
		t.services[name] = tp
	}
	return tp
}

// Enabled says whether spans are exported at all.
func (t *Telemetry) Enabled() bool { return t.exporter != nil }

// String says where spans go, for the start-up log.
func (t *Telemetry) String() string { return t.desc }

// Shutdown flushes the spans still buffered and stops exporting; the
// providers are no-ops afterwards. Give it a context with a deadline: an
// unreachable collector otherwise holds the process's exit for the
// exporter's timeout. Safe to call twice.
func (t *Telemetry) Shutdown(ctx context.Context) error {
	t.mu.Lock()
	if t.shut {
		t.mu.Unlock()
		return nil
	}
	t.shut = true
	var providers []*sdktrace.TracerProvider
	if t.sdkMain != nil {
		providers = append(providers, t.sdkMain)
	}
	for _, tp := range t.services {
		providers = append(providers, tp)
	}
	t.mu.Unlock()
	var errs []error
	var failedBefore uint64
	if t.shared != nil {
		failedBefore = t.shared.failed.Load()
	}
	for _, tp := range providers {
		if err := tp.Shutdown(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	if t.shared != nil {
		if n := t.shared.failed.Load() - failedBefore; n > 0 {
			errs = append(errs, fmt.Errorf("%d exports failed while flushing: %w", n, t.shared.lastErr()))
		}
	}
	if err := t.shutdownExporter(ctx); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("telemetry: shutdown: %w", err)
	}
	return nil
}

// CloseTimeout bounds Close's flush.
const CloseTimeout = 5 * time.Second

// Close is Shutdown for a binary's deferred call at exit: the flush is
// bounded by CloseTimeout, and a failure (the collector unreachable) is
// logged, since the process is ending anyway.
func (t *Telemetry) Close(log *slog.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), CloseTimeout)
	defer cancel()
	if err := t.Shutdown(ctx); err != nil && log != nil {
		log.Warn("spans not flushed at exit", "error", err.Error())
	}
}

func (t *Telemetry) shutdownExporter(ctx context.Context) error {
	if t.exporter == nil || !t.owned {
		return nil
	}
	return t.exporter.Shutdown(ctx)
}

// Propagator is the W3C trace context and baggage: what the traceparent
// header carries on HTTP and on the bus.
func Propagator() propagation.TextMapPropagator {
	return propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})
}

// shared is the exporter as the providers see it. Several providers share
// it, and a provider's span processor shuts its exporter down with it: the
// first provider to stop must not stop the exporting of the others, so
// Shutdown here does nothing (Telemetry.Shutdown stops the exporter).
//
// It also reports failed exports to the service's log, rate-limited, and
// hides them from the SDK, which would otherwise print each one through
// the otel package's global error handler, outside the JSON log.
type shared struct {
	sdktrace.SpanExporter
	log *slog.Logger

	failed atomic.Uint64
	mu     sync.Mutex
	last   error
	logged time.Time
	quiet  uint64 // failures since the last log
}

func (s *shared) ExportSpans(ctx context.Context, spans []sdktrace.ReadOnlySpan) error {
	err := s.SpanExporter.ExportSpans(ctx, spans)
	if err == nil {
		return nil
	}
	s.failed.Add(1)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.last = err
	s.quiet++
	if now := time.Now(); now.Sub(s.logged) >= ExportErrorEvery {
		s.log.Warn("spans not exported", "spans", len(spans), "failuresSinceLastLog", s.quiet, "error", err.Error())
		s.logged, s.quiet = now, 0
	}
	return nil
}

func (s *shared) lastErr() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.last
}

func (*shared) Shutdown(context.Context) error { return nil }
