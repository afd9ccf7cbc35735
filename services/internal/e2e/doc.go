// Package e2e holds tests that run several services together, each as its
// deployment runs it (its own NATS connection, talking to the others only
// through JetStream), against a real PostgreSQL and an embedded JetStream:
// the one place that may import them side by side without services
// importing each other.
package e2e
