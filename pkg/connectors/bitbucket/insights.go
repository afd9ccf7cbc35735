package bitbucket

// The check run of scm.annotation.requested, which Bitbucket does not
// have: posted as a Code Insights report on the commit (shown on the pull
// request's Reports panel and beside the diff) with its annotations.

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"regexp"
	"strconv"
	"strings"

	"inthub.dev/events"
	"inthub.dev/pkg/connectors"
	"inthub.dev/pkg/fault"
)

// Code Insights limits (both flavours unless said).
const (
	maxReportAnnotations = 1000 // per report
	maxAnnotationBatch   = 100  // per call
	maxReportTitle       = 255  // Cloud; Data Center takes 450
	maxReportDetails     = 2000
	maxAnnotationSummary = 450 // Cloud's summary; Data Center's message takes 2000
	maxReportKey         = 50
)

var reportKeyRE = regexp.MustCompile(`[^A-Za-z0-9_.-]+`)

// reportKey is the report's id on the commit: inthub's prefix and the
// check run's external id (or name), so that the same check run posted
// again replaces its report.
func reportKey(cr *events.CheckRun) string {
	base := cr.ExternalID
	if base == "" {
		base = cr.Name
	}
	k := "inthub-" + strings.Trim(reportKeyRE.ReplaceAllString(base, "-"), "-")
	if len(k) <= maxReportKey && base != "" {
		return k
	}
	sum := sha256.Sum256([]byte(base))
	return k[:min(len(k), maxReportKey-13)] + "-" + hex.EncodeToString(sum[:])[:12]
}

// reportResult is the report's result: Cloud PASSED / FAILED / PENDING,
// Data Center PASS / FAIL (none while pending).
func (a *annotator) reportResult(cr *events.CheckRun) (string, error) {
	var r string
	switch cr.Conclusion {
	case "":
		switch cr.Status {
		case "", "queued", "in_progress":
			r = "PENDING"
		case "completed":
			return "", fault.Permanentf("bitbucket: a completed check run needs a conclusion")
		default:
			return "", fault.Permanentf("bitbucket: unknown check run status %q", cr.Status)
		}
	case "success", "neutral", "skipped":
		r = "PASSED"
	case "failure", "timed_out", "action_required", "cancelled":
		r = "FAILED"
	default:
		return "", fault.Permanentf("bitbucket: unknown check run conclusion %q", cr.Conclusion)
	}
	if a.c.cloud() {
		return r, nil
	}
	switch r {
	case "PASSED":
		return "PASS", nil
	case "FAILED":
		return "FAIL", nil
	}
	return "", nil
}

func severity(level string) string {
	switch level {
	case "failure":
		return "HIGH"
	case "warning":
		return "MEDIUM"
	}
	return "LOW"
}

func (a *annotator) insightsCall(op string, key string, elems ...string) call {
	sha := a.req.CommitSHA
	op = fmt.Sprintf("%s (report %s on %s in %s/%s)", op, key, sha[:12], a.owner, a.slug)
	if a.c.cloud() {
		return call{op: op, scope: "repository",
			elems: append([]string{"repositories", a.owner, a.slug, "commit", sha, "reports", key}, elems...)}
	}
	return call{op: op, perm: "REPO_READ", root: "/rest/insights/1.0",
		elems: append([]string{"projects", a.owner, "repos", a.slug, "commits", sha, "reports", key}, elems...)}
}

