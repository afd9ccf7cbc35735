package e2e_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"inthub.dev/events"
	"inthub.dev/pkg/connectors"
	"inthub.dev/pkg/connectors/github/githubtest"
)

// TestJourneys walks the three journeys of the people who use inthub
// through one fleet of processes.
func TestJourneys(t *testing.T) {
	t.Parallel()
	f := startFleet(t, fleetOptions{})
	sig := f.subscribe("e2e-signals")
	t.Run("Scanner", func(t *testing.T) { scannerJourney(t, f.with(t)) })
	t.Run("SchedulerSignals", func(t *testing.T) { lifecycleJourney(t, f.with(t), sig) })
	t.Run("Ops", func(t *testing.T) { opsJourney(t, f.with(t)) })
}

// waitResults waits until every id has a scm.annotation.completed or
// scm.annotation.failed, and returns them all.
func (f *fleet) waitResults(t testing.TB, d time.Duration, ids ...string) (map[string][]events.AnnotationCompleted, map[string][]events.AnnotationFailed) {
	t.Helper()
	var completed map[string][]events.AnnotationCompleted
	var failed map[string][]events.AnnotationFailed
	ok := eventually(d, func() bool {
		var err error
		if completed, failed, err = f.results(f.ctx); err != nil {
			t.Fatal(err)
		}
		for _, id := range ids {
			if len(completed[id]) == 0 && len(failed[id]) == 0 {
				return false
			}
		}
		return true
	})
	if !ok {
		var missing []string
		for _, id := range ids {
			if len(completed[id]) == 0 && len(failed[id]) == 0 {
				missing = append(missing, id)
			}
		}
		t.Fatalf("no result after %v for requests %v", d, missing)
	}
	return completed, failed
}

// send publishes one Scanner request and returns its id.
func (f *fleet) send(t testing.TB, req events.AnnotationRequested) string {
	t.Helper()
	ev, err := newRequest(req)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(f.ctx, 20*time.Second)
	defer cancel()
	if err := f.publish(ctx, ev); err != nil {
		t.Fatal(err)
	}
	return ev.ID
}

func annotations(n int) []events.Annotation {
	out := make([]events.Annotation, n)
	levels := []string{"notice", "warning", "failure"}
	for i := range out {
		out[i] = events.Annotation{Path: fmt.Sprintf("pkg/file%03d.go", i/10), StartLine: i + 1, EndLine: i + 1,
			Level: levels[i%3], Message: fmt.Sprintf("finding %d", i), Title: fmt.Sprintf("CVE-2025-%04d", i)}
	}
	return out
}

