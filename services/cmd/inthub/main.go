// Command inthub is the all-in-one runner for development: `inthub dev`
// starts an embedded NATS server with JetStream, provisions the streams,
// prepares the local PostgreSQL and runs every inthub service in one process.
// Deployments run each service as its own binary instead.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintf(os.Stderr, "inthub: %v\n", err)
		os.Exit(exitCode(err))
	}
}
