package githubtest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const sha = "0123456789abcdef0123456789abcdef01234567"

// client calls the fake as an installation would, with a token the fake
// issued (minted here: the JWT exchange has its own tests upstream).
type client struct {
	t   *testing.T
	srv *Server
	hc  *http.Client
	tok string
}

func newClient(t *testing.T, o Options) *client {
	t.Helper()
	srv := New(t, o)
	srv.mu.Lock()
	srv.tokens["ghs_test"] = time.Now().Add(time.Hour)
	srv.mu.Unlock()
	return &client{t: t, srv: srv, hc: srv.Client(), tok: "ghs_test"}
}

type answer struct {
	status int
	header http.Header
	body   []byte
}

func (a answer) json(t *testing.T, v any) {
	t.Helper()
	if err := json.Unmarshal(a.body, v); err != nil {
		t.Fatalf("answer %d %s: %v", a.status, a.body, err)
	}
}

func (c *client) try(method, path string, body any) (answer, error) {
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequestWithContext(c.t.Context(), method, c.srv.APIRoot()+strings.TrimPrefix(path, "/"), rd)
	req.Header.Set("Authorization", "token "+c.tok)
	resp, err := c.hc.Do(req)
	if err != nil {
		return answer{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return answer{resp.StatusCode, resp.Header, b}, err
}

func (c *client) do(method, path string, body any) answer {
	c.t.Helper()
	a, err := c.try(method, path, body)
	if err != nil {
		c.t.Fatalf("%s %s: %v", method, path, err)
	}
	return a
}

func annotations(n int, from int) []map[string]any {
	out := make([]map[string]any, n)
	for i := range out {
		out[i] = map[string]any{"path": "a.go", "start_line": from + i, "end_line": from + i, "annotation_level": "warning", "message": fmt.Sprint("m", from+i)}
	}
	return out
}

// Every limit the package documents is answered as GitHub answers it,
// and the limit itself is accepted.
func TestLimits(t *testing.T) {
	c := newClient(t, Options{})
	run := c.do("POST", "repos/acme/api/check-runs", map[string]any{"name": "scan", "head_sha": sha})
	var created struct{ ID int64 }
	run.json(t, &created)
	runPath := fmt.Sprintf("repos/acme/api/check-runs/%d", created.ID)
	long := func(n int) string { return strings.Repeat("é", n) }
	ann := func(mut func(map[string]any)) map[string]any {
		a := annotations(1, 1)[0]
		mut(a)
		return a
	}
	for _, tc := range []struct {
		name, method, path string
		body               any
		status             int
		says               string
	}{
		{"comment at the limit", "POST", "repos/acme/api/issues/1/comments", map[string]any{"body": long(MaxCommentBody)}, 201, ""},
		{"comment too long", "POST", "repos/acme/api/issues/1/comments", map[string]any{"body": long(MaxCommentBody + 1)}, 422, "too long"},
		{"comment empty", "POST", "repos/acme/api/issues/1/comments", map[string]any{"body": " "}, 422, "missing_field"},
		{"comment without body", "POST", "repos/acme/api/issues/1/comments", map[string]any{}, 422, "missing_field"},
		{"comment on a missing pull request", "POST", "repos/acme/api/issues/101/comments", map[string]any{"body": "x"}, 404, "Not Found"},
		{"comment in a missing repository", "POST", "repos/acme/nope/issues/1/comments", map[string]any{"body": "x"}, 404, "Not Found"},
		{"edit of a missing comment", "PATCH", "repos/acme/api/issues/comments/999999", map[string]any{"body": "x"}, 404, "Not Found"},
		{"bad JSON", "POST", "repos/acme/api/issues/1/comments", "{", 400, "parsing JSON"},
		{"status", "POST", "repos/acme/api/statuses/" + sha, map[string]any{"state": "success", "context": "c", "description": long(140)}, 201, ""},
		{"status description too long", "POST", "repos/acme/api/statuses/" + sha, map[string]any{"state": "success", "description": long(141)}, 422, "description is too long"},
		{"status state unknown", "POST", "repos/acme/api/statuses/" + sha, map[string]any{"state": "ok"}, 422, "state"},
		{"status state missing", "POST", "repos/acme/api/statuses/" + sha, map[string]any{}, 422, "missing_field"},
		{"status of no sha", "POST", "repos/acme/api/statuses/main", map[string]any{"state": "success"}, 422, "No commit found"},
		{"check run without name", "POST", "repos/acme/api/check-runs", map[string]any{"head_sha": sha}, 422, "name"},
		{"check run without sha", "POST", "repos/acme/api/check-runs", map[string]any{"name": "x"}, 422, "head_sha"},
		{"completed without conclusion", "POST", "repos/acme/api/check-runs", map[string]any{"name": "x", "head_sha": sha, "status": "completed"}, 422, "conclusion"},
		{"unknown conclusion", "POST", "repos/acme/api/check-runs", map[string]any{"name": "x", "head_sha": sha, "conclusion": "great"}, 422, "conclusion"},
		{"output without summary", "POST", "repos/acme/api/check-runs", map[string]any{"name": "x", "head_sha": sha, "output": map[string]any{"title": "t"}}, 422, "output.summary"},
		{"output without title", "POST", "repos/acme/api/check-runs", map[string]any{"name": "x", "head_sha": sha, "output": map[string]any{"summary": "s"}}, 422, "output.title"},
		{"summary at the limit", "PATCH", runPath, map[string]any{"output": map[string]any{"title": "t", "summary": long(MaxCheckRunText), "text": long(MaxCheckRunText)}}, 200, ""},
		{"summary too long", "PATCH", runPath, map[string]any{"output": map[string]any{"title": "t", "summary": long(MaxCheckRunText + 1)}}, 422, "output.summary is too long"},
		{"text too long", "PATCH", runPath, map[string]any{"output": map[string]any{"title": "t", "summary": "s", "text": long(MaxCheckRunText + 1)}}, 422, "output.text is too long"},
		{"50 annotations", "PATCH", runPath, map[string]any{"output": map[string]any{"title": "t", "summary": "s", "annotations": annotations(50, 1)}}, 200, ""},
		{"51 annotations", "PATCH", runPath, map[string]any{"output": map[string]any{"title": "t", "summary": "s", "annotations": annotations(51, 1)}}, 422, "Only 50 annotations"},
		{"annotation without message", "PATCH", runPath, map[string]any{"output": map[string]any{"title": "t", "summary": "s",
			"annotations": []any{ann(func(a map[string]any) { delete(a, "message") })}}}, 422, "message"},
		{"annotation without level", "PATCH", runPath, map[string]any{"output": map[string]any{"title": "t", "summary": "s",
			"annotations": []any{ann(func(a map[string]any) { delete(a, "annotation_level") })}}}, 422, "annotation_level"},
		{"annotation level unknown", "PATCH", runPath, map[string]any{"output": map[string]any{"title": "t", "summary": "s",
			"annotations": []any{ann(func(a map[string]any) { a["annotation_level"] = "error" })}}}, 422, "annotation_level"},
		{"annotation title too long", "PATCH", runPath, map[string]any{"output": map[string]any{"title": "t", "summary": "s",
			"annotations": []any{ann(func(a map[string]any) { a["title"] = long(256) })}}}, 422, "title is too long"},
		{"annotation message over 64 KiB", "PATCH", runPath, map[string]any{"output": map[string]any{"title": "t", "summary": "s",
			"annotations": []any{ann(func(a map[string]any) { a["message"] = long(MaxAnnotationMessage/2 + 1) })}}}, 422, "64 KiB"},
		{"columns across lines", "PATCH", runPath, map[string]any{"output": map[string]any{"title": "t", "summary": "s",
			"annotations": []any{ann(func(a map[string]any) { a["end_line"] = 3; a["start_column"] = 1 })}}}, 422, "start_column"},
		{"update of a missing run", "PATCH", "repos/acme/api/check-runs/1", map[string]any{"status": "in_progress"}, 404, "Not Found"},
		{"annotations of a missing run", "GET", "repos/acme/api/check-runs/1/annotations", nil, 404, "Not Found"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := c.do(tc.method, tc.path, tc.body)
			if a.status != tc.status || !strings.Contains(string(a.body), tc.says) {
				t.Errorf("%d %s, want %d saying %q", a.status, a.body, tc.status, tc.says)
			}
		})
	}
	if runs := c.srv.CheckRuns("acme/api"); len(runs) != 1 || len(runs[0].Annotations) != 50 || runs[0].Updates != 2 {
		t.Errorf("the refused calls changed the run: %+v", runs)
	}
}

func TestCommentsState(t *testing.T) {
	c := newClient(t, Options{})
	user := c.srv.AddComment("acme/api", 7, "octocat", "hello")
	for i := range 120 {
		c.do("POST", "repos/acme/api/issues/7/comments", map[string]any{"body": fmt.Sprint("c", i)})
	}
	c.do("POST", "repos/acme/api/issues/8/comments", map[string]any{"body": "elsewhere"})

	var page []struct {
		ID   int64
		Body string
		User struct{ Login, Type string }
	}
	a := c.do("GET", "repos/acme/api/issues/7/comments?per_page=500", nil)
	a.json(t, &page)
	if len(page) != 100 || page[0].User.Type != "User" || page[1].User.Type != "Bot" || page[1].User.Login != AppSlug+"[bot]" {
		t.Fatalf("first page: %d comments, %+v %+v", len(page), page[0], page[1])
	}
	if link := a.header.Get("Link"); !strings.Contains(link, `page=2&per_page=100>; rel="next"`) {
		t.Errorf("Link %q has no next page", link)
	}
	c.do("GET", "repos/acme/api/issues/7/comments?per_page=100&page=2", nil).json(t, &page)
	if len(page) != 21 || page[20].Body != "c119" {
		t.Errorf("second page: %d comments", len(page))
	}

	if a := c.do("PATCH", fmt.Sprint("repos/acme/api/issues/comments/", user), map[string]any{"body": "x"}); a.status != 403 {
		t.Errorf("edit of a user's comment: %d, want 403", a.status)
	}
	own := c.srv.Comments("acme/api", 7)[1].ID
	c.do("PATCH", fmt.Sprint("repos/acme/api/issues/comments/", own), map[string]any{"body": "edited"})
	c.do("PATCH", fmt.Sprint("repos/acme/api/issues/comments/", own), map[string]any{"body": "edited"})
	got := c.srv.Comments("acme/api", 7)
	if len(got) != 121 || got[1].Body != "edited" || got[1].Edits != 2 || got[0].Bot || !got[1].Bot {
		t.Errorf("comments after edits: %d, %+v", len(got), got[1])
	}
	if !strings.HasPrefix(got[1].HTMLURL, "https://github.com/acme/api/pull/7#issuecomment-") {
		t.Errorf("html_url %s", got[1].HTMLURL)
	}
	if !c.srv.DeleteComment(own) || len(c.srv.Comments("acme/api", 7)) != 120 {
		t.Error("DeleteComment")
	}
	if a := c.do("PATCH", fmt.Sprint("repos/acme/api/issues/comments/", own), map[string]any{"body": "x"}); a.status != 404 {
		t.Errorf("edit of a deleted comment: %d", a.status)
	}
	if n := c.srv.Writes(RouteCreateComment); n != 121 {
		t.Errorf("Writes(create comment) = %d, want 121", n)
	}
	if n := c.srv.Writes(RouteEditComment); n != 2 {
		t.Errorf("Writes(edit comment) = %d, want 2 (the refused edits do not count)", n)
	}
	if n, want := c.srv.Requests(RouteAll), 121+2+1+2+1; n != want {
		t.Errorf("Requests(RouteAll) = %d, want %d", n, want)
	}
}

func TestStatusLimitPerContext(t *testing.T) {
	c := newClient(t, Options{})
	for i := range MaxStatusesPerContext {
		if a := c.do("POST", "repos/acme/api/statuses/"+sha, map[string]any{"state": "pending", "context": "scan", "description": fmt.Sprint(i)}); a.status != 201 {
			t.Fatalf("status %d: %d %s", i, a.status, a.body)
		}
	}
	a := c.do("POST", "repos/acme/api/statuses/"+sha, map[string]any{"state": "success", "context": "scan"})
	if a.status != 422 || !strings.Contains(string(a.body), "maximum number of statuses") {
		t.Errorf("status 1001: %d %s", a.status, a.body)
	}
	if a := c.do("POST", "repos/acme/api/statuses/"+sha, map[string]any{"state": "success", "context": "other"}); a.status != 201 {
		t.Errorf("another context: %d", a.status)
	}
	st := c.srv.Statuses("acme/api", sha)
	if len(st) != MaxStatusesPerContext+1 || st[0].Description != "0" || st[len(st)-1].Context != "other" {
		t.Errorf("%d statuses", len(st))
	}
}

func TestCheckRunsState(t *testing.T) {
	c := newClient(t, Options{})
	var first, second struct {
		ID      int64
		HTMLURL string `json:"html_url"`
	}
	c.do("POST", "repos/acme/api/check-runs", map[string]any{"name": "scan", "head_sha": sha, "external_id": "a",
		"output": map[string]any{"title": "scan", "summary": "s", "annotations": annotations(50, 1)}}).json(t, &first)
	for from := 51; from <= 237; from += 50 {
		c.do("PATCH", fmt.Sprint("repos/acme/api/check-runs/", first.ID),
			map[string]any{"output": map[string]any{"title": "scan", "summary": "s", "annotations": annotations(min(50, 238-from), from)}})
	}
	c.do("POST", "repos/acme/api/check-runs", map[string]any{"name": "scan", "head_sha": sha, "external_id": "b", "conclusion": "success"}).json(t, &second)
	c.do("POST", "repos/acme/api/check-runs", map[string]any{"name": "other", "head_sha": sha})

	runs := c.srv.CheckRuns("acme/api")
	if len(runs) != 3 || len(runs[0].Annotations) != 237 || runs[0].Updates != 4 {
		t.Fatalf("runs: %d, first with %d annotations", len(runs), len(runs[0].Annotations))
	}
	for i, a := range runs[0].Annotations {
		if a.StartLine != i+1 {
			t.Fatalf("annotation %d is line %d: order lost", i, a.StartLine)
		}
	}
	if runs[1].Status != "completed" || runs[0].Status != "queued" {
		t.Errorf("statuses %q, %q", runs[0].Status, runs[1].Status)
	}
	if first.HTMLURL != fmt.Sprintf("https://github.com/acme/api/runs/%d", first.ID) {
		t.Errorf("html_url %s", first.HTMLURL)
	}

	var list struct {
		Total     int `json:"total_count"`
		CheckRuns []struct {
			ID         int64
			ExternalID string `json:"external_id"`
			Output     struct {
				Count int `json:"annotations_count"`
			}
		} `json:"check_runs"`
	}
	c.do("GET", "repos/acme/api/commits/"+sha+"/check-runs?check_name=scan", nil).json(t, &list)
	if list.Total != 1 || list.CheckRuns[0].ID != second.ID {
		t.Errorf("filter=latest: %+v, want only the newest run of the name", list)
	}
	c.do("GET", "repos/acme/api/commits/"+sha+"/check-runs?check_name=scan&filter=all", nil).json(t, &list)
	if list.Total != 2 || list.CheckRuns[1].ExternalID != "a" || list.CheckRuns[1].Output.Count != 237 {
		t.Errorf("filter=all: %+v", list)
	}
	c.do("GET", "repos/acme/api/commits/main/check-runs", nil).json(t, &list)
	if list.Total != 0 {
		t.Errorf("runs of another commit: %+v", list)
	}

	var anns []struct {
		StartLine int `json:"start_line"`
	}
	a := c.do("GET", fmt.Sprintf("repos/acme/api/check-runs/%d/annotations?per_page=100&page=3", first.ID), nil)
	a.json(t, &anns)
	if len(anns) != 37 || anns[0].StartLine != 201 {
		t.Errorf("page 3 of the annotations: %d, from line %d", len(anns), anns[0].StartLine)
	}
}

func TestPenalty(t *testing.T) {
	c := newClient(t, Options{})
	c.srv.Penalize(300 * time.Millisecond)
	a := c.do("POST", "repos/acme/api/statuses/"+sha, map[string]any{"state": "success"})
	var e struct {
		Message string
		DocURL  string `json:"documentation_url"`
	}
	a.json(t, &e)
	if a.status != 403 || a.header.Get("Retry-After") != "1" || !strings.Contains(e.Message, "secondary rate limit") ||
		!strings.HasSuffix(e.DocURL, "secondary-rate-limits") || a.header.Get("X-Ratelimit-Remaining") == "0" {
		t.Errorf("during the penalty: %d Retry-After %q %+v", a.status, a.header.Get("Retry-After"), e)
	}
	c.do("GET", "rate_limit", nil)
	if n := c.srv.PenaltyViolations(); n != 2 {
		t.Errorf("PenaltyViolations = %d, want 2", n)
	}
	if len(c.srv.Statuses("acme/api", sha)) != 0 {
		t.Error("a status was written during the penalty")
	}
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(c.srv.PenaltyUntil()) {
		if time.Now().After(deadline) {
			t.Fatal("the penalty does not end")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if a := c.do("POST", "repos/acme/api/statuses/"+sha, map[string]any{"state": "success"}); a.status != 201 {
		t.Errorf("after the penalty: %d", a.status)
	}
}

func TestWriteRule(t *testing.T) {
	c := newClient(t, Options{WritesPerMinute: 3, Penalty: time.Minute})
	for i := range 3 {
		if a := c.do("POST", "repos/acme/api/statuses/"+sha, map[string]any{"state": "success"}); a.status != 201 {
			t.Fatalf("write %d: %d", i, a.status)
		}
		c.do("GET", "rate_limit", nil) // reads do not count
	}
	a := c.do("POST", "repos/acme/api/statuses/"+sha, map[string]any{"state": "success"})
	if a.status != 403 || a.header.Get("Retry-After") != "60" || c.srv.Penalties() != 1 || c.srv.PenaltyViolations() != 0 {
		t.Errorf("the 4th write in a minute: %d Retry-After %q, penalties %d, violations %d",
			a.status, a.header.Get("Retry-After"), c.srv.Penalties(), c.srv.PenaltyViolations())
	}
	c.do("GET", "rate_limit", nil)
	if c.srv.PenaltyViolations() != 1 || c.srv.Writes(RouteAll) != 3 {
		t.Errorf("violations %d, writes %d", c.srv.PenaltyViolations(), c.srv.Writes(RouteAll))
	}
}

func TestDownAndUp(t *testing.T) {
	c := newClient(t, Options{})
	c.do("POST", "repos/acme/api/issues/1/comments", map[string]any{"body": "before"})
	c.srv.Down()
	_, err := c.try("POST", "repos/acme/api/issues/1/comments", map[string]any{"body": "during"})
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("while down: %v, want connection refused", err)
	}
	c.srv.Up()
	c.do("POST", "repos/acme/api/issues/1/comments", map[string]any{"body": "after"})
	if got := c.srv.Comments("acme/api", 1); len(got) != 2 || got[0].Body != "before" || got[1].Body != "after" {
		t.Errorf("comments: %+v", got)
	}
}

func TestFaults(t *testing.T) {
	c := newClient(t, Options{Seed: 7})
	c.srv.FailRandomly(RouteCreateStatus, 0.5, ServerError(502))
	failed := 0
	for range 200 {
		if c.do("POST", "repos/acme/api/statuses/"+sha, map[string]any{"state": "success", "context": "r"}).status == 502 {
			failed++
		}
	}
	if failed < 60 || failed > 140 || c.srv.Writes(RouteCreateStatus) != 200-failed {
		t.Errorf("%d of 200 failed at p=0.5; %d written", failed, c.srv.Writes(RouteCreateStatus))
	}
	c.srv.Clear()

	c.srv.Fail(RouteCreateComment, ConnectionReset())
	if _, err := c.try("POST", "repos/acme/api/issues/1/comments", map[string]any{"body": "x"}); err == nil {
		t.Error("a reset answered")
	}
	c.srv.Fail(RouteCreateComment, PrimaryLimit(429, time.Now().Add(time.Hour)))
	a := c.do("POST", "repos/acme/api/issues/1/comments", map[string]any{"body": "x"})
	if a.status != 429 || a.header.Values("X-Ratelimit-Remaining")[0] != "0" || len(a.header.Values("X-Ratelimit-Remaining")) != 1 {
		t.Errorf("primary limit: %d %v", a.status, a.header)
	}
	c.srv.Fail(RouteCreateComment, Invalid("body is wrong"))
	if a := c.do("POST", "repos/acme/api/issues/1/comments", map[string]any{"body": "x"}); a.status != 422 || !strings.Contains(string(a.body), "body is wrong") {
		t.Errorf("Invalid: %d %s", a.status, a.body)
	}
	c.srv.Clear()

	c.srv.SetLatency(80 * time.Millisecond)
	start := time.Now()
	c.do("GET", "rate_limit", nil)
	if took := time.Since(start); took < 80*time.Millisecond {
		t.Errorf("an answer with 80ms latency took %v", took)
	}
	if len(c.srv.Comments("acme/api", 1)) != 0 {
		t.Error("a failed call wrote a comment")
	}
}

func TestWebRoot(t *testing.T) {
	for _, tc := range []struct {
		o    Options
		want string
	}{
		{Options{}, "https://github.com/"},
		{Options{Prefix: "/api/v3"}, "https://ghe.example.com/"},
		{Options{Prefix: "/gh/api/v3", Hosts: []string{"proxy.example.com"}}, "https://proxy.example.com/gh/"},
	} {
		if got := New(t, tc.o).WebRoot(); got != tc.want {
			t.Errorf("WebRoot of %+v = %s, want %s", tc.o, got, tc.want)
		}
	}
}
