package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"
)

// Exit status of inthubctl doctor by the report's verdict. 1 and 2 stay
// what they are for every command (an error, a usage error), so that a
// script can tell "the integration is unhealthy" from "the doctor could
// not run".
const (
	exitDegraded  = 3
	exitUnhealthy = 4
)

// exitStatus ends the command with a status of its own after its output
// is printed; it carries no message.
type exitStatus struct{ code int }

func (e *exitStatus) Error() string { return "exit status " + strconv.Itoa(e.code) }

// doctorOpts are the flags of inthubctl doctor.
type doctorOpts struct {
	last     bool
	evidence string
}

func doctorCommand() command {
	var d doctorOpts
	return command{
		group: "doctor", args: "<id>", summary: "diagnose an integration: connectivity, TLS, credentials, scopes, version, rate limit, latency",
		about: `Runs the catalog's doctor on the integration <id> (POST /api/v1/integrations/<id>/doctor)
and prints each check with its status, message, suggestions and how_to_fix
commands, printed verbatim: the doctor never runs them. The run is stored in
the catalog with its JSONL evidence log; --last shows the latest stored run
instead of starting one.

Exit status: 0 healthy, 3 degraded (a check warned), 4 unhealthy (a check
failed); 1 when the doctor could not run (an error of the API or the
network), 2 for a usage error.`,
		flags: func(fs *flag.FlagSet, o *opts) {
			serverFlags(fs, o)
			fs.BoolVar(&d.last, "last", false, "show the latest stored run instead of starting one")
			fs.StringVar(&d.evidence, "evidence", "", "write the run's JSONL evidence log to `FILE` (- for stdout)")
		},
		run: func(a *app, o *opts, pos []string) error { return a.doctor(o, &d, pos) },
	}
}

// doctorReport is the API's DoctorReport, as the table reads it; -o json
// prints the API's own bytes.
type doctorReport struct {
	RunID         string        `json:"runId"`
	IntegrationID string        `json:"integrationId"`
	Type          string        `json:"type"`
	OverallStatus string        `json:"overallStatus"`
	Checks        []doctorCheck `json:"checks"`
	StartedAt     time.Time     `json:"startedAt"`
	DurationMs    int64         `json:"durationMs"`
	RunBy         string        `json:"runBy"`
	Evidence      string        `json:"evidence"`
	DSSE          *struct {
		Signatures []struct {
			KeyID string `json:"keyid"`
		} `json:"signatures"`
	} `json:"dsse"`
}

type doctorCheck struct {
	Name        string   `json:"name"`
	Status      string   `json:"status"`
	Message     string   `json:"message"`
	Suggestions []string `json:"suggestions"`
	HowToFix    *struct {
		Summary  string   `json:"summary"`
		Commands []string `json:"commands"`
	} `json:"how_to_fix"`
}

func (a *app) doctor(o *opts, d *doctorOpts, pos []string) error {
	const c = "inthubctl doctor"
	id, err := oneID(c, pos)
	if err != nil {
		return err
	}
	cl, done, err := a.client(c, o)
	if err != nil {
		return err
	}
	defer done()
	var raw []byte
	if d.last {
		resp, err := cl.do(a.ctx, http.MethodGet, integrationPath(id)+"/doctor",
			url.Values{"limit": {"1"}, "evidence": {strconv.FormatBool(d.evidence != "")}}, nil, nil)
		if err != nil {
			return err
		}
		var list struct {
			Reports []json.RawMessage `json:"reports"`
		}
		if err := json.Unmarshal(resp.body, &list); err != nil {
			return fmt.Errorf("the API's answer is not a list of doctor reports: %w", err)
		}
		if len(list.Reports) == 0 {
			return fmt.Errorf("integration %s has no doctor run yet: run inthubctl doctor %s", id, id)
		}
		raw = list.Reports[0]
	} else {
		resp, err := cl.do(a.ctx, http.MethodPost, integrationPath(id)+"/doctor", nil, nil, nil)
		if err != nil {
			return err
		}
		raw = resp.body
	}
	var rep doctorReport
	if err := json.Unmarshal(raw, &rep); err != nil {
		return fmt.Errorf("the API's answer is not a doctor report: %w", err)
	}
	if d.evidence != "" {
		if err := writeEvidence(a.stdout, d.evidence, rep.Evidence); err != nil {
			return err
		}
	}
	if d.evidence != "-" {
		if o.output == "json" {
			err = writeRawJSON(a.stdout, raw)
		} else {
			err = writeDoctorReport(a.stdout, rep)
		}
		if err != nil {
			return err
		}
	}
	switch rep.OverallStatus {
	case "healthy":
		return nil
	case "degraded":
		return &exitStatus{code: exitDegraded}
	default:
		return &exitStatus{code: exitUnhealthy}
	}
}

func writeEvidence(stdout io.Writer, path, evidence string) error {
	if path == "-" {
		_, err := io.WriteString(stdout, evidence)
		return err
	}
	if err := os.WriteFile(path, []byte(evidence), 0o600); err != nil {
		return fmt.Errorf("--evidence: %w", err)
	}
	return nil
}

func writeDoctorReport(w io.Writer, rep doctorReport) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "Integration:\t%s (%s)\n", cell(rep.IntegrationID), cell(rep.Type))
	fmt.Fprintf(tw, "Overall:\t%s\n", strings.ToUpper(cell(rep.OverallStatus)))
	fmt.Fprintf(tw, "Run:\t%s at %s by %s, %d ms\n", cell(rep.RunID), cellTime(rep.StartedAt), cell(oneLine(rep.RunBy)), rep.DurationMs)
	if rep.DSSE != nil && len(rep.DSSE.Signatures) > 0 {
		fmt.Fprintf(tw, "Signed:\tDSSE, key %s\n", cell(rep.DSSE.Signatures[0].KeyID))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "CHECK\tSTATUS\tMESSAGE")
	for _, c := range rep.Checks {
		fmt.Fprintf(tw, "%s\t%s\t%s\n", cell(oneLine(c.Name)), cell(c.Status), cell(oneLine(c.Message)))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, c := range rep.Checks {
		if len(c.Suggestions) == 0 && c.HowToFix == nil {
			continue
		}
		fmt.Fprintf(w, "\n%s (%s):\n", oneLine(c.Name), c.Status)
		for _, s := range c.Suggestions {
			fmt.Fprintf(w, "  - %s\n", oneLine(s))
		}
		if c.HowToFix != nil {
			if s := oneLine(c.HowToFix.Summary); s != "" {
				fmt.Fprintf(w, "  how to fix: %s\n", s)
			} else {
				fmt.Fprintln(w, "  how to fix:")
			}
			for _, cmd := range c.HowToFix.Commands {
				fmt.Fprintf(w, "    %s\n", verbatim(cmd))
			}
		}
	}
	return nil
}

// verbatim is a command as the server sent it, unless it holds a control
// character (a newline would forge a line of the output, an escape
// sequence would drive the terminal): then it is quoted.
func verbatim(s string) string {
	if strings.ContainsFunc(s, unicode.IsControl) {
		return strconv.Quote(s)
	}
	return s
}
