package connectors_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"code.dny.dev/ssrf"
	"go.uber.org/goleak"

	"inthub.dev/pkg/connectors"
	"inthub.dev/pkg/egress"
	"inthub.dev/pkg/fault"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// newClient is a client of its own, so closing its idle connections at
// cleanup leaves no keep-alive goroutine for goleak to find.
func newClient(t *testing.T, timeout time.Duration) *http.Client {
	t.Helper()
	tr := &http.Transport{Proxy: nil, DisableKeepAlives: false}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: timeout}
}

func TestClassifyHTTPStatuses(t *testing.T) {
	date := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		name      string
		status    int
		header    map[string]string
		class     fault.Class // ClassUnknown = no error
		retry     time.Duration
		inMessage string
	}{
		{name: "200", status: 200},
		{name: "204", status: 204},
		{name: "304", status: 304},
		{name: "400", status: 400, class: fault.ClassPermanent, inMessage: "400 Bad Request: the server refused the request as invalid"},
		{name: "401", status: 401, class: fault.ClassPermanent, inMessage: "401 Unauthorized: the credentials were refused"},
		{name: "403", status: 403, class: fault.ClassPermanent, inMessage: "403 Forbidden: the credentials lack the permission"},
		{name: "403 with budget left", status: 403, header: map[string]string{"X-Ratelimit-Remaining": "4999", "X-Ratelimit-Reset": epoch(date, time.Hour)}, class: fault.ClassPermanent, inMessage: "403 Forbidden"},
		{name: "403 secondary rate limit", status: 403, header: map[string]string{"Retry-After": "60"}, class: fault.ClassTransient, retry: time.Minute, inMessage: "403 Forbidden: rate limited; retry after 1m0s"},
		{name: "403 primary rate limit", status: 403, header: map[string]string{"X-Ratelimit-Remaining": "0", "X-Ratelimit-Reset": epoch(date, 2*time.Minute)}, class: fault.ClassTransient, retry: 2 * time.Minute, inMessage: "rate limited"},
		{name: "404", status: 404, class: fault.ClassPermanent, inMessage: "404 Not Found: the resource does not exist or the credentials cannot see it"},
		{name: "408", status: 408, class: fault.ClassTransient, inMessage: "408 Request Timeout"},
		{name: "409", status: 409, class: fault.ClassPermanent, inMessage: "409 Conflict"},
		{name: "422", status: 422, class: fault.ClassPermanent, inMessage: "422 Unprocessable Entity"},
		{name: "429 without hint", status: 429, class: fault.ClassTransient, inMessage: "429 Too Many Requests: rate limited"},
		{name: "429 seconds", status: 429, header: map[string]string{"Retry-After": "30"}, class: fault.ClassTransient, retry: 30 * time.Second, inMessage: "retry after 30s"},
		{name: "429 http-date", status: 429, header: map[string]string{"Retry-After": date.Add(90 * time.Second).Format(http.TimeFormat)}, class: fault.ClassTransient, retry: 90 * time.Second},
		{name: "429 date in the past", status: 429, header: map[string]string{"Retry-After": date.Add(-time.Hour).Format(http.TimeFormat)}, class: fault.ClassTransient, retry: time.Second},
		{name: "429 x-ratelimit-reset", status: 429, header: map[string]string{"X-Ratelimit-Remaining": "0", "X-Ratelimit-Reset": epoch(date, 10*time.Second)}, class: fault.ClassTransient, retry: 10 * time.Second},
		{name: "429 gitlab RateLimit-Reset", status: 429, header: map[string]string{"RateLimit-Remaining": "0", "RateLimit-Reset": epoch(date, 45*time.Second)}, class: fault.ClassTransient, retry: 45 * time.Second},
		{name: "429 draft RateLimit-Reset delta", status: 429, header: map[string]string{"RateLimit-Remaining": "0", "RateLimit-Reset": "20"}, class: fault.ClassTransient, retry: 20 * time.Second},
		{name: "500", status: 500, class: fault.ClassTransient, inMessage: "500 Internal Server Error: the server failed"},
		{name: "501", status: 501, class: fault.ClassPermanent, inMessage: "501 Not Implemented"},
		{name: "502", status: 502, class: fault.ClassTransient, inMessage: "502 Bad Gateway"},
		{name: "503 with Retry-After", status: 503, header: map[string]string{"Retry-After": "5"}, class: fault.ClassTransient, retry: 5 * time.Second},
		{name: "418", status: 418, class: fault.ClassPermanent, inMessage: "418 I'm a teapot: the server refused the request"},
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var header map[string]string
		status := 0
		for _, tc := range tests {
			if tc.name == r.URL.Query().Get("case") {
				header, status = tc.header, tc.status
			}
		}
		for k, v := range header {
			w.Header().Set(k, v)
		}
		// A fixed Date makes the HTTP-date and epoch hints deterministic.
		w.Header().Set("Date", date.Format(http.TimeFormat))
		w.WriteHeader(status)
	}))
	t.Cleanup(srv.Close)
	client := newClient(t, 5*time.Second)

	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, srv.URL+"/x?access_token=s3cr3t&case="+urlQuery(tc.name), nil)
			resp, err := client.Do(req)
			if resp != nil {
				defer resp.Body.Close()
			}
			got := connectors.ClassifyHTTP(resp, err)
			if tc.class == fault.ClassUnknown {
				if got != nil {
					t.Fatalf("ClassifyHTTP = %v, want nil", got)
				}
				return
			}
			if got == nil {
				t.Fatal("ClassifyHTTP = nil, want an error")
			}
			if c := fault.ClassOf(got); c != tc.class {
				t.Errorf("class = %v, want %v (%v)", c, tc.class, got)
			}
			if d := fault.RetryAfterOf(got); d != tc.retry {
				t.Errorf("RetryAfter = %v, want %v", d, tc.retry)
			}
			if !strings.Contains(got.Error(), tc.inMessage) {
				t.Errorf("message %q does not contain %q", got, tc.inMessage)
			}
			assertNoSecret(t, got)
			var re *connectors.RequestError
			if !errors.As(got, &re) || re.StatusCode != tc.status {
				t.Errorf("RequestError = %+v, want status %d", re, tc.status)
			}
		})
	}
}

