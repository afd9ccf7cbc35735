package gitlabtest_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"inthub.dev/pkg/connectors/gitlab/gitlabtest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const (
	writer = "glpat-writer"
	reader = "glpat-reader"
	job    = "glcbt-job"
	proj   = "acme/platform/api"
	enc    = "acme%2Fplatform%2Fapi"
)

var (
	base = gitlabtest.SHA("base")
	head = gitlabtest.SHA("head")
)

// server is a fake with one project, a merge request !7 whose diff has a
// modified, a new, a renamed and a deleted file, a writer (api) and a
// reader (read_api) token and a job token of the project.
func server(t *testing.T, o gitlabtest.Options) *gitlabtest.Server {
	t.Helper()
	s := gitlabtest.New(t, o)
	id := s.AddProject(gitlabtest.Project{Path: proj, Branches: []string{"main"}})
	s.AddToken(writer, gitlabtest.Token{User: "scanner-bot", Bot: true, Member: []string{proj}})
	s.AddToken(reader, gitlabtest.Token{User: "rita", Scopes: []string{"read_api"}, Member: []string{proj}})
	s.AddJobToken(job, gitlabtest.JobToken{JobID: 1, ProjectID: id})
	s.AddMergeRequest(proj, gitlabtest.MergeRequest{
		IID:      7,
		DiffRefs: gitlabtest.DiffRefs{BaseSHA: base, StartSHA: base, HeadSHA: head},
		Diffs: []gitlabtest.Diff{
			// old 10..14 → new 10..15: 11 removed, 11-12 added.
			{OldPath: "main.go", NewPath: "main.go", Diff: "@@ -10,5 +10,6 @@ func main() {\n a\n-b\n+B\n+C\n c\n d\n e\n"},
			gitlabtest.NewFileDiff("new.go", 3),
			{OldPath: "old/name.go", NewPath: "new/name.go", RenamedFile: true, Diff: "@@ -1,2 +1,2 @@\n x\n-y\n+Y\n"},
			{OldPath: "gone.go", NewPath: "gone.go", DeletedFile: true, Diff: "@@ -1,2 +0,0 @@\n-p\n-q\n"},
		},
	})
	return s
}

type answer struct {
	status int
	header http.Header
	body   map[string]any
	list   []map[string]any
	raw    string
}

