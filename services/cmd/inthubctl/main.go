// Command inthubctl is the operator's tool for inthub's dead letters (the
// DLQ stream) and spooled payloads (the SPOOL stream): list, show, replay,
// purge, drain; for the catalog's integrations and integration types
// (through its HTTP API); and for migrating the catalog's database.
// Run `inthubctl --help`.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
