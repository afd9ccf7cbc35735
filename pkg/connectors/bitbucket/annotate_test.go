package bitbucket

import (
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"

	"inthub.dev/events"
	"inthub.dev/pkg/connectors"
	"inthub.dev/pkg/connectors/bitbucket/bitbuckettest"
	"inthub.dev/pkg/fault"
)

func request(f flavour, id string, attempt int, ar events.AnnotationRequested) connectors.AnnotationRequest {
	ar.IntegrationID = "6f1d3b8e-8f57-4c63-9d0c-7d0e5c1b2a90"
	ar.Repository = events.Repository{Owner: f.owner(), Name: "api"}
	return connectors.AnnotationRequest{ID: id, Attempt: attempt, AnnotationRequested: ar}
}

func commentReq(f flavour, id string, attempt int, body, key string, sticky bool) connectors.AnnotationRequest {
	return request(f, id, attempt, events.AnnotationRequested{Operation: events.OpComment, PullRequest: prID,
		Comment: &events.Comment{Body: body, Key: key, UpdateExisting: sticky}})
}

func statusReq(f flavour, id, state, desc string) connectors.AnnotationRequest {
	return request(f, id, 1, events.AnnotationRequested{Operation: events.OpStatus, CommitSHA: head,
		Status: &events.CommitStatus{State: state, Context: "stellaops/scan", Description: desc, TargetURL: "https://scanner.example.com/runs/1"}})
}

func checkReq(f flavour, id string, attempt int, cr events.CheckRun) connectors.AnnotationRequest {
	return request(f, id, attempt, events.AnnotationRequested{Operation: events.OpCheckRun, PullRequest: prID, CommitSHA: head, CheckRun: &cr})
}

func anns(n int) []events.Annotation {
	out := make([]events.Annotation, n)
	for i := range out {
		lvl := []string{"notice", "warning", "failure"}[i%3]
		out[i] = events.Annotation{Path: fmt.Sprintf("src/f%d.go", i%7), StartLine: i + 1, EndLine: i + 1, Level: lvl, Message: fmt.Sprintf("finding %d", i), Title: "CVE-2024-" + fmt.Sprint(1000+i)}
	}
	return out
}

func annotate(t *testing.T, c *Connector, req connectors.AnnotationRequest) connectors.Posted {
	t.Helper()
	p, err := c.Annotate(t.Context(), req)
	if err != nil {
		t.Fatalf("Annotate %s: %v", req.ID, err)
	}
	return p
}

// TestSameRequestThreeTimes is the idempotency the worker relies on: a
// request delivered three times (and with new ids, as a re-sent request)
// ends as one comment, one status and one report, on every flavour and
// credential kind.
func TestSameRequestThreeTimes(t *testing.T) {
	for _, f := range flavours {
		t.Run(f.name, func(t *testing.T) {
			s := seeded(t, f)
			c := newConn(t, s, f, opts{})
			full := f.owner() + "/api"
			cr := events.CheckRun{Name: "StellaOps scan", Status: "completed", Conclusion: "failure", ExternalID: "scan-42",
				Summary: "3 findings", Annotations: anns(150)}
			for i := range 3 {
				// The same request redelivered (attempt 1, 2, 3) ...
				annotate(t, c, commentReq(f, "req-comment", i+1, "scan: 3 findings", "stellaops-scan", true))
				annotate(t, c, statusReq(f, "req-status", "failure", "3 findings"))
				annotate(t, c, checkReq(f, "req-check", i+1, cr))
				// ... and a plain comment retried after its first attempt.
				annotate(t, c, commentReq(f, "req-plain", i+1, "once only", "", false))
			}
			// A restarted worker (a new connector) sends it again.
			c2 := newConn(t, s, f, opts{})
			annotate(t, c2, commentReq(f, "req-comment-2", 1, "scan: 3 findings", "stellaops-scan", true))
			annotate(t, c2, commentReq(f, "req-plain", 2, "once only", "", false))

			comments := s.Comments(full, prID)
			if len(comments) != 2 {
				t.Fatalf("%d comments, want 2 (one sticky, one plain): %+v", len(comments), comments)
			}
			if !strings.HasPrefix(comments[0].Text, Marker("stellaops-scan")+"\n\n") || comments[0].Edits != 0 {
				t.Errorf("sticky comment %+v", comments[0])
			}
			sts := s.Statuses(full, head)
			if len(sts) != 1 || sts[0].Key != "stellaops/scan" || sts[0].State != "FAILED" || sts[0].Updates != 2 || sts[0].URL != "https://scanner.example.com/runs/1" {
				t.Fatalf("statuses %+v", sts)
			}
			reps := s.Reports(full, head)
			rep, ok := reps["inthub-scan-42"]
			wantPuts := map[bool]int{true: 1, false: 3}[f.flavor == Cloud] // Cloud deletes and puts anew
			if len(reps) != 1 || !ok || len(rep.Annotations) != 150 || rep.Puts != wantPuts {
				t.Fatalf("reports %d, %+v", len(reps), rep)
			}
			wantResult := map[bool]string{true: "FAILED", false: "FAIL"}[f.flavor == Cloud]
			if rep.Result != wantResult || rep.Title != "StellaOps scan" || rep.Details != "3 findings" {
				t.Errorf("report %+v", rep)
			}
		})
	}
}