func call(t *testing.T, s *gitlabtest.Server, method, path, tok string, body any) answer {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(t.Context(), method, s.URL()+"/api/v4/"+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if strings.HasPrefix(tok, "glcbt") {
		req.Header.Set("JOB-TOKEN", tok)
	} else if tok != "" {
		req.Header.Set("PRIVATE-TOKEN", tok)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := s.Client().Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	a := answer{status: resp.StatusCode, header: resp.Header, raw: string(raw)}
	if json.Unmarshal(raw, &a.body) != nil {
		_ = json.Unmarshal(raw, &a.list)
	}
	return a
}

func pos(typ, oldPath, newPath string, oldLine, newLine int) map[string]any {
	p := map[string]any{"base_sha": base, "start_sha": base, "head_sha": head, "position_type": typ, "old_path": oldPath, "new_path": newPath}
	if oldLine > 0 {
		p["old_line"] = oldLine
	}
	if newLine > 0 {
		p["new_line"] = newLine
	}
	return p
}

func TestDiscussionPositions(t *testing.T) {
	tests := []struct {
		name string
		pos  map[string]any
		want int
	}{
		{"added line by new_line", pos("text", "main.go", "main.go", 0, 11), 201},
		{"added line with an old_line too", pos("text", "main.go", "main.go", 11, 11), 400},
		{"unchanged line by both", pos("text", "main.go", "main.go", 12, 13), 201},
		{"unchanged line by new_line only", pos("text", "main.go", "main.go", 0, 13), 400},
		{"unchanged line by wrong old_line", pos("text", "main.go", "main.go", 13, 13), 400},
		{"removed line by old_line", pos("text", "main.go", "main.go", 11, 0), 201},
		{"line outside the diff", pos("text", "main.go", "main.go", 0, 40), 400},
		{"new file, both paths the file", pos("text", "new.go", "new.go", 0, 2), 201},
		{"new file with old_line", pos("text", "new.go", "new.go", 2, 2), 400},
		{"renamed file by both paths", pos("text", "old/name.go", "new/name.go", 1, 1), 201},
		{"renamed file by the new path only", pos("text", "new/name.go", "new/name.go", 0, 2), 400},
		{"deleted file line", pos("text", "gone.go", "gone.go", 2, 0), 201},
		{"file not in the diff", pos("text", "other.go", "other.go", 0, 1), 400},
		{"file position", pos("file", "main.go", "main.go", 0, 0), 201},
		{"file position, file not in the diff", pos("file", "other.go", "other.go", 0, 0), 400},
		{"stale head", func() map[string]any { p := pos("text", "main.go", "main.go", 0, 11); p["head_sha"] = base; return p }(), 400},
		{"no shas", map[string]any{"position_type": "text", "new_path": "main.go", "new_line": 11}, 400},
	}
	s := server(t, gitlabtest.Options{})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := call(t, s, "POST", "projects/"+enc+"/merge_requests/7/discussions", writer, map[string]any{"body": "x", "position": tt.pos})
			if a.status != tt.want {
				t.Fatalf("status %d, want %d: %s", a.status, tt.want, a.raw)
			}
			if tt.want == 400 && tt.pos["base_sha"] != nil && tt.pos["position_type"] == "text" && !strings.Contains(a.raw, "must be a valid line code") {
				t.Fatalf("not GitLab's line_code error: %s", a.raw)
			}
		})
	}
	n := 0
	for _, tt := range tests {
		if tt.want == 201 {
			n++
		}
	}
	if got := len(s.Discussions(proj, 7)); got != n {
		t.Fatalf("%d discussions, want %d", got, n)
	}
	if s.Writes(gitlabtest.RouteCreateDiscussion) != n || s.Requests(gitlabtest.RouteCreateDiscussion) != len(tests) {
		t.Fatalf("writes %d requests %d", s.Writes(gitlabtest.RouteCreateDiscussion), s.Requests(gitlabtest.RouteCreateDiscussion))
	}
	d := s.Discussions(proj, 7)[0]
	if d.IndividualNote || d.Notes[0].Type != "DiffNote" || d.Notes[0].Position.NewLine != 11 || d.Notes[0].Author != "scanner-bot" {
		t.Fatalf("discussion %+v", d)
	}
}

func TestFilePositionsRefusedBefore16_4(t *testing.T) {
	s := server(t, gitlabtest.Options{NoFilePositions: true})
	a := call(t, s, "POST", "projects/"+enc+"/merge_requests/7/discussions", writer, map[string]any{"body": "x", "position": pos("file", "main.go", "main.go", 0, 0)})
	if a.status != 400 || a.body["error"] != "position[position_type] does not have a valid value" {
		t.Fatalf("%d %s", a.status, a.raw)
	}
}

func TestStatusTransitions(t *testing.T) {
	s := server(t, gitlabtest.Options{})
	post := func(state string) answer {
		return call(t, s, "POST", "projects/"+enc+"/statuses/"+head, writer, map[string]any{"state": state, "name": "scan"})
	}
	steps := []struct {
		state   string
		want    int
		message string
	}{
		{"pending", 201, ""},
		{"pending", 400, "Cannot transition status via :enqueue from :pending"},
		{"running", 201, ""},
		{"running", 400, "Cannot transition status via :run from :running"},
		{"pending", 400, "Cannot transition status via :enqueue from :running"},
		{"success", 201, ""},
		{"success", 201, ""}, // a finished status is not updated: a new one starts
		{"failed", 201, ""},
	}
	for i, st := range steps {
		a := post(st.state)
		if a.status != st.want || st.message != "" && !strings.Contains(a.raw, st.message) {
			t.Fatalf("step %d (%s): %d %s", i, st.state, a.status, a.raw)
		}
	}
	got := s.Statuses(proj, head)
	if len(got) != 3 || got[0].State != "success" || got[1].State != "success" || got[2].State != "failed" {
		t.Fatalf("statuses %+v", got)
	}
	if h := strings.Join(got[0].History, ","); h != "created,pending,running,success" {
		t.Fatalf("history %s", h)
	}
	if got[0].Ref != "feature" {
		t.Fatalf("ref %q: the merge request's source branch", got[0].Ref)
	}
	if s.Writes(gitlabtest.RouteCreateStatus) != 5 {
		t.Fatalf("writes %d", s.Writes(gitlabtest.RouteCreateStatus))
	}
}