func epoch(t time.Time, d time.Duration) string { return strconv.FormatInt(t.Add(d).Unix(), 10) }

func urlQuery(s string) string { return url.QueryEscape(s) }

func assertNoSecret(t *testing.T, err error) {
	t.Helper()
	if strings.Contains(err.Error(), "s3cr3t") || strings.Contains(err.Error(), "access_token") {
		t.Errorf("message leaks the URL's query: %q", err)
	}
}

// Real transport failures, each against something that fails that way.
func TestClassifyNetFaults(t *testing.T) {
	// A port that was listening and is closed now: connection refused.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedURL := "http://" + ln.Addr().String()
	ln.Close()

	selfSigned := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	t.Cleanup(selfSigned.Close)

	plain := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	t.Cleanup(plain.Close)

	release := make(chan struct{})
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-release:
		}
	}))
	t.Cleanup(slow.Close)
	t.Cleanup(func() { close(release) })

	tests := []struct {
		name      string
		url       string
		timeout   time.Duration
		class     fault.Class
		inMessage string
	}{
		{"connection refused", closedURL, 5 * time.Second, fault.ClassOffline, "connection refused"},
		{"no such host", "http://nothing-here.invalid/", 5 * time.Second, fault.ClassOffline, "does not resolve (no such host)"},
		{"self-signed certificate", selfSigned.URL, 5 * time.Second, fault.ClassPermanent, "the server's certificate does not verify; configure the integration's CA"},
		{"http server behind https", strings.Replace(plain.URL, "http://", "https://", 1), 5 * time.Second, fault.ClassPermanent, "did not answer with TLS"},
		{"slow server past the timeout", slow.URL, 300 * time.Millisecond, fault.ClassTransient, "timed out after"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			client := newClient(t, tc.timeout)
			req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, tc.url+"?access_token=s3cr3t", nil)
			start := time.Now()
			resp, err := connectors.Do(client, req)
			if resp != nil {
				resp.Body.Close()
				t.Fatalf("Do succeeded, want %v", tc.class)
			}
			if took := time.Since(start); took > tc.timeout+2*time.Second {
				t.Errorf("took %v, want about the client timeout (%v) at most", took, tc.timeout)
			}
			if c := fault.ClassOf(err); c != tc.class {
				t.Errorf("class = %v, want %v (%v)", c, tc.class, err)
			}
			if !strings.Contains(err.Error(), tc.inMessage) {
				t.Errorf("message %q does not contain %q", err, tc.inMessage)
			}
			assertNoSecret(t, err)
			// The plain ClassifyNet agrees on the class.
			_, raw := client.Do(req.Clone(t.Context()))
			if c := fault.ClassOf(connectors.ClassifyNet(raw)); c != tc.class {
				t.Errorf("ClassifyNet class = %v, want %v (%v)", c, tc.class, raw)
			}
		})
	}
}

