package gitlabtest

import (
	"encoding/base64"
	"fmt"
	"net/http"
	"slices"
	"time"
)

// CI endpoints: a project's pipelines (GET /projects/:id/pipelines,
// newest first, offset pagination) and repository files (GET
// /projects/:id/repository/files/:file_path?ref=..., for the presence of
// .gitlab-ci.yml) and the project itself (GET /projects/:id). Pipelines are readable with read_api and by a CI job
// token of the same project (GitLab's job token allowlist); a job token
// sees no other project (404). Repository files are not readable with a
// job token (401, as every endpoint outside its allowlist).

// CI routes.
const (
	RoutePipelines Route = "GET /projects/:id/pipelines"
	RouteFile      Route = "GET /projects/:id/repository/files/:file_path"
	RouteProject   Route = "GET /projects/:id"
)

// Pipeline is a CI pipeline of a project.
type Pipeline struct {
	ID     int64
	Ref    string
	SHA    string
	Status string // created, pending, running, success, failed, canceled, skipped, manual, scheduled
	Source string // push, web, schedule, merge_request_event, ...
	// CreatedAt orders the listing (newest first).
	CreatedAt time.Time
}

// ciState is the fake's CI data, under Server.mu.
type ciState struct {
	pipelines map[string][]Pipeline        // project path → in creation order
	files     map[string]map[string][]byte // project path → file path → content
}

// AddPipelines adds pipelines to a project; an ID of 0 is assigned.
func (s *Server) AddPipelines(projectPath string, ps ...Pipeline) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.mustProject(projectPath)
	if s.ci.pipelines == nil {
		s.ci.pipelines = map[string][]Pipeline{}
	}
	for _, p := range ps {
		if p.ID == 0 {
			s.nextID++
			p.ID = s.nextID
		}
		if p.Status == "" {
			p.Status = "success"
		}
		if p.Source == "" {
			p.Source = "push"
		}
		if p.CreatedAt.IsZero() {
			p.CreatedAt = s.now().UTC().Truncate(time.Second)
		}
		s.ci.pipelines[projectPath] = append(s.ci.pipelines[projectPath], p)
	}
}

// AddFile puts a file on every ref of a project's repository.
func (s *Server) AddFile(projectPath, path string, content []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.mustProject(projectPath)
	if s.ci.files == nil {
		s.ci.files = map[string]map[string][]byte{}
	}
	if s.ci.files[projectPath] == nil {
		s.ci.files[projectPath] = map[string][]byte{}
	}
	s.ci.files[projectPath][path] = slices.Clone(content)
}

// ciRoute routes the CI paths under /projects/:id.
func ciRoute(m match, method string, rest []string) (match, bool) {
	n := len(rest)
	switch {
	case method != http.MethodGet && method != http.MethodHead:
		return m, false
	case n == 0:
		m.route = RouteProject
	case n == 1 && rest[0] == "pipelines":
		m.route = RoutePipelines
	case n == 3 && rest[0] == "repository" && rest[1] == "files" && rest[2] != "":
		// The file path is one %2F-encoded segment, as GitLab requires.
		m.route, m.file = RouteFile, rest[2]
	default:
		return m, false
	}
	return m, true
}

// ciRoutes serves the CI routes; s.mu is held.
func (s *Server) ciRoutes(w http.ResponseWriter, r *http.Request, m match, p *project) {
	switch m.route {
	case RouteProject:
		writeJSON(w, http.StatusOK, map[string]any{"id": p.ID, "path_with_namespace": p.Path, "default_branch": p.DefaultBranch,
			"visibility": p.Visibility, "web_url": s.URL() + "/" + p.Path})
	case RoutePipelines:
		all := s.ci.pipelines[p.Path]
		q := r.URL.Query()
		list := make([]any, 0, len(all))
		for i := len(all) - 1; i >= 0; i-- {
			pl := all[i]
			if ref := q.Get("ref"); ref != "" && ref != pl.Ref {
				continue
			}
			if st := q.Get("status"); st != "" && st != pl.Status {
				continue
			}
			list = append(list, map[string]any{
				"id": pl.ID, "iid": i + 1, "project_id": p.ID, "sha": pl.SHA, "ref": pl.Ref, "status": pl.Status,
				"source": pl.Source, "created_at": pl.CreatedAt.Format(time.RFC3339), "updated_at": pl.CreatedAt.Format(time.RFC3339),
				"web_url": fmt.Sprintf("%s/%s/-/pipelines/%d", s.URL(), p.Path, pl.ID),
			})
		}
		s.paginate(w, r, list)
	case RouteFile:
		ref := r.URL.Query().Get("ref")
		if ref == "" {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "ref is missing"})
			return
		}
		if !slices.Contains(p.Branches, ref) && !slices.Contains(p.Tags, ref) && ref != p.DefaultBranch {
			writeJSON(w, http.StatusNotFound, map[string]string{"message": "404 Commit Not Found"})
			return
		}
		content, ok := s.ci.files[p.Path][m.file]
		if !ok {
			writeJSON(w, http.StatusNotFound, map[string]string{"message": "404 File Not Found"})
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{
			"file_name": m.file, "file_path": m.file, "size": len(content), "encoding": "base64",
			"content": base64.StdEncoding.EncodeToString(content), "ref": ref,
			"blob_id": SHA(p.Path + ":" + m.file), "commit_id": SHA(p.Path + "@" + ref), "last_commit_id": SHA(p.Path + "@" + ref),
		})
	}
}
