package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"inthub.dev/pkg/deadletter"
	"inthub.dev/services/annotation"
	"inthub.dev/services/internal/cli"
)

// defaultNATSURL is where `inthub dev` (make run) puts its embedded server;
// it avoids 4222 so a system NATS does not answer in its place.
const defaultNATSURL = "nats://127.0.0.1:4250"

const (
	exitOK    = 0
	exitError = 1
	exitUsage = 2
)

// env is what run takes from the process, passed in so tests control it.
type env struct {
	getenv func(string) string
	now    func() time.Time
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return runEnv(ctx, args, stdout, stderr, env{getenv: os.Getenv, now: time.Now})
}

func runEnv(ctx context.Context, args []string, stdout, stderr io.Writer, e env) int {
	a := &app{ctx: ctx, stdout: stdout, stderr: stderr, env: e}
	err := a.dispatch(args)
	var ue *usageError
	var pe *problemError
	var xs *exitStatus
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &xs):
		return xs.code
	case errors.As(err, &pe):
		// The catalog API's problem document, already worded for the
		// operator: "error: <title> (<status>): <detail>" and its fields.
		fmt.Fprint(stderr, pe.Error())
		return exitError
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "inthubctl: %s\nRun '%s --help' for usage.\n", ue.msg, ue.cmd)
		return exitUsage
	default:
		fmt.Fprintf(stderr, "inthubctl: %v\n", err)
		return exitError
	}
}

