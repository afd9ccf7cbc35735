package main

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"inthub.dev/pkg/deadletter"
)

// letterJSON is the -o json shape of a letter. Scripts depend on it: add
// fields, never rename or drop one. Every field is always present.
type letterJSON struct {
	Seq             uint64              `json:"seq"`
	Subject         string              `json:"subject"`
	OriginalSubject string              `json:"originalSubject"`
	MsgID           string              `json:"msgId"`
	TenantID        string              `json:"tenantId"`
	IntegrationID   string              `json:"integrationId"`
	ErrorClass      string              `json:"errorClass"`
	LastError       string              `json:"lastError"`
	Service         string              `json:"service"`
	DeliveryCount   int                 `json:"deliveryCount"`
	FirstFailure    *time.Time          `json:"firstFailure"`
	LastFailure     *time.Time          `json:"lastFailure"`
	SpooledAt       *time.Time          `json:"spooledAt"`
	StoredAt        *time.Time          `json:"storedAt"`
	Headers         map[string][]string `json:"headers"`
	// Data is the body itself when it is valid JSON (it normally is: a
	// CloudEvent), else a base64 string; DataEncoding says which, since a
	// JSON string body and a base64 string look alike.
	Data         json.RawMessage `json:"data"`
	DataEncoding string          `json:"dataEncoding"`
}

func letterToJSON(l deadletter.Letter) letterJSON {
	j := letterJSON{
		Seq:             l.Seq,
		Subject:         l.Subject,
		OriginalSubject: l.OriginalSubject,
		MsgID:           l.MsgID,
		TenantID:        l.TenantID,
		IntegrationID:   l.IntegrationID,
		ErrorClass:      l.ErrorClass,
		LastError:       l.LastError,
		Service:         l.Service,
		DeliveryCount:   l.DeliveryCount,
		FirstFailure:    timePtr(l.FirstFailure),
		LastFailure:     timePtr(l.LastFailure),
		SpooledAt:       timePtr(l.SpooledAt),
		StoredAt:        timePtr(l.StoredAt),
		Headers:         map[string][]string(l.Header),
	}
	if j.Headers == nil {
		j.Headers = map[string][]string{}
	}
	if len(l.Data) > 0 && json.Valid(l.Data) {
		var buf bytes.Buffer
		// Compact, so the indentation of the whole document is the
		// encoder's and the body reads as part of it.
		if json.Compact(&buf, l.Data) == nil {
			j.Data, j.DataEncoding = buf.Bytes(), "json"
			return j
		}
	}
	enc, _ := json.Marshal(base64.StdEncoding.EncodeToString(l.Data))
	j.Data, j.DataEncoding = enc, "base64"
	return j
}

func lettersJSON(ls []deadletter.Letter) []letterJSON {
	out := make([]letterJSON, 0, len(ls))
	for _, l := range ls {
		out = append(out, letterToJSON(l))
	}
	return out
}

func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	u := t.UTC()
	return &u
}

type replayedJSON struct {
	Seq             uint64 `json:"seq"`
	OriginalSubject string `json:"originalSubject"`
	NewMsgID        string `json:"newMsgId"`
	Duplicate       bool   `json:"duplicate"`
}

type replayResultJSON struct {
	DryRun   bool           `json:"dryRun"`
	Count    int            `json:"count"`
	Replayed []replayedJSON `json:"replayed"`
	// Dropped are spool entries superseded by a newer one for the same
	// target (spool drain only): deleted, not drained.
	Dropped []droppedJSON `json:"dropped,omitempty"`
}

type droppedJSON struct {
	Seq    uint64 `json:"seq"`
	Reason string `json:"reason"`
}

func replayToJSON(r deadletter.ReplayResult) replayResultJSON {
	j := replayResultJSON{DryRun: r.DryRun, Count: len(r.Replayed), Replayed: []replayedJSON{}}
	for _, x := range r.Replayed {
		j.Replayed = append(j.Replayed, replayedJSON{Seq: x.Seq, OriginalSubject: x.OriginalSubject, NewMsgID: x.NewMsgID, Duplicate: x.Duplicate})
	}
	for _, x := range r.Dropped {
		j.Dropped = append(j.Dropped, droppedJSON{Seq: x.Seq, Reason: x.Reason})
	}
	return j
}

type purgeJSON struct {
	DryRun bool `json:"dryRun"`
	Count  int  `json:"count"`
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

const errorWidth = 60

func writeDLQTable(w io.Writer, ls []deadletter.Letter) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SEQ\tSUBJECT\tTENANT\tINTEGRATION\tCLASS\tDELIVERIES\tLAST FAILURE\tERROR")
	for _, l := range ls {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%d\t%s\t%s\n", l.Seq, cell(l.OriginalSubject), cell(l.TenantID),
			cell(l.IntegrationID), cell(l.ErrorClass), l.DeliveryCount, cellTime(l.LastFailure), truncate(l.LastError, errorWidth))
	}
	return tw.Flush()
}

func writeSpoolTable(w io.Writer, ls []deadletter.Letter) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SEQ\tSUBJECT\tTENANT\tINTEGRATION\tMSG ID\tSPOOLED AT\tERROR")
	for _, l := range ls {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\n", l.Seq, cell(l.OriginalSubject), cell(l.TenantID),
			cell(l.IntegrationID), cell(l.MsgID), cellTime(l.SpooledAt), truncate(l.LastError, errorWidth))
	}
	return tw.Flush()
}