// scannerJourney: Scanner publishes scm.annotation.requested — a sticky
// comment sent three times, a commit status and a check run with 120
// annotations on GitHub, a sticky note and a status on GitLab — and gets
// one scm.annotation.completed per request; the providers show exactly
// one sticky comment (the last body), the status and the run with every
// annotation.
func scannerJourney(t *testing.T, f *fleet) {
	gh := f.githubIntegration("scanner-github", "")
	gl := f.gitlabIntegration("scanner-gitlab")
	f.warmUp(t, gh, endPosted)
	f.warmUp(t, gl, endPosted)
	repo := events.Repository{Owner: "acme", Name: "api"}

	var ids []string
	var last string
	for i := 1; i <= 3; i++ {
		last = fmt.Sprintf("## Scan %d\n%d findings", i, 10*i)
		id := f.send(t, events.AnnotationRequested{IntegrationID: gh.ID, Operation: events.OpComment, Repository: repo,
			PullRequest: 42, Comment: &events.Comment{Body: last, Key: "stellaops-scan", UpdateExisting: true}})
		ids = append(ids, id)
		// One after the other, as Scanner re-sends after each scan: the
		// last body must be what the pull request shows.
		f.waitResults(t, 30*time.Second, id)
	}
	ids = append(ids, f.send(t, events.AnnotationRequested{IntegrationID: gh.ID, Operation: events.OpStatus, Repository: repo,
		CommitSHA: ghSHA, Status: &events.CommitStatus{State: "failure", Context: "stellaops/scan",
			Description: "3 critical findings", TargetURL: "https://scanner.example/scans/42"}}))
	ids = append(ids, f.send(t, events.AnnotationRequested{IntegrationID: gh.ID, Operation: events.OpCheckRun, Repository: repo,
		CommitSHA: ghSHA, PullRequest: 42, CheckRun: &events.CheckRun{Name: "stellaops/check", Status: "completed",
			Conclusion: "failure", ExternalID: "scan-42", Summary: "120 findings", Annotations: annotations(120)}}))
	glRepo := events.Repository{Owner: "acme/platform", Name: "api"}
	ids = append(ids, f.send(t, events.AnnotationRequested{IntegrationID: gl.ID, Operation: events.OpComment, Repository: glRepo,
		PullRequest: glMR, Comment: &events.Comment{Body: "2 findings", Key: "stellaops-scan", UpdateExisting: true}}))
	ids = append(ids, f.send(t, events.AnnotationRequested{IntegrationID: gl.ID, Operation: events.OpStatus, Repository: glRepo,
		CommitSHA: glHead, Status: &events.CommitStatus{State: "success", Context: "stellaops/scan"}}))

	completed, failed := f.waitResults(t, 60*time.Second, ids...)
	for _, id := range ids {
		if len(failed[id]) != 0 || len(completed[id]) != 1 {
			t.Errorf("request %s: %d completed, failed %+v; want exactly one completed", id, len(completed[id]), failed[id])
			continue
		}
		if c := completed[id][0]; c.URL == "" || c.Provider == "" || c.Attempts < 1 {
			t.Errorf("request %s completed without url, provider or attempts: %+v", id, c)
		}
	}

	var sticky []githubtest.Comment
	for _, c := range f.gh.Comments(ghRepo, 42) {
		if c.Bot && connectors.HasMarker(c.Body, "stellaops-scan") {
			sticky = append(sticky, c)
		}
	}
	if len(sticky) != 1 || !strings.Contains(sticky[0].Body, last) || sticky[0].Edits != 2 {
		t.Errorf("sticky comments on #42: %+v; want one, edited twice, with %q", sticky, last)
	}
	var statuses []githubtest.Status
	for _, s := range f.gh.Statuses(ghRepo, ghSHA) {
		if s.Context == "stellaops/scan" {
			statuses = append(statuses, s)
		}
	}
	if len(statuses) != 1 || statuses[0].State != "failure" || statuses[0].Description != "3 critical findings" {
		t.Errorf("statuses %+v; want one failure", statuses)
	}
	var runs []githubtest.CheckRun
	for _, r := range f.gh.CheckRuns(ghRepo) {
		if r.ExternalID == "scan-42" {
			runs = append(runs, r)
		}
	}
	if len(runs) != 1 {
		t.Fatalf("%d check runs with external id scan-42, want 1", len(runs))
	}
	if r := runs[0]; r.HeadSHA != ghSHA || r.Status != "completed" || r.Conclusion != "failure" || len(r.Annotations) != 120 {
		t.Errorf("check run: sha %s status %s conclusion %s, %d annotations; want completed failure with 120",
			r.HeadSHA, r.Status, r.Conclusion, len(r.Annotations))
	} else {
		seen := map[string]bool{}
		for _, a := range r.Annotations {
			seen[a.Message] = true
		}
		if len(seen) != 120 {
			t.Errorf("check run shows %d distinct annotations, want 120", len(seen))
		}
	}

	var notes int
	for _, n := range f.gl.Notes(glProject, glMR) {
		if strings.Contains(n.Body, connectors.CommentMarker("stellaops-scan")) {
			notes++
		}
	}
	if notes != 1 {
		t.Errorf("%d sticky notes on !%d, want 1", notes, glMR)
	}
	var glStates []string
	for _, s := range f.gl.Statuses(glProject, glHead) {
		if s.Name == "stellaops/scan" {
			glStates = append(glStates, s.State)
		}
	}
	if !slices.Equal(glStates, []string{"success"}) {
		t.Errorf("GitLab statuses %v, want [success]", glStates)
	}
}

// healthView is GET /integrations/{id}/health.
type healthView struct {
	History []struct {
		Status    string    `json:"status"`
		CheckedAt time.Time `json:"checkedAt"`
	} `json:"history"`
}