func TestStatusLimits(t *testing.T) {
	s := server(t, gitlabtest.Options{})
	for _, tc := range []struct {
		body map[string]any
		sha  string
		want int
		in   string
	}{
		{map[string]any{"state": "success", "description": strings.Repeat("d", 256)}, head, 400, "is too long (maximum is 255 characters)"},
		{map[string]any{"state": "success", "target_url": "https://x.example/" + strings.Repeat("u", 250)}, head, 400, "target_url"},
		{map[string]any{"state": "success", "target_url": "javascript:alert(1)"}, head, 400, "target_url"},
		{map[string]any{"state": "passed"}, head, 400, "state does not have a valid value"},
		{map[string]any{}, head, 400, "state is missing"},
		{map[string]any{"state": "success"}, gitlabtest.SHA("unknown"), 404, "404 Commit Not Found"},
		{map[string]any{"state": "success", "description": strings.Repeat("é", 255), "context": "ctx"}, head, 201, "ctx"},
	} {
		a := call(t, s, "POST", "projects/"+enc+"/statuses/"+tc.sha, writer, tc.body)
		if a.status != tc.want || !strings.Contains(a.raw, tc.in) {
			t.Fatalf("%v: %d %s", tc.body, a.status, a.raw)
		}
	}
}

func TestNotes(t *testing.T) {
	s := server(t, gitlabtest.Options{MaxNoteBody: 100})
	s.AddNote(proj, 7, "gitlab", "added 1 commit", true)
	for i := range 130 {
		if a := call(t, s, "POST", "projects/"+enc+"/merge_requests/7/notes", writer, map[string]any{"body": "n" + strconv.Itoa(i)}); a.status != 201 {
			t.Fatalf("%d %s", a.status, a.raw)
		}
	}
	if a := call(t, s, "POST", "projects/"+enc+"/merge_requests/7/notes", writer, map[string]any{"body": strings.Repeat("ä", 101)}); a.status != 400 || !strings.Contains(a.raw, "is too long (maximum is 100 characters)") {
		t.Fatalf("long body: %d %s", a.status, a.raw)
	}
	a := call(t, s, "GET", "projects/"+enc+"/merge_requests/7/notes?per_page=500&sort=asc", writer, nil)
	if len(a.list) != 100 || a.header.Get("X-Next-Page") != "2" || a.header.Get("X-Total") != "131" || !strings.Contains(a.header.Get("Link"), `rel="next"`) {
		t.Fatalf("page 1: %d notes, headers %v", len(a.list), a.header)
	}
	if a.list[0]["system"] != true || a.list[1]["body"] != "n0" {
		t.Fatalf("order: %v %v", a.list[0], a.list[1])
	}
	a = call(t, s, "GET", "projects/"+enc+"/merge_requests/7/notes?per_page=100&page=2", writer, nil)
	if len(a.list) != 31 || a.header.Get("X-Next-Page") != "" || a.list[0]["body"] != "n29" { // newest first by default
		t.Fatalf("page 2: %d notes, first %v", len(a.list), a.list[0]["body"])
	}

	// Only the author edits a note.
	id := int64(a.list[0]["id"].(float64))
	path := "projects/" + enc + "/merge_requests/7/notes/" + strconv.FormatInt(id, 10)
	if a := call(t, s, "PUT", path, writer, map[string]any{"body": "edited"}); a.status != 200 || a.body["body"] != "edited" {
		t.Fatalf("edit: %d %s", a.status, a.raw)
	}
	s.AddToken("glpat-other", gitlabtest.Token{User: "mallory", Member: []string{proj}})
	if a := call(t, s, "PUT", path, "glpat-other", map[string]any{"body": "mine"}); a.status != 403 {
		t.Fatalf("edit by another user: %d", a.status)
	}
	if !s.DeleteNote(proj, 7, id) {
		t.Fatal("DeleteNote")
	}
	if a := call(t, s, "PUT", path, writer, map[string]any{"body": "again"}); a.status != 404 {
		t.Fatalf("edit of a deleted note: %d", a.status)
	}
	if got := len(s.Notes(proj, 7)); got != 130 {
		t.Fatalf("%d notes", got)
	}
}

