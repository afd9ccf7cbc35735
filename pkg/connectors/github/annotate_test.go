package github_test

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"inthub.dev/events"
	"inthub.dev/pkg/connectors"
	"inthub.dev/pkg/connectors/github"
	"inthub.dev/pkg/connectors/github/githubtest"
	"inthub.dev/pkg/fault"
)

const commit = "4f2a9c0b1d3e5f60718293a4b5c6d7e8f9012345"

func commentReq(id string, attempt, pr int, key string, sticky bool, body string) connectors.AnnotationRequest {
	return connectors.AnnotationRequest{ID: id, Attempt: attempt, AnnotationRequested: events.AnnotationRequested{
		Operation: events.OpComment, Repository: events.Repository{Owner: "acme", Name: "api"}, PullRequest: pr,
		Comment: &events.Comment{Body: body, Key: key, UpdateExisting: sticky},
	}}
}

func statusReq(id, state, context, desc string) connectors.AnnotationRequest {
	return connectors.AnnotationRequest{ID: id, Attempt: 1, AnnotationRequested: events.AnnotationRequested{
		Operation: events.OpStatus, Repository: events.Repository{Owner: "acme", Name: "api"}, CommitSHA: commit,
		Status: &events.CommitStatus{State: state, Context: context, Description: desc, TargetURL: "https://scan.example/r/1"},
	}}
}

func checkRunReq(id string, n int) connectors.AnnotationRequest {
	anns := make([]events.Annotation, n)
	for i := range anns {
		anns[i] = events.Annotation{Path: "go.mod", StartLine: i + 1, EndLine: i + 1, Level: "warning", Message: fmt.Sprint("finding ", i+1)}
	}
	return connectors.AnnotationRequest{ID: id, Attempt: 1, AnnotationRequested: events.AnnotationRequested{
		Operation: events.OpCheckRun, Repository: events.Repository{Owner: "acme", Name: "api"}, CommitSHA: commit,
		CheckRun: &events.CheckRun{Name: "stellaops/scan", Status: "completed", Conclusion: "failure", ExternalID: "scan-1",
			Summary: fmt.Sprintf("%d findings", n), Text: "details", Annotations: anns},
	}}
}

func annotate(t *testing.T, c *github.Connector, req connectors.AnnotationRequest) connectors.Posted {
	t.Helper()
	p, err := c.Annotate(t.Context(), req)
	if err != nil {
		t.Fatalf("Annotate(%s %s, attempt %d): %v", req.Operation, req.ID, req.Attempt, err)
	}
	return p
}

func TestAnnotationScope(t *testing.T) {
	for prefix, want := range map[string]string{"": "api.github.com", "/api/v3": "ghe.example.com"} {
		c, _ := newConn(t, githubtest.New(t, githubtest.Options{Prefix: prefix}), nil)
		if host, account := c.AnnotationScope(); host != want || account != "installation/2" {
			t.Errorf("AnnotationScope = %q, %q; want %q, installation/2", host, account, want)
		}
	}
}

// One sticky comment per pull request and key, however often and however
// it is sent: redelivered (Attempt > 1), replayed (a new id), with a new
// body, from a restarted worker (a new connector).
func TestStickyComment(t *testing.T) {
	srv := githubtest.New(t, githubtest.Options{})
	c, _ := newConn(t, srv, nil)
	// A person quoting the marker does not make their comment inthub's.
	srv.AddComment("acme/api", 42, "octocat", "why does it say "+connectors.CommentMarker("stellaops-scan")+"?")

	for i, tc := range []struct {
		id        string
		attempt   int
		body      string
		fresh     bool // a restarted worker: a new connector, nothing cached
		reads     int
		writes    int
		unchanged bool
	}{
		{"r1", 1, "3 findings", false, 1, 1, false}, // lookup, create
		{"r1", 2, "3 findings", false, 0, 0, true},  // redelivered: cached, identical
		{"r2", 1, "2 findings", false, 0, 1, false}, // replay with news: edit
		{"r2", 3, "2 findings", true, 1, 0, true},   // restarted: lookup finds it, identical
		{"r3", 1, "0 findings", false, 0, 1, false}, // edit
	} {
		if tc.fresh {
			c, _ = newConn(t, srv, nil)
		}
		p := annotate(t, c, commentReq(tc.id, tc.attempt, 42, "stellaops-scan", true, tc.body))
		if p.Reads != tc.reads || p.Writes != tc.writes || p.Unchanged != tc.unchanged {
			t.Errorf("send %d: reads %d writes %d unchanged %v; want %d, %d, %v", i+1, p.Reads, p.Writes, p.Unchanged, tc.reads, tc.writes, tc.unchanged)
		}
		if p.Writes > c.Writes(commentReq(tc.id, tc.attempt, 42, "stellaops-scan", true, tc.body)) {
			t.Errorf("send %d: %d writes, more than Writes says", i+1, p.Writes)
		}
		if !strings.HasPrefix(p.URL, "https://github.com/acme/api/pull/42#issuecomment-") || !strings.HasSuffix(p.URL, p.ExternalID) {
			t.Errorf("send %d: URL %q, ExternalID %q", i+1, p.URL, p.ExternalID)
		}
		if p.RateLimit == nil && p.Reads+p.Writes > 0 || p.RateLimit != nil && p.RateLimit.Limit != 5000 {
			t.Errorf("send %d: RateLimit %+v", i+1, p.RateLimit)
		}
	}
	got := srv.Comments("acme/api", 42)
	if len(got) != 2 || got[0].Bot {
		t.Fatalf("%d comments, want the person's and one of inthub's", len(got))
	}
	mine := got[1]
	if !mine.Bot || mine.Edits != 2 || !strings.HasSuffix(mine.Body, "\n\n0 findings") || !connectors.HasMarker(mine.Body, "stellaops-scan") {
		t.Errorf("inthub's comment: %+v", mine)
	}
	if n := srv.Writes(githubtest.RouteCreateComment); n != 1 {
		t.Errorf("%d comments created, want 1", n)
	}
	if n := srv.Requests(githubtest.RouteListComments); n != 2 {
		t.Errorf("%d lookups, want 2 (one per connector: the result is cached)", n)
	}
}