// usageError is a mistake on the command line (exit 2); cmd names the
// command whose --help explains the right form.
type usageError struct{ cmd, msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(cmd, format string, args ...any) error {
	return &usageError{cmd: cmd, msg: fmt.Sprintf(format, args...)}
}

type app struct {
	ctx            context.Context
	stdout, stderr io.Writer
	env            env
}

// opts holds every flag of every command; each command registers the ones
// it takes.
type opts struct {
	natsURL, output string

	subject, tenant, integration, errText, since, until string
	limit                                               int

	dryRun   bool
	operator string
	seqs     seqList
	all      bool

	// cat holds the flags of the catalog commands (catalog.go).
	cat catalogOpts
	// ann holds the flags of annotate (annotate.go).
	ann annotateOpts
}

type command struct {
	group, name string // name "" is a command without subcommands (migrate)
	args        string // positional arguments, for the usage line
	summary     string
	about       string
	flags       func(fs *flag.FlagSet, o *opts)
	run         func(a *app, o *opts, pos []string) error
}

func (c command) path() string {
	if c.name == "" {
		return "inthubctl " + c.group
	}
	return "inthubctl " + c.group + " " + c.name
}

func commands() []command {
	cmds := []command{
		{
			group: "dlq", name: "list", summary: "list dead letters, oldest first",
			about: "Lists the dead letters in the DLQ stream that match the filters, oldest first.\nListing changes nothing on the server (no consumer is created).",
			flags: func(fs *flag.FlagSet, o *opts) { filterFlags(fs, o, "last failure") },
			run:   (*app).dlqList,
		},
		{
			group: "dlq", name: "show", args: "<seq>", summary: "show one dead letter with all headers and its body",
			about: "Shows the dead letter with DLQ stream sequence <seq>: every header and the body.",
			flags: func(*flag.FlagSet, *opts) {},
			run:   (*app).dlqShow,
		},
		{
			group: "dlq", name: "replay", summary: "re-publish dead letters to their original subjects",
			about: `Re-publishes each matching dead letter to its original subject: body untouched,
a new Nats-Msg-Id, header Inthub-Replay-Of: <DLQ seq>, the Inthub failure
headers dropped. The letter is deleted from the DLQ only after JetStream
acknowledged the publish. An audit record (JSON) is written to stderr.`,
			flags: func(fs *flag.FlagSet, o *opts) {
				filterFlags(fs, o, "last failure")
				changeFlags(fs, o, "replayed")
				fs.Var(&o.seqs, "seq", "only these DLQ sequences, `SEQ[,SEQ...]`, repeatable; still narrowed by the filters")
			},
			run: (*app).dlqReplay,
		},
		{
			group: "dlq", name: "purge", summary: "delete dead letters",
			about: `Deletes the matching dead letters. Refuses to run without a filter or --seq
unless --all is given. An audit record (JSON) is written to stderr.`,
			flags: func(fs *flag.FlagSet, o *opts) {
				filterFlags(fs, o, "last failure")
				changeFlags(fs, o, "purged")
				fs.Var(&o.seqs, "seq", "only these DLQ sequences, `SEQ[,SEQ...]`, repeatable; still narrowed by the filters")
				fs.BoolVar(&o.all, "all", false, "allow purging with no filter: every dead letter")
			},
			run: (*app).dlqPurge,
		},
		{
			group: "spool", name: "list", summary: "list payloads spooled for offline integrations",
			about: "Lists the payloads in the SPOOL stream that match the filters, oldest first.",
			flags: func(fs *flag.FlagSet, o *opts) { filterFlags(fs, o, "spooled time") },
			run:   (*app).spoolList,
		},
		{
			group: "spool", name: "drain", summary: "re-publish spooled payloads to their original subjects",
			about: `Re-publishes each matching spooled payload to its original subject, in spool
order (so the order per integration is kept), and deletes it from the spool
once JetStream acknowledged the publish. The new Nats-Msg-Id is derived from
the entry (<original id>:drain:<spool seq>), so draining again after an
interruption does not deliver a payload twice. Stops at the first failure.
Annotation requests superseded by a newer one for the same target (sticky
comment key, status context, check run; or an older head commit of the same
pull request) are deleted instead of drained, as the annotation worker's own
drain does. An audit record (JSON) is written to stderr.`,
			flags: func(fs *flag.FlagSet, o *opts) {
				filterFlags(fs, o, "spooled time")
				changeFlags(fs, o, "drained")
			},
			run: (*app).spoolDrain,
		},
	}
	cmds = append(cmds, annotateCommand(), doctorCommand())
	return append(cmds, catalogCommands()...)
}

var groupSummary = map[string]string{
	"dlq":      "Dead letters in the DLQ stream: list, show, replay, purge",
	"spool":    "Payloads held for offline integrations in the SPOOL stream: list, drain",
	"annotate": "Publish an annotation request (as Scanner does) and wait for its result",
}

func (a *app) dispatch(args []string) error {
	g := opts{natsURL: a.env.getenv("NATS_URL"), output: "table"}
	if g.natsURL == "" {
		g.natsURL = defaultNATSURL
	}
	a.catalogDefaults(&g)
	top := newFlagSet("inthubctl")
	globalFlags(top, &g)
	serverFlags(top, &g)
	if err := top.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			a.topUsage(a.stdout)
			return nil
		}
		return usagef("inthubctl", "%v", err)
	}
	rest := top.Args()
	if len(rest) == 0 {
		return usagef("inthubctl", "missing command (%s)", groupNames())
	}
	group := rest[0]
	if group == "help" {
		if len(rest) > 1 {
			return a.dispatch(append(rest[1:], "--help"))
		}
		a.topUsage(a.stdout)
		return nil
	}
	var cmds []command
	for _, c := range commands() {
		if c.group == group {
			cmds = append(cmds, c)
		}
	}
	if len(cmds) == 0 {
		return usagef("inthubctl", "unknown command %q (want %s)", group, groupNames())
	}
	rest = rest[1:]
	var c command
	if len(cmds) == 1 && cmds[0].name == "" {
		c = cmds[0]
	} else {
		if len(rest) == 0 {
			return usagef("inthubctl "+group, "missing %s command (%s)", group, names(cmds))
		}
		if isHelp(rest[0]) {
			a.groupUsage(a.stdout, group, cmds)
			return nil
		}
		i := slices.IndexFunc(cmds, func(c command) bool { return c.name == rest[0] })
		if i < 0 {
			return usagef("inthubctl "+group, "unknown %s command %q (want %s)", group, rest[0], names(cmds))
		}
		c = cmds[i]
		rest = rest[1:]
	}
	o := g
	fs := newFlagSet(c.path())
	if isCatalogGroup(c.group) {
		catalogGlobalFlags(fs, &o, c.group)
	} else {
		globalFlags(fs, &o)
	}
	c.flags(fs, &o)
	pos, err := parseInterleaved(fs, rest)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			a.commandUsage(a.stdout, c, fs)
			return nil
		}
		return usagef(c.path(), "%v", err)
	}
	if o.output != "table" && o.output != "json" {
		return usagef(c.path(), "-o: %q is not table or json", o.output)
	}
	return c.run(a, &o, pos)
}

