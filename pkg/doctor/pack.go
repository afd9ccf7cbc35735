package doctor

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"

	"go.yaml.in/yaml/v3"
)

// EnvPacksDir names the environment variable whose directory of packs the
// binaries load. Packs run commands on the hub's machine, so they are off
// unless an operator points at a directory.
const EnvPacksDir = "INTHUB_DOCTOR_PACKS_DIR"

// Pack is a declarative set of extra checks, loaded from YAML:
//
//	name: dns
//	description: name resolution of the endpoint
//	types: [scm.gitlab]            # optional: only these integration types
//	checks:
//	  - id: resolves
//	    name: the endpoint's host resolves
//	    run:
//	      exec: [dig, +short, "{{host}}"]
//	      timeoutSeconds: 10
//	    parse:
//	      regex: '^[0-9a-f.:]+$'     # searched per line of stdout, then stderr
//	      match: pass                # status on a match (pass)
//	      noMatch: fail              # status without one (fail)
//	    how_to_fix:
//	      summary: make the name resolve
//	      commands: ["dig +trace {{host}}"]
//
// parse may instead read a JSON field of stdout:
//
//	parse:
//	  json:
//	    field: status.indicator      # dotted path
//	    pass: [none]
//	    warn: [minor]
//	    # any other value, or no such field: fail
//
// Without parse, exit status 0 passes and anything else fails. argv and
// how_to_fix commands may use {{host}}, {{port}}, {{endpoint}}
// (scheme://host:port) and {{type}}; argv is run without a shell.
type Pack struct {
	Name        string      `yaml:"name"`
	Description string      `yaml:"description"`
	Types       []string    `yaml:"types"`
	Checks      []PackCheck `yaml:"checks"`
	// File is where the pack was loaded from.
	File string `yaml:"-"`
}

// PackCheck is one check of a pack.
type PackCheck struct {
	ID       string     `yaml:"id"`
	Name     string     `yaml:"name"`
	Run      PackRun    `yaml:"run"`
	Parse    *PackParse `yaml:"parse"`
	HowToFix *HowToFix  `yaml:"how_to_fix"`
	// Suggestions are shown with a warning or a failure.
	Suggestions []string `yaml:"suggestions"`

	re *regexp.Regexp
}

// PackRun is the command of a check.
type PackRun struct {
	Exec           []string `yaml:"exec"`
	TimeoutSeconds int      `yaml:"timeoutSeconds"`
}

// PackParse turns a command's output into a status.
type PackParse struct {
	Regex   string        `yaml:"regex"`
	Match   Status        `yaml:"match"`
	NoMatch Status        `yaml:"noMatch"`
	JSON    *PackJSONRule `yaml:"json"`
}

// PackJSONRule maps a JSON field of stdout to a status.
type PackJSONRule struct {
	Field string   `yaml:"field"`
	Pass  []string `yaml:"pass"`
	Warn  []string `yaml:"warn"`
}

// Applies reports whether the pack is for integrations of typ.
func (p Pack) Applies(typ string) bool {
	return len(p.Types) == 0 || slices.Contains(p.Types, typ)
}

var idPattern = regexp.MustCompile(`^[a-z0-9][a-z0-9_.-]{0,62}$`)

// maxPackBytes bounds one pack file.
const maxPackBytes = 1 << 20

// LoadPacks loads every *.yaml and *.yml file of dir, in name order. A
// pack that does not parse, has unknown fields, or runs a command the
// allow-list does not permit is refused, and so is the whole load: a
// half-loaded set of checks would report healthy for what it skipped.
func LoadPacks(dir string) ([]Pack, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("doctor packs: %w", err)
	}
	var names []string
	for _, e := range entries {
		ext := filepath.Ext(e.Name())
		if e.Type().IsRegular() && (ext == ".yaml" || ext == ".yml") {
			names = append(names, e.Name())
		}
	}
	sort.Strings(names)
	var packs []Pack
	seen := map[string]string{}
	for _, n := range names {
		path := filepath.Join(dir, n)
		f, err := os.Open(path)
		if err != nil {
			return nil, fmt.Errorf("doctor packs: %w", err)
		}
		b, err := io.ReadAll(io.LimitReader(f, maxPackBytes+1))
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("doctor packs: %s: %w", n, err)
		}
		if len(b) > maxPackBytes {
			return nil, fmt.Errorf("doctor packs: %s: larger than %d bytes", n, maxPackBytes)
		}
		p, err := ParsePack(b)
		if err != nil {
			return nil, fmt.Errorf("doctor packs: %s: %w", n, err)
		}
		if other, dup := seen[p.Name]; dup {
			return nil, fmt.Errorf("doctor packs: %s: pack name %q is taken by %s", n, p.Name, other)
		}
		seen[p.Name] = n
		p.File = path
		packs = append(packs, p)
	}
	return packs, nil
}