func TestCommentKeys(t *testing.T) {
	srv := githubtest.New(t, githubtest.Options{})
	c, _ := newConn(t, srv, nil)
	for i := range 3 {
		annotate(t, c, commentReq(fmt.Sprint("a", i), 1, 7, "scan", true, fmt.Sprint("scan ", i)))
		annotate(t, c, commentReq(fmt.Sprint("b", i), 1, 7, "licenses", true, fmt.Sprint("licenses ", i)))
	}
	annotate(t, c, commentReq("c", 1, 8, "scan", true, "other pull request"))
	got := srv.Comments("acme/api", 7)
	if len(got) != 2 || !strings.HasSuffix(got[0].Body, "scan 2") || !strings.HasSuffix(got[1].Body, "licenses 2") {
		t.Errorf("comments on #7: %+v", got)
	}
	if len(srv.Comments("acme/api", 8)) != 1 {
		t.Error("the same key on another pull request is another comment")
	}
}

// A comment that is not sticky is posted once per request: a retry finds
// what an earlier attempt posted (even one whose answer was lost), a new
// request posts another.
func TestCommentNotSticky(t *testing.T) {
	srv := githubtest.New(t, githubtest.Options{})
	first, _ := newConn(t, srv, nil)
	p := annotate(t, first, commentReq("r1", 1, 3, "", false, "hello"))
	if p.Reads != 0 || p.Writes != 1 {
		t.Errorf("first attempt: reads %d writes %d; want no lookup", p.Reads, p.Writes)
	}
	// The worker did not see the answer and redelivers, from another
	// replica.
	other, _ := newConn(t, srv, nil)
	p = annotate(t, other, commentReq("r1", 2, 3, "", false, "hello"))
	if !p.Unchanged || p.Writes != 0 || p.Reads != 1 {
		t.Errorf("retry: %+v", p)
	}
	annotate(t, other, commentReq("r2", 1, 3, "", false, "hello"))
	// A keyed comment that is not sticky is posted, and a later sticky
	// request with its key takes it over.
	annotate(t, other, commentReq("r3", 1, 3, "k", false, "keyed"))
	annotate(t, other, commentReq("r4", 1, 3, "k", true, "sticky now"))
	got := srv.Comments("acme/api", 3)
	if len(got) != 3 || !strings.HasSuffix(got[2].Body, "sticky now") || got[2].Edits != 1 {
		t.Errorf("comments: %+v", got)
	}
}

// A sticky comment someone deleted is posted again.
func TestStickyCommentDeleted(t *testing.T) {
	srv := githubtest.New(t, githubtest.Options{})
	c, _ := newConn(t, srv, nil)
	p := annotate(t, c, commentReq("r1", 1, 5, "scan", true, "v1"))
	id, _ := strconv.ParseInt(p.ExternalID, 10, 64)
	if !srv.DeleteComment(id) {
		t.Fatal("DeleteComment")
	}
	p = annotate(t, c, commentReq("r2", 1, 5, "scan", true, "v2"))
	got := srv.Comments("acme/api", 5)
	if len(got) != 1 || !strings.HasSuffix(got[0].Body, "v2") || p.ExternalID != strconv.FormatInt(got[0].ID, 10) {
		t.Errorf("after the deletion: %+v, posted %+v", got, p)
	}
	p = annotate(t, c, commentReq("r3", 1, 5, "scan", true, "v3"))
	if p.Writes != 1 || srv.Comments("acme/api", 5)[0].Edits != 1 {
		t.Errorf("the new comment is not the one edited next: %+v", p)
	}
}