// groupNames lists the commands, in the order of commands().
func groupNames() string {
	var gs []string
	for _, c := range commands() {
		if !slices.Contains(gs, c.group) {
			gs = append(gs, c.group)
		}
	}
	return strings.Join(gs, ", ")
}

func names(cmds []command) string {
	var ns []string
	for _, c := range cmds {
		ns = append(ns, c.name)
	}
	return strings.Join(ns, ", ")
}

func isHelp(s string) bool { return s == "-h" || s == "-help" || s == "--help" }

func newFlagSet(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	// Errors and help are printed by dispatch, to the right stream.
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	return fs
}

// parseInterleaved lets positional arguments sit between flags
// ("dlq show 42 -o json"), which the flag package alone stops at.
func parseInterleaved(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return pos, nil
		}
		// The flag package swallows a "--" terminator; everything after
		// it is positional.
		if n := len(args) - len(rest); n > 0 && args[n-1] == "--" {
			return append(pos, rest...), nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

func globalFlags(fs *flag.FlagSet, o *opts) {
	fs.StringVar(&o.natsURL, "nats-url", o.natsURL, "NATS server `URL` (env NATS_URL; default "+defaultNATSURL+")")
	fs.StringVar(&o.output, "o", o.output, "output `FORMAT`: table or json")
}

func filterFlags(fs *flag.FlagSet, o *opts, when string) {
	fs.StringVar(&o.subject, "subject", "", "original `SUBJECT`, NATS wildcards allowed (scm.>, integration.*)")
	fs.StringVar(&o.tenant, "tenant", "", "tenant `ID`")
	fs.StringVar(&o.integration, "integration", "", "integration `ID`")
	fs.StringVar(&o.errText, "error", "", "case-insensitive `TEXT` in the last error")
	fs.StringVar(&o.since, "since", "", when+" at or after `TIME`: RFC 3339 (2025-01-02T15:04:05Z), a date (2025-01-02), or a duration back from now (2h, 30m)")
	fs.StringVar(&o.until, "until", "", when+" before `TIME` (same forms as --since)")
	fs.IntVar(&o.limit, "limit", 0, "at most `N` of them, oldest first (0: no limit)")
}

func changeFlags(fs *flag.FlagSet, o *opts, verb string) {
	fs.BoolVar(&o.dryRun, "dry-run", false, "show what would be "+verb+"; change nothing")
	fs.StringVar(&o.operator, "operator", "", "`NAME` of who runs this, for the audit record (default $USER)")
}

// seqList is a repeatable, comma-separated list of stream sequences.
type seqList []uint64

func (l *seqList) String() string {
	if l == nil {
		return ""
	}
	var ss []string
	for _, s := range *l {
		ss = append(ss, strconv.FormatUint(s, 10))
	}
	return strings.Join(ss, ",")
}

func (l *seqList) Set(v string) error {
	for _, p := range strings.Split(v, ",") {
		p = strings.TrimSpace(p)
		if p == "" {
			continue
		}
		n, err := strconv.ParseUint(p, 10, 64)
		if err != nil || n == 0 {
			return fmt.Errorf("%q is not a stream sequence (a positive integer)", p)
		}
		*l = append(*l, n)
	}
	return nil
}

func (a *app) filter(c string, o *opts) (deadletter.Filter, error) {
	f := deadletter.Filter{
		Subject:       o.subject,
		TenantID:      o.tenant,
		IntegrationID: o.integration,
		ErrorContains: o.errText,
		Limit:         o.limit,
	}
	var err error
	if f.Since, err = parseWhen(o.since, a.env.now()); err != nil {
		return f, usagef(c, "--since: %v", err)
	}
	if f.Until, err = parseWhen(o.until, a.env.now()); err != nil {
		return f, usagef(c, "--until: %v", err)
	}
	if o.limit < 0 {
		return f, usagef(c, "--limit: %d is negative", o.limit)
	}
	return f, nil
}

// parseWhen reads an RFC 3339 time, a date (UTC midnight), or a duration
// meaning that long before now.
func parseWhen(s string, now time.Time) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if d, err := time.ParseDuration(s); err == nil {
		if d <= 0 {
			return time.Time{}, fmt.Errorf("duration %q must be positive (it counts back from now)", s)
		}
		return now.Add(-d).UTC(), nil
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t.UTC(), nil
	}
	if t, err := time.Parse(time.DateOnly, s); err == nil {
		return t, nil
	}
	return time.Time{}, fmt.Errorf("%q is neither an RFC 3339 time (2025-01-02T15:04:05Z), a date (2025-01-02) nor a duration (2h, 90m)", s)
}