func TestAuth(t *testing.T) {
	s := server(t, gitlabtest.Options{})
	notes := "projects/" + enc + "/merge_requests/7/notes"
	for _, tc := range []struct {
		name, method, path, tok string
		want                    int
		in                      string
	}{
		{"job token on notes", "POST", notes, job, 403, "403 Forbidden"},
		{"job token on discussions", "POST", "projects/" + enc + "/merge_requests/7/discussions", job, 403, ""},
		{"job token on statuses", "POST", "projects/" + enc + "/statuses/" + head, job, 403, ""},
		{"job token on its branches", "GET", "projects/1/repository/branches", job, 200, ""},
		{"job token on the version", "GET", "version", job, 401, ""},
		{"read_api token writes", "POST", notes, reader, 403, "insufficient_scope"},
		{"read_api token reads", "GET", notes, reader, 200, ""},
		{"no token", "GET", notes, "", 401, ""},
		{"unencoded project path", "GET", "projects/" + proj + "/merge_requests/7/notes", writer, 404, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var body any
			if tc.method == "POST" {
				body = map[string]any{"body": "x", "state": "success"}
			}
			a := call(t, s, tc.method, tc.path, tc.tok, body)
			if a.status != tc.want || !strings.Contains(a.raw, tc.in) {
				t.Fatalf("%d %s", a.status, a.raw)
			}
		})
	}
	if s.Writes() != 0 {
		t.Fatalf("%d writes", s.Writes())
	}
}

func TestFaults(t *testing.T) {
	s := server(t, gitlabtest.Options{})
	notes := "projects/" + enc + "/merge_requests/7/notes"

	s.Fail(gitlabtest.RouteCreateNote, gitlabtest.Fault{Status: 502, Applied: true, Times: 1})
	if a := call(t, s, "POST", notes, writer, map[string]any{"body": "lost answer"}); a.status != 502 {
		t.Fatalf("%d", a.status)
	}
	if n := s.Notes(proj, 7); len(n) != 1 || s.Writes(gitlabtest.RouteCreateNote) != 1 {
		t.Fatalf("an applied fault must write: %d notes, %d writes", len(n), s.Writes(gitlabtest.RouteCreateNote))
	}
	if a := call(t, s, "POST", notes, writer, map[string]any{"body": "after"}); a.status != 201 {
		t.Fatalf("Times: 1 must clear the fault: %d", a.status)
	}

	s.Fail(gitlabtest.RouteAll, gitlabtest.TooManyRequests(30*time.Second))
	if a := call(t, s, "GET", notes, writer, nil); a.status != 429 || a.header.Get("Retry-After") != "30" || a.header.Get("RateLimit-Limit") == "" {
		t.Fatalf("%d %v", a.status, a.header)
	}
	s.Clear()

	s.SetRemaining(1)
	if a := call(t, s, "GET", notes, writer, nil); a.status != 200 || a.header.Get("RateLimit-Remaining") != "0" {
		t.Fatalf("last request of the budget: %d %v", a.status, a.header)
	}
	a := call(t, s, "GET", notes, writer, nil)
	if ra, _ := strconv.Atoi(a.header.Get("Retry-After")); a.status != 429 || ra < 1 || ra > 60 {
		t.Fatalf("spent budget: %d Retry-After %q", a.status, a.header.Get("Retry-After"))
	}
	s.Clear()

	s.SetFlaky(gitlabtest.Flaky{Rate: 0.5, Seed: 7})
	failed := 0
	for range 40 {
		if a := call(t, s, "GET", notes, writer, nil); a.status >= 500 {
			failed++
		}
	}
	if failed < 10 || failed > 30 {
		t.Fatalf("%d of 40 failed at rate 0.5", failed)
	}
	s.Clear()

	s.SetLatency(150 * time.Millisecond)
	start := time.Now()
	call(t, s, "GET", notes, writer, nil)
	if el := time.Since(start); el < 150*time.Millisecond {
		t.Fatalf("answered after %v", el)
	}
}

