// Command health-poller keeps every live integration checked on its
// interval and publishes each result as integration.health_checked. Every
// flag defaults to its environment variable; --help lists them.
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
		fmt.Fprintln(os.Stderr, "health-poller:", err)
		os.Exit(exitCode(err))
	}
}