// lifecycleJourney: Scheduler and Signals subscribe with a durable
// consumer of their own. Three in-memory integrations go through create →
// healthy → update (made unhealthy) → unhealthy → update (healthy again)
// → healthy → rename → delete; the subscriber receives every API change
// and every health transition, in that order per integration, each once,
// and the transitions are those of the catalog's health history.
func lifecycleJourney(t *testing.T, f *fleet, sig *signals) {
	const n = 3
	its := make([]integration, n)
	for i := range its {
		its[i] = f.create("test.inmemory", fmt.Sprintf("lifecycle-%d", i), map[string]any{"healthy": true}, "")
	}
	wait := func(what string, cond func([]received) bool) {
		t.Helper()
		for _, it := range its {
			if got, ok := sig.waitFor(45*time.Second, it.ID, cond); !ok {
				t.Fatalf("integration %s: timed out waiting for %s; received %v", it.ID, what, got)
			}
		}
	}
	lastIs := func(status events.HealthStatus) func([]received) bool {
		// Each API change waits for the transition it causes, so the
		// transition is the last event received.
		return func(rs []received) bool {
			return len(rs) > 0 && rs[len(rs)-1].subject == events.SubjectIntegrationHealthChanged && rs[len(rs)-1].status == status
		}
	}
	wait("healthy", lastIs(events.HealthHealthy))
	for i, it := range its {
		its[i] = f.update(it, it.Name, map[string]any{"healthy": false})
	}
	wait("unhealthy", lastIs(events.HealthUnhealthy))
	for i, it := range its {
		its[i] = f.update(it, it.Name, map[string]any{"healthy": true})
	}
	wait("healthy again", lastIs(events.HealthHealthy))

	// The catalog's history, read before the delete takes it away: its
	// transitions are what health_changed must have announced.
	histories := make([][]string, n)
	for i, it := range its {
		var h healthView
		f.mustCall("GET", "/api/v1/integrations/"+it.ID+"/health?limit=500", nil, nil, http.StatusOK, &h)
		for j := len(h.History) - 1; j >= 0; j-- {
			histories[i] = append(histories[i], h.History[j].Status)
		}
	}
	for i, it := range its {
		its[i] = f.update(it, it.Name+"-renamed", map[string]any{"healthy": true})
		f.delete(it.ID)
	}
	wait("deleted", func(rs []received) bool {
		return len(rs) > 0 && rs[len(rs)-1].subject == events.SubjectIntegrationDeleted
	})

	for i, it := range its {
		got := sig.of(it.ID)
		var transitions []string
		prev := string(events.HealthUnknown)
		for _, s := range histories[i] {
			if s != prev {
				transitions = append(transitions, fmt.Sprintf("%s %s→%s", events.SubjectIntegrationHealthChanged, prev, s))
				prev = s
			}
		}
		if len(transitions) != 3 {
			t.Errorf("integration %d: history %v has transitions %v; want unknown→healthy→unhealthy→healthy", i, histories[i], transitions)
			continue
		}
		want := []string{fmt.Sprintf("%s v1", events.SubjectIntegrationCreated)}
		want = append(want, transitions[0], fmt.Sprintf("%s v2", events.SubjectIntegrationUpdated),
			transitions[1], fmt.Sprintf("%s v3", events.SubjectIntegrationUpdated),
			transitions[2], fmt.Sprintf("%s v4", events.SubjectIntegrationUpdated), events.SubjectIntegrationDeleted)
		var have []string
		for _, r := range got {
			have = append(have, r.String())
		}
		if !slices.Equal(have, want) {
			t.Errorf("integration %d (%s) received, in stream order:\n  %s\nwant:\n  %s\n(history %v)",
				i, it.ID, strings.Join(have, "\n  "), strings.Join(want, "\n  "), histories[i])
		}
	}
	if p := sig.problems(); len(p) > 0 {
		t.Errorf("subscriber: %v", p)
	}
}