func TestStickyCommentIsEditedInPlace(t *testing.T) {
	for _, f := range flavours {
		t.Run(f.name, func(t *testing.T) {
			s := seeded(t, f)
			c := newConn(t, s, f, opts{})
			full := f.owner() + "/api"
			for i := range 4 {
				req := commentReq(f, fmt.Sprintf("req-%d", i), 1, fmt.Sprintf("scan %d", i), "stellaops-scan", true)
				p := annotate(t, c, req)
				if p.Writes != 1 || p.Unchanged || p.ExternalID == "" || !strings.HasPrefix(p.URL, s.URL()+"/") || !strings.Contains(p.URL, p.ExternalID) {
					t.Fatalf("send %d: %+v", i, p)
				}
			}
			cs := s.Comments(full, prID)
			if len(cs) != 1 || cs[0].Edits != 3 || !strings.HasSuffix(cs[0].Text, "scan 3") {
				t.Fatalf("comments %+v", cs)
			}
			// The same body again: nothing written, nothing read.
			before := len(s.Seen())
			p := annotate(t, c, commentReq(f, "req-again", 1, "scan 3", "stellaops-scan", true))
			if !p.Unchanged || p.Writes != 0 || p.Reads != 0 || len(s.Seen()) != before {
				t.Fatalf("identical body: %+v", p)
			}
			// One listing served all of them.
			if n := s.Requests(bitbuckettest.RouteComments); n != 1 {
				t.Fatalf("%d comment listings", n)
			}
		})
	}
}

// TestStickyCommentIgnoresOthersQuotingTheMarker: a person's comment that
// carries the marker is not inthub's to edit.
func TestStickyCommentIgnoresOthersQuotingTheMarker(t *testing.T) {
	for _, f := range flavours {
		t.Run(f.name, func(t *testing.T) {
			s := seeded(t, f)
			full := f.owner() + "/api"
			quoted := s.AddComment(full, prID, "alice", "look: "+Marker("stellaops-scan")+"\n\nquoted")
			c := newConn(t, s, f, opts{})
			annotate(t, c, commentReq(f, "r1", 1, "ours", "stellaops-scan", true))
			annotate(t, c, commentReq(f, "r2", 1, "ours again", "stellaops-scan", true))
			cs := s.Comments(full, prID)
			if len(cs) != 2 || cs[0].ID != quoted || cs[0].Edits != 0 || !strings.HasSuffix(cs[1].Text, "ours again") {
				t.Fatalf("comments %+v", cs)
			}
			// Where the credential's identity is known (an account, a Data
			// Center user), the quote is never even tried; a Cloud access
			// token has no account to compare, so its edit is tried once,
			// refused (403) and inthub posts its own.
			wantEdits := 1
			if f.flavor == Cloud && f.bearer {
				wantEdits = 2
			}
			if n := s.Requests(bitbuckettest.RouteEditComment); n != wantEdits {
				t.Fatalf("%d edit requests, want %d", n, wantEdits)
			}
		})
	}
}

