// Command enrichment runs the data side of inthub: the webhook ingress
// (GitHub, GitLab), the mapper from ingest.* to event.canonical.*, and the
// correlator that indexes canonical events and answers
// enrichment.requested with event.enriched. Every flag defaults to its
// environment variable; --help lists them.
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
		fmt.Fprintln(os.Stderr, "enrichment:", err)
		os.Exit(exitCode(err))
	}
}
