// Command annotation posts Scanner's scm.annotation.requested to GitHub and
// GitLab as pull-request comments, commit statuses and check runs. Every
// flag defaults to its environment variable; --help lists them.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"inthub.dev/services/internal/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "annotation:", err)
		os.Exit(exitCode(err))
	}
}

func exitCode(err error) int { return cli.ExitCode(err) }
