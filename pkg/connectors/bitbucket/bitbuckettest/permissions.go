package bitbuckettest

import (
	"net/http"
	"slices"
	"strings"
)

// What a credential may do, as each flavour tells it:
//
//   - Cloud answers every authenticated request with X-OAuth-Scopes (the
//     credential's scopes), X-Accepted-OAuth-Scopes (the scope the
//     endpoint takes) and X-Credential-Type, refusals included;
//   - Data Center has no such header: a user's or token's permissions
//     show in what the permission-filtered listings return,
//     GET /rest/api/1.0/projects?permission=PROJECT_READ and
//     GET /rest/api/1.0/repos?projectkey=KEY&permission=REPO_WRITE.
//     User.Permissions and Token.Permissions hold them (nil: PROJECT_WRITE)
//     within the projects the credential reaches. The other routes do not
//     check them: Data Center takes REPO_READ for every read and write
//     the fake serves (comments, build statuses, Code Insights).

// Data Center permissions.
const (
	ProjectRead  = "PROJECT_READ"
	ProjectWrite = "PROJECT_WRITE"
	ProjectAdmin = "PROJECT_ADMIN"
	RepoRead     = "REPO_READ"
	RepoWrite    = "REPO_WRITE"
	RepoAdmin    = "REPO_ADMIN"
)

// Data Center's permission-filtered listings.
const (
	RouteProjects Route = "GET projects"  // /rest/api/1.0/projects
	RouteAllRepos Route = "GET all repos" // /rest/api/1.0/repos
)

var allPerms = []string{ProjectRead, ProjectWrite, ProjectAdmin, RepoRead, RepoWrite, RepoAdmin}

// impliedPerms are the Data Center permissions each one grants besides
// itself.
var impliedPerms = map[string][]string{
	ProjectRead:  {RepoRead},
	ProjectWrite: {ProjectRead, RepoRead, RepoWrite},
	ProjectAdmin: {ProjectWrite, ProjectRead, RepoAdmin, RepoWrite, RepoRead},
	RepoWrite:    {RepoRead},
	RepoAdmin:    {RepoWrite, RepoRead},
}

// cloudScopeHeaders sets the headers Cloud reports a credential's scopes in.
func cloudScopeHeaders(h http.Header, c caller, route Route) {
	h.Set("X-OAuth-Scopes", strings.Join(c.scopes, ", "))
	h.Set("X-Accepted-OAuth-Scopes", cloudScope(route))
	switch {
	case c.token != nil && c.token.Repo != "":
		h.Set("X-Credential-Type", "repo_access_token")
	case c.token != nil:
		h.Set("X-Credential-Type", "workspace_access_token")
	default:
		h.Set("X-Credential-Type", "app_password")
	}
}

// permits reports whether c holds perm on project (Data Center).
func (c caller) permits(project, perm string) bool {
	reach, perms := []string(nil), []string(nil)
	switch {
	case c.token != nil:
		reach, perms = c.token.Projects, c.token.Permissions
	case c.user != nil:
		reach, perms = c.user.Projects, c.user.Permissions
	default:
		return false
	}
	if reach != nil && !slices.ContainsFunc(reach, func(p string) bool { return strings.EqualFold(p, project) }) {
		return false
	}
	if perms == nil {
		perms = []string{ProjectWrite}
	}
	for _, p := range perms {
		if p == perm || slices.Contains(impliedPerms[p], perm) {
			return true
		}
	}
	return false
}

// permissionParam reads ?permission=, which must be one of prefix's
// permissions when given (Data Center answers 400 to another).
func (s *Server) permissionParam(w http.ResponseWriter, r *http.Request, prefix string) (string, bool) {
	p := r.URL.Query().Get("permission")
	if p == "" {
		return "", true
	}
	if !slices.Contains(allPerms, p) || !strings.HasPrefix(p, prefix) {
		s.fail(w, http.StatusBadRequest, "Invalid permission "+p, "java.lang.IllegalArgumentException")
		return "", false
	}
	return p, true
}

// listProjects serves GET /rest/api/1.0/projects: the projects the caller
// reaches, with ?permission= those it holds that permission on. Called
// with s.mu held.
func (s *Server) listProjects(w http.ResponseWriter, r *http.Request, c caller) {
	perm, ok := s.permissionParam(w, r, "PROJECT_")
	if !ok {
		return
	}
	var keys []string
	for _, rp := range s.repos {
		if !slices.Contains(keys, rp.Owner) && c.permits(rp.Owner, RepoRead) && (perm == "" || c.permits(rp.Owner, perm)) {
			keys = append(keys, rp.Owner)
		}
	}
	slices.Sort(keys)
	list := make([]any, 0, len(keys))
	for i, k := range keys {
		list = append(list, map[string]any{"key": k, "id": i + 1, "name": k, "public": false, "type": "NORMAL"})
	}
	s.paginate(w, r, list)
}

// listAllRepos serves GET /rest/api/1.0/repos: the repositories the caller
// reaches, narrowed by ?projectkey= and ?permission=. Called with s.mu
// held.
func (s *Server) listAllRepos(w http.ResponseWriter, r *http.Request, c caller) {
	perm, ok := s.permissionParam(w, r, "REPO_")
	if !ok {
		return
	}
	key := r.URL.Query().Get("projectkey")
	sorted := slices.Clone(s.repos)
	slices.SortFunc(sorted, func(a, b *repo) int { return strings.Compare(a.Owner+"/"+a.Slug, b.Owner+"/"+b.Slug) })
	list := []any{}
	for _, rp := range sorted {
		if key != "" && !strings.EqualFold(rp.Owner, key) || !c.permits(rp.Owner, RepoRead) || perm != "" && !c.permits(rp.Owner, perm) {
			continue
		}
		list = append(list, map[string]any{"id": rp.id, "slug": rp.Slug, "name": rp.Slug, "public": !rp.Private,
			"project": map[string]any{"key": rp.Owner}, "state": "AVAILABLE"})
	}
	s.paginate(w, r, list)
}