func (a *app) operator(c string, o *opts) (string, error) {
	op := strings.TrimSpace(o.operator)
	if op == "" {
		op = a.env.getenv("USER")
	}
	if op == "" && !o.dryRun {
		return "", usagef(c, "--operator is required for the audit record ($USER is not set)")
	}
	return op, nil
}

// dialNATS connects with the services' options (cli.NATSOptions: name,
// timeouts, pings, reconnects to any member of a cluster), but without
// their retry of the first connection: a person should hear at once that
// NATS is not there.
func dialNATS(urls string) (*nats.Conn, error) {
	servers, err := cli.NATSServers(urls)
	if err != nil {
		return nil, usagef("inthubctl", "--nats-url: %v", err)
	}
	nc, err := nats.Connect(servers, cli.NATSOptions("inthubctl")...)
	if err != nil {
		return nil, fmt.Errorf("connect to NATS at %s: %w (is inthub running? set --nats-url or NATS_URL)", redactURLs(servers), err)
	}
	return nc, nil
}

// redactURLs hides passwords in a list of NATS URLs for a message.
func redactURLs(list string) string {
	items := strings.Split(list, ",")
	for i, s := range items {
		if u, err := url.Parse(s); err == nil && u.User != nil {
			items[i] = u.Redacted()
		}
	}
	return strings.Join(items, ",")
}

// connect opens the store; the returned func closes the connection.
func (a *app) connect(o *opts) (*deadletter.Store, func(), error) {
	nc, err := dialNATS(o.natsURL)
	if err != nil {
		return nil, nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, nil, fmt.Errorf("jetstream: %w", err)
	}
	// Audit records go to stderr as JSON lines, apart from the output on
	// stdout that scripts parse.
	audit := slog.New(slog.NewJSONHandler(a.stderr, nil))
	st, err := deadletter.New(js, deadletter.WithLogger(audit), deadletter.WithClock(a.env.now))
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	return st, nc.Close, nil
}

func noArgs(c string, pos []string) error {
	if len(pos) > 0 {
		return usagef(c, "unexpected argument %q", pos[0])
	}
	return nil
}

func (a *app) dlqList(o *opts, pos []string) error {
	const c = "inthubctl dlq list"
	return a.list(c, o, pos, false)
}

func (a *app) spoolList(o *opts, pos []string) error {
	const c = "inthubctl spool list"
	return a.list(c, o, pos, true)
}

