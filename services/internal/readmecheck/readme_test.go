package readmecheck_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"inthub.dev/pkg/telemetry"
	"inthub.dev/schemas"
)

// root is the repository, seen from this package's directory.
const root = "../../.."

func readme(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// option is one configurable setting of a binary.
type option struct {
	flag, env, def string
}

func (o option) row() string {
	def := "(none)"
	if o.def != "" {
		def = "`" + o.def + "`"
	}
	return fmt.Sprintf("| `--%s` | `%s` | %s | ... |", o.flag, o.env, def)
}

// TestConfigurationReference builds every binary of services/cmd and holds
// the README's "Configuration reference" to what each one's --help says:
// every flag with its environment variable and default, and no row for a
// flag that is gone. The help text is printed from the same tables the
// flags are parsed from (cli.Command.Options, inthub's devFlags), so this
// is a check against the code, not against another document.
func TestConfigurationReference(t *testing.T) {
	if testing.Short() {
		t.Skip("builds every binary")
	}
	bin := buildBinaries(t)
	entries, err := os.ReadDir(bin)
	if err != nil {
		t.Fatal(err)
	}
	sections := configSections(t, readme(t))
	seen := map[string]bool{}
	for _, e := range entries {
		name := e.Name()
		section, args, parse := name, []string{"--help"}, parseServiceHelp
		switch name {
		case "inthub":
			section, args = "inthub dev", []string{"dev", "--help"}
		case "inthubctl":
			parse = parseCtlHelp
		}
		seen[section] = true
		t.Run(section, func(t *testing.T) {
			help := run(t, filepath.Join(bin, name), args...)
			want := parse(help)
			if len(want) == 0 {
				t.Fatalf("found no options in %s %s:\n%s", name, strings.Join(args, " "), help)
			}
			got, ok := sections[section]
			if !ok {
				t.Fatalf("README.md has no section ### `%s` under ## Configuration reference; its rows would be:\n%s", section, rows(want))
			}
			for _, o := range want {
				g, ok := got[o.flag]
				switch {
				case !ok:
					t.Errorf("README.md, `%s`: no row for --%s; add\n%s", section, o.flag, o.row())
				case g.env != o.env || g.def != o.def:
					t.Errorf("README.md, `%s`: --%s has env %q, default %q; the binary says env %q, default %q:\n%s",
						section, o.flag, g.env, g.def, o.env, o.def, o.row())
				}
			}
			for flag := range got {
				if !slices.ContainsFunc(want, func(o option) bool { return o.flag == flag }) {
					t.Errorf("README.md, `%s`: row for --%s, which %s %s does not list", section, flag, name, strings.Join(args, " "))
				}
			}
		})
	}
	for s := range sections {
		if !seen[s] {
			t.Errorf("README.md documents `%s`, which is not a binary of services/cmd", s)
		}
	}
}

// TestTelemetryVariables: the variables that pkg/telemetry reads itself are
// in the README.
func TestTelemetryVariables(t *testing.T) {
	doc := readme(t)
	for _, v := range []string{telemetry.EnvEndpoint, telemetry.EnvTracesEndpoint, telemetry.EnvProtocol,
		telemetry.EnvTracesProtocol, telemetry.EnvTracesExporter, telemetry.EnvSDKDisabled} {
		if !strings.Contains(doc, "`"+v+"`") {
			t.Errorf("README.md does not mention `%s`, which pkg/telemetry reads", v)
		}
	}
}

// TestEventCatalogue: every event type with a schema has a row in the
// README's event catalogue, linked to that schema file.
func TestEventCatalogue(t *testing.T) {
	doc := readme(t)
	cat := section(doc, "## Event catalogue")
	if cat == "" {
		t.Fatal("README.md has no ## Event catalogue")
	}
	rowRE := regexp.MustCompile("(?m)^\\| \\[`([a-z0-9_.]+)`\\]\\(([^)]+)\\)")
	rows := map[string]string{}
	for _, m := range rowRE.FindAllStringSubmatch(cat, -1) {
		rows[m[1]] = m[2]
	}
	for _, name := range schemas.Names() {
		if name == "envelope" {
			continue
		}
		link, ok := rows[name]
		want := "schemas/events/" + name + ".json"
		switch {
		case !ok:
			t.Errorf("the event catalogue has no row for %s; add | [`%s`](%s) | stream | publisher | consumers |", name, name, want)
		case link != want:
			t.Errorf("the event catalogue links %s to %s, want %s", name, link, want)
		}
		delete(rows, name)
	}
	for name := range rows {
		t.Errorf("the event catalogue lists %s, which has no schema in schemas/events", name)
	}
}

// TestLinks: every relative link of the README names a file or directory
// that exists.
func TestLinks(t *testing.T) {
	doc := readme(t)
	// Code spans may hold text that looks like a link.
	doc = regexp.MustCompile("(?s)```.*?```").ReplaceAllString(doc, "")
	for _, m := range regexp.MustCompile(`\]\(([^)\s]+)\)`).FindAllStringSubmatch(doc, -1) {
		target := m[1]
		if strings.Contains(target, "://") || strings.HasPrefix(target, "#") || strings.HasPrefix(target, "mailto:") {
			continue
		}
		target, _, _ = strings.Cut(target, "#")
		if strings.HasPrefix(target, "../") {
			continue // beside the repository (the shared design), not in it
		}
		if _, err := os.Stat(filepath.Join(root, target)); err != nil {
			t.Errorf("README.md links to %s: %v", m[1], err)
		}
	}
}

func buildBinaries(t *testing.T) string {
	t.Helper()
	// go test puts its own go first on the PATH of the test.
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("no go command to build the binaries with: %v", err)
	}
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, goBin, "build", "-o", dir+string(filepath.Separator), "inthub.dev/services/cmd/...")
	// VCS stamping fails in some checkouts and nothing reads it (as in the Makefile).
	cmd.Env = append(os.Environ(), "GOFLAGS=-buildvcs=false")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return dir
}