// The lookup reads every page (100 comments each) until it finds the
// marker.
func TestCommentLookupPages(t *testing.T) {
	srv := githubtest.New(t, githubtest.Options{})
	for i := range 250 {
		srv.AddComment("acme/api", 9, "octocat", fmt.Sprint("comment ", i))
	}
	c, _ := newConn(t, srv, nil)
	if p := annotate(t, c, commentReq("r1", 1, 9, "scan", true, "v1")); p.Reads != 3 {
		t.Errorf("lookup of a missing comment read %d pages, want 3", p.Reads)
	}
	c, _ = newConn(t, srv, nil)
	p := annotate(t, c, commentReq("r2", 1, 9, "scan", true, "v2"))
	if p.Reads != 3 || p.Writes != 1 || len(srv.Comments("acme/api", 9)) != 251 {
		t.Errorf("the comment on page 3: %+v, %d comments", p, len(srv.Comments("acme/api", 9)))
	}
}

// Concurrent requests for one key write one comment.
func TestStickyCommentConcurrent(t *testing.T) {
	srv := githubtest.New(t, githubtest.Options{})
	c, _ := newConn(t, srv, nil)
	var wg sync.WaitGroup
	for i := range 10 {
		wg.Go(func() {
			if _, err := c.Annotate(t.Context(), commentReq(fmt.Sprint("r", i), 1, 11, "scan", true, fmt.Sprint("v", i))); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if got := srv.Comments("acme/api", 11); len(got) != 1 {
		t.Errorf("%d comments, want 1", len(got))
	}
}

// Text over GitHub's limits is cut with a note, never sent to fail (the
// fake refuses what GitHub refuses).
func TestCutNotes(t *testing.T) {
	srv := githubtest.New(t, githubtest.Options{})
	c, _ := newConn(t, srv, nil)

	p := annotate(t, c, commentReq("r1", 1, 1, "scan", true, strings.Repeat("ü", 70000)))
	body := srv.Comments("acme/api", 1)[0].Body
	if len(p.Notes) != 1 || !strings.Contains(p.Notes[0], "comment body cut") ||
		utf8.RuneCountInString(body) > connectors.MaxCommentBody || !strings.Contains(body, "cut by inthub") || !connectors.HasMarker(body, "scan") {
		t.Errorf("comment: notes %q, %d characters", p.Notes, utf8.RuneCountInString(body))
	}

	p = annotate(t, c, statusReq("r2", "failure", "scan", strings.Repeat("x", 200)))
	st := srv.Statuses("acme/api", commit)
	if len(p.Notes) != 1 || !strings.Contains(p.Notes[0], "description cut to 140") || utf8.RuneCountInString(st[0].Description) != 140 {
		t.Errorf("status: notes %q, description of %d", p.Notes, utf8.RuneCountInString(st[0].Description))
	}

	req := checkRunReq("r3", 2)
	req.CheckRun.Summary = strings.Repeat("s", 70000)
	req.CheckRun.Text = strings.Repeat("t", 70000)
	req.CheckRun.Annotations[0].Title = strings.Repeat("T", 300)
	req.CheckRun.Annotations[1].Message = strings.Repeat("€", 30000) // 90,000 bytes
	req.CheckRun.Annotations[1].Level = "error"
	p = annotate(t, c, req)
	run := srv.CheckRuns("acme/api")[0]
	for _, want := range []string{"summary cut to 65535", "text cut to 65535", "1 annotation titles cut to 255", "1 annotation messages cut to 64 KiB"} {
		if !strings.Contains(strings.Join(p.Notes, "|"), want) {
			t.Errorf("check run notes %q lack %q", p.Notes, want)
		}
	}
	if n := utf8.RuneCountInString(run.Summary); n > connectors.MaxCheckRunText || n < connectors.MaxCheckRunText-10 ||
		utf8.RuneCountInString(run.Annotations[0].Title) != 255 ||
		len(run.Annotations[1].Message) > 64<<10 || len(run.Annotations[1].Message) < 64<<10-3 || !strings.Contains(run.Annotations[1].Message, "cut by inthub") {
		t.Errorf("run: summary %d, title %d, message %d bytes", utf8.RuneCountInString(run.Summary),
			utf8.RuneCountInString(run.Annotations[0].Title), len(run.Annotations[1].Message))
	}
}

func TestStatus(t *testing.T) {
	srv := githubtest.New(t, githubtest.Options{Prefix: "/api/v3"})
	c, _ := newConn(t, srv, nil)
	for i, tc := range []struct {
		req       connectors.AnnotationRequest
		writes    int
		unchanged bool
	}{
		{statusReq("r1", "pending", "scan", "scanning"), 1, false},
		{statusReq("r1", "pending", "scan", "scanning"), 0, true},
		{statusReq("r2", "failure", "scan", "3 findings"), 1, false},
		{statusReq("r3", "failure", "licenses", "3 findings"), 1, false},
		{statusReq("r4", "failure", "scan", "3 findings"), 0, true},
		{statusReq("r5", "pending", "scan", "scanning"), 1, false}, // back to an earlier state: GitHub shows the last
	} {
		p := annotate(t, c, tc.req)
		if p.Writes != tc.writes || p.Unchanged != tc.unchanged || p.Reads != 0 {
			t.Errorf("status %d: %+v", i+1, p)
		}
		if p.URL != "https://ghe.example.com/acme/api/commit/"+commit {
			t.Errorf("status %d: URL %s", i+1, p.URL)
		}
	}
	st := srv.Statuses("acme/api", commit)
	if len(st) != 4 || st[1].State != "failure" || st[2].Context != "licenses" || st[3].Description != "scanning" || st[0].TargetURL != "https://scan.example/r/1" {
		t.Errorf("statuses: %+v", st)
	}
}

// A worker killed after GitHub stored a status and before its ack gets
// the request again (Attempt 2) on a connector that never saw it: it reads
// the commit's statuses and posts nothing when the newest of the context
// is the same, and posts when it differs or was never posted.
func TestStatusRedelivered(t *testing.T) {
	srv := githubtest.New(t, githubtest.Options{Prefix: "/api/v3"})
	first, _ := newConn(t, srv, nil)
	annotate(t, first, statusReq("r1", "failure", "scan", "3 findings"))
	annotate(t, first, statusReq("r0", "success", "licenses", "ok"))

	redelivered := func(r connectors.AnnotationRequest) connectors.AnnotationRequest { r.Attempt = 2; return r }
	for _, tc := range []struct {
		name          string
		req           connectors.AnnotationRequest
		writes, reads int
		unchanged     bool
	}{
		{"same status", redelivered(statusReq("r1", "failure", "scan", "3 findings")), 0, 1, true},
		{"changed description", redelivered(statusReq("r2", "failure", "scan", "4 findings")), 1, 1, false},
		{"never posted", redelivered(statusReq("r3", "pending", "deps", "")), 1, 1, false},
		{"first attempt does not look", statusReq("r4", "failure", "scan", "3 findings"), 1, 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			restarted, _ := newConn(t, srv, nil)
			p := annotate(t, restarted, tc.req)
			if p.Writes != tc.writes || p.Reads != tc.reads || p.Unchanged != tc.unchanged {
				t.Errorf("%+v, want writes %d, reads %d, unchanged %v", p, tc.writes, tc.reads, tc.unchanged)
			}
		})
	}
	if n := len(srv.Statuses("acme/api", commit)); n != 5 {
		t.Errorf("%d statuses on the commit, want 5: %+v", n, srv.Statuses("acme/api", commit))
	}
}

// GitHub keeps 1,000 statuses per sha and context: the 1,001st is refused
// before it is sent, with a message that says why; a connector that did
// not count them gets GitHub's 422, also permanent.
func TestStatusLimit(t *testing.T) {
	srv := githubtest.New(t, githubtest.Options{})
	c, _ := newConn(t, srv, nil)
	for i := range connectors.MaxStatusesPerSHAContext {
		annotate(t, c, statusReq(fmt.Sprint("r", i), "pending", "scan", fmt.Sprint("step ", i)))
	}
	sent := srv.Requests(githubtest.RouteCreateStatus)
	p, err := c.Annotate(t.Context(), statusReq("last", "success", "scan", "done"))
	if fault.ClassOf(err) != fault.ClassPermanent || !strings.Contains(err.Error(), "1000 statuses") || p.Writes != 0 {
		t.Errorf("status 1001: %v (%v), %+v", err, fault.ClassOf(err), p)
	}
	if srv.Requests(githubtest.RouteCreateStatus) != sent {
		t.Error("status 1001 was sent")
	}
	if _, err := c.Annotate(t.Context(), statusReq("other", "success", "licenses", "done")); err != nil {
		t.Errorf("another context: %v", err)
	}

	fresh, _ := newConn(t, srv, nil)
	_, err = fresh.Annotate(t.Context(), statusReq("last", "success", "scan", "done"))
	if fault.ClassOf(err) != fault.ClassPermanent || !strings.Contains(err.Error(), "maximum number of statuses") {
		t.Errorf("status 1001 from a connector that did not count: %v (%v)", err, fault.ClassOf(err))
	}
}

// 237 annotations: one create with 50, then four updates, in order.
func TestCheckRunBatches(t *testing.T) {
	srv := githubtest.New(t, githubtest.Options{})
	c, _ := newConn(t, srv, nil)
	req := checkRunReq("r1", 237)
	p := annotate(t, c, req)
	if p.Writes != 5 || c.Writes(req) != 5 || p.Reads != 1 {
		t.Errorf("posted %+v, Writes %d; want 5 writes and 1 lookup", p, c.Writes(req))
	}
	if srv.Writes(githubtest.RouteCreateCheckRun) != 1 || srv.Writes(githubtest.RouteUpdateCheckRun) != 4 {
		t.Errorf("creates %d, updates %d", srv.Writes(githubtest.RouteCreateCheckRun), srv.Writes(githubtest.RouteUpdateCheckRun))
	}
	runs := srv.CheckRuns("acme/api")
	if len(runs) != 1 {
		t.Fatalf("%d runs", len(runs))
	}
	run := runs[0]
	assertAnnotations(t, run, 237)
	if run.Name != "stellaops/scan" || run.Title != "stellaops/scan" || run.Status != "completed" || run.Conclusion != "failure" ||
		run.ExternalID != "scan-1" || run.Summary != "237 findings" || run.Text != "details" || run.HeadSHA != commit {
		t.Errorf("run: %+v", run)
	}
	if p.URL != run.HTMLURL || p.ExternalID != strconv.FormatInt(run.ID, 10) {
		t.Errorf("URL %s, ExternalID %s; run %d at %s", p.URL, p.ExternalID, run.ID, run.HTMLURL)
	}

	// Sent again (a redelivery): the run is found, nothing is appended.
	p = annotate(t, c, req)
	if p.Writes != 1 || len(srv.CheckRuns("acme/api")) != 1 {
		t.Errorf("resend: %+v", p)
	}
	assertAnnotations(t, srv.CheckRuns("acme/api")[0], 237)
}

func assertAnnotations(t *testing.T, run githubtest.CheckRun, n int) {
	t.Helper()
	if len(run.Annotations) != n {
		t.Fatalf("%d annotations, want %d", len(run.Annotations), n)
	}
	for i, a := range run.Annotations {
		if a.StartLine != i+1 || a.Message != fmt.Sprint("finding ", i+1) {
			t.Fatalf("annotation %d is %+v: order lost or duplicated", i, a)
		}
	}
}

// A retry after a partial send completes the run without duplicates:
// from the same connector (the run cached), and from a restarted worker
// (the run found by its external id).
func TestCheckRunRetryAfterPartialSend(t *testing.T) {
	t.Run("same connector", func(t *testing.T) {
		srv := githubtest.New(t, githubtest.Options{})
		c, _ := newConn(t, srv, nil)
		srv.Fail(githubtest.RouteUpdateCheckRun, githubtest.ServerError(502))
		req := checkRunReq("r1", 237)
		if _, err := c.Annotate(t.Context(), req); fault.ClassOf(err) != fault.ClassTransient {
			t.Fatalf("first attempt: %v", err)
		}
		srv.Clear()
		req.Attempt = 2
		p := annotate(t, c, req)
		if p.Writes != 4 { // 187 left: 50, 50, 50, 37
			t.Errorf("retry: %+v", p)
		}
		assertAnnotations(t, srv.CheckRuns("acme/api")[0], 237)
	})
	t.Run("restarted worker", func(t *testing.T) {
		srv := githubtest.New(t, githubtest.Options{})
		c, _ := newConn(t, srv, nil)
		// The budget runs out after the lookup, the create and one update.
		srv.SetRemaining(3)
		req := checkRunReq("r1", 237)
		_, err := c.Annotate(t.Context(), req)
		if fault.ClassOf(err) != fault.ClassTransient || fault.RetryAfterOf(err) < 50*time.Minute {
			t.Fatalf("first attempt: %v (retry after %v)", err, fault.RetryAfterOf(err))
		}
		if n := len(srv.CheckRuns("acme/api")[0].Annotations); n != 100 {
			t.Fatalf("%d annotations sent before the budget ran out, want 100", n)
		}
		srv.SetRemaining(5000)
		c, _ = newConn(t, srv, nil)
		req.Attempt = 2
		p := annotate(t, c, req)
		if p.Writes != 3 || p.Reads != 2 { // lookup + a page of 100 annotations; 137 left: 50, 50, 37
			t.Errorf("retry: %+v", p)
		}
		if len(srv.CheckRuns("acme/api")) != 1 {
			t.Error("the retry created another run")
		}
		assertAnnotations(t, srv.CheckRuns("acme/api")[0], 237)
	})
}

// The same external id later (in progress, then completed) updates the
// run; another external id is another run, even of the same name (which
// GitHub's default filter would hide from the lookup).
func TestCheckRunLifecycle(t *testing.T) {
	srv := githubtest.New(t, githubtest.Options{})
	c, _ := newConn(t, srv, nil)
	req := checkRunReq("r1", 0)
	req.CheckRun.Status, req.CheckRun.Conclusion, req.CheckRun.Summary, req.CheckRun.Text = "in_progress", "", "", ""
	first := annotate(t, c, req)
	other := checkRunReq("r2", 1)
	other.CheckRun.ExternalID = "scan-2"
	annotate(t, c, other)

	c, _ = newConn(t, srv, nil)
	done := checkRunReq("r3", 60)
	p := annotate(t, c, done)
	if p.ExternalID != first.ExternalID || p.Writes != 2 || p.Reads != 2 {
		t.Errorf("completion: %+v, want run %s updated with 2 writes after 2 reads", p, first.ExternalID)
	}
	runs := srv.CheckRuns("acme/api")
	if len(runs) != 2 || runs[0].Status != "completed" || runs[0].Conclusion != "failure" || runs[0].Summary != "60 findings" || len(runs[1].Annotations) != 1 {
		t.Errorf("runs: %+v", runs)
	}
	assertAnnotations(t, runs[0], 60)

	// Without an external id the request's id is the run's.
	noID := checkRunReq("req-9", 0)
	noID.CheckRun.ExternalID = ""
	annotate(t, c, noID)
	if runs := srv.CheckRuns("acme/api"); len(runs) != 3 || runs[2].ExternalID != "req-9" {
		t.Errorf("run without externalId: %+v", runs[len(runs)-1])
	}
}

func TestAnnotationLevels(t *testing.T) {
	srv := githubtest.New(t, githubtest.Options{})
	c, _ := newConn(t, srv, nil)
	req := checkRunReq("r1", 7)
	in := []string{"failure", "error", "critical", "warning", "notice", "info", "bogus"}
	want := []string{"failure", "failure", "failure", "warning", "notice", "notice", "warning"}
	for i, l := range in {
		req.CheckRun.Annotations[i].Level = l
	}
	p := annotate(t, c, req)
	for i, a := range srv.CheckRuns("acme/api")[0].Annotations {
		if a.Level != want[i] {
			t.Errorf("level %q → %q, want %q", in[i], a.Level, want[i])
		}
	}
	if len(p.Notes) != 1 || !strings.Contains(p.Notes[0], `"bogus"`) {
		t.Errorf("notes %q", p.Notes)
	}
}

// Writes is what Annotate spends, as the fake counts it.
func TestWritesMatchCalls(t *testing.T) {
	srv := githubtest.New(t, githubtest.Options{})
	c, _ := newConn(t, srv, nil)
	var reqs []connectors.AnnotationRequest
	for i, n := range []int{0, 1, 50, 51, 100, 101, 237} {
		r := checkRunReq(fmt.Sprint("cr", i), n)
		r.CheckRun.ExternalID = fmt.Sprint("ext", i)
		reqs = append(reqs, r)
	}
	reqs = append(reqs, statusReq("s", "success", "scan", "ok"), commentReq("c1", 1, 2, "k", true, "x"), commentReq("c2", 3, 2, "", false, "y"))
	for _, req := range reqs {
		before := srv.Writes(githubtest.RouteAll)
		p := annotate(t, c, req)
		made := srv.Writes(githubtest.RouteAll) - before
		if p.Writes != made || c.Writes(req) != made {
			t.Errorf("%s %s: Writes %d, Posted.Writes %d, the fake saw %d", req.Operation, req.ID, c.Writes(req), p.Writes, made)
		}
	}
	if n := c.Writes(connectors.AnnotationRequest{}); n != 0 {
		t.Errorf("Writes of an unknown operation = %d", n)
	}
}

// Each failure class, for writes.
func TestAnnotateErrors(t *testing.T) {
	status := statusReq("r", "success", "scan", "ok")
	comment := commentReq("r", 1, 1, "scan", true, "x")
	run := checkRunReq("r", 3)
	badState := statusReq("r", "ok", "scan", "x")
	otherRepo := commentReq("r", 1, 1, "", false, "x")
	otherRepo.Repository.Name = "nope"
	reset := time.Now().Add(10 * time.Minute)
	for _, tc := range []struct {
		name     string
		req      connectors.AnnotationRequest
		route    githubtest.Route
		fault    *githubtest.Fault
		arrange  func(*githubtest.Server)
		class    fault.Class
		retryMin time.Duration
		retryMax time.Duration
		msg      string
	}{
		{name: "401", req: status, route: githubtest.RouteCreateStatus, fault: ptr(githubtest.Unauthorized()),
			class: fault.ClassPermanent, msg: "refused the installation token"},
		{name: "404 pull request", req: commentReq("r", 1, 999, "", false, "x"),
			class: fault.ClassPermanent, msg: "pull request #999 of acme/api was not found"},
		{name: "404 repository", req: otherRepo,
			class: fault.ClassPermanent, msg: "cannot see repository acme/nope"},
		{name: "404 status repository", req: func() connectors.AnnotationRequest { r := status; r.Repository.Name = "gone"; return r }(),
			class: fault.ClassPermanent, msg: "repository acme/gone was not found"},
		{name: "422 with GitHub's message", req: badState,
			class: fault.ClassPermanent, msg: "invalid (422 Validation Failed: state is not included in the list)"},
		{name: "422 on a check run", req: run, route: githubtest.RouteCreateCheckRun, fault: ptr(githubtest.Invalid("head_sha is not a commit")),
			class: fault.ClassPermanent, msg: "head_sha is not a commit"},
		{name: "403 permission", req: run, route: githubtest.RouteCreateCheckRun, fault: ptr(githubtest.Forbidden()),
			class: fault.ClassPermanent, msg: "lacks the permission checks: write"},
		{name: "403 secondary limit", req: comment, route: githubtest.RouteCreateComment, fault: ptr(githubtest.SecondaryLimit(90 * time.Second)),
			class: fault.ClassTransient, retryMin: 89 * time.Second, retryMax: 91 * time.Second, msg: "secondary rate limit"},
		{name: "403 penalty", req: status, arrange: func(s *githubtest.Server) { s.Penalize(2 * time.Minute) },
			class: fault.ClassTransient, retryMin: 110 * time.Second, retryMax: 121 * time.Second, msg: "secondary rate limit"},
		{name: "403 with Retry-After only", req: status, route: githubtest.RouteCreateStatus,
			fault: &githubtest.Fault{Status: 403, Message: "slow down", Header: http.Header{"Retry-After": {"42"}}},
			class: fault.ClassTransient, retryMin: 42 * time.Second, retryMax: 42 * time.Second, msg: "rate-limited"},
		{name: "403 primary limit", req: status, arrange: func(s *githubtest.Server) { s.SetRemaining(0) },
			class: fault.ClassTransient, retryMin: 50 * time.Minute, retryMax: 61 * time.Minute, msg: "rate limit"},
		{name: "429 with Retry-After", req: comment, route: githubtest.RouteCreateComment, fault: ptr(githubtest.TooManyRequests(30 * time.Second)),
			class: fault.ClassTransient, retryMin: 29 * time.Second, retryMax: 31 * time.Second, msg: "rate-limited"},
		{name: "429 primary limit", req: run, route: githubtest.RouteCreateCheckRun, fault: ptr(githubtest.PrimaryLimit(429, reset)),
			class: fault.ClassTransient, retryMin: 9 * time.Minute, retryMax: 11 * time.Minute, msg: "rate-limited"},
		{name: "500", req: comment, route: githubtest.RouteListComments, fault: ptr(githubtest.ServerError(500)),
			class: fault.ClassTransient, msg: "500"},
		{name: "502 on an update", req: checkRunReq("r", 60), route: githubtest.RouteUpdateCheckRun, fault: ptr(githubtest.ServerError(502)),
			class: fault.ClassTransient, msg: "502"},
		{name: "connection reset", req: status, route: githubtest.RouteCreateStatus, fault: ptr(githubtest.ConnectionReset()),
			class: fault.ClassTransient, msg: "closed the connection"},
		{name: "no answer in time", req: status, route: githubtest.RouteCreateStatus, fault: ptr(githubtest.Slow()),
			class: fault.ClassTransient, msg: "did not answer within 1s"},
		// The shared rule (connectors.ClassifyNet): nothing listening is
		// offline, which the worker spools rather than retries.
		{name: "down", req: status, arrange: func(s *githubtest.Server) { s.Down() },
			class: fault.ClassOffline, msg: "connection refused"},
		{name: "bad sha", req: func() connectors.AnnotationRequest { r := status; r.CommitSHA = "main/../../x"; return r }(),
			class: fault.ClassPermanent, msg: "not a full commit id"},
		{name: "outside the organisation", req: func() connectors.AnnotationRequest { r := status; r.Repository.Owner = "other"; return r }(),
			arrange: nil, class: fault.ClassPermanent, msg: "outside the organisation"},
		{name: "unknown operation", req: connectors.AnnotationRequest{ID: "r", AnnotationRequested: events.AnnotationRequested{
			Operation: "review", Repository: events.Repository{Owner: "acme", Name: "api"}}},
			class: fault.ClassPermanent, msg: `operation "review"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := githubtest.New(t, githubtest.Options{})
			c, s := newConn(t, srv, func(s *setup) {
				s.conf["timeoutSeconds"] = 1
				if tc.name == "outside the organisation" {
					s.conf["organization"] = "acme"
				}
			})
			// The token first, so that faults meet the write itself.
			if r := c.CheckHealth(t.Context()); r.Err != nil {
				t.Fatal(r.Err)
			}
			if tc.fault != nil {
				srv.Fail(tc.route, *tc.fault)
			}
			if tc.arrange != nil {
				tc.arrange(srv)
			}
			_, err := c.Annotate(t.Context(), tc.req)
			if err == nil {
				t.Fatal("Annotate succeeded")
			}
			t.Logf("%v (retry %v): %v", fault.ClassOf(err), fault.RetryAfterOf(err), err)
			if fault.ClassOf(err) != tc.class {
				t.Errorf("class %v, want %v", fault.ClassOf(err), tc.class)
			}
			if got := fault.RetryAfterOf(err); tc.retryMin > 0 && (got < tc.retryMin || got > tc.retryMax) {
				t.Errorf("retry after %v, want %v..%v", got, tc.retryMin, tc.retryMax)
			}
			if !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("message does not say %q", tc.msg)
			}
			if strings.Contains(err.Error(), "ghs_") || strings.Contains(s.logs.String(), "ghs_") {
				t.Error("an installation token in a message or the logs")
			}
			if n := srv.Writes(githubtest.RouteAll); n != 0 && tc.name != "502 on an update" {
				t.Errorf("%d writes carried out by a failed request", n)
			}
		})
	}
}

// After a secondary limit, go-github holds further writes back itself:
// GitHub sees no request until Retry-After has passed.
func TestSecondaryLimitHoldsWritesBack(t *testing.T) {
	srv := githubtest.New(t, githubtest.Options{WritesPerMinute: 2})
	c, _ := newConn(t, srv, nil)
	for i := range 2 {
		annotate(t, c, statusReq(fmt.Sprint("r", i), "pending", "scan", fmt.Sprint(i)))
	}
	_, err := c.Annotate(t.Context(), statusReq("r2", "pending", "scan", "2"))
	if fault.RetryAfterOf(err) < 59*time.Second {
		t.Fatalf("the third write in a minute: %v (retry after %v)", err, fault.RetryAfterOf(err))
	}
	for i := range 5 {
		_, err := c.Annotate(t.Context(), commentReq(fmt.Sprint("c", i), 1, 1, "", false, "x"))
		if fault.ClassOf(err) != fault.ClassTransient || fault.RetryAfterOf(err) <= 0 {
			t.Errorf("write %d during the penalty: %v", i, err)
		}
	}
	if n := srv.PenaltyViolations(); n != 0 {
		t.Errorf("%d requests reached GitHub during the penalty", n)
	}
}

func ptr[T any](v T) *T { return &v }

// A later request for a run sends only the annotations the run lacks,
// counting repeats: an annotation sent twice on purpose is kept twice.
func TestCheckRunSendsOnlyNewAnnotations(t *testing.T) {
	srv := githubtest.New(t, githubtest.Options{})
	c, _ := newConn(t, srv, nil)
	annotate(t, c, checkRunReq("r1", 3))
	later := checkRunReq("r2", 5)
	later.CheckRun.Annotations = append(later.CheckRun.Annotations, later.CheckRun.Annotations[1])
	p := annotate(t, c, later)
	got := srv.CheckRuns("acme/api")[0].Annotations
	var lines []int
	for _, a := range got {
		lines = append(lines, a.StartLine)
	}
	if fmt.Sprint(lines) != "[1 2 3 4 5 2]" || p.Writes != 1 || p.Reads != 1 {
		t.Errorf("annotations at lines %v after %+v; want [1 2 3 4 5 2] with one write after one read", lines, p)
	}
}
