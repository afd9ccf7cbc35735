package gitlab

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"inthub.dev/events"
	"inthub.dev/pkg/connectors"
	"inthub.dev/pkg/connectors/gitlab/gitlabtest"
	"inthub.dev/pkg/fault"
)

const (
	annProject = "acme/platform/api"
	annIID     = 7
	botName    = "inthub-bot"
)

var (
	baseSHA = gitlabtest.SHA("base")
	headSHA = gitlabtest.SHA("head")
)

// annotationFake is a fake with one project and merge request !7 whose
// diff has a modified file (main.go: new lines 10-15, 11 and 12 added,
// 13-15 unchanged = old 12-14), a new file (cmd/new.go, 5 lines), a
// renamed one (old/name.go → new/name.go: 1 unchanged, 2 added) and a
// deleted one (gone.go); the access token has the api scope.
func annotationFake(t *testing.T, o gitlabtest.Options) *gitlabtest.Server {
	t.Helper()
	f := gitlabtest.New(t, o)
	id := f.AddProject(gitlabtest.Project{Path: annProject, Branches: []string{"main"}, Commits: []string{gitlabtest.SHA("lonely")}})
	f.AddToken(patValue, gitlabtest.Token{User: botName, Bot: true, Member: []string{annProject}})
	f.AddJobToken(jobValue, gitlabtest.JobToken{JobID: 9, ProjectID: id})
	f.AddMergeRequest(annProject, gitlabtest.MergeRequest{
		IID:      annIID,
		DiffRefs: gitlabtest.DiffRefs{BaseSHA: baseSHA, StartSHA: baseSHA, HeadSHA: headSHA},
		Diffs: []gitlabtest.Diff{
			{OldPath: "main.go", NewPath: "main.go", Diff: "@@ -10,5 +10,6 @@ func main() {\n a\n-b\n+B\n+C\n c\n d\n e\n"},
			gitlabtest.NewFileDiff("cmd/new.go", 5),
			{OldPath: "old/name.go", NewPath: "new/name.go", RenamedFile: true, Diff: "@@ -1,2 +1,2 @@\n x\n-y\n+Y\n"},
			{OldPath: "gone.go", NewPath: "gone.go", DeletedFile: true, Diff: "@@ -1,2 +0,0 @@\n-p\n-q\n"},
		},
	})
	return f
}

func request(id string, attempt int, ar events.AnnotationRequested) connectors.AnnotationRequest {
	ar.IntegrationID = "6f1d3b8e-8f57-4c63-9d0c-7d0e5c1b2a90"
	ar.Repository = events.Repository{Owner: "acme/platform", Name: "api"}
	return connectors.AnnotationRequest{ID: id, Attempt: attempt, AnnotationRequested: ar}
}

func commentReq(id string, attempt int, body, key string, sticky bool) connectors.AnnotationRequest {
	return request(id, attempt, events.AnnotationRequested{Operation: events.OpComment, PullRequest: annIID,
		Comment: &events.Comment{Body: body, Key: key, UpdateExisting: sticky}})
}

func statusReq(id, state, desc, target string) connectors.AnnotationRequest {
	return request(id, 1, events.AnnotationRequested{Operation: events.OpStatus, CommitSHA: headSHA,
		Status: &events.CommitStatus{State: state, Context: "stellaops/scan", Description: desc, TargetURL: target}})
}

func checkReq(id string, attempt, pr int, cr events.CheckRun) connectors.AnnotationRequest {
	return request(id, attempt, events.AnnotationRequested{Operation: events.OpCheckRun, PullRequest: pr, CommitSHA: headSHA, CheckRun: &cr})
}

func ann(path string, line int, level, msg string) events.Annotation {
	return events.Annotation{Path: path, StartLine: line, EndLine: line, Level: level, Message: msg}
}

func annotate(t *testing.T, c *Connector, req connectors.AnnotationRequest) connectors.Posted {
	t.Helper()
	p, err := c.Annotate(t.Context(), req)
	if err != nil {
		t.Fatalf("Annotate %s: %v", req.ID, err)
	}
	return p
}

func TestStickyCommentIsEditedInPlace(t *testing.T) {
	f := annotationFake(t, gitlabtest.Options{})
	c := newConn(t, f, opts{})
	writes := 0
	for i := range 5 {
		req := commentReq(fmt.Sprintf("req-%d", i), 1, fmt.Sprintf("scan %d: 3 findings", i), "stellaops-scan", true)
		p := annotate(t, c, req)
		if p.Writes != 1 || p.Writes != c.Writes(req) || p.Unchanged {
			t.Fatalf("send %d: %+v (Writes() = %d)", i, p, c.Writes(req))
		}
		writes += p.Writes
		if !strings.HasPrefix(p.URL, f.URL()+"/acme/platform/api/-/merge_requests/7#note_") || p.ExternalID == "" {
			t.Fatalf("URL %q id %q", p.URL, p.ExternalID)
		}
	}
	notes := f.Notes(annProject, annIID)
	if len(notes) != 1 || notes[0].Edits != 4 || !strings.Contains(notes[0].Body, "scan 4: 3 findings") {
		t.Fatalf("notes %+v", notes)
	}
	if !connectors.HasMarker(notes[0].Body, "stellaops-scan") || strings.Contains(notes[0].Body, "request:") {
		t.Fatalf("a sticky note carries its key's marker only: %q", notes[0].Body)
	}
	// The same body again: nothing to write, and nothing to read either.
	reads := len(f.Seen())
	p := annotate(t, c, commentReq("req-again", 1, "scan 4: 3 findings", "stellaops-scan", true))
	if !p.Unchanged || p.Writes != 0 || p.Reads != 0 || len(f.Seen()) != reads {
		t.Fatalf("identical body: %+v, %d requests", p, len(f.Seen())-reads)
	}
	if f.Writes() != writes {
		t.Fatalf("the fake counted %d writes, the connector %d", f.Writes(), writes)
	}
	// One lookup for the five: the notes were listed once, the user read once.
	if f.Requests(gitlabtest.RouteNotes) != 1 || f.Requests(gitlabtest.RouteUser) != 1 {
		t.Fatalf("%d note listings, %d user reads", f.Requests(gitlabtest.RouteNotes), f.Requests(gitlabtest.RouteUser))
	}

	// A new connector (a restarted worker) finds the note by listing.
	c2 := newConn(t, f, opts{})
	p = annotate(t, c2, commentReq("req-5", 1, "scan 5", "stellaops-scan", true))
	if p.Writes != 1 || p.Reads != 2 || len(f.Notes(annProject, annIID)) != 1 {
		t.Fatalf("after a restart: %+v, %d notes", p, len(f.Notes(annProject, annIID)))
	}
}