func (a *app) list(c string, o *opts, pos []string, spool bool) error {
	if err := noArgs(c, pos); err != nil {
		return err
	}
	f, err := a.filter(c, o)
	if err != nil {
		return err
	}
	st, done, err := a.connect(o)
	if err != nil {
		return err
	}
	defer done()
	var ls []deadletter.Letter
	if spool {
		ls, err = st.SpoolList(a.ctx, f)
	} else {
		ls, err = st.List(a.ctx, f)
	}
	if err != nil {
		return err
	}
	if o.output == "json" {
		return writeJSON(a.stdout, lettersJSON(ls))
	}
	if spool {
		return writeSpoolTable(a.stdout, ls)
	}
	return writeDLQTable(a.stdout, ls)
}

func (a *app) dlqShow(o *opts, pos []string) error {
	const c = "inthubctl dlq show"
	if len(pos) != 1 {
		return usagef(c, "want exactly one <seq>, got %d arguments", len(pos))
	}
	seq, err := strconv.ParseUint(pos[0], 10, 64)
	if err != nil || seq == 0 {
		return usagef(c, "%q is not a stream sequence (a positive integer)", pos[0])
	}
	st, done, err := a.connect(o)
	if err != nil {
		return err
	}
	defer done()
	l, err := st.Show(a.ctx, seq)
	if err != nil {
		return err
	}
	if o.output == "json" {
		return writeJSON(a.stdout, letterToJSON(l))
	}
	return writeShow(a.stdout, l)
}

func (a *app) dlqReplay(o *opts, pos []string) error {
	return a.replay("inthubctl dlq replay", o, pos, false)
}

func (a *app) spoolDrain(o *opts, pos []string) error {
	return a.replay("inthubctl spool drain", o, pos, true)
}

func (a *app) replay(c string, o *opts, pos []string, spool bool) error {
	if err := noArgs(c, pos); err != nil {
		return err
	}
	f, err := a.filter(c, o)
	if err != nil {
		return err
	}
	op, err := a.operator(c, o)
	if err != nil {
		return err
	}
	st, done, err := a.connect(o)
	if err != nil {
		return err
	}
	defer done()
	ro := deadletter.ReplayOptions{DryRun: o.dryRun, Operator: op, Seqs: o.seqs}
	var res deadletter.ReplayResult
	if spool {
		// The same merge rule as the worker's own drain: the newest
		// request per target, none for a superseded head.
		ro.Compact = annotation.Compact
		res, err = st.SpoolDrain(a.ctx, f, ro)
	} else {
		res, err = st.Replay(a.ctx, f, ro)
	}
	// What was done is printed even when the run stopped part-way.
	var werr error
	if o.output == "json" {
		werr = writeJSON(a.stdout, replayToJSON(res))
	} else {
		werr = writeReplayTable(a.stdout, res, spool)
	}
	return errors.Join(err, werr)
}

func (a *app) dlqPurge(o *opts, pos []string) error {
	const c = "inthubctl dlq purge"
	if err := noArgs(c, pos); err != nil {
		return err
	}
	f, err := a.filter(c, o)
	if err != nil {
		return err
	}
	if f.IsZero() && len(o.seqs) == 0 && !o.all {
		return usagef(c, "refusing to purge every dead letter: give a filter (--subject, --tenant, --integration, --error, --since, --until) or --seq, or --all to mean it")
	}
	op, err := a.operator(c, o)
	if err != nil {
		return err
	}
	st, done, err := a.connect(o)
	if err != nil {
		return err
	}
	defer done()
	n, err := st.Purge(a.ctx, f, deadletter.PurgeOptions{DryRun: o.dryRun, Operator: op, Seqs: o.seqs, All: o.all})
	var werr error
	if o.output == "json" {
		werr = writeJSON(a.stdout, purgeJSON{DryRun: o.dryRun, Count: n})
	} else {
		werr = writePurge(a.stdout, n, o.dryRun)
	}
	return errors.Join(err, werr)
}
