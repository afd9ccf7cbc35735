package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

// The binary sets up tracing from the environment before anything else,
// and a value it cannot honour stops it with the variable's name.
func TestTracingFromTheEnvironment(t *testing.T) {
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
	t.Setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")
	var stdout, stderr bytes.Buffer
	err := run(context.Background(), nil, &stdout, &stderr)
	if err == nil || !strings.Contains(err.Error(), "OTEL_EXPORTER_OTLP_PROTOCOL") {
		t.Fatalf("run = %v, want an error naming OTEL_EXPORTER_OTLP_PROTOCOL\nstderr: %s", err, stderr.String())
	}
}