func TestTwoKeysTwoNotes(t *testing.T) {
	f := annotationFake(t, gitlabtest.Options{})
	c := newConn(t, f, opts{})
	for i := range 3 {
		for _, key := range []string{"sca", "secrets"} {
			annotate(t, c, commentReq(fmt.Sprintf("%s-%d", key, i), 1, key+" report "+fmt.Sprint(i), key, true))
		}
	}
	notes := f.Notes(annProject, annIID)
	if len(notes) != 2 || !connectors.HasMarker(notes[0].Body, "sca") || !connectors.HasMarker(notes[1].Body, "secrets") {
		t.Fatalf("notes %+v", notes)
	}
	if !strings.Contains(notes[0].Body, "sca report 2") || !strings.Contains(notes[1].Body, "secrets report 2") {
		t.Fatalf("not the latest bodies: %q / %q", notes[0].Body, notes[1].Body)
	}
}

// Only the token user's notes are inthub's: a person quoting the marker
// and GitLab's system notes are left alone.
func TestStickyCommentIgnoresOthersNotes(t *testing.T) {
	f := annotationFake(t, gitlabtest.Options{})
	f.AddNote(annProject, annIID, "alice", "as the bot said:\n"+connectors.CommentMarker("stellaops-scan")+"\nwhy?", false)
	f.AddNote(annProject, annIID, "gitlab", "added 1 commit "+connectors.CommentMarker("stellaops-scan"), true)
	c := newConn(t, f, opts{})
	annotate(t, c, commentReq("r1", 1, "findings", "stellaops-scan", true))
	notes := f.Notes(annProject, annIID)
	if len(notes) != 3 || notes[0].Edits != 0 || notes[2].Author != botName {
		t.Fatalf("notes %+v", notes)
	}
}

func TestStickyCommentDeletedByHandIsPostedAgain(t *testing.T) {
	f := annotationFake(t, gitlabtest.Options{})
	c := newConn(t, f, opts{})
	annotate(t, c, commentReq("r1", 1, "v1", "k", true))
	if !f.DeleteNote(annProject, annIID, f.Notes(annProject, annIID)[0].ID) {
		t.Fatal("delete")
	}
	p := annotate(t, c, commentReq("r2", 1, "v2", "k", true))
	notes := f.Notes(annProject, annIID)
	if len(notes) != 1 || !strings.Contains(notes[0].Body, "v2") || p.Writes != 1 {
		t.Fatalf("%+v; notes %+v", p, notes)
	}
	if f.Requests(gitlabtest.RouteEditNote) != 1 || f.Requests(gitlabtest.RouteCreateNote) != 2 {
		t.Fatalf("edit %d create %d", f.Requests(gitlabtest.RouteEditNote), f.Requests(gitlabtest.RouteCreateNote))
	}
}

// A POST answered 502 is sent once: nothing retries it behind the
// caller's back. When GitLab had applied it, the caller's retry finds it
// by the request's marker; when not, the retry posts it.
func TestCommentRetryAfterLostAnswer(t *testing.T) {
	for _, applied := range []bool{true, false} {
		t.Run(fmt.Sprintf("applied=%v", applied), func(t *testing.T) {
			f := annotationFake(t, gitlabtest.Options{})
			f.Fail(gitlabtest.RouteCreateNote, gitlabtest.Fault{Status: http.StatusBadGateway, Times: 1, Applied: applied})
			c := newConn(t, f, opts{})
			p, err := c.Annotate(t.Context(), commentReq("r1", 1, "once", "scan", false))
			if fault.ClassOf(err) != fault.ClassTransient || p.Writes != 0 {
				t.Fatalf("attempt 1: %v (%v) %+v", err, fault.ClassOf(err), p)
			}
			if n := f.Requests(gitlabtest.RouteCreateNote); n != 1 {
				t.Fatalf("the POST was sent %d times, want exactly once", n)
			}
			p = annotate(t, c, commentReq("r1", 2, "once", "scan", false))
			notes := f.Notes(annProject, annIID)
			if len(notes) != 1 {
				t.Fatalf("%d notes after the retry", len(notes))
			}
			if applied != p.Unchanged || p.ExternalID != fmt.Sprint(notes[0].ID) {
				t.Fatalf("retry: %+v", p)
			}
			// The note carries the request's marker and the key's, so a
			// later sticky request with the key takes it over.
			annotate(t, c, commentReq("r2", 1, "sticky now", "scan", true))
			if notes := f.Notes(annProject, annIID); len(notes) != 1 || !strings.Contains(notes[0].Body, "sticky now") {
				t.Fatalf("notes %+v", notes)
			}
		})
	}
}

func TestCommentBodyIsCut(t *testing.T) {
	f := annotationFake(t, gitlabtest.Options{})
	c := newConn(t, f, opts{})
	p := annotate(t, c, commentReq("r1", 1, strings.Repeat("ü", 70000), "big", true))
	body := f.Notes(annProject, annIID)[0].Body
	if n := utf8.RuneCountInString(body); n > connectors.MaxCommentBody || n < connectors.MaxCommentBody-10 {
		t.Fatalf("%d characters", n)
	}
	if !connectors.HasMarker(body, "big") || !strings.Contains(body, "cut by inthub") || len(p.Notes) != 1 || !strings.Contains(p.Notes[0], "cut") {
		t.Fatalf("notes %v, body ends %q", p.Notes, body[len(body)-80:])
	}
}