func TestStickyCommentDeletedByHandIsPostedAgain(t *testing.T) {
	for _, f := range flavours {
		t.Run(f.name, func(t *testing.T) {
			s := seeded(t, f)
			full := f.owner() + "/api"
			c := newConn(t, s, f, opts{})
			p := annotate(t, c, commentReq(f, "r1", 1, "first", "k", true))
			var id int64
			fmt.Sscan(p.ExternalID, &id)
			s.DeleteComment(full, prID, id)
			p2 := annotate(t, c, commentReq(f, "r2", 1, "second", "k", true))
			cs := s.Comments(full, prID)
			if len(cs) != 1 || p2.ExternalID == p.ExternalID || !strings.HasSuffix(cs[0].Text, "second") {
				t.Fatalf("comments %+v, posted %+v", cs, p2)
			}
		})
	}
}

// TestCommentRetryAfterLostAnswer: the post was applied and its answer
// lost (a proxy's 502); the retry finds it by the request's marker.
func TestCommentRetryAfterLostAnswer(t *testing.T) {
	for _, f := range flavours {
		t.Run(f.name, func(t *testing.T) {
			s := seeded(t, f)
			c := newConn(t, s, f, opts{})
			s.Fail(bitbuckettest.RouteCreateComment, bitbuckettest.Fault{Status: http.StatusBadGateway, Applied: true, Times: 1})
			_, err := c.Annotate(t.Context(), commentReq(f, "r1", 1, "hello", "", false))
			if fault.ClassOf(err) != fault.ClassTransient {
				t.Fatalf("first attempt: %v", err)
			}
			p := annotate(t, c, commentReq(f, "r1", 2, "hello", "", false))
			if p.Writes != 0 || len(s.Comments(f.owner()+"/api", prID)) != 1 {
				t.Fatalf("retry posted again: %+v, %d comments", p, len(s.Comments(f.owner()+"/api", prID)))
			}
		})
	}
}

// TestDataCenterEditOfAStaleVersion: someone edited inthub's comment
// meanwhile; the edit is refused (409) as transient and the next
// attempt edits the current version.
func TestDataCenterEditOfAStaleVersion(t *testing.T) {
	f := flavours[3]
	s := seeded(t, f)
	c := newConn(t, s, f, opts{})
	annotate(t, c, commentReq(f, "r1", 1, "v1", "k", true))
	// Another connector (another worker) edits it: this one's cached
	// version is now stale.
	annotate(t, newConn(t, s, f, opts{}), commentReq(f, "r2", 1, "v2", "k", true))
	_, err := c.Annotate(t.Context(), commentReq(f, "r3", 1, "v3", "k", true))
	if fault.ClassOf(err) != fault.ClassTransient || statusOf(err) != http.StatusConflict {
		t.Fatalf("stale edit: %v", err)
	}
	annotate(t, c, commentReq(f, "r3", 2, "v3", "k", true))
	cs := s.Comments(f.owner()+"/api", prID)
	if len(cs) != 1 || !strings.HasSuffix(cs[0].Text, "v3") || cs[0].Version != 2 {
		t.Fatalf("comments %+v", cs)
	}
}

func TestConcurrentStickyComments(t *testing.T) {
	f := flavours[0]
	s := seeded(t, f)
	c := newConn(t, s, f, opts{})
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			if _, err := c.Annotate(t.Context(), commentReq(f, fmt.Sprint("r", i), 1, fmt.Sprint("body ", i), "k", true)); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if cs := s.Comments(f.owner()+"/api", prID); len(cs) != 1 {
		t.Fatalf("%d comments from 8 concurrent sticky requests", len(cs))
	}
}