func run(t *testing.T, bin string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	// The help shows built-in defaults only when no variable overrides them.
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v\n%s", bin, strings.Join(args, " "), err, out.String())
	}
	return out.String()
}

var (
	flagLine = regexp.MustCompile(`^  --([a-z0-9-]+)(?: \S+)?$`)
	envLine  = regexp.MustCompile(`^\s+\(env ([A-Z0-9_]+); default (.*)\)$`)
)

// parseServiceHelp reads the flag list that cli.Command.Usage and inthub
// dev print: "  --name [ARG]", the help, "(env VAR; default VALUE)".
func parseServiceHelp(help string) []option {
	var out []option
	var cur string
	for _, line := range strings.Split(help, "\n") {
		if m := flagLine.FindStringSubmatch(line); m != nil {
			cur = m[1]
			continue
		}
		if m := envLine.FindStringSubmatch(line); m != nil && cur != "" {
			def := m[2]
			if def == `""` || def == "none: embedded" {
				def = ""
			}
			out = append(out, option{flag: cur, env: m[1], def: def})
			cur = ""
		}
	}
	return out
}

// ctlOption matches inthubctl's global options, the ones read from the
// environment: "--nats-url URL ... (env NATS_URL; default ...)".
var ctlOption = regexp.MustCompile(`--([a-z0-9-]+) [A-Z]+\b[^(\n]*\(env ([A-Z0-9_]+)(?:; default ([^)\n]*))?\)`)

func parseCtlHelp(help string) []option {
	var out []option
	for _, m := range ctlOption.FindAllStringSubmatch(help, -1) {
		out = append(out, option{flag: m[1], env: m[2], def: m[3]})
	}
	return out
}

// configSections reads the tables under "## Configuration reference": one
// "### `binary`" each, rows "| `--flag` | `ENV` | default | ... |". A
// default written as one code span is that value; anything else (prose
// such as "(none)") means no default.
func configSections(t *testing.T, doc string) map[string]map[string]option {
	t.Helper()
	ref := section(doc, "## Configuration reference")
	if ref == "" {
		t.Fatal("README.md has no ## Configuration reference")
	}
	out := map[string]map[string]option{}
	var cur map[string]option
	headRE := regexp.MustCompile("^### `([a-z -]+)`")
	rowRE := regexp.MustCompile("^\\| `--([a-z0-9-]+)` \\| `([A-Z0-9_]+)` \\| ([^|]*) \\|")
	valRE := regexp.MustCompile("^`([^`]*)`$")
	for _, line := range strings.Split(ref, "\n") {
		if m := headRE.FindStringSubmatch(line); m != nil {
			cur = map[string]option{}
			out[m[1]] = cur
			continue
		}
		m := rowRE.FindStringSubmatch(line)
		if m == nil || cur == nil {
			continue
		}
		def := ""
		if v := valRE.FindStringSubmatch(strings.TrimSpace(m[3])); v != nil {
			def = v[1]
		}
		if _, dup := cur[m[1]]; dup {
			t.Errorf("README.md: --%s twice in one table", m[1])
		}
		cur[m[1]] = option{flag: m[1], env: m[2], def: def}
	}
	return out
}

// section is the text from heading to the next heading of its level.
func section(doc, heading string) string {
	i := strings.Index(doc, "\n"+heading+"\n")
	if i < 0 {
		return ""
	}
	rest := doc[i+len(heading)+2:]
	level := heading[:strings.Index(heading, " ")+1]
	if j := strings.Index(rest, "\n"+level); j >= 0 {
		rest = rest[:j]
	}
	return rest
}

func rows(opts []option) string {
	var s []string
	for _, o := range opts {
		s = append(s, o.row())
	}
	return strings.Join(s, "\n")
}