// ParsePack parses and checks one pack.
func ParsePack(b []byte) (Pack, error) {
	var p Pack
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&p); err != nil {
		return Pack{}, fmt.Errorf("not a pack: %w", err)
	}
	if err := dec.Decode(new(yaml.Node)); !errors.Is(err, io.EOF) {
		return Pack{}, errors.New("one pack per file: a second YAML document follows")
	}
	if !idPattern.MatchString(p.Name) {
		return Pack{}, fmt.Errorf("name %q: lower-case letters, digits, '.', '_' and '-', at most 63", p.Name)
	}
	if len(p.Checks) == 0 {
		return Pack{}, errors.New("no checks")
	}
	ids := map[string]bool{}
	for i := range p.Checks {
		c := &p.Checks[i]
		if !idPattern.MatchString(c.ID) {
			return Pack{}, fmt.Errorf("checks[%d].id %q: lower-case letters, digits, '.', '_' and '-', at most 63", i, c.ID)
		}
		if ids[c.ID] {
			return Pack{}, fmt.Errorf("checks[%d].id %q is used twice", i, c.ID)
		}
		ids[c.ID] = true
		if err := Allowed(c.Run.Exec); err != nil {
			return Pack{}, fmt.Errorf("check %s: %w", c.ID, err)
		}
		if t := c.Run.TimeoutSeconds; t < 0 || t > 120 {
			return Pack{}, fmt.Errorf("check %s: run.timeoutSeconds must be between 1 and 120", c.ID)
		}
		if err := c.checkParse(); err != nil {
			return Pack{}, fmt.Errorf("check %s: parse: %w", c.ID, err)
		}
		if c.HowToFix != nil && c.HowToFix.Commands == nil {
			c.HowToFix.Commands = []string{}
		}
	}
	return p, nil
}

func (c *PackCheck) checkParse() error {
	p := c.Parse
	if p == nil {
		return nil
	}
	if (p.Regex == "") == (p.JSON == nil) {
		return errors.New("give exactly one of regex and json")
	}
	if p.JSON != nil {
		if p.JSON.Field == "" {
			return errors.New("json.field is required")
		}
		return nil
	}
	re, err := regexp.Compile(p.Regex)
	if err != nil {
		return fmt.Errorf("regex: %w", err)
	}
	c.re = re
	if p.Match == "" {
		p.Match = StatusPass
	}
	if p.NoMatch == "" {
		p.NoMatch = StatusFail
	}
	for _, s := range []Status{p.Match, p.NoMatch} {
		if s != StatusPass && s != StatusWarn && s != StatusFail {
			return fmt.Errorf("status %q: want pass, warn or fail", s)
		}
	}
	return nil
}

// The allow-list. A pack may run only these read-only diagnostics, each
// with only the options listed (an option not listed is refused, so a new
// write option of a tool stays out until it is added here on purpose).
// Executables are bare names, found on PATH when the check runs: a path
// would let a pack run anything under an allowed name.
var allowList = map[string]argRule{
	// DNS lookups.
	"dig":      {anyArgs: true, deny: []string{"-f", "-k", "-y"}},
	"nslookup": {anyArgs: true},
	"host":     {anyArgs: true},
	// A TLS handshake that prints the server's certificate.
	"openssl": {first: "s_client", flags: map[string]bool{"-connect": true, "-servername": true, "-showcerts": false,
		"-brief": false, "-verify_return_error": false, "-CAfile": true, "-tls1_2": false, "-tls1_3": false,
		"-alpn": true, "-verify_hostname": true, "-status": false}},
	// An HTTP HEAD request, nothing else.
	"curl": {require: []string{"-I", "--head"}, flags: map[string]bool{"-I": false, "--head": false, "-s": false,
		"--silent": false, "-S": false, "--show-error": false, "-sS": false, "-v": false, "--verbose": false,
		"-k": false, "--insecure": false, "-L": false, "--location": false, "--max-time": true, "-m": true,
		"--connect-timeout": true, "--max-redirs": true, "--cacert": true, "--resolve": true, "-4": false,
		"-6": false, "--http1.1": false, "--http2": false, "-w": true, "--write-out": true, "-f": false,
		"--fail": false}},
	// A port probe that sends nothing.
	"nc": {require: []string{"-z"}, flags: map[string]bool{"-z": false, "-v": false, "-w": true, "-4": false,
		"-6": false, "-n": false, "-zv": false, "-vz": false}},
}

