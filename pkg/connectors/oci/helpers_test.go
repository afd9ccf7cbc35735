package oci_test

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"testing"

	"go.uber.org/goleak"

	"inthub.dev/pkg/connectors"
	"inthub.dev/pkg/connectors/oci"
	"inthub.dev/pkg/fault"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// secrets is a SecretResolver over a map, counting resolutions.
type secrets map[string]string

func (s secrets) Resolve(_ context.Context, ref string) ([]byte, error) {
	v, ok := s[ref]
	if !ok {
		return nil, fault.Permanent(errors.New("no such secret " + ref))
	}
	return []byte(v), nil
}

// env is one connector under test with its captured log.
type env struct {
	c   *oci.Connector
	log *syncBuffer
}

// newConnector builds a connector from a config map, with its own
// transport (closed at cleanup, so goleak sees no idle connections) and a
// JSON logger into a buffer.
func newConnector(t testing.TB, conf map[string]any, sec secrets, client *http.Client) env {
	t.Helper()
	if client == nil {
		tr := &http.Transport{}
		t.Cleanup(tr.CloseIdleConnections)
		client = &http.Client{Transport: tr}
	}
	raw, err := json.Marshal(conf)
	if err != nil {
		t.Fatal(err)
	}
	buf := &syncBuffer{}
	c, err := oci.New(connectors.Config{
		IntegrationID: "11111111-1111-1111-1111-111111111111",
		TenantID:      "22222222-2222-2222-2222-222222222222",
		Type:          oci.Type,
		Config:        raw,
		Secrets:       sec,
		HTTPClient:    client,
		Logger:        slog.New(slog.NewJSONHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	return env{c: c, log: buf}
}

func checkNames(r connectors.Result) []string {
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