func TestCommentBodyIsCut(t *testing.T) {
	for _, f := range []flavour{flavours[0], flavours[2]} {
		s := seeded(t, f)
		c := newConn(t, s, f, opts{})
		p := annotate(t, c, commentReq(f, "r", 1, strings.Repeat("x", 40000), "k", true))
		cs := s.Comments(f.owner()+"/api", prID)
		if len(cs) != 1 || len([]rune(cs[0].Text)) > MaxCommentBody || len(p.Notes) == 0 || !strings.Contains(cs[0].Text, "cut by inthub") {
			t.Fatalf("%s: %d characters, notes %v", f.name, len(cs[0].Text), p.Notes)
		}
	}
}

func TestStatusStates(t *testing.T) {
	for _, f := range []flavour{flavours[0], flavours[2]} {
		for state, want := range map[string]string{"pending": "INPROGRESS", "success": "SUCCESSFUL", "failure": "FAILED", "error": "FAILED"} {
			s := seeded(t, f)
			c := newConn(t, s, f, opts{})
			p := annotate(t, c, statusReq(f, "r", state, ""))
			sts := s.Statuses(f.owner()+"/api", head)
			if len(sts) != 1 || sts[0].State != want || p.ExternalID != "stellaops/scan" || !strings.HasSuffix(p.URL, "/commits/"+head) {
				t.Fatalf("%s %s: %+v %+v", f.name, state, sts, p)
			}
		}
	}
}

func TestStatusLimits(t *testing.T) {
	for _, f := range []flavour{flavours[0], flavours[2]} {
		s := seeded(t, f)
		c := newConn(t, s, f, opts{})
		req := statusReq(f, "r", "success", strings.Repeat("d", 300))
		req.Status.Context = strings.Repeat("c", 300)
		req.Status.TargetURL = ""
		p := annotate(t, c, req)
		sts := s.Statuses(f.owner()+"/api", head)
		if len(sts) != 1 || len([]rune(sts[0].Description)) > 255 || len([]rune(sts[0].Name)) > 255 || !strings.HasSuffix(sts[0].URL, "/commits/"+head) {
			t.Fatalf("%s: %+v", f.name, sts)
		}
		limit := map[bool]int{true: maxCloudStatusKey, false: maxDCStatusKey}[f.flavor == Cloud]
		if len(sts[0].Key) > limit || len(p.Notes) < 2 {
			t.Fatalf("%s: key %d characters, notes %v", f.name, len(sts[0].Key), p.Notes)
		}
		// The shortened key is stable: the next post updates the status.
		annotate(t, c, req)
		if sts := s.Statuses(f.owner()+"/api", head); len(sts) != 1 || sts[0].Updates != 1 {
			t.Fatalf("%s: %+v", f.name, sts)
		}
	}
}

// TestCloudStatusOfAnotherCreator: Cloud lets only a status's creator
// overwrite it; the refusal is permanent and says so.
func TestCloudStatusOfAnotherCreator(t *testing.T) {
	f := flavours[0]
	s := seeded(t, f)
	annotate(t, newConn(t, s, flavours[1], opts{}), statusReq(f, "r", "pending", ""))
	_, err := newConn(t, s, f, opts{}).Annotate(t.Context(), statusReq(f, "r", "success", ""))
	if fault.ClassOf(err) != fault.ClassPermanent || !strings.Contains(err.Error(), "Only the creator") {
		t.Fatalf("err = %v", err)
	}
}

func TestDataCenterLegacyBuildStatus(t *testing.T) {
	f := flavours[2]
	s := seeded(t, f, bitbuckettest.Options{LegacyBuildStatus: true})
	c := newConn(t, s, f, opts{})
	p := annotate(t, c, statusReq(f, "r1", "success", "ok"))
	if len(p.Notes) == 0 || !strings.Contains(p.Notes[0], "legacy") {
		t.Fatalf("notes %v", p.Notes)
	}
	annotate(t, c, statusReq(f, "r2", "failure", "bad"))
	sts := s.Statuses(f.owner()+"/api", head)
	if len(sts) != 1 || !sts[0].Legacy || sts[0].State != "FAILED" {
		t.Fatalf("statuses %+v", sts)
	}
	// The second call went straight to the legacy API.
	if n := s.Requests(bitbuckettest.RouteCreateStatus); n != 1 {
		t.Fatalf("%d posts to /builds", n)
	}
	// A missing repository is not mistaken for an old version.
	c2 := newConn(t, seeded(t, f), f, opts{})
	req := statusReq(f, "r3", "success", "")
	req.Repository.Name = "nope"
	if _, err := c2.Annotate(t.Context(), req); statusOf(err) != http.StatusNotFound || c2.ann.isLegacy() {
		t.Fatalf("missing repository: %v, legacy %v", err, c2.ann.isLegacy())
	}
}

