// Package cli is the command-line plumbing the service binaries share:
// flags that default to environment variables, read from one table so the
// help text and the code cannot drift apart; usage errors that exit 2; and
// the NATS connection every service opens the same way.
package cli

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"
)

// Option is one flag with the environment variable it defaults to.
type Option struct {
	Name, Env, Default, Help string
}

// Flag is an Option, written positionally in a command's table.
func Flag(name, env, def, help string) Option {
	return Option{Name: name, Env: env, Default: def, Help: help}
}

// UsageError marks a mistake on the command line: exit code 2, as the flag
// package uses, so scripts can tell it from a runtime failure.
type UsageError struct{ Err error }

func (e UsageError) Error() string { return e.Err.Error() }
func (e UsageError) Unwrap() error { return e.Err }

// Usagef returns a UsageError.
func Usagef(format string, args ...any) error { return UsageError{fmt.Errorf(format, args...)} }

// ExitCode is 2 for a usage error, 1 for anything else.
func ExitCode(err error) int {
	if errors.As(err, new(UsageError)) {
		return 2
	}
	return 1
}

// Command describes a binary's flags and help.
type Command struct {
	Name    string
	Head    string // the help text before the flag list
	Options []Option
}

// Usage writes the help text.
func (c Command) Usage(w io.Writer) {
	fmt.Fprint(w, c.Head)
	for _, o := range c.Options {
		def := o.Default
		if def == "" {
			def = `""`
		}
		fmt.Fprintf(w, "  --%s\n        %s\n        (env %s; default %s)\n", o.Name, o.Help, o.Env, def)
	}
}

// Values are the parsed options.
type Values struct{ m map[string]*string }

// Parse reads args over the environment over the defaults. --help prints
// the usage to stdout and returns flag.ErrHelp; a mistake prints it to
// stderr and returns a UsageError.
func (c Command) Parse(args []string, stdout, stderr io.Writer) (Values, error) {
	fs := flag.NewFlagSet(c.Name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	v := Values{m: map[string]*string{}}
	for _, o := range c.Options {
		def := o.Default
		if e, ok := os.LookupEnv(o.Env); ok {
			def = e
		}
		v.m[o.Name] = fs.String(o.Name, def, o.Help)
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			c.Usage(stdout)
			return v, flag.ErrHelp
		}
		c.Usage(stderr)
		return v, UsageError{err}
	}
	if fs.NArg() > 0 {
		c.Usage(stderr)
		return v, Usagef("unexpected arguments %v", fs.Args())
	}
	return v, nil
}

// String returns an option's value.
func (v Values) String(name string) string { return *v.m[name] }

// Bool parses an option as a boolean.
func (v Values) Bool(name string) (bool, error) {
	b, err := strconv.ParseBool(v.String(name))
	if err != nil {
		return false, Usagef("--%s: %q is not a boolean", name, v.String(name))
	}
	return b, nil
}

// Int parses an option as a number of at least min.
func (v Values) Int(name string, min int) (int, error) {
	n, err := strconv.Atoi(v.String(name))
	if err != nil || n < min {
		return 0, Usagef("--%s: %q is not a number of at least %d", name, v.String(name), min)
	}
	return n, nil
}

// Float parses an option as a number of at least min.
func (v Values) Float(name string, min float64) (float64, error) {
	f, err := strconv.ParseFloat(v.String(name), 64)
	if err != nil || f < min {
		return 0, Usagef("--%s: %q is not a number of at least %g", name, v.String(name), min)
	}
	return f, nil
}

// Duration parses an option as a positive duration.
func (v Values) Duration(name string) (time.Duration, error) {
	d, err := time.ParseDuration(v.String(name))
	if err != nil || d <= 0 {
		return 0, Usagef("--%s: %q is not a positive duration (e.g. 5m)", name, v.String(name))
	}
	return d, nil
}

// Ports parses an option as a comma-separated list of TCP ports (1 to
// 65535); an empty value is no port.
func (v Values) Ports(name string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(v.String(name), ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		n, err := strconv.Atoi(f)
		if err != nil || n < 1 || n > 65535 {
			return nil, Usagef("--%s: %q is not a port (1 to 65535)", name, f)
		}
		out = append(out, n)
	}
	return out, nil
}

// EgressPortsFlag is the option of the services that call providers:
// the egress policy allows 443 and 80, and a provider served on another
// port (a GitHub Enterprise Server on 8443, a GitLab on 8080) needs it
// listed.
func EgressPortsFlag() Option {
	return Flag("egress-allow-ports", "INTHUB_EGRESS_ALLOW_PORTS", "",
		"ports besides 443 and 80 that provider endpoints may use, comma-separated (e.g. 8443,8080)")
}

// HubIdentityFlag is the option of the services that call providers: may
// an integration sign with the hub's own cloud identity (registry.ecr's
// authMode default)? Off, because then every tenant reaches what the
// hub's role reaches.
func HubIdentityFlag() Option {
	return Flag("allow-hub-identity", "INTHUB_ALLOW_HUB_IDENTITY", "false",
		"let integrations sign with the hub's own cloud identity (registry.ecr authMode default); every tenant then reaches what that identity reaches")
}