func TestClassifyNetContext(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	err := connectors.ClassifyNet(ctx.Err())
	if fault.ClassOf(err) != fault.ClassTransient || !strings.Contains(err.Error(), "cancelled") {
		t.Errorf("cancelled: %v (%v)", err, fault.ClassOf(err))
	}
	err = connectors.ClassifyNet(context.DeadlineExceeded)
	if fault.ClassOf(err) != fault.ClassTransient || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("deadline: %v (%v)", err, fault.ClassOf(err))
	}
	// Classified errors pass through unchanged.
	perm := fault.Permanentf("bad config")
	if got := connectors.ClassifyNet(perm); got != perm {
		t.Errorf("ClassifyNet(classified) = %v, want it unchanged", got)
	}
	if connectors.ClassifyNet(nil) != nil || connectors.ClassifyHTTP(nil, nil) == nil {
		t.Error("nil handling")
	}
}

// An address the egress policy refuses is permanent and the message does
// not tell which address the name resolved to.
func TestClassifyNetEgressPolicy(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	t.Cleanup(srv.Close)
	for name, control := range map[string]func(string, string, syscall.RawConn) error{
		"ssrf guard":    ssrf.New().Safe,
		"egress policy": egress.Policy{}.DialControl(),
	} {
		t.Run(name, func(t *testing.T) {
			tr := &http.Transport{Proxy: nil, DialContext: (&net.Dialer{Control: control}).DialContext}
			t.Cleanup(tr.CloseIdleConnections)
			// By name, as users configure it: the message may name the
			// host they typed, never the address it resolved to.
			u := strings.Replace(srv.URL, "127.0.0.1", "localhost", 1)
			req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, u, nil)
			_, err := connectors.Do(&http.Client{Transport: tr, Timeout: 2 * time.Second}, req)
			if fault.ClassOf(err) != fault.ClassPermanent || !strings.Contains(err.Error(), "egress policy") {
				t.Fatalf("err = %v (%v)", err, fault.ClassOf(err))
			}
			if strings.Contains(err.Error(), "127.0.0.1") {
				t.Errorf("message names the blocked address: %q", err)
			}
		})
	}
}

func TestParseRateLimit(t *testing.T) {
	h := http.Header{}
	if connectors.ParseRateLimit(h) != nil {
		t.Error("no headers: want nil")
	}
	h.Set("X-RateLimit-Limit", "5000")
	h.Set("X-RateLimit-Remaining", "250")
	h.Set("X-RateLimit-Reset", "1772370000")
	rl := connectors.ParseRateLimit(h)
	if rl == nil || rl.Limit != 5000 || rl.Remaining != 250 || !rl.Reset.Equal(time.Unix(1772370000, 0)) {
		t.Fatalf("github headers: %+v", rl)
	}
	if rl.Headroom() != 0.05 {
		t.Errorf("headroom = %v", rl.Headroom())
	}
	g := http.Header{}
	g.Set("RateLimit-Limit", "600")
	g.Set("RateLimit-Remaining", "599")
	if rl := connectors.ParseRateLimit(g); rl == nil || rl.Limit != 600 || rl.Remaining != 599 {
		t.Errorf("gitlab headers: %+v", rl)
	}
}