func TestCheckRunReport(t *testing.T) {
	for _, f := range []flavour{flavours[0], flavours[2]} {
		t.Run(f.name, func(t *testing.T) {
			s := seeded(t, f)
			c := newConn(t, s, f, opts{})
			full := f.owner() + "/api"
			cr := events.CheckRun{Name: "scan", Status: "in_progress"}
			p := annotate(t, c, checkReq(f, "r1", 1, cr))
			rep := s.Reports(full, head)["inthub-scan"]
			wantPending := map[bool]string{true: "PENDING", false: ""}[f.flavor == Cloud]
			if rep.Result != wantPending || p.ExternalID != "inthub-scan" || !strings.HasSuffix(p.URL, "/pull-requests/7") {
				t.Fatalf("report %+v, posted %+v", rep, p)
			}
			cr = events.CheckRun{Name: "scan", Conclusion: "success", Summary: "clean", Text: "no findings", Annotations: anns(1050)}
			req := checkReq(f, "r2", 1, cr)
			p = annotate(t, c, req)
			if p.Writes != c.Writes(req) {
				t.Errorf("Writes() = %d, the call made %d", c.Writes(req), p.Writes)
			}
			rep = s.Reports(full, head)["inthub-scan"]
			if len(rep.Annotations) != 1000 || len(p.Notes) == 0 || rep.Details != "clean\n\nno findings" {
				t.Fatalf("%d annotations, notes %v, details %q", len(rep.Annotations), p.Notes, rep.Details)
			}
			a := rep.Annotations[2]
			if a.Severity != "HIGH" || a.Path != "src/f2.go" || a.Line != 3 || !strings.Contains(a.Message, "CVE-2024-1002: finding 2") {
				t.Errorf("annotation %+v", a)
			}
			// Fewer annotations next time: the last run's do not linger.
			annotate(t, c, checkReq(f, "r3", 1, events.CheckRun{Name: "scan", Conclusion: "failure", Annotations: anns(3)}))
			rep = s.Reports(full, head)["inthub-scan"]
			if len(rep.Annotations) != 3 || rep.Result != map[bool]string{true: "FAILED", false: "FAIL"}[f.flavor == Cloud] {
				t.Fatalf("%d annotations after a smaller run (result %s), want 3", len(rep.Annotations), rep.Result)
			}
		})
	}
}

func TestAnnotateRefusesBadRequests(t *testing.T) {
	f := flavours[0]
	s := seeded(t, f)
	c := newConn(t, s, f, opts{})
	tests := map[string]connectors.AnnotationRequest{
		"no comment":      request(f, "r", 1, events.AnnotationRequested{Operation: events.OpComment, PullRequest: 7}),
		"no pr":           request(f, "r", 1, events.AnnotationRequested{Operation: events.OpComment, Comment: &events.Comment{Body: "x"}}),
		"sticky no key":   request(f, "r", 1, events.AnnotationRequested{Operation: events.OpComment, PullRequest: 7, Comment: &events.Comment{Body: "x", UpdateExisting: true}}),
		"bad sha":         request(f, "r", 1, events.AnnotationRequested{Operation: events.OpStatus, CommitSHA: "HEAD", Status: &events.CommitStatus{State: "success"}}),
		"bad state":       request(f, "r", 1, events.AnnotationRequested{Operation: events.OpStatus, CommitSHA: head, Status: &events.CommitStatus{State: "done"}}),
		"no check":        request(f, "r", 1, events.AnnotationRequested{Operation: events.OpCheckRun, CommitSHA: head}),
		"bad conclusion":  request(f, "r", 1, events.AnnotationRequested{Operation: events.OpCheckRun, CommitSHA: head, CheckRun: &events.CheckRun{Name: "x", Conclusion: "meh"}}),
		"completed alone": request(f, "r", 1, events.AnnotationRequested{Operation: events.OpCheckRun, CommitSHA: head, CheckRun: &events.CheckRun{Name: "x", Status: "completed"}}),
		"unknown op":      request(f, "r", 1, events.AnnotationRequested{Operation: "label"}),
	}
	for name, req := range tests {
		if _, err := c.Annotate(t.Context(), req); fault.ClassOf(err) != fault.ClassPermanent {
			t.Errorf("%s: %v", name, err)
		}
	}
	bad := commentReq(f, "r", 1, "x", "", false)
	bad.Repository.Name = "../x"
	if _, err := c.Annotate(t.Context(), bad); fault.ClassOf(err) != fault.ClassPermanent {
		t.Errorf("bad repository: %v", err)
	}
	if n := s.Writes(); n != 0 {
		t.Fatalf("%d writes for bad requests", n)
	}
}

