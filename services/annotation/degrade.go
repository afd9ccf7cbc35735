package annotation

import (
	"fmt"
	"strings"

	"inthub.dev/events"
	"inthub.dev/pkg/connectors"
)

// Degrade levels of a check run, richest first. When the write budget runs
// short the worker posts a cheaper form rather than failing: line
// annotations → the annotations listed in the check's summary → one
// sticky comment on the pull request.
const (
	levelAsRequested = "as_requested"
	levelSummary     = "summary"
	levelComment     = "comment"
)

// variant is one form a request can be posted in.
type variant struct {
	name string
	req  connectors.AnnotationRequest
	cost int
}

// variants lists the forms of req, richest first, with their costs.
func variants(a connectors.Annotator, req connectors.AnnotationRequest) []variant {
	vs := []variant{{name: levelAsRequested, req: req}}
	if req.Operation == events.OpCheckRun && req.CheckRun != nil {
		cr := *req.CheckRun
		if len(cr.Annotations) > 0 {
			folded := req
			f := cr
			f.Summary = foldAnnotations(cr.Summary, cr.Annotations)
			f.Annotations = nil
			folded.CheckRun = &f
			vs = append(vs, variant{name: levelSummary, req: folded})
		}
		if req.PullRequest > 0 {
			c := req
			c.Operation = events.OpComment
			c.CheckRun = nil
			c.Comment = &events.Comment{
				Body:           checkRunComment(cr),
				Key:            "check-run:" + firstNonEmpty(cr.ExternalID, cr.Name),
				UpdateExisting: true,
			}
			vs = append(vs, variant{name: levelComment, req: c})
		}
	}
	for i := range vs {
		vs[i].cost = max(a.Writes(vs[i].req), 1)
	}
	// A "cheaper" form that is not cheaper is no fallback.
	out := vs[:1]
	for _, v := range vs[1:] {
		if v.cost < out[len(out)-1].cost {
			out = append(out, v)
		}
	}
	return out
}

func costs(vs []variant) []int {
	c := make([]int, len(vs))
	for i, v := range vs {
		c[i] = v.cost
	}
	return c
}

// foldAnnotations appends the annotations to a summary as a table, for a
// check run posted without line annotations.
func foldAnnotations(summary string, as []events.Annotation) string {
	var b strings.Builder
	b.WriteString(summary)
	if summary != "" {
		b.WriteString("\n\n")
	}
	fmt.Fprintf(&b, "### Findings (%d)\n\n_Posted as a list: the write budget for this repository was short._\n\n", len(as))
	b.WriteString("| Level | Location | Message |\n|---|---|---|\n")
	for _, a := range as {
		msg := a.Message
		if a.Title != "" {
			msg = "**" + a.Title + "**: " + msg
		}
		fmt.Fprintf(&b, "| %s | `%s:%d` | %s |\n", a.Level, a.Path, a.StartLine, cell(msg))
	}
	return b.String()
}

// checkRunComment renders a check run as one comment.
func checkRunComment(cr events.CheckRun) string {
	var b strings.Builder
	state := cr.Conclusion
	if state == "" {
		state = firstNonEmpty(cr.Status, "queued")
	}
	fmt.Fprintf(&b, "## %s: %s\n\n", cr.Name, state)
	if cr.Summary != "" {
		b.WriteString(cr.Summary)
		b.WriteString("\n\n")
	}
	if len(cr.Annotations) > 0 {
		b.WriteString(foldAnnotations("", cr.Annotations))
	}
	return b.String()
}

// cell keeps a message inside one Markdown table cell.
func cell(s string) string {
	s = strings.ReplaceAll(s, "|", `\|`)
	s = strings.ReplaceAll(s, "\r", "")
	return strings.ReplaceAll(s, "\n", "<br>")
}

func firstNonEmpty(ss ...string) string {
	for _, s := range ss {
		if s != "" {
			return s
		}
	}
	return ""
}