func writeShow(w io.Writer, l deadletter.Letter) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	row := func(k, v string) { fmt.Fprintf(tw, "%s:\t%s\n", k, v) }
	row("Seq", strconv.FormatUint(l.Seq, 10))
	row("Subject", l.Subject)
	row("Original subject", cell(l.OriginalSubject))
	row("Msg id", cell(l.MsgID))
	row("Tenant", cell(l.TenantID))
	row("Integration", cell(l.IntegrationID))
	row("Service", cell(l.Service))
	row("Error class", cell(l.ErrorClass))
	row("Deliveries", strconv.Itoa(l.DeliveryCount))
	row("First failure", cellTime(l.FirstFailure))
	row("Last failure", cellTime(l.LastFailure))
	row("Stored at", cellTime(l.StoredAt))
	row("Last error", cell(oneLine(l.LastError)))
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w, "\nHeaders:")
	keys := make([]string, 0, len(l.Header))
	for k := range l.Header {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		for _, v := range l.Header[k] {
			fmt.Fprintf(w, "  %s: %s\n", k, v)
		}
	}
	fmt.Fprintln(w, "\nBody:")
	var buf bytes.Buffer
	if json.Indent(&buf, l.Data, "  ", "  ") == nil {
		fmt.Fprintf(w, "  %s\n", buf.Bytes())
	} else {
		fmt.Fprintf(w, "  (not JSON, %d bytes, base64) %s\n", len(l.Data), base64.StdEncoding.EncodeToString(l.Data))
	}
	return nil
}

func writeReplayTable(w io.Writer, r deadletter.ReplayResult, spool bool) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SEQ\tORIGINAL SUBJECT\tNEW MSG ID")
	for _, x := range r.Replayed {
		id := x.NewMsgID
		switch {
		case r.DryRun && id == "":
			id = "(new on replay)"
		case x.Duplicate:
			id += " (delivered by an earlier drain)"
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\n", x.Seq, x.OriginalSubject, id)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	verb, noun := "replayed", "dead letter"
	if spool {
		verb, noun = "drained", "spooled payload"
	}
	for _, x := range r.Dropped {
		if _, err := fmt.Fprintf(w, "seq %d superseded, not drained: %s\n", x.Seq, x.Reason); err != nil {
			return err
		}
	}
	n := len(r.Replayed)
	if r.DryRun {
		_, err := fmt.Fprintf(w, "dry run: would have %s %d %s; nothing changed\n", verb, n, plural(n, noun))
		return err
	}
	_, err := fmt.Fprintf(w, "%s %d %s\n", verb, n, plural(n, noun))
	return err
}

func writePurge(w io.Writer, n int, dryRun bool) error {
	if dryRun {
		_, err := fmt.Fprintf(w, "dry run: would have purged %d %s; nothing changed\n", n, plural(n, "dead letter"))
		return err
	}
	_, err := fmt.Fprintf(w, "purged %d %s\n", n, plural(n, "dead letter"))
	return err
}

func plural(n int, noun string) string {
	if n == 1 {
		return noun
	}
	return noun + "s"
}

func cell(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func cellTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

// oneLine keeps a multi-line error (a stack, a response body) from breaking
// the table's rows.
func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

func truncate(s string, n int) string {
	s = oneLine(s)
	if s == "" {
		return "-"
	}
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n-1]) + "…"
}

func (a *app) topUsage(w io.Writer) {
	fmt.Fprint(w, `Usage: inthubctl [--nats-url URL] [--server URL] [--token TOKEN] [-o table|json] <command> <subcommand> [flags]

Operates on inthub's dead letters (stream DLQ), on payloads spooled for
offline integrations (stream SPOOL), on the catalog's integrations and
integration types (HTTP API), and migrates the catalog's database.

Commands:
`)
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-28s %s\n", strings.TrimPrefix(c.path(), "inthubctl ")+" "+c.args, c.summary)
	}
	fmt.Fprint(w, `
Global flags (also accepted after the subcommand):
  --nats-url URL   NATS server, for dlq and spool (env NATS_URL; default `+defaultNATSURL+`)
  --server URL     catalog API, for integrations and types (env INTHUB_SERVER; default `+defaultServer+`)
  --token TOKEN    bearer token for the catalog API (env INTHUB_TOKEN)
  -o FORMAT        table (default) or json
migrate takes --database-url URL (env DATABASE_URL; default `+defaultDatabaseURL+`).

Exit status: 0 ok, 1 error, 2 usage error. Run 'inthubctl <command> <subcommand> --help'.
`)
}

func (a *app) groupUsage(w io.Writer, group string, cmds []command) {
	summary := groupSummary[group]
	if s, ok := catalogGroupSummary[group]; ok {
		summary = s
	}
	fmt.Fprintf(w, "Usage: inthubctl %s <subcommand> [flags]\n\n%s.\n\nSubcommands:\n", group, summary)
	for _, c := range cmds {
		fmt.Fprintf(w, "  %-14s %s\n", c.name+" "+c.args, c.summary)
	}
	fmt.Fprintf(w, "\nRun 'inthubctl %s <subcommand> --help' for its flags.\n", group)
}

func (a *app) commandUsage(w io.Writer, c command, fs *flag.FlagSet) {
	line := c.path()
	if c.args != "" {
		line += " " + c.args
	}
	fmt.Fprintf(w, "Usage: %s [flags]\n\n%s\n\nFlags:\n", line, c.about)
	fs.VisitAll(func(f *flag.Flag) {
		dash := "--"
		if len(f.Name) == 1 {
			dash = "-"
		}
		head := "  " + dash + f.Name
		name, usage := flag.UnquoteUsage(f)
		if name != "" {
			head += " " + name
		}
		fmt.Fprintf(w, "%s\n        %s\n", head, usage)
	})
}