// TestAnnotateErrorsNameTheScope: a Cloud credential that reads but may
// not write pull requests is refused permanently, naming the scope.
func TestAnnotateErrorsNameTheScope(t *testing.T) {
	f := flavours[1]
	s := seeded(t, f)
	s.AddToken(cloudToken, bitbuckettest.Token{Name: "ro", Workspace: workspace, Scopes: []string{"repository", "pullrequest"}})
	c := newConn(t, s, f, opts{})
	_, err := c.Annotate(t.Context(), commentReq(f, "r", 1, "x", "", false))
	if fault.ClassOf(err) != fault.ClassPermanent || !strings.Contains(err.Error(), "lack the pullrequest:write scope (write:pullrequest:bitbucket on a scoped API token)") {
		t.Fatalf("err = %v", err)
	}
	s.Fail(bitbuckettest.RouteCreateStatus, bitbuckettest.Fault{Status: 429, Header: http.Header{"Retry-After": {"30"}}})
	_, err = c.Annotate(t.Context(), statusReq(f, "r", "success", ""))
	if fault.ClassOf(err) != fault.ClassTransient || fault.RetryAfterOf(err).Seconds() != 30 {
		t.Fatalf("429: %v", err)
	}
}

func TestWritesAndScope(t *testing.T) {
	cloud := &Connector{flavor: Cloud}
	dc := &Connector{flavor: DataCenter}
	cr := &events.CheckRun{Name: "x", Annotations: anns(250)}
	req := connectors.AnnotationRequest{AnnotationRequested: events.AnnotationRequested{Operation: events.OpCheckRun, CheckRun: cr}}
	if cloud.Writes(req) != 5 || dc.Writes(req) != 5 {
		t.Fatalf("writes cloud %d dc %d", cloud.Writes(req), dc.Writes(req))
	}
	f := flavours[0]
	s := seeded(t, f)
	c := newConn(t, s, f, opts{})
	host, account := c.AnnotationScope()
	if host == "" || !strings.HasPrefix(account, "cred/") || strings.Contains(account, appPassword) {
		t.Fatalf("scope %s %s", host, account)
	}
}

func TestMarker(t *testing.T) {
	m := Marker("a key (with) ) parens")
	if !markerRE.MatchString(m) || strings.Count(m, ")") != 1 {
		t.Fatalf("marker %q", m)
	}
}

// TestCloudAccountNotReadable: an API token that may not read its account
// (no read:user:bitbucket) still annotates, the marker alone deciding.
func TestCloudAccountNotReadable(t *testing.T) {
	f := flavours[0]
	s := seeded(t, f)
	s.AddUser(bitbuckettest.User{Name: botUser, Password: appPassword, Scopes: []string{"pullrequest:write"}})
	c := newConn(t, s, f, opts{})
	for i := range 3 {
		annotate(t, c, commentReq(f, fmt.Sprint("r", i), 1, fmt.Sprint("body ", i), "k", true))
	}
	if cs := s.Comments(f.owner()+"/api", prID); len(cs) != 1 || cs[0].Edits != 2 {
		t.Fatalf("comments %+v", cs)
	}
}
