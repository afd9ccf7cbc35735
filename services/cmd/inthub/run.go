package main

import (
	"context"
	"errors"
	"fmt"
	"io"
)

const topUsage = `inthub runs the integration hub's fleet in one process, for development.

Usage:
  inthub dev [flags]    run the fleet (embedded NATS + local PostgreSQL); Ctrl-C stops it
  inthub help [dev]     show this help, or the help of dev

Deployments run each service as its own binary; operators use inthubctl.
`

// usageError marks a mistake on the command line, which exits with 2 like
// the flag package does, so scripts can tell it from a runtime failure.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func exitCode(err error) int {
	var ue usageError
	if errors.As(err, &ue) {
		return 2
	}
	return 1
}

// run is main without the process: tests call it with their own context,
// arguments and writers.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, topUsage)
		return usageError{errors.New("no command given")}
	}
	switch args[0] {
	case "-h", "-help", "--help", "help":
		if args[0] == "help" && len(args) > 1 && args[1] == "dev" {
			return runDev(ctx, []string{"--help"}, stdout, stderr, fleet)
		}
		fmt.Fprint(stdout, topUsage)
		return nil
	case "dev":
		return runDev(ctx, args[1:], stdout, stderr, fleet)
	default:
		fmt.Fprint(stderr, topUsage)
		return usageError{fmt.Errorf("unknown command %q", args[0])}
	}
}
