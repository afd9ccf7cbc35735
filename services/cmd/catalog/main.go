// Command catalog runs the catalog service: the HTTP API over the
// PostgreSQL system of record, the outbox forwarder and the health history
// consumer. Every flag defaults to its environment variable; --help lists
// them.
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
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "catalog:", err)
		os.Exit(exitCode(err))
	}
}
