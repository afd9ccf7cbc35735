package connect

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"inthub.dev/events"
	"inthub.dev/pkg/connectors"
	"inthub.dev/pkg/egress"
	"inthub.dev/pkg/fault"
)

// httpConnector checks health with GET url through the client the
// Builder gave it, as every real connector does.
type httpConnector struct {
	client *http.Client
	url    string
}

func (h *httpConnector) Type() string     { return typeFake }
func (h *httpConnector) Provider() string { return "fake" }
func (h *httpConnector) Validate() error  { return nil }
func (h *httpConnector) Close() error     { return nil }

func (h *httpConnector) TestConnection(ctx context.Context) connectors.Result {
	return h.CheckHealth(ctx)
}

func (h *httpConnector) CheckHealth(ctx context.Context) connectors.Result {
	start := time.Now()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, h.url, nil)
	if err != nil {
		return connectors.FailedResult(start, "health", fault.Permanent(err))
	}
	resp, err := h.client.Do(req)
	if err != nil {
		return connectors.FailedResult(start, "health", fault.Transient(err))
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return connectors.FailedResult(start, "health", fault.Transient(fmt.Errorf("status %d", resp.StatusCode)))
	}
	return connectors.NewResult([]connectors.Check{{Capability: "health", OK: true}}, start)
}

// With WithTracerProvider, a provider call is a client span in the
// caller's trace, naming the integration; the provider is sent no trace
// context. Without it, nothing is traced.
func TestProviderCallsAreClientSpans(t *testing.T) {
	var mu sync.Mutex
	var sentTraceparent []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		sentTraceparent = append(sentTraceparent, r.Header.Get("traceparent"))
		mu.Unlock()
		w.WriteHeader(http.StatusOK)
	}))
	t.Cleanup(srv.Close)

	for _, traced := range []bool{true, false} {
		t.Run(fmt.Sprintf("traced=%v", traced), func(t *testing.T) {
			rec := tracetest.NewSpanRecorder()
			tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
			t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
			reg := connectors.NewRegistry()
			reg.Register(connectors.Info{Type: typeFake, Provider: "fake"}, func(cfg connectors.Config) (connectors.Connector, error) {
				return &httpConnector{client: cfg.HTTPClient, url: srv.URL + "/api/v4/user?X-Amz-Signature=s3cr3t"}, nil
			})
			var opts []Option
			if traced {
				opts = append(opts, WithTracerProvider(tp))
			}
			b, err := New(reg, nil, egress.Policy{AllowLoopback: true, AllowHTTP: true, AllowPorts: []int{portOf(t, srv)}}, opts...)
			if err != nil {
				t.Fatal(err)
			}
			defer b.Close()
			it := events.Integration{ID: "0b5c7d1e-8f7a-4c3b-9a2d-1e2f3a4b5c6d", TenantID: "6f1a2b3c-4d5e-4f60-8a7b-9c0d1e2f3a4b",
				Type: typeFake, Version: 1}

			ctx, parent := tp.Tracer("test").Start(context.Background(), "health check")
			out, err := b.CheckHealth(ctx, it)
			parent.End()
			if err != nil || !out.Result.OK() {
				t.Fatalf("health check failed: %v %+v", err, out.Result)
			}
			var client []sdktrace.ReadOnlySpan
			for _, s := range rec.Ended() {
				if s.SpanKind() == trace.SpanKindClient {
					client = append(client, s)
				}
			}
			if !traced {
				if len(client) != 0 {
					t.Fatalf("%d client spans without a tracer provider, want none", len(client))
				}
				return
			}
			if len(client) != 1 {
				t.Fatalf("%d client spans, want 1", len(client))
			}
			s := client[0]
			if s.Parent().SpanID() != parent.SpanContext().SpanID() || s.SpanContext().TraceID() != parent.SpanContext().TraceID() {
				t.Fatalf("client span's parent %s in trace %s, want the check's span %s in %s",
					s.Parent().SpanID(), s.SpanContext().TraceID(), parent.SpanContext().SpanID(), parent.SpanContext().TraceID())
			}
			if s.Name() != "GET fake" {
				t.Errorf("client span named %q, want %q", s.Name(), "GET fake")
			}
			attrs := map[attribute.Key]string{}
			for _, kv := range s.Attributes() {
				attrs[kv.Key] = kv.Value.String()
			}
			for k, want := range map[attribute.Key]string{
				"inthub.provider": "fake", "inthub.integration_id": it.ID, "inthub.tenant_id": it.TenantID,
				"http.request.method": "GET", "http.response.status_code": "200",
			} {
				if attrs[k] != want {
					t.Errorf("attribute %s = %q, want %q (all: %v)", k, attrs[k], want, attrs)
				}
			}
			if got, want := attrs["url.full"], srv.URL+"/api/v4/user"; got != want {
				t.Errorf("url.full = %q, want %q (no query)", got, want)
			}
			for k, v := range attrs {
				if strings.Contains(v, "s3cr3t") {
					t.Errorf("attribute %s = %q holds the query's signature", k, v)
				}
			}
			mu.Lock()
			defer mu.Unlock()
			for _, h := range sentTraceparent {
				if h != "" {
					t.Fatalf("the provider was sent traceparent %q", h)
				}
			}
		})
	}
}
