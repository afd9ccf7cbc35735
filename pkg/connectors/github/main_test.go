package github_test

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"

	"go.uber.org/goleak"

	"inthub.dev/pkg/connectors"
	"inthub.dev/pkg/connectors/github"
	"inthub.dev/pkg/connectors/github/githubtest"
	"inthub.dev/pkg/fault"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const keyRef = "authref://env/GITHUB_APP_KEY"

// secretStore is a SecretResolver over a map that counts resolutions.
type secretStore struct {
	mu sync.Mutex
	m  map[string][]byte
	n  int
}

func (s *secretStore) Resolve(_ context.Context, ref string) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.n++
	v, ok := s.m[ref]
	if !ok {
		return nil, fault.Permanentf("authref: environment variable %s is not set on this worker", strings.TrimPrefix(ref, "authref://env/"))
	}
	return slices.Clone(v), nil
}

func (s *secretStore) resolutions() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.n
}

// syncBuffer is a log sink safe for concurrent writers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

type setup struct {
	conf    map[string]any
	cfg     connectors.Config
	secrets *secretStore
	logs    *syncBuffer
}

// newConn builds a connector for srv: its root as the endpoint, its key
// behind keyRef, its client, a debug logger captured in logs. mutate may
// change anything before the connector is built.
func newConn(t *testing.T, srv *githubtest.Server, mutate func(*setup)) (*github.Connector, *setup) {
	t.Helper()
	s := &setup{
		conf: map[string]any{
			"endpoint":       srv.Root(),
			"appId":          srv.AppID(),
			"installationId": srv.InstallationID(),
			"privateKey":     keyRef,
			"timeoutSeconds": 5,
		},
		secrets: &secretStore{m: map[string][]byte{keyRef: srv.KeyPEM()}},
		logs:    &syncBuffer{},
	}
	s.cfg = connectors.Config{
		IntegrationID: "7f9c1b5e-0000-4000-8000-000000000001",
		TenantID:      "7f9c1b5e-0000-4000-8000-0000000000aa",
		Type:          github.Type,
		Secrets:       s.secrets,
		HTTPClient:    srv.Client(),
		Logger:        slog.New(slog.NewJSONHandler(s.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	if mutate != nil {
		mutate(s)
	}
	raw, err := json.Marshal(s.conf)
	if err != nil {
		t.Fatal(err)
	}
	s.cfg.Config = raw
	c, err := github.New(s.cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c.(*github.Connector), s
}

// pemSecrets are strings of the key that must never appear in output:
// the whole PEM and each of its base64 lines.
func pemSecrets(pem []byte) []string {
	out := []string{string(pem)}
	for _, l := range strings.Split(string(pem), "\n") {
		if len(l) > 20 && !strings.HasPrefix(l, "-----") {
			out = append(out, l)
		}
	}
	return out
}

func checkByCap(r connectors.Result, capability string) (connectors.Check, bool) {
	for _, c := range r.Checks {
		if c.Capability == capability {
			return c, true
		}
	}
	return connectors.Check{}, false
}
