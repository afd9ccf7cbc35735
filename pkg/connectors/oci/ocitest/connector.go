package ocitest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"

	"inthub.dev/pkg/connectors"
	"inthub.dev/pkg/connectors/conntest"
	"inthub.dev/pkg/fault"
	"inthub.dev/schemas"
)

// What the registry connectors' tests share beside the fake registry:
// building a connectors.Config, a secret resolver, a log buffer, and the
// servers that stand for a failing provider in the conformance suite.

// IntegrationID and TenantID are the ids Config gives every connector.
const (
	IntegrationID = "11111111-1111-1111-1111-111111111111"
	TenantID      = "22222222-2222-2222-2222-222222222222"
)

// Config is an integration of type typ with conf as its config, sec as
// its secret resolver, a debug JSON logger into log, and its own
// transport (closed at cleanup, so that goleak sees no idle connection).
func Config(t testing.TB, typ string, conf map[string]any, sec connectors.SecretResolver, log io.Writer) connectors.Config {
	t.Helper()
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	raw, err := json.Marshal(conf)
	if err != nil {
		t.Fatal(err)
	}
	return connectors.Config{
		IntegrationID: IntegrationID,
		TenantID:      TenantID,
		Type:          typ,
		Config:        raw,
		Secrets:       sec,
		HTTPClient:    &http.Client{Transport: tr},
		Logger:        slog.New(slog.NewJSONHandler(log, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
}

// Merge returns base with extra's keys set over it; a nil value removes
// the key.
func Merge(base, extra map[string]any) map[string]any {
	for k, v := range extra {
		if v == nil {
			delete(base, k)
			continue
		}
		base[k] = v
	}
	return base
}

// Secrets is a SecretResolver over a map; an unknown ref is a permanent
// error.
type Secrets map[string]string

func (s Secrets) Resolve(_ context.Context, ref string) ([]byte, error) {
	v, ok := s[ref]
	if !ok {
		return nil, fault.Permanent(errors.New("no such secret " + ref))
	}
	return []byte(v), nil
}

// Buffer is a bytes.Buffer safe for the concurrent writes of a logger.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *Buffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *Buffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// CheckNames lists a result's checks as +capability (passed) or
// -capability (failed), in order.
func CheckNames(r connectors.Result) []string {
	var out []string
	for _, c := range r.Checks {
		mark := "+"
		if !c.OK {
			mark = "-"
		}
		out = append(out, mark+c.Capability)
	}
	return out
}

// Names lists a page's repository full names.
func Names(p connectors.Page[connectors.Repository]) []string {
	var out []string
	for _, r := range p.Items {
		out = append(out, r.FullName)
	}
	return out
}

// ClosedURL is http://127.0.0.1:port of a port that nothing listens on
// any more, for the Unreachable scenario.
func ClosedURL(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	url := "http://" + l.Addr().String()
	l.Close()
	return url
}

// Failing is the URL of a server that stands for every host of a
// provider failing as sc says: Slow hangs until the client gives up
// (having read the request body: net/http notices the hang-up only then),
// ServerError answers 500 UNKNOWN, RateLimited runs rateLimited.
func Failing(t testing.TB, sc conntest.Scenario, rateLimited http.HandlerFunc) string {
	t.Helper()
	handler := map[conntest.Scenario]http.HandlerFunc{
		conntest.Slow: func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.Copy(io.Discard, r.Body)
			<-r.Context().Done()
		},
		conntest.RateLimited: rateLimited,
		conntest.ServerError: func(w http.ResponseWriter, r *http.Request) {
			WriteError(w, http.StatusInternalServerError, "UNKNOWN", "boom")
		},
	}[sc]
	if handler == nil {
		t.Fatalf("ocitest.Failing: no failing server for scenario %v", sc)
	}
	srv := httptest.NewServer(handler)
	t.Cleanup(srv.Close)
	return srv.URL
}

// TooManyRequests answers 429 TOOMANYREQUESTS with a Retry-After of
// retryAfter.
func TooManyRequests(retryAfter, msg string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Retry-After", retryAfter)
		WriteError(w, http.StatusTooManyRequests, "TOOMANYREQUESTS", msg)
	}
}

// CheckSchema holds the config schema the catalog validates with to the
// connector: it accepts exactly the configs that cases map to true, and
// marks exactly secrets (in schema order) as secret fields.
func CheckSchema(t *testing.T, typ string, cases map[string]bool, secrets ...string) {
	t.Helper()
	b, err := schemas.ConfigSchema(typ)
	if err != nil {
		t.Fatal(err)
	}
	cv, err := schemas.CompileConfig(b, nil)
	if err != nil {
		t.Fatal(err)
	}
	for conf, valid := range cases {
		var v any
		if err := json.Unmarshal([]byte(conf), &v); err != nil {
			t.Fatal(err)
		}
		if err := cv.Validate(v); (err == nil) != valid {
			t.Errorf("%s: Validate = %v, want valid %v", conf, err, valid)
		}
	}
	if got, err := schemas.SecretFields(b); err != nil || !slices.Equal(got, secrets) {
		t.Errorf("SecretFields = %q, %v; want %q", got, err, secrets)
	}
}