// checkRun puts the report (replacing one of the same key), then its
// annotations, so that a repeat ends with this run's set, neither twice
// it nor beside the last run's: Cloud deletes the report first (its
// annotations go with it), Data Center clears the report's annotations.
// Each annotation's external id is stable, so a retry after a partial
// send updates rather than adds.
func (a *annotator) checkRun(ctx context.Context) error {
	cr := a.req.CheckRun
	result, err := a.reportResult(cr)
	if err != nil {
		return err
	}
	key := reportKey(cr)
	a.p.ExternalID = key
	a.p.URL = a.commitURL()
	if a.req.PullRequest > 0 {
		a.p.URL = a.prURL()
	}

	title, cut := connectors.CutPlain(cr.Name, maxReportTitle)
	if cut {
		a.note("report title cut to %d characters", maxReportTitle)
	}
	details := strings.TrimSpace(cr.Summary)
	if t := strings.TrimSpace(cr.Text); t != "" {
		details = strings.TrimSpace(details + "\n\n" + t)
	}
	if details, cut = connectors.CutPlain(details, maxReportDetails); cut {
		a.note("report details cut to %d characters", maxReportDetails)
	}
	report := map[string]any{"title": title, "reporter": "inthub"}
	if details != "" {
		report["details"] = details
	}
	if result != "" {
		report["result"] = result
	}
	if a.c.cloud() {
		report["report_type"] = "SECURITY"
	}
	if a.c.cloud() {
		// Cloud cannot clear a report's annotations in one call, and a
		// replaced report keeps them: deleting the report first leaves
		// exactly this run's annotations, not the last run's beside them.
		err := a.write(ctx, http.MethodDelete, a.insightsCall("delete the previous report", key), nil, nil)
		if err != nil && statusOf(err) != http.StatusNotFound {
			return err
		}
	}
	if err := a.write(ctx, http.MethodPut, a.insightsCall("put the report", key), report, nil); err != nil {
		return err
	}

	anns := cr.Annotations
	if len(anns) > maxReportAnnotations {
		a.note("%d of %d annotations posted: a Code Insights report holds at most %d", maxReportAnnotations, len(anns), maxReportAnnotations)
		anns = anns[:maxReportAnnotations]
	}
	if !a.c.cloud() {
		if err := a.write(ctx, http.MethodDelete, a.insightsCall("clear the annotations", key, "annotations"), nil, nil); err != nil {
			return err
		}
	}
	for lo := 0; lo < len(anns); lo += maxAnnotationBatch {
		hi := min(lo+maxAnnotationBatch, len(anns))
		batch := make([]map[string]any, 0, hi-lo)
		for i := lo; i < hi; i++ {
			batch = append(batch, a.annotation(key, i, anns[i]))
		}
		var in any = batch
		if !a.c.cloud() {
			in = map[string]any{"annotations": batch}
		}
		op := fmt.Sprintf("post annotations %d-%d", lo+1, hi)
		if err := a.write(ctx, http.MethodPost, a.insightsCall(op, key, "annotations"), in, nil); err != nil {
			return err
		}
	}
	return nil
}

// annotation is one Code Insights annotation. Its external id is its
// place in the check run: the same request sent again updates, never
// adds.
func (a *annotator) annotation(key string, i int, an events.Annotation) map[string]any {
	path := strings.TrimLeft(strings.TrimPrefix(an.Path, "./"), "/")
	msg := an.Message
	if an.Title != "" {
		msg = an.Title + ": " + msg
	}
	ext := key + "-" + strconv.Itoa(i+1)
	if a.c.cloud() {
		summary, cut := connectors.CutPlain(msg, maxAnnotationSummary)
		out := map[string]any{"external_id": ext, "annotation_type": "VULNERABILITY", "summary": summary,
			"severity": severity(an.Level), "path": path}
		if cut {
			details, _ := connectors.CutPlain(msg, maxReportDetails)
			out["details"] = details
		}
		if an.StartLine > 0 {
			out["line"] = an.StartLine
		}
		if an.Level == "failure" {
			out["result"] = "FAILED"
		}
		return out
	}
	message, cut := connectors.CutPlain(msg, maxReportDetails)
	if cut {
		a.note("annotation messages cut to %d characters", maxReportDetails)
	}
	return map[string]any{"externalId": ext, "type": "VULNERABILITY", "message": message,
		"severity": severity(an.Level), "path": path, "line": max(an.StartLine, 0)}
}
