// Package readmecheck holds the tests that keep the repository's README.md
// true to the code: the configuration reference against each binary's
// --help (the flag tables in services/internal/cli and
// services/cmd/inthub/flags.go print it), the telemetry variables against
// pkg/telemetry, the event catalogue against the schemas, and every
// relative link against the files; and compose.yaml: every flag and
// variable against --help, the cluster profile's NATS servers, routes and
// replicas. It has no code of its own.
package readmecheck
