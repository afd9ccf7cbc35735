package connect

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"syscall"
	"time"

	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"inthub.dev/events"
	"inthub.dev/pkg/connectors"
	"inthub.dev/pkg/egress"
	"inthub.dev/pkg/fault"
)

// maxRedirects bounds the redirects one request follows. Registries
// redirect blob reads to storage once; nothing legitimate needs more.
const maxRedirects = 5

// DefaultMaxBodyBytes bounds a provider's response body: a manifest, a
// page of tags or repositories is far smaller, and a hostile endpoint must
// not make the catalog read gigabytes.
const DefaultMaxBodyBytes = 16 << 20

// newTransport is the transport every connector's client shares. Its dialer
// applies the egress policy to the address actually dialled (after DNS,
// on every redirect hop and token-realm request alike), which is the check
// that defeats DNS rebinding; Proxy is nil because through a proxy the
// dialer would see only the proxy's address.
//
// Connections are pooled across integrations. That is sound while the
// policy is the same for every tenant: a pooled connection was allowed when
// it was dialled, for any tenant. A per-tenant allow-list would need a
// transport per policy.
func newTransport(policy egress.Policy, log *slog.Logger) *http.Transport {
	control := policy.DialControl()
	d := &net.Dialer{
		Timeout:   10 * time.Second,
		KeepAlive: 30 * time.Second,
		ControlContext: func(ctx context.Context, network, address string, c syscall.RawConn) error {
			err := control(network, address, c)
			if err != nil {
				// The user reads a generic message; the operators' log gets
				// the address and the rule (DeniedError's LogValue).
				attrs := []any{slog.Any("denied", err)}
				if k, ok := CallFrom(ctx); ok {
					attrs = append(attrs, slog.String("tenantId", k.TenantID), slog.String("integrationId", k.IntegrationID))
				}
				log.WarnContext(ctx, "egress policy refused a connection", attrs...)
			}
			return err
		},
	}
	return &http.Transport{
		Proxy:                 nil,
		DialContext:           d.DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          100,
		MaxIdleConnsPerHost:   4,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ExpectContinueTimeout: time.Second,
		TLSClientConfig:       &tls.Config{MinVersion: tls.VersionTLS12},
	}
}

// newClient is one integration's client: the shared transport behind the
// scheme check and the body limit, its timeout, bounded redirects.
func newClient(base http.RoundTripper, policy egress.Policy, timeout time.Duration, maxBody int64) *http.Client {
	return &http.Client{
		Transport:     &guardedTransport{base: base, allowHTTP: policy.AllowHTTP, maxBody: maxBody},
		Timeout:       timeout,
		CheckRedirect: checkRedirect,
	}
}

// traced wraps c's transport in client spans when the Builder traces. The
// span covers the guards too, so a request the egress policy refuses shows
// as a failed call. Nothing is propagated: providers are third parties,
// and our trace ids are none of their business.
func (b *Builder) traced(c *http.Client, it events.Integration, provider string) *http.Client {
	if b.tracer == nil {
		return c
	}
	c.Transport = otelhttp.NewTransport(scrubURL{c.Transport},
		otelhttp.WithTracerProvider(b.tracer),
		otelhttp.WithPropagators(propagation.NewCompositeTextMapPropagator()),
		// "GET gitlab": the path would name repositories and ids, one span
		// name per call instead of per kind of call.
		otelhttp.WithSpanNameFormatter(func(_ string, r *http.Request) string { return r.Method + " " + provider }),
		otelhttp.WithSpanOptions(trace.WithAttributes(
			attribute.String("inthub.provider", provider),
			attribute.String("inthub.tenant_id", it.TenantID),
			attribute.String("inthub.integration_id", it.ID),
		)),
	)
	return c
}

// scrubURL records the URL of a provider call without its query: a
// registry's redirect to its storage carries a signature there (a
// presigned URL), which a trace backend has no business keeping. It sits
// inside otelhttp's transport, in the client span's context, and replaces
// the url.full that otelhttp set.
type scrubURL struct{ base http.RoundTripper }

func (s scrubURL) RoundTrip(req *http.Request) (*http.Response, error) {
	if span := trace.SpanFromContext(req.Context()); span.IsRecording() {
		u := *req.URL
		u.User, u.RawQuery, u.ForceQuery, u.Fragment, u.RawFragment = nil, "", false, "", ""
		span.SetAttributes(attribute.String("url.full", u.String()))
	}
	return s.base.RoundTrip(req)
}

// checkRedirect follows at most maxRedirects redirects and never from https
// to http (the credentials net/http forwards to the same host would travel
// in clear).
func checkRedirect(req *http.Request, via []*http.Request) error {
	if len(via) > maxRedirects {
		return fmt.Errorf("stopped after %d redirects", maxRedirects)
	}
	if prev := via[len(via)-1]; prev.URL.Scheme == "https" && req.URL.Scheme != "https" {
		return &egress.DeniedError{Reason: "a redirect from https to http was refused"}
	}
	return nil
}

// guardedTransport refuses plain http unless the policy allows it (a token
// realm or a redirect may name an http URL that no save-time check saw)
// and bounds every response body.
type guardedTransport struct {
	base      http.RoundTripper
	allowHTTP bool
	maxBody   int64
}

func (t *guardedTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Scheme != "https" && !t.allowHTTP {
		if req.Body != nil {
			_ = req.Body.Close()
		}
		return nil, &egress.DeniedError{Reason: "endpoint must use https"}
	}
	resp, err := t.base.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	if t.maxBody > 0 {
		resp.Body = &limitedBody{rc: resp.Body, left: t.maxBody, max: t.maxBody, host: req.URL.Host}
	}
	return resp, nil
}

// limitedBody fails a read past max bytes instead of truncating silently:
// a cut-off manifest would hash to the wrong digest and read as tampering.
type limitedBody struct {
	rc   io.ReadCloser
	left int64
	max  int64
	host string
}

// ErrBodyTooLarge is wrapped by the error of a read past the body limit.
var ErrBodyTooLarge = errors.New("response body too large")

func (b *limitedBody) Read(p []byte) (int, error) {
	if b.left <= 0 {
		// One more byte tells a body of exactly max bytes from a longer one.
		var one [1]byte
		n, err := b.rc.Read(one[:])
		if n > 0 {
			return 0, fault.Permanent(&connectors.RequestError{Host: b.host,
				Reason: fmt.Sprintf("the response is larger than %d bytes", b.max), Err: ErrBodyTooLarge})
		}
		return 0, err
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.rc.Read(p)
	b.left -= int64(n)
	return n, err
}

func (b *limitedBody) Close() error { return b.rc.Close() }
