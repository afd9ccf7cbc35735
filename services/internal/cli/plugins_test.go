package cli_test

import (
	"bytes"
	"slices"
	"strings"
	"testing"

	"inthub.dev/services/internal/cli"
)

var pluginCmd = cli.Command{Name: "x", Head: "Usage: x\n", Options: cli.PluginFlags("at start")}

func TestPlugins(t *testing.T) {
	const sum = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	sums := writeFile(t, "# allowed\n"+strings.ToUpper(sum)+"  registry-quay\n")
	for _, tc := range []struct {
		name       string
		args       []string
		dirs, want []string
		usage      string
	}{
		{name: "none"},
		{name: "checksums alone start no host", args: []string{"--plugin-checksums", sums}},
		{name: "dirs and sums", args: []string{"--plugin-dir", " /a, /b ,", "--plugin-checksums", sums}, dirs: []string{"/a", "/b"}, want: []string{sum}},
		{name: "dirs without sums", args: []string{"--plugin-dir", "/a"}, usage: "needs --plugin-checksums"},
		{name: "sums unreadable", args: []string{"--plugin-dir", "/a", "--plugin-checksums", sums + ".missing"}, usage: "--plugin-checksums"},
		{name: "sums malformed", args: []string{"--plugin-dir", "/a", "--plugin-checksums", writeFile(t, "abc  x\n")}, usage: "not a SHA-256"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v, err := pluginCmd.Parse(tc.args, &bytes.Buffer{}, &bytes.Buffer{})
			if err != nil {
				t.Fatal(err)
			}
			dirs, got, err := v.Plugins()
			if tc.usage != "" {
				if cli.ExitCode(err) != 2 || !strings.Contains(err.Error(), tc.usage) {
					t.Errorf("%v; want a usage error containing %q", err, tc.usage)
				}
				return
			}
			if err != nil || !slices.Equal(dirs, tc.dirs) || !slices.Equal(got, tc.want) {
				t.Errorf("= %q, %q, %v; want %q, %q", dirs, got, err, tc.dirs, tc.want)
			}
		})
	}
}