// Concurrent sticky requests on one merge request end in one note.
func TestConcurrentStickyComments(t *testing.T) {
	f := annotationFake(t, gitlabtest.Options{})
	f.SetLatency(5 * time.Millisecond)
	c := newConn(t, f, opts{})
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for i := range 8 {
		wg.Go(func() {
			_, err := c.Annotate(t.Context(), commentReq(fmt.Sprintf("r%d", i), 1, fmt.Sprintf("body %d", i), "scan", true))
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if n := len(f.Notes(annProject, annIID)); n != 1 {
		t.Fatalf("%d notes", n)
	}
}

func TestStatus(t *testing.T) {
	tests := []struct {
		state, want string
	}{
		{"pending", "pending"},
		{"success", "success"},
		{"failure", "failed"},
		{"error", "failed"},
	}
	for _, tt := range tests {
		t.Run(tt.state, func(t *testing.T) {
			f := annotationFake(t, gitlabtest.Options{})
			c := newConn(t, f, opts{})
			req := statusReq("s1", tt.state, "3 critical", "https://scanner.example/r/1")
			p := annotate(t, c, req)
			st := f.Statuses(annProject, headSHA)
			if len(st) != 1 || st[0].State != tt.want || st[0].Name != "stellaops/scan" || st[0].Description != "3 critical" || st[0].TargetURL != "https://scanner.example/r/1" {
				t.Fatalf("statuses %+v", st)
			}
			if p.Writes != 1 || c.Writes(req) != 1 || f.Writes() != 1 || p.ExternalID != fmt.Sprint(st[0].ID) || p.URL != f.URL()+"/acme/platform/api/-/commit/"+headSHA {
				t.Fatalf("%+v", p)
			}
			if p.RateLimit == nil || p.RateLimit.Limit != gitlabtest.DefaultRateLimit || p.RateLimit.Remaining >= p.RateLimit.Limit {
				t.Fatalf("rate limit %+v", p.RateLimit)
			}
		})
	}
}

// GitLab answers 400 "Cannot transition status via :enqueue from
// :pending" to the same pending (or running) state again: nothing
// changed, which is no error.
func TestStatusSameStateIsUnchanged(t *testing.T) {
	f := annotationFake(t, gitlabtest.Options{})
	c := newConn(t, f, opts{})
	annotate(t, c, statusReq("s1", "pending", "scanning", ""))
	p := annotate(t, c, statusReq("s2", "pending", "scanning", ""))
	if !p.Unchanged || p.Writes != 0 || len(p.Notes) != 0 {
		t.Fatalf("%+v", p)
	}
	if f.Requests(gitlabtest.RouteCreateStatus) != 2 || len(f.Statuses(annProject, headSHA)) != 1 {
		t.Fatalf("%d requests, statuses %+v", f.Requests(gitlabtest.RouteCreateStatus), f.Statuses(annProject, headSHA))
	}
	p = annotate(t, c, statusReq("s3", "success", "clean", ""))
	if st := f.Statuses(annProject, headSHA); p.Unchanged || len(st) != 1 || st[0].State != "success" {
		t.Fatalf("%+v %+v", p, st)
	}
}

func TestStatusLimits(t *testing.T) {
	f := annotationFake(t, gitlabtest.Options{})
	c := newConn(t, f, opts{})
	long := "https://scanner.example/" + strings.Repeat("x", 250)
	p := annotate(t, c, statusReq("s1", "failure", strings.Repeat("é", 200), long))
	st := f.Statuses(annProject, headSHA)[0]
	if utf8.RuneCountInString(st.Description) != connectors.MaxStatusDescription || st.TargetURL != "" {
		t.Fatalf("status %+v", st)
	}
	if len(p.Notes) != 2 || !strings.Contains(p.Notes[0], "140") || !strings.Contains(p.Notes[1], "255") {
		t.Fatalf("notes %v", p.Notes)
	}
}

func checkAnnotations() []events.Annotation {
	return []events.Annotation{
		ann("main.go", 11, "failure", "added line"),
		ann("main.go", 11, "warning", "a second finding on the same line"),
		ann("main.go", 13, "warning", "unchanged line"),
		ann("cmd/new.go", 3, "notice", "new file"),
		ann("new/name.go", 2, "failure", "renamed file, added line"),
		ann("./new/name.go", 1, "notice", "renamed file, unchanged line"),
		ann("main.go", 40, "warning", "outside the diff"),
		ann("other.go", 5, "failure", "file not in the merge request"),
	}
}

func TestCheckRunOnAMergeRequest(t *testing.T) {
	f := annotationFake(t, gitlabtest.Options{})
	c := newConn(t, f, opts{})
	cr := events.CheckRun{Name: "stellaops/scan", Status: "completed", Conclusion: "failure", ExternalID: "scan-42",
		Summary: "5 findings\nmore text", Annotations: checkAnnotations()}
	req := checkReq("c1", 1, annIID, cr)
	p := annotate(t, c, req)

	st := f.Statuses(annProject, headSHA)
	if len(st) != 1 || st[0].Name != "stellaops/scan" || st[0].State != "failed" || st[0].Description != "5 findings" {
		t.Fatalf("status %+v", st)
	}
	type place struct {
		typ, oldPath, newPath string
		oldLine, newLine      int
	}
	var got []place
	var summary []gitlabtest.Note
	for _, d := range f.Discussions(annProject, annIID) {
		n := d.Notes[0]
		if n.Position == nil {
			summary = append(summary, n)
			continue
		}
		got = append(got, place{n.Position.PositionType, n.Position.OldPath, n.Position.NewPath, n.Position.OldLine, n.Position.NewLine})
	}
	want := []place{
		{"text", "main.go", "main.go", 0, 11},
		{"text", "main.go", "main.go", 12, 13},
		{"text", "cmd/new.go", "cmd/new.go", 0, 3},
		{"text", "old/name.go", "new/name.go", 0, 2},
		{"text", "old/name.go", "new/name.go", 1, 1},
		{"file", "main.go", "main.go", 0, 0},
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("placed\n%v\nwant\n%v", got, want)
	}
	first := f.Discussions(annProject, annIID)[0].Notes[0].Body
	if !strings.Contains(first, "added line") || !strings.Contains(first, "a second finding") || !connectors.HasMarker(first, "check:scan-42:main.go:11") {
		t.Fatalf("first discussion %q", first)
	}
	if len(summary) != 1 || !strings.Contains(summary[0].Body, "`other.go:5`") || strings.Contains(summary[0].Body, "main.go:40") || !strings.Contains(summary[0].Body, "5 findings") {
		t.Fatalf("summary %+v", summary)
	}
	if p.Writes != f.Writes() || c.Writes(req) != 1+7 || p.Writes != 1+6+1 || p.URL != f.URL()+"/acme/platform/api/-/merge_requests/7" {
		t.Fatalf("Posted %+v, Writes() %d, fake %d", p, c.Writes(req), f.Writes())
	}
	if len(p.Notes) != 1 || !strings.Contains(p.Notes[0], "1 annotations listed in one note") {
		t.Fatalf("notes %v", p.Notes)
	}

	// Sent again (a redelivery, or Scanner re-sending): nothing new.
	before := f.Writes()
	p = annotate(t, c, checkReq("c1", 2, annIID, cr))
	if f.Writes() != before || !p.Unchanged || len(f.Discussions(annProject, annIID)) != 7 {
		t.Fatalf("resend: %+v, %d new writes", p, f.Writes()-before)
	}
	// And by a fresh connector, which must list to know.
	p = annotate(t, newConn(t, f, opts{}), checkReq("c1", 3, annIID, cr))
	if f.Writes() != before || len(f.Discussions(annProject, annIID)) != 7 {
		t.Fatalf("resend after restart: %+v, %d new writes", p, f.Writes()-before)
	}
}

// A retry after a send that broke off half-way (the third discussion's
// answer lost, applied or not) completes it without a duplicate.
func TestCheckRunRetryAfterPartialSend(t *testing.T) {
	for _, applied := range []bool{true, false} {
		t.Run(fmt.Sprintf("applied=%v", applied), func(t *testing.T) {
			f := annotationFake(t, gitlabtest.Options{})
			f.Fail(gitlabtest.RouteCreateDiscussion, gitlabtest.Fault{Status: http.StatusBadGateway, After: 2, Times: 1, Applied: applied})
			c := newConn(t, f, opts{})
			cr := events.CheckRun{Name: "scan", Status: "completed", Conclusion: "failure", ExternalID: "x",
				Annotations: []events.Annotation{
					ann("main.go", 11, "failure", "a"), ann("main.go", 12, "failure", "b"), ann("main.go", 13, "failure", "c"),
					ann("cmd/new.go", 1, "failure", "d"), ann("cmd/new.go", 2, "failure", "e"),
				}}
			_, err := c.Annotate(t.Context(), checkReq("c1", 1, annIID, cr))
			if fault.ClassOf(err) != fault.ClassTransient {
				t.Fatalf("attempt 1: %v", err)
			}
			p := annotate(t, c, checkReq("c1", 2, annIID, cr))
			ds := f.Discussions(annProject, annIID)
			if len(ds) != 5 {
				t.Fatalf("%d discussions, want 5", len(ds))
			}
			seen := map[string]bool{}
			for _, d := range ds {
				body := d.Notes[0].Body
				if seen[body] {
					t.Fatalf("duplicate discussion %q", body)
				}
				seen[body] = true
			}
			wantWrites := 2 // the two the first attempt did not place
			if !applied {
				wantWrites = 3
			}
			// The status is there already: the retry reads it and leaves it.
			if p.Writes != wantWrites || len(f.Statuses(annProject, headSHA)) != 1 {
				t.Fatalf("retry wrote %d, want %d; statuses %+v", p.Writes, wantWrites, f.Statuses(annProject, headSHA))
			}
		})
	}
}

// Without file-level discussions (GitLab before 16.4) a line outside the
// diff goes to the summary note, and the refusal is remembered.
func TestCheckRunFilePositionRefused(t *testing.T) {
	f := annotationFake(t, gitlabtest.Options{NoFilePositions: true})
	c := newConn(t, f, opts{})
	cr := events.CheckRun{Name: "scan", Conclusion: "failure", Status: "completed", ExternalID: "e1",
		Annotations: []events.Annotation{ann("main.go", 40, "warning", "far away"), ann("main.go", 11, "failure", "near")}}
	req := checkReq("c1", 1, annIID, cr)
	p := annotate(t, c, req)
	ds := f.Discussions(annProject, annIID)
	if len(ds) != 2 || ds[0].Notes[0].Position == nil || ds[1].Notes[0].Position != nil || !strings.Contains(ds[1].Notes[0].Body, "`main.go:40`") {
		t.Fatalf("discussions %+v", ds)
	}
	if f.Requests(gitlabtest.RouteCreateDiscussion) != 2 || f.Requests(gitlabtest.RouteCreateNote) != 1 {
		t.Fatalf("discussion posts %d, note posts %d", f.Requests(gitlabtest.RouteCreateDiscussion), f.Requests(gitlabtest.RouteCreateNote))
	}
	if p.Writes != f.Writes() || p.Writes > c.Writes(req) {
		t.Fatalf("Posted %d, fake %d, Writes() %d", p.Writes, f.Writes(), c.Writes(req))
	}
	// Another check run: no second attempt at a file position.
	cr.ExternalID = "e2"
	annotate(t, c, checkReq("c2", 1, annIID, cr))
	if f.Requests(gitlabtest.RouteCreateDiscussion) != 3 {
		t.Fatalf("discussion posts %d: the refusal was not remembered", f.Requests(gitlabtest.RouteCreateDiscussion))
	}
}

func TestCheckRunStates(t *testing.T) {
	tests := []struct {
		status, conclusion, want string
	}{
		{"queued", "", "pending"},
		{"in_progress", "", "running"},
		{"completed", "success", "success"},
		{"completed", "neutral", "success"},
		{"completed", "skipped", "skipped"},
		{"completed", "cancelled", "canceled"},
		{"completed", "failure", "failed"},
		{"completed", "timed_out", "failed"},
		{"completed", "action_required", "failed"},
	}
	for _, tt := range tests {
		t.Run(tt.status+"/"+tt.conclusion, func(t *testing.T) {
			f := annotationFake(t, gitlabtest.Options{})
			c := newConn(t, f, opts{})
			annotate(t, c, checkReq("c1", 1, annIID, events.CheckRun{Name: "scan", Status: tt.status, Conclusion: tt.conclusion}))
			if st := f.Statuses(annProject, headSHA); len(st) != 1 || st[0].State != tt.want {
				t.Fatalf("statuses %+v", st)
			}
		})
	}
	t.Run("the usual run: queued, in progress, completed", func(t *testing.T) {
		f := annotationFake(t, gitlabtest.Options{})
		c := newConn(t, f, opts{})
		for i, s := range []events.CheckRun{{Status: "queued"}, {Status: "in_progress"}, {Status: "in_progress"}, {Status: "completed", Conclusion: "success"}} {
			s.Name = "scan"
			annotate(t, c, checkReq(fmt.Sprint(i), 1, annIID, s))
		}
		st := f.Statuses(annProject, headSHA)
		if len(st) != 1 || strings.Join(st[0].History, ",") != "created,pending,running,success" {
			t.Fatalf("statuses %+v", st)
		}
	})
	t.Run("skipped after running becomes canceled", func(t *testing.T) {
		f := annotationFake(t, gitlabtest.Options{})
		c := newConn(t, f, opts{})
		annotate(t, c, checkReq("1", 1, annIID, events.CheckRun{Name: "scan", Status: "in_progress"}))
		p := annotate(t, c, checkReq("2", 1, annIID, events.CheckRun{Name: "scan", Status: "completed", Conclusion: "skipped"}))
		st := f.Statuses(annProject, headSHA)
		if len(st) != 1 || st[0].State != "canceled" || p.Writes != 1 || len(p.Notes) != 1 || !strings.Contains(p.Notes[0], "canceled") {
			t.Fatalf("%+v %+v", p, st)
		}
	})
	t.Run("queued after running leaves running", func(t *testing.T) {
		f := annotationFake(t, gitlabtest.Options{})
		c := newConn(t, f, opts{})
		annotate(t, c, checkReq("1", 1, annIID, events.CheckRun{Name: "scan", Status: "in_progress"}))
		p := annotate(t, c, checkReq("2", 1, annIID, events.CheckRun{Name: "scan", Status: "queued"}))
		st := f.Statuses(annProject, headSHA)
		if len(st) != 1 || st[0].State != "running" || p.Unchanged || p.Writes != 0 || len(p.Notes) != 1 {
			t.Fatalf("%+v %+v", p, st)
		}
	})
}

func TestCheckRunWithoutMergeRequest(t *testing.T) {
	f := annotationFake(t, gitlabtest.Options{})
	c := newConn(t, f, opts{})
	cr := events.CheckRun{Name: "scan", Status: "completed", Conclusion: "failure", ExternalID: "e1", Summary: "2 findings", Text: "details",
		Annotations: []events.Annotation{ann("main.go", 40, "warning", "w"), ann("lib/x.go", 3, "failure", "f")}}
	req := checkReq("c1", 1, 0, cr)
	p := annotate(t, c, req)
	cc := f.CommitComments(annProject, headSHA)
	if len(cc) != 1 || !strings.Contains(cc[0].Note, "2 findings") || !strings.Contains(cc[0].Note, "details") || !strings.Contains(cc[0].Note, "`lib/x.go:3`") || cc[0].Author != botName {
		t.Fatalf("comments %+v", cc)
	}
	if p.Writes != 2 || c.Writes(req) != 2 || f.Writes() != 2 || p.URL != f.URL()+"/acme/platform/api/-/commit/"+headSHA {
		t.Fatalf("%+v, Writes() %d, fake %d", p, c.Writes(req), f.Writes())
	}
	p = annotate(t, c, checkReq("c1", 2, 0, cr))
	if len(f.CommitComments(annProject, headSHA)) != 1 || p.Writes != 0 || !p.Unchanged || len(f.Statuses(annProject, headSHA)) != 1 {
		t.Fatalf("retry: %+v, %d comments", p, len(f.CommitComments(annProject, headSHA)))
	}
	// Scanner sending it again as a new request: GitLab adds a finished
	// status rather than update one, as GitHub does; the comment is the
	// same and is not repeated.
	p = annotate(t, c, checkReq("c1-again", 1, 0, cr))
	if len(f.CommitComments(annProject, headSHA)) != 1 || p.Writes != 1 || len(f.Statuses(annProject, headSHA)) != 2 {
		t.Fatalf("resend: %+v, %d comments", p, len(f.CommitComments(annProject, headSHA)))
	}
	// Nothing to say: the status only.
	req = checkReq("c2", 1, 0, events.CheckRun{Name: "other", Status: "queued"})
	if p := annotate(t, c, req); p.Writes != 1 || c.Writes(req) != 1 {
		t.Fatalf("%+v", p)
	}
}

// Annotations for a commit that is no longer the merge request's head
// are not placed on today's diff: they go to the summary note.
func TestCheckRunForAnOlderHead(t *testing.T) {
	f := annotationFake(t, gitlabtest.Options{})
	c := newConn(t, f, opts{})
	older := gitlabtest.SHA("lonely")
	req := checkReq("c1", 1, annIID, events.CheckRun{Name: "scan", Status: "completed", Conclusion: "failure",
		Annotations: []events.Annotation{ann("main.go", 11, "failure", "a"), ann("cmd/new.go", 1, "failure", "b")}})
	req.CommitSHA = older
	p := annotate(t, c, req)
	ds := f.Discussions(annProject, annIID)
	if len(ds) != 1 || ds[0].Notes[0].Position != nil || !strings.Contains(ds[0].Notes[0].Body, "head is now") {
		t.Fatalf("discussions %+v", ds)
	}
	if f.Requests(gitlabtest.RouteMRDiffs) != 0 || p.Writes != 2 {
		t.Fatalf("%+v", p)
	}
}

func TestCheckRunOnOldGitLabReadsChanges(t *testing.T) {
	f := annotationFake(t, gitlabtest.Options{NoDiffsEndpoint: true})
	c := newConn(t, f, opts{})
	annotate(t, c, checkReq("c1", 1, annIID, events.CheckRun{Name: "scan", Status: "completed", Conclusion: "failure",
		Annotations: []events.Annotation{ann("main.go", 13, "failure", "a")}}))
	ds := f.Discussions(annProject, annIID)
	if len(ds) != 1 || ds[0].Notes[0].Position == nil || ds[0].Notes[0].Position.OldLine != 12 || f.Requests(gitlabtest.RouteMRChanges) != 1 {
		t.Fatalf("discussions %+v", ds)
	}
}

func TestCheckRunWhileGitLabPreparesTheDiff(t *testing.T) {
	f := annotationFake(t, gitlabtest.Options{})
	f.AddMergeRequest(annProject, gitlabtest.MergeRequest{IID: 8})
	c := newConn(t, f, opts{})
	_, err := c.Annotate(t.Context(), checkReq("c1", 1, 8, events.CheckRun{Name: "scan", Status: "queued",
		Annotations: []events.Annotation{ann("main.go", 1, "notice", "n")}}))
	if fault.ClassOf(err) != fault.ClassTransient || !strings.Contains(err.Error(), "preparing") {
		t.Fatalf("%v", err)
	}
}

func TestJobTokenCannotAnnotate(t *testing.T) {
	f := annotationFake(t, gitlabtest.Options{})
	c := newConn(t, f, opts{conf: map[string]any{"token": nil, "jobToken": jobRef}})
	for _, req := range []connectors.AnnotationRequest{
		commentReq("r1", 1, "x", "k", true), statusReq("s1", "success", "", ""), checkReq("c1", 1, annIID, events.CheckRun{Name: "n"}),
	} {
		_, err := c.Annotate(t.Context(), req)
		if fault.ClassOf(err) != fault.ClassPermanent || !strings.Contains(err.Error(), "project or personal access token") || !strings.Contains(err.Error(), "api scope") {
			t.Fatalf("%s: %v", req.Operation, err)
		}
	}
	if n := len(f.Seen()); n != 0 {
		t.Fatalf("%d requests sent", n)
	}
}

func TestAnnotateErrors(t *testing.T) {
	closed := annotationFake(t, gitlabtest.Options{})
	closed.Down()
	tests := []struct {
		name      string
		setup     func(f *gitlabtest.Server)
		req       connectors.AnnotationRequest
		conf      map[string]any
		wantClass fault.Class
		wantRetry time.Duration
		wantInMsg []string
	}{
		{"401 revoked token", func(f *gitlabtest.Server) { f.Revoke(patValue) }, statusReq("s", "success", "", ""), nil,
			fault.ClassPermanent, 0, []string{"401", "invalid, expired or revoked"}},
		{"403 read_api token", func(f *gitlabtest.Server) {
			f.AddToken(patValue, gitlabtest.Token{User: botName, Scopes: []string{"read_api"}, Member: []string{annProject}})
		}, statusReq("s", "success", "", ""), nil, fault.ClassPermanent, 0, []string{"403", "insufficient_scope", "give the token the api scope"}},
		{"404 private project, not a member", func(f *gitlabtest.Server) {
			f.AddToken(patValue, gitlabtest.Token{User: botName})
		}, commentReq("r", 1, "x", "", false), nil, fault.ClassPermanent, 0, []string{"404 Project Not Found"}},
		{"403 role", func(f *gitlabtest.Server) {
			f.Fail(gitlabtest.RouteCreateStatus, gitlabtest.Fault{Status: 403, Body: `{"message":"403 Forbidden"}`})
		}, statusReq("s", "success", "", ""), nil, fault.ClassPermanent, 0, []string{"403", "role in the project"}},
		{"404 merge request", nil, commentReq("r", 1, "x", "", false), nil, fault.ClassPermanent, 0, []string{"404", "merge request !99"}},
		{"404 project", nil, func() connectors.AnnotationRequest {
			r := statusReq("s", "success", "", "")
			r.Repository.Name = "missing"
			return r
		}(), nil, fault.ClassPermanent, 0, []string{"404 Project Not Found"}},
		{"404 commit", nil, func() connectors.AnnotationRequest {
			r := statusReq("s", "success", "", "")
			r.CommitSHA = gitlabtest.SHA("nowhere")
			return r
		}(), nil, fault.ClassPermanent, 0, []string{"404 Commit Not Found"}},
		{"400 validation", func(f *gitlabtest.Server) {
			f.Fail(gitlabtest.RouteCreateStatus, gitlabtest.Fault{Status: 400, Body: `{"message":{"name":["has already been taken"]}}`})
		}, statusReq("s", "success", "", ""), nil, fault.ClassPermanent, 0, []string{"400", "has already been taken"}},
		{"422", func(f *gitlabtest.Server) {
			f.Fail(gitlabtest.RouteCreateStatus, gitlabtest.Fault{Status: 422, Body: `{"message":"The number of jobs has exceeded the limit"}`})
		}, statusReq("s", "success", "", ""), nil, fault.ClassPermanent, 0, []string{"422", "exceeded the limit"}},
		{"429 Retry-After", func(f *gitlabtest.Server) { f.Fail(gitlabtest.RouteAll, gitlabtest.TooManyRequests(45*time.Second)) },
			commentReq("r", 1, "x", "k", true), nil, fault.ClassTransient, 45 * time.Second, []string{"429"}},
		{"spent budget", func(f *gitlabtest.Server) { f.SetRemaining(0) }, statusReq("s", "success", "", ""), nil, fault.ClassTransient, -1, []string{"429"}},
		{"500", func(f *gitlabtest.Server) { f.Fail(gitlabtest.RouteCreateStatus, gitlabtest.ServerError(500)) },
			statusReq("s", "success", "", ""), nil, fault.ClassTransient, 0, []string{"500"}},
		{"503 on a read", func(f *gitlabtest.Server) { f.Fail(gitlabtest.RouteNotes, gitlabtest.ServerError(503)) },
			commentReq("r", 1, "x", "k", true), nil, fault.ClassTransient, 0, []string{"503", "list notes"}},
		{"slow", func(f *gitlabtest.Server) { f.Fail(gitlabtest.RouteCreateStatus, gitlabtest.Fault{Slow: true}) },
			statusReq("s", "success", "", ""), map[string]any{"timeoutSeconds": 1}, fault.ClassTransient, 0, []string{"timed out"}},
		{"down", nil, statusReq("s", "success", "", ""), map[string]any{"endpoint": closed.URL()}, fault.ClassOffline, 0, []string{"connection refused"}},
		{"bad project path", nil, func() connectors.AnnotationRequest {
			r := statusReq("s", "success", "", "")
			r.Repository.Owner = "../x"
			return r
		}(), nil, fault.ClassPermanent, 0, []string{"path"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := annotationFake(t, gitlabtest.Options{})
			if strings.HasPrefix(tt.name, "404 merge") {
				tt.req.PullRequest = 99
			}
			if tt.setup != nil {
				tt.setup(f)
			}
			c := newConn(t, f, opts{conf: tt.conf})
			p, err := c.Annotate(t.Context(), tt.req)
			if fault.ClassOf(err) != tt.wantClass {
				t.Fatalf("class %v, want %v: %v", fault.ClassOf(err), tt.wantClass, err)
			}
			switch d := fault.RetryAfterOf(err); {
			case tt.wantRetry < 0 && (d < time.Second || d > gitlabtest.RateLimitWindow):
				t.Fatalf("retry after %v, want the rest of the window", d)
			case tt.wantRetry >= 0 && d != tt.wantRetry:
				t.Fatalf("retry after %v, want %v", d, tt.wantRetry)
			}
			for _, s := range tt.wantInMsg {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("%q lacks %q", err, s)
				}
			}
			if strings.Contains(err.Error(), patValue) {
				t.Fatal("the token in an error")
			}
			if p.Writes != 0 || f.Writes() != 0 {
				t.Fatalf("writes %d / %d", p.Writes, f.Writes())
			}
		})
	}
}

// A write is never sent twice by the connector itself, whatever the
// failure: the POST answered 502 reached GitLab exactly once.
func TestPOSTAnswered502IsSentOnce(t *testing.T) {
	for _, route := range []gitlabtest.Route{gitlabtest.RouteCreateStatus, gitlabtest.RouteCreateNote, gitlabtest.RouteCreateDiscussion, gitlabtest.RouteCreateComment} {
		t.Run(string(route), func(t *testing.T) {
			f := annotationFake(t, gitlabtest.Options{})
			f.Fail(route, gitlabtest.ServerError(http.StatusBadGateway))
			c := newConn(t, f, opts{})
			var req connectors.AnnotationRequest
			switch route {
			case gitlabtest.RouteCreateStatus:
				req = statusReq("s", "success", "", "")
			case gitlabtest.RouteCreateNote:
				req = commentReq("r", 1, "x", "", false)
			case gitlabtest.RouteCreateDiscussion:
				req = checkReq("c", 1, annIID, events.CheckRun{Name: "n", Status: "queued", Annotations: []events.Annotation{ann("main.go", 11, "notice", "m")}})
			default:
				req = checkReq("c", 1, 0, events.CheckRun{Name: "n", Status: "queued", Summary: "s"})
			}
			_, err := c.Annotate(t.Context(), req)
			if fault.ClassOf(err) != fault.ClassTransient || !strings.Contains(err.Error(), "502") {
				t.Fatalf("%v", err)
			}
			if n := f.Requests(route); n != 1 {
				t.Fatalf("sent %d times", n)
			}
		})
	}
}

// A write is not followed through a redirect: it would be re-sent or
// turned into a GET.
func TestWriteIsNotRedirected(t *testing.T) {
	f := annotationFake(t, gitlabtest.Options{})
	f.Fail(gitlabtest.RouteCreateStatus, gitlabtest.Fault{Status: http.StatusTemporaryRedirect, Header: http.Header{"Location": {f.URL() + "/api/v4/projects/1/statuses/" + headSHA}}})
	_, err := newConn(t, f, opts{}).Annotate(t.Context(), statusReq("s", "success", "", ""))
	if fault.ClassOf(err) != fault.ClassPermanent || !strings.Contains(err.Error(), "redirect") || f.Requests(gitlabtest.RouteCreateStatus) != 1 {
		t.Fatalf("%v, %d posts", err, f.Requests(gitlabtest.RouteCreateStatus))
	}
}

func TestAnnotationScope(t *testing.T) {
	f := annotationFake(t, gitlabtest.Options{})
	host, account := newConn(t, f, opts{}).AnnotationScope()
	if host != f.Addr() || !strings.HasPrefix(account, "token/") || len(account) != len("token/")+16 {
		t.Fatalf("%s %s", host, account)
	}
	if strings.Contains(account, patValue) || strings.Contains(account, "GITLAB_TOKEN") {
		t.Fatal("the account shows the secret or its reference")
	}
	sec := testSecrets()
	sec.m["authref://env/OTHER"] = patValue
	_, other := newConn(t, f, opts{conf: map[string]any{"token": "authref://env/OTHER"}, secrets: sec}).AnnotationScope()
	if other == account {
		t.Fatal("two tokens, one account")
	}
	if _, again := newConn(t, f, opts{}).AnnotationScope(); again != account {
		t.Fatal("the account is not stable")
	}
	if h, _ := newConn(t, nil, opts{}).AnnotationScope(); h != "gitlab.com" {
		t.Fatalf("default host %q", h)
	}
}

func TestWrites(t *testing.T) {
	c := newConn(t, nil, opts{})
	cr := events.CheckRun{Name: "n", Annotations: checkAnnotations()}
	for _, tt := range []struct {
		req  connectors.AnnotationRequest
		want int
	}{
		{commentReq("r", 1, "x", "k", true), 1},
		{statusReq("s", "success", "", ""), 1},
		{checkReq("c", 1, annIID, cr), 1 + 7}, // two annotations share main.go:11
		{checkReq("c", 1, annIID, events.CheckRun{Name: "n"}), 1},
		{checkReq("c", 1, 0, cr), 2},
		{checkReq("c", 1, 0, events.CheckRun{Name: "n"}), 1},
		{request("x", 1, events.AnnotationRequested{Operation: "dance"}), 0},
	} {
		if got := c.Writes(tt.req); got != tt.want {
			t.Errorf("%s pr=%d: %d, want %d", tt.req.Operation, tt.req.PullRequest, got, tt.want)
		}
	}
}

func TestBadRequests(t *testing.T) {
	f := annotationFake(t, gitlabtest.Options{})
	c := newConn(t, f, opts{})
	for _, req := range []connectors.AnnotationRequest{
		request("1", 1, events.AnnotationRequested{Operation: events.OpComment, PullRequest: 7}),
		request("2", 1, events.AnnotationRequested{Operation: events.OpComment, Comment: &events.Comment{Body: "x"}}),
		request("3", 1, events.AnnotationRequested{Operation: events.OpComment, PullRequest: 7, Comment: &events.Comment{Body: "x", UpdateExisting: true}}),
		request("4", 1, events.AnnotationRequested{Operation: events.OpStatus, CommitSHA: "abc", Status: &events.CommitStatus{State: "success", Context: "c"}}),
		request("5", 1, events.AnnotationRequested{Operation: events.OpCheckRun, CommitSHA: headSHA}),
		request("6", 1, events.AnnotationRequested{Operation: "dance"}),
		request("7", 1, events.AnnotationRequested{Operation: events.OpStatus, CommitSHA: headSHA, Status: &events.CommitStatus{State: "done", Context: "c"}}),
	} {
		if _, err := c.Annotate(t.Context(), req); fault.ClassOf(err) != fault.ClassPermanent {
			t.Errorf("request %s: %v", req.ID, err)
		}
	}
	if n := f.Writes(); n != 0 {
		t.Fatalf("%d writes", n)
	}
}

func TestParseHunks(t *testing.T) {
	tests := []struct {
		name string
		diff string
		want map[int]int
		err  bool
	}{
		{"modified", "@@ -10,5 +10,6 @@ func main() {\n a\n-b\n+B\n+C\n c\n d\n e\n", map[int]int{10: 10, 11: 0, 12: 0, 13: 12, 14: 13, 15: 14}, false},
		{"new file", "@@ -0,0 +1,2 @@\n+x\n+y\n", map[int]int{1: 0, 2: 0}, false},
		{"deleted file", "@@ -1,2 +0,0 @@\n-x\n-y\n", map[int]int{}, false},
		{"two hunks, no newline at the end", "@@ -1 +1 @@\n-a\n+b\n@@ -20,2 +20,2 @@\n c\n-d\n+e\n\\ No newline at end of file\n", map[int]int{1: 0, 20: 20, 21: 0}, false},
		{"empty context line", "@@ -1,3 +1,3 @@\n a\n\n-b\n+c\n", map[int]int{1: 1, 2: 2, 3: 0}, false},
		{"too large", "", map[int]int{}, false},
		{"no header", "+x\n", nil, true},
		{"short hunk", "@@ -1,3 +1,3 @@\n a\n", nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseHunks(tt.diff)
			if (err != nil) != tt.err {
				t.Fatalf("err %v", err)
			}
			if !tt.err && fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Fatalf("%v, want %v", got, tt.want)
			}
		})
	}
}