func TestNotesCreateLimit(t *testing.T) {
	s := server(t, gitlabtest.Options{NotesPerMinute: 3})
	notes := "projects/" + enc + "/merge_requests/7/notes"
	for i := range 3 {
		if a := call(t, s, "POST", notes, writer, map[string]any{"body": "n"}); a.status != 201 {
			t.Fatalf("note %d: %d", i, a.status)
		}
	}
	a := call(t, s, "POST", "projects/"+enc+"/merge_requests/7/discussions", writer, map[string]any{"body": "d"})
	if a.status != 429 || !strings.Contains(a.raw, "requested too many times") {
		t.Fatalf("fourth note: %d %s", a.status, a.raw)
	}
	if a := call(t, s, "POST", "projects/"+enc+"/statuses/"+head, writer, map[string]any{"state": "success"}); a.status != 201 {
		t.Fatalf("a status is not a note: %d", a.status)
	}
}

func TestDownUpKeepsState(t *testing.T) {
	s := server(t, gitlabtest.Options{})
	notes := "projects/" + enc + "/merge_requests/7/notes"
	call(t, s, "POST", notes, writer, map[string]any{"body": "before"})
	s.Down()
	req, _ := http.NewRequestWithContext(t.Context(), "GET", s.URL()+"/api/v4/version", nil)
	_, err := s.Client().Do(req)
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("down: %v, want connection refused", err)
	}
	s.Up()
	if a := call(t, s, "GET", notes, writer, nil); a.status != 200 || len(a.list) != 1 || a.list[0]["body"] != "before" {
		t.Fatalf("after Up: %d %s", a.status, a.raw)
	}
}

func TestMergeRequestAndDiffs(t *testing.T) {
	s := server(t, gitlabtest.Options{NoDiffsEndpoint: true})
	a := call(t, s, "GET", "projects/"+enc+"/merge_requests/7", writer, nil)
	refs, _ := a.body["diff_refs"].(map[string]any)
	if a.status != 200 || refs["head_sha"] != head || a.body["sha"] != head || !strings.HasSuffix(a.body["web_url"].(string), "/acme/platform/api/-/merge_requests/7") {
		t.Fatalf("%d %s", a.status, a.raw)
	}
	if a := call(t, s, "GET", "projects/"+enc+"/merge_requests/7/diffs", writer, nil); a.status != 404 {
		t.Fatalf("diffs on an old GitLab: %d", a.status)
	}
	a = call(t, s, "GET", "projects/"+enc+"/merge_requests/7/changes", writer, nil)
	if ch, _ := a.body["changes"].([]any); len(ch) != 4 {
		t.Fatalf("changes: %s", a.raw)
	}
	s.AddMergeRequest(proj, gitlabtest.MergeRequest{IID: 8})
	if a := call(t, s, "GET", "projects/"+enc+"/merge_requests/8", writer, nil); a.body["diff_refs"] != nil {
		t.Fatalf("a merge request still preparing has no diff_refs: %s", a.raw)
	}
}
