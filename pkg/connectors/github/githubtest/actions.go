package githubtest

import (
	"fmt"
	"net/http"
	"strings"
	"time"
)

// The GitHub Actions endpoints (read only): a repository's workflows and
// its recent workflow runs, paginated as every list (per_page at most
// 100, Link header). They need the installation permission actions:read:
// with SetActionsPermission(false) they answer 403 "Resource not
// accessible by integration", as GitHub does.

// Actions routes.
const (
	RouteWorkflows    Route = "GET repos/{owner}/{repo}/actions/workflows"
	RouteWorkflowRuns Route = "GET repos/{owner}/{repo}/actions/runs"
)

// Workflow is a workflow of a fake repository.
type Workflow struct {
	ID    int64
	Name  string
	Path  string // ".github/workflows/ci.yml"
	State string // "active", "disabled_manually", ...
}

// WorkflowRun is a run of a workflow.
type WorkflowRun struct {
	ID         int64
	WorkflowID int64
	Name       string
	Branch     string
	Event      string
	Status     string // "completed", "in_progress", "queued"
	Conclusion string // "success", "failure", ... ("" until completed)
	HeadSHA    string
	CreatedAt  time.Time
}

// actionsState is the fake's Actions data, under Server.mu. Repositories
// without an entry get DefaultWorkflows.
type actionsState struct {
	denied    bool
	workflows map[string][]Workflow    // repo (lower case) →
	runs      map[string][]WorkflowRun // repo (lower case) → newest first
}

// DefaultWorkflows are what a repository has unless SetWorkflows says
// otherwise: ci.yml and release.yml, each with two runs.
func DefaultWorkflows(repoID int64) []Workflow {
	return []Workflow{
		{ID: repoID*1000 + 1, Name: "CI", Path: ".github/workflows/ci.yml", State: "active"},
		{ID: repoID*1000 + 2, Name: "Release", Path: ".github/workflows/release.yml", State: "active"},
	}
}

// SetActionsPermission grants (true, the default) or withdraws the
// installation's actions:read permission.
func (s *Server) SetActionsPermission(granted bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.act.denied = !granted
}

// SetWorkflows replaces a repository's workflows; each gets runsEach runs
// (newest first in listings, alternating success and failure).
func (s *Server) SetWorkflows(repo string, wfs []Workflow, runsEach int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.setWorkflows(strings.ToLower(repo), wfs, runsEach)
}

func (s *Server) setWorkflows(key string, wfs []Workflow, runsEach int) {
	if s.act.workflows == nil {
		s.act.workflows = map[string][]Workflow{}
		s.act.runs = map[string][]WorkflowRun{}
	}
	s.act.workflows[key] = wfs
	var runs []WorkflowRun
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	n := 0
	for j := range runsEach {
		for _, wf := range wfs {
			n++
			conclusion := "success"
			if n%2 == 0 {
				conclusion = "failure"
			}
			runs = append(runs, WorkflowRun{
				ID: wf.ID*1000 + int64(j+1), WorkflowID: wf.ID, Name: wf.Name, Branch: "main", Event: "push",
				Status: "completed", Conclusion: conclusion, HeadSHA: SHA(key, fmt.Sprint(n)),
				CreatedAt: base.Add(time.Duration(n) * time.Minute),
			})
		}
	}
	// Newest first, as GitHub lists runs.
	for i, j := 0, len(runs)-1; i < j; i, j = i+1, j-1 {
		runs[i], runs[j] = runs[j], runs[i]
	}
	s.act.runs[key] = runs
}

// actionsOf returns a repository's workflows and runs, creating the
// defaults on first use. Called with s.mu held.
func (s *Server) actionsOf(rp Repo) ([]Workflow, []WorkflowRun) {
	key := strings.ToLower(rp.FullName)
	if _, ok := s.act.workflows[key]; !ok {
		s.setWorkflows(key, DefaultWorkflows(rp.ID), 2)
	}
	return s.act.workflows[key], s.act.runs[key]
}

func (s *Server) actionsRoutes(mux *http.ServeMux) {
	p := s.opts.Prefix
	mux.HandleFunc("GET "+p+"/repos/{owner}/{repo}/actions/workflows", s.route(RouteWorkflows, s.installation(s.workflows)))
	mux.HandleFunc("GET "+p+"/repos/{owner}/{repo}/actions/runs", s.route(RouteWorkflowRuns, s.installation(s.workflowRuns)))
}

// actionsRepo finds the repository and checks actions:read.
func (s *Server) actionsRepo(w http.ResponseWriter, r *http.Request) (Repo, bool) {
	s.mu.Lock()
	denied := s.act.denied
	s.mu.Unlock()
	if denied {
		writeError(w, http.StatusForbidden, "Resource not accessible by integration",
			"https://docs.github.com/rest/actions/workflows#list-repository-workflows")
		return Repo{}, false
	}
	return s.repo(w, r)
}

func (s *Server) workflows(w http.ResponseWriter, r *http.Request) {
	rp, ok := s.actionsRepo(w, r)
	if !ok {
		return
	}
	s.mu.Lock()
	wfs, _ := s.actionsOf(rp)
	s.mu.Unlock()
	from, to := paginate(w, r, len(wfs))
	out := make([]map[string]any, 0, to-from)
	for _, wf := range wfs[from:to] {
		out = append(out, map[string]any{
			"id": wf.ID, "node_id": fmt.Sprintf("W_%d", wf.ID), "name": wf.Name, "path": wf.Path, "state": wf.State,
			"created_at": "2025-06-01T00:00:00Z", "updated_at": "2025-06-01T00:00:00Z",
			"html_url": s.WebRoot() + rp.FullName + "/blob/" + rp.DefaultBranch + "/" + wf.Path,
		})
	}
	writeJSON(w, http.StatusOK, map[string]any{"total_count": len(wfs), "workflows": out})
}

func (s *Server) workflowRuns(w http.ResponseWriter, r *http.Request) {
	rp, ok := s.actionsRepo(w, r)
	if !ok {
		return
	}
	s.mu.Lock()
	_, all := s.actionsOf(rp)
	s.mu.Unlock()
	q := r.URL.Query()
	runs := make([]WorkflowRun, 0, len(all))
	for _, run := range all {
		if b := q.Get("branch"); b != "" && b != run.Branch {
			continue
		}
		if st := q.Get("status"); st != "" && st != run.Status && st != run.Conclusion {
			continue
		}
		runs = append(runs, run)
	}
	from, to := paginate(w, r, len(runs))
	out := make([]map[string]any, 0, to-from)
	for _, run := range runs[from:to] {
		var conclusion any
		if run.Conclusion != "" {
			conclusion = run.Conclusion
		}
		out = append(out, map[string]any{
			"id": run.ID, "name": run.Name, "workflow_id": run.WorkflowID, "head_branch": run.Branch,
			"head_sha": run.HeadSHA, "event": run.Event, "status": run.Status, "conclusion": conclusion,
			"run_number": run.ID % 1000, "created_at": run.CreatedAt.Format(time.RFC3339),
			"updated_at": run.CreatedAt.Add(time.Minute).Format(time.RFC3339),
			"html_url":   fmt.Sprintf("%s%s/actions/runs/%d", s.WebRoot(), rp.FullName, run.ID),
		})
	}
	writeJSON(w, http.StatusOK, map[string]any{"total_count": len(runs), "workflow_runs": out})
}