func TestRefusedAndUnknownOutcome(t *testing.T) {
	perm := fault.Permanentf("x")
	if !outcomeUnknown(fault.Transient(errors.New("502"))) || outcomeUnknown(perm) || outcomeUnknown(nil) {
		t.Fatal("outcomeUnknown")
	}
}

// GitLab's notes_create limit answers 429 without Retry-After: the wait
// is the rate-limit window's reset.
func TestNotesCreateLimit(t *testing.T) {
	f := annotationFake(t, gitlabtest.Options{NotesPerMinute: 1})
	c := newConn(t, f, opts{})
	annotate(t, c, commentReq("r1", 1, "one", "", false))
	_, err := c.Annotate(t.Context(), commentReq("r2", 1, "two", "", false))
	if d := fault.RetryAfterOf(err); fault.ClassOf(err) != fault.ClassTransient || d < time.Second || d > gitlabtest.RateLimitWindow || !strings.Contains(err.Error(), "requested too many times") {
		t.Fatalf("%v (%v, retry after %v)", err, fault.ClassOf(err), d)
	}
}

// Writes is what a first send costs: over a mix of requests, the writes
// the fake counted.
func TestWritesMatchTheFake(t *testing.T) {
	f := annotationFake(t, gitlabtest.Options{})
	c := newConn(t, f, opts{})
	reqs := []connectors.AnnotationRequest{
		commentReq("a", 1, "sticky", "k1", true),
		commentReq("b", 1, "plain", "", false),
		commentReq("c", 1, "sticky, edited", "k1", true),
		statusReq("d", "pending", "scanning", ""),
		statusReq("e", "failure", "2 critical", "https://scanner.example/r/2"),
		checkReq("f", 1, annIID, events.CheckRun{Name: "scan", Status: "in_progress", ExternalID: "f"}),
		checkReq("g", 1, annIID, events.CheckRun{Name: "scan", Status: "completed", Conclusion: "failure", ExternalID: "f",
			Annotations: []events.Annotation{ann("main.go", 11, "failure", "x"), ann("main.go", 11, "notice", "y"), ann("cmd/new.go", 5, "warning", "z"), ann("main.go", 3, "notice", "file level")}}),
		checkReq("h", 1, 0, events.CheckRun{Name: "sbom", Status: "completed", Conclusion: "success", Summary: "ok"}),
	}
	want := 0
	for _, r := range reqs {
		want += c.Writes(r)
		annotate(t, c, r)
	}
	if got := f.Writes(); got != want {
		t.Fatalf("the fake counted %d writes, Writes() said %d", got, want)
	}
}