type argRule struct {
	// first is the subcommand argv[1] must be.
	first string
	// anyArgs allows every argument but those in deny.
	anyArgs bool
	deny    []string
	// flags are the allowed options; true: it takes a value (the next
	// argument). Arguments not starting with '-' are operands.
	flags map[string]bool
	// require: at least one of these must be given.
	require []string
}

// Allowed checks a pack command against the allow-list.
func Allowed(argv []string) error {
	if len(argv) == 0 {
		return errors.New("run.exec is empty")
	}
	name := argv[0]
	if name != filepath.Base(name) || strings.ContainsAny(name, `/\`) {
		return fmt.Errorf("run.exec %q: give the executable's bare name, not a path", name)
	}
	rule, ok := allowList[name]
	if !ok {
		return fmt.Errorf("run.exec %q is not on the doctor's allow-list of read-only diagnostics (%s): refused", name, allowedNames())
	}
	args := argv[1:]
	for _, a := range args {
		if strings.ContainsRune(a, 0) || strings.ContainsAny(a, "\n\r") {
			return fmt.Errorf("run.exec %s: an argument holds a control character", name)
		}
	}
	if rule.first != "" {
		if len(args) == 0 || args[0] != rule.first {
			return fmt.Errorf("run.exec %s: only %s %s is allowed", name, name, rule.first)
		}
		args = args[1:]
	}
	if rule.anyArgs {
		for _, a := range args {
			if slices.Contains(rule.deny, a) {
				return fmt.Errorf("run.exec %s: option %s is not allowed", name, a)
			}
		}
		return nil
	}
	required := len(rule.require) == 0
	for i := 0; i < len(args); i++ {
		a := args[i]
		if !strings.HasPrefix(a, "-") || a == "-" {
			continue // an operand: a host, a port, a URL
		}
		flag, _, hasInline := strings.Cut(a, "=")
		takesValue, known := rule.flags[flag]
		if !known {
			return fmt.Errorf("run.exec %s: option %s is not allowed (allowed: %s)", name, flag, flagNames(rule))
		}
		if slices.Contains(rule.require, flag) {
			required = true
		}
		if takesValue && !hasInline {
			i++
			if i >= len(args) {
				return fmt.Errorf("run.exec %s: option %s needs a value", name, flag)
			}
		}
	}
	if !required {
		return fmt.Errorf("run.exec %s: needs %s", name, strings.Join(rule.require, " or "))
	}
	if name == "curl" {
		// A URL operand must be http(s): curl speaks many protocols
		// (file://, dict://, gopher://) that are no HEAD request.
		for _, a := range args {
			if strings.Contains(a, "://") && !strings.HasPrefix(a, "http://") && !strings.HasPrefix(a, "https://") &&
				!strings.HasPrefix(a, "{{endpoint}}") {
				return fmt.Errorf("run.exec curl: only http(s) URLs are allowed")
			}
		}
	}
	return nil
}

func allowedNames() string {
	names := make([]string, 0, len(allowList))
	for n := range allowList {
		names = append(names, n)
	}
	sort.Strings(names)
	return strings.Join(names, ", ")
}

func flagNames(r argRule) string {
	names := make([]string, 0, len(r.flags))
	for n := range r.flags {
		names = append(names, n)
	}
	sort.Strings(names)
	return strings.Join(names, " ")
}

// expand fills the placeholders of one argument.
func expand(s string, vars map[string]string) string {
	for k, v := range vars {
		s = strings.ReplaceAll(s, "{{"+k+"}}", v)
	}
	return s
}

// safeOperand reports whether a value substituted into argv cannot be
// taken for an option (a host name "-oProxyCommand=..." would be).
func safeOperand(v string) bool {
	return v != "" && !strings.HasPrefix(v, "-") && !strings.ContainsAny(v, " \t\r\n\x00")
}