// opsJourney: a check run GitHub refuses (422) is dead-lettered with
// scm.annotation.failed; once the cause is gone, `inthubctl dlq replay`
// posts it, the DLQ is empty and the audit record names the operator.
func opsJourney(t *testing.T, f *fleet) {
	gh := f.githubIntegration("ops-github", "")
	f.warmUp(t, gh, endPosted)
	f.gh.Fail(githubtest.RouteCreateCheckRun, githubtest.Invalid("head_sha is not a commit of this repository"))
	id := f.send(t, events.AnnotationRequested{IntegrationID: gh.ID, Operation: events.OpCheckRun,
		Repository: events.Repository{Owner: "acme", Name: "api"}, CommitSHA: ghSHA,
		CheckRun: &events.CheckRun{Name: "stellaops/ops", Status: "completed", Conclusion: "neutral", ExternalID: "ops-1",
			Summary: "replayed", Annotations: annotations(3)}})
	_, failed := f.waitResults(t, 30*time.Second, id)
	if fl := failed[id]; len(fl) != 1 || !fl[0].DeadLettered || fl[0].ErrorClass != "permanent" {
		t.Fatalf("scm.annotation.failed for %s: %+v; want one, dead-lettered, permanent", id, fl)
	}

	ctlEnv := append(slices.Clone(f.env), "NATS_URL="+f.nats.URL())
	ctx, cancel := context.WithTimeout(f.ctx, 30*time.Second)
	defer cancel()
	out, errOut, code, err := runCmd(ctx, ctlEnv, "inthubctl", "dlq", "list", "--integration", gh.ID, "-o", "json")
	if err != nil || code != 0 {
		t.Fatalf("inthubctl dlq list: exit %d, %v: %s", code, err, errOut)
	}
	var letters []struct {
		Seq        uint64 `json:"seq"`
		MsgID      string `json:"msgId"`
		ErrorClass string `json:"errorClass"`
		LastError  string `json:"lastError"`
	}
	if err := json.Unmarshal([]byte(out), &letters); err != nil {
		t.Fatalf("dlq list -o json: %v: %s", err, out)
	}
	if len(letters) != 1 || letters[0].MsgID != id || letters[0].ErrorClass != "permanent" ||
		!strings.Contains(letters[0].LastError, "422") {
		t.Fatalf("dead letters of %s: %+v; want the request, permanent, with GitHub's 422", gh.ID, letters)
	}
	if n := countRuns(f, "ops-1"); n != 0 {
		t.Fatalf("%d refused check runs show on GitHub", n)
	}

	f.gh.Clear() // the cause is fixed
	out, errOut, code, err = runCmd(ctx, ctlEnv, "inthubctl", "dlq", "replay", "--integration", gh.ID,
		"--operator", "alice@ops", "-o", "json")
	if err != nil || code != 0 {
		t.Fatalf("inthubctl dlq replay: exit %d, %v: %s", code, err, errOut)
	}
	var replay struct {
		Count    int `json:"count"`
		Replayed []struct {
			Seq      uint64 `json:"seq"`
			NewMsgID string `json:"newMsgId"`
		} `json:"replayed"`
	}
	if err := json.Unmarshal([]byte(out), &replay); err != nil || replay.Count != 1 || replay.Replayed[0].Seq != letters[0].Seq {
		t.Fatalf("replay printed %s (%v); want the one letter", out, err)
	}
	var audit struct {
		Msg       string   `json:"msg"`
		Operator  string   `json:"operator"`
		DryRun    bool     `json:"dry_run"`
		Seqs      []uint64 `json:"seqs"`
		NewMsgIDs []string `json:"new_msg_ids"`
	}
	if err := json.Unmarshal([]byte(lastLine(errOut)), &audit); err != nil {
		t.Fatalf("audit record on stderr: %v: %s", err, errOut)
	}
	if audit.Msg != "dlq replay" || audit.Operator != "alice@ops" || audit.DryRun ||
		!slices.Equal(audit.Seqs, []uint64{letters[0].Seq}) || !slices.Equal(audit.NewMsgIDs, []string{replay.Replayed[0].NewMsgID}) {
		t.Errorf("audit record %+v; want dlq replay by alice@ops of seq %d", audit, letters[0].Seq)
	}

	// Posted once, answered under the request's own id.
	poll(t, 30*time.Second, "the replayed request to complete", func() bool {
		completed, _, err := f.results(f.ctx)
		if err != nil {
			t.Fatal(err)
		}
		return len(completed[id]) > 0
	})
	if n := countRuns(f, "ops-1"); n != 1 {
		t.Errorf("%d check runs ops-1 after the replay, want 1", n)
	}
	// All of the DLQ: the lifecycle journey deletes integrations that the
	// poller checks every second, and a result that arrives after the
	// delete is dropped by the catalog, not dead-lettered.
	out, errOut, code, err = runCmd(ctx, ctlEnv, "inthubctl", "dlq", "list", "-o", "json")
	if err != nil || code != 0 || strings.TrimSpace(out) != "[]" {
		t.Errorf("DLQ after the replay: exit %d, %v, %s %s; want []", code, err, out, errOut)
	}
}

func countRuns(f *fleet, externalID string) int {
	n := 0
	for _, r := range f.gh.CheckRuns(ghRepo) {
		if r.ExternalID == externalID {
			n++
		}
	}
	return n
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}
