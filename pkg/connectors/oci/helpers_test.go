package oci_test

import (
	"net/http"
	"testing"

	"go.uber.org/goleak"

	"inthub.dev/pkg/connectors/oci"
	"inthub.dev/pkg/connectors/oci/ocitest"
)

type secrets = ocitest.Secrets

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// env is one connector under test with its captured log.
type env struct {
	c   *oci.Connector
	log *ocitest.Buffer
}

// newConnector builds a connector from a config map, with its own
// transport (closed at cleanup, so goleak sees no idle connections) and a
// JSON logger into a buffer.
func newConnector(t testing.TB, conf map[string]any, sec secrets, client *http.Client) env {
	t.Helper()
	buf := &ocitest.Buffer{}
	cfg := ocitest.Config(t, oci.Type, conf, sec, buf)
	if client != nil {
		cfg.HTTPClient = client
	}
	c, err := oci.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	return env{c: c, log: buf}
}
