package cli_test

import (
	"bytes"
	"errors"
	"flag"
	"slices"
	"strings"
	"testing"

	"inthub.dev/services/internal/cli"
)

var cmd = cli.Command{Name: "x", Head: "Usage: x\n", Options: []cli.Option{
	cli.Flag("listen", "X_LISTEN", "127.0.0.1:1", "address"),
	cli.Flag("n", "X_N", "3", "a number"),
	cli.Flag("every", "X_EVERY", "5m", "a duration"),
	cli.Flag("dev", "X_DEV", "false", "dev mode"),
	cli.EgressPortsFlag(),
}}

func TestPorts(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []int
		bad  bool
	}{
		{in: "", want: nil},
		{in: "8443", want: []int{8443}},
		{in: " 8443, 8080 ,", want: []int{8443, 8080}},
		{in: "0", bad: true},
		{in: "65536", bad: true},
		{in: "https", bad: true},
		{in: "8443;8080", bad: true},
	} {
		v, err := cmd.Parse([]string{"--egress-allow-ports", tc.in}, &bytes.Buffer{}, &bytes.Buffer{})
		if err != nil {
			t.Fatal(err)
		}
		got, err := v.Ports("egress-allow-ports")
		if tc.bad {
			if cli.ExitCode(err) != 2 {
				t.Errorf("%q: %v, %v; want a usage error", tc.in, got, err)
			}
			continue
		}
		if err != nil || !slices.Equal(got, tc.want) {
			t.Errorf("%q: %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
	t.Setenv("INTHUB_EGRESS_ALLOW_PORTS", "9443")
	v, _ := cmd.Parse(nil, &bytes.Buffer{}, &bytes.Buffer{})
	if got, err := v.Ports("egress-allow-ports"); err != nil || !slices.Equal(got, []int{9443}) {
		t.Errorf("from the environment: %v, %v", got, err)
	}
}

func TestFlagsOverEnvOverDefaults(t *testing.T) {
	t.Setenv("X_N", "7")
	t.Setenv("X_LISTEN", "env:1")
	v, err := cmd.Parse([]string{"--listen", "flag:1"}, &bytes.Buffer{}, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	n, _ := v.Int("n", 1)
	d, _ := v.Duration("every")
	if v.String("listen") != "flag:1" || n != 7 || d.Minutes() != 5 {
		t.Fatalf("listen %q n %d every %s", v.String("listen"), n, d)
	}
}

func TestHelpAndUsageErrors(t *testing.T) {
	var out bytes.Buffer
	if _, err := cmd.Parse([]string{"--help"}, &out, &bytes.Buffer{}); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("--help: %v", err)
	}
	if !strings.Contains(out.String(), "(env X_N; default 3)") {
		t.Fatalf("help:\n%s", out.String())
	}
	for _, args := range [][]string{{"--nope"}, {"extra"}} {
		_, err := cmd.Parse(args, &bytes.Buffer{}, &bytes.Buffer{})
		if cli.ExitCode(err) != 2 {
			t.Errorf("%v: %v is not a usage error", args, err)
		}
	}
	v, _ := cmd.Parse([]string{"--n", "0", "--every", "soon", "--dev", "maybe"}, &bytes.Buffer{}, &bytes.Buffer{})
	if _, err := v.Int("n", 1); cli.ExitCode(err) != 2 {
		t.Errorf("n=0: %v", err)
	}
	if _, err := v.Duration("every"); cli.ExitCode(err) != 2 {
		t.Errorf("every=soon: %v", err)
	}
	if _, err := v.Bool("dev"); cli.ExitCode(err) != 2 {
		t.Errorf("dev=maybe: %v", err)
	}
	if cli.ExitCode(errors.New("boom")) != 1 {
		t.Error("runtime error must exit 1")
	}
}
