package annotation_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"inthub.dev/events"
	"inthub.dev/pkg/connectors"
	"inthub.dev/pkg/connectors/gitlab"
	"inthub.dev/pkg/connectors/gitlab/gitlabtest"
	"inthub.dev/schemas"
	"inthub.dev/services/annotation"
)

const (
	glProject  = "acme/platform/api"
	glIID      = 7
	glTokenEnv = "INTHUB_TEST_GITLAB_TOKEN"
	glJobEnv   = "INTHUB_TEST_GITLAB_JOB_TOKEN"
)

var glHead = gitlabtest.SHA("head")

// withGitLab registers scm.gitlab against a fake GitLab with one project
// and merge request !7 (main.go: lines 11 and 12 added, 13-15 unchanged)
// and stores two integrations: one with an access token, one with a CI
// job token.
func (e *env) withGitLab() (srv *gitlabtest.Server, tokenID, jobID string) {
	e.t.Helper()
	srv = gitlabtest.New(e.t, gitlabtest.Options{})
	pid := srv.AddProject(gitlabtest.Project{Path: glProject, Branches: []string{"main"}})
	srv.AddToken("glpat-worker-test-0000000000", gitlabtest.Token{User: "inthub-bot", Bot: true, Member: []string{glProject}})
	srv.AddJobToken("glcbt-worker-test-0000000000", gitlabtest.JobToken{JobID: 9, ProjectID: pid})
	base := gitlabtest.SHA("base")
	srv.AddMergeRequest(glProject, gitlabtest.MergeRequest{IID: glIID,
		DiffRefs: gitlabtest.DiffRefs{BaseSHA: base, StartSHA: base, HeadSHA: glHead},
		Diffs: []gitlabtest.Diff{
			{OldPath: "main.go", NewPath: "main.go", Diff: "@@ -10,5 +10,6 @@ func main() {\n a\n-b\n+B\n+C\n c\n d\n e\n"},
		}})
	e.t.Setenv(glTokenEnv, "glpat-worker-test-0000000000")
	e.t.Setenv(glJobEnv, "glcbt-worker-test-0000000000")
	schema, err := schemas.ConfigSchema(gitlab.Type)
	if err != nil {
		e.t.Fatal(err)
	}
	e.reg.Register(gitlab.Info(schema), func(cfg connectors.Config) (connectors.Connector, error) {
		cfg.HTTPClient = srv.Client()
		return gitlab.New(cfg)
	})
	put := func(field, env string) string {
		id := newID()
		in := integration(id, tenantA, gitlab.Type, "active")
		in.Config, _ = json.Marshal(map[string]any{"endpoint": srv.URL(), field: "authref://env/" + env})
		e.put(in)
		return id
	}
	return srv, put("token", glTokenEnv), put("jobToken", glJobEnv)
}

func glRequest(id string, r events.AnnotationRequested) events.AnnotationRequested {
	r.IntegrationID = id
	r.Repository = events.Repository{Owner: "acme/platform", Name: "api"}
	return r
}

func TestGitLabStickyNoteStatusAndCheckRun(t *testing.T) {
	e := newEnv(t)
	srv, id, _ := e.withGitLab()
	e.start(annotation.Config{})
	for i := range 3 {
		e.request(tenantA, glRequest(id, comment(id, glIID, "stellaops-scan", strings.Repeat("scan ", i+1))))
		eventually(t, 20*time.Second, "note posted", func() bool { c, _ := e.results(); return len(c) == i+1 })
	}
	st := status(id, "stellaops/scan")
	st.CommitSHA = glHead
	st.Status.State = "failure"
	e.request(tenantA, glRequest(id, st))
	cr := events.AnnotationRequested{Operation: events.OpCheckRun, CommitSHA: glHead, PullRequest: glIID,
		CheckRun: &events.CheckRun{Name: "stellaops/check", Status: "completed", Conclusion: "failure", ExternalID: "run-1",
			Summary: "2 findings", Annotations: []events.Annotation{
				{Path: "main.go", StartLine: 11, EndLine: 11, Level: "failure", Message: "added line"},
				{Path: "main.go", StartLine: 14, EndLine: 14, Level: "warning", Message: "unchanged line"},
			}}}
	e.request(tenantA, glRequest(id, cr))
	eventually(t, 20*time.Second, "all posted", func() bool { c, _ := e.results(); return len(c) == 5 })

	var notes []gitlabtest.Note
	for _, n := range srv.Notes(glProject, glIID) {
		if n.Type == "" && strings.Contains(n.Body, connectors.CommentMarker("stellaops-scan")) {
			notes = append(notes, n)
		}
	}
	if len(notes) != 1 || notes[0].Edits != 2 || !strings.Contains(notes[0].Body, "scan scan scan") {
		t.Errorf("sticky notes %+v, want one edited twice", notes)
	}
	states := map[string]string{}
	for _, s := range srv.Statuses(glProject, glHead) {
		states[s.Name] = s.State
	}
	if states["stellaops/scan"] != "failed" || states["stellaops/check"] != "failed" {
		t.Errorf("statuses %v", states)
	}
	positioned := 0
	for _, d := range srv.Discussions(glProject, glIID) {
		for _, n := range d.Notes {
			if n.Position != nil {
				positioned++
			}
		}
	}
	if positioned != 2 {
		t.Errorf("%d discussions on diff lines, want 2", positioned)
	}
}

// A CI job token cannot post notes or statuses: permanent, with a message
// that says what to use instead; GitLab is not called.
func TestGitLabJobTokenIsRefused(t *testing.T) {
	e := newEnv(t)
	srv, _, job := e.withGitLab()
	e.start(annotation.Config{})
	e.request(tenantA, glRequest(job, comment(job, glIID, "k", "x")))
	eventually(t, 20*time.Second, "dead-lettered", func() bool { return len(e.dlq()) == 1 })
	l := e.dlq()[0]
	if l.ErrorClass != "permanent" || !strings.Contains(l.LastError, "access token") {
		t.Errorf("dead letter %s %q", l.ErrorClass, l.LastError)
	}
	if n := srv.Writes(); n != 0 {
		t.Errorf("%d writes with a job token", n)
	}
}
