package bitbuckettest

import (
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"
)

var shaRE = regexp.MustCompile(`^[0-9a-f]{40}$`)

func (s *Server) serveRoute(w http.ResponseWriter, r *http.Request, m match, body []byte) {
	c, ok := s.authenticate(w, r, m)
	if !ok {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	cloud := s.opts.Flavor == Cloud

	switch m.route {
	case RouteUser:
		writeJSON(w, http.StatusOK, map[string]any{"type": "user", "uuid": c.uuid, "username": c.name, "display_name": c.name, "account_id": "5f" + c.uuid[1:9]})
		return
	case RouteAppProperties:
		writeJSON(w, http.StatusOK, map[string]any{"version": s.opts.Version, "buildNumber": "8019001", "buildDate": "1700000000000", "displayName": "Bitbucket"})
		return
	case RouteRepos:
		s.listRepos(w, r, m, c)
		return
	case RouteLegacyStatus:
		s.legacyStatus(w, m, c, body)
		return
	case RouteProjects:
		s.listProjects(w, r, c)
		return
	case RouteAllRepos:
		s.listAllRepos(w, r, c)
		return
	}

	rp := s.repo(m.owner, m.slug)
	if rp == nil {
		if cloud {
			s.fail(w, http.StatusNotFound, "Repository "+m.owner+"/"+m.slug+" not found", "")
		} else {
			s.fail(w, http.StatusNotFound, "Repository "+m.owner+"/"+m.slug+" does not exist.", "com.atlassian.bitbucket.repository.NoSuchRepositoryException")
		}
		return
	}
	switch m.route {
	case RouteBranches, RouteTags:
		refs := rp.Branches
		kind := "branch"
		if m.route == RouteTags {
			refs, kind = rp.Tags, "tag"
		}
		names := make([]string, 0, len(refs))
		for n := range refs {
			names = append(names, n)
		}
		slices.Sort(names)
		list := make([]any, 0, len(names))
		for _, n := range names {
			if cloud {
				list = append(list, map[string]any{"type": kind, "name": n, "target": map[string]any{"type": "commit", "hash": refs[n]}})
			} else {
				prefix := "refs/heads/"
				if kind == "tag" {
					prefix = "refs/tags/"
				}
				list = append(list, map[string]any{"id": prefix + n, "displayId": n, "type": strings.ToUpper(kind), "latestCommit": refs[n], "isDefault": n == "main"})
			}
		}
		s.paginate(w, r, list)
		return
	case RouteComments, RouteCreateComment, RouteEditComment:
		pr := rp.prs[m.pr]
		if pr == nil {
			if cloud {
				s.fail(w, http.StatusNotFound, "Pull request not found", "")
			} else {
				s.fail(w, http.StatusNotFound, "Pull request "+strconv.Itoa(m.pr)+" does not exist in "+m.owner+"/"+m.slug+".", "com.atlassian.bitbucket.pull.NoSuchPullRequestException")
			}
			return
		}
		s.commentRoutes(w, r, m, c, pr, body)
		return
	}
	if !shaRE.MatchString(m.sha) || !rp.commits[m.sha] {
		if cloud {
			s.fail(w, http.StatusNotFound, "Commit not found", "")
		} else {
			s.fail(w, http.StatusNotFound, "Commit '"+m.sha+"' does not exist in repository '"+m.slug+"'.", "com.atlassian.bitbucket.commit.NoSuchCommitException")
		}
		return
	}
	switch m.route {
	case RouteCreateStatus:
		if !cloud && s.opts.LegacyBuildStatus {
			s.fail(w, http.StatusNotFound, "null for uri: "+r.URL.Path, "")
			return
		}
		s.createStatus(w, rp, m.sha, c, body, false)
	case RouteStatuses:
		list := []any{}
		for _, st := range rp.statuses[m.sha] {
			list = append(list, map[string]any{"key": st.Key, "state": st.State, "name": st.Name, "description": st.Description, "url": st.URL})
		}
		s.paginate(w, r, list)
	default:
		s.reportRoutes(w, r, m, c, rp, body)
	}
}

func (s *Server) listRepos(w http.ResponseWriter, r *http.Request, m match, c caller) {
	cloud := s.opts.Flavor == Cloud
	var list []any
	found := false
	sorted := slices.Clone(s.repos)
	slices.SortFunc(sorted, func(a, b *repo) int { return strings.Compare(a.Slug, b.Slug) })
	for _, rp := range sorted {
		if !strings.EqualFold(rp.Owner, m.owner) {
			continue
		}
		found = true
		if c.token != nil && c.token.Repo != "" && !strings.EqualFold(c.token.Repo, rp.Slug) {
			continue
		}
		if cloud {
			list = append(list, map[string]any{"type": "repository", "uuid": "{" + uuidOf("repo:"+rp.Owner+"/"+rp.Slug) + "}",
				"slug": rp.Slug, "name": rp.Slug, "full_name": rp.Owner + "/" + rp.Slug, "is_private": rp.Private,
				"mainbranch": map[string]any{"type": "branch", "name": "main"}, "workspace": map[string]any{"slug": rp.Owner}})
		} else {
			list = append(list, map[string]any{"id": rp.id, "slug": rp.Slug, "name": rp.Slug, "public": !rp.Private,
				"project": map[string]any{"key": rp.Owner}, "state": "AVAILABLE"})
		}
	}
	if !found {
		if cloud {
			s.fail(w, http.StatusNotFound, "No workspace with identifier '"+m.owner+"'.", "")
		} else {
			s.fail(w, http.StatusNotFound, "Project "+m.owner+" does not exist.", "com.atlassian.bitbucket.project.NoSuchProjectException")
		}
		return
	}
	s.paginate(w, r, list)
}

func (s *Server) commentJSON(cm *Comment) map[string]any {
	if s.opts.Flavor == Cloud {
		return map[string]any{"type": "pullrequest_comment", "id": cm.ID, "deleted": cm.Deleted,
			"content": map[string]any{"raw": cm.Text, "markup": "markdown", "html": ""},
			"user":    map[string]any{"type": "user", "uuid": s.uuidOfName(cm.Author), "display_name": cm.Author}}
	}
	return map[string]any{"id": cm.ID, "version": cm.Version, "text": cm.Text,
		"author": map[string]any{"name": cm.Author, "slug": strings.ToLower(cm.Author), "displayName": cm.Author}}
}

// uuidOfName is UUID without the lock (held by the caller).
func (s *Server) uuidOfName(name string) string {
	if u, ok := s.users[name]; ok {
		return u.uuid
	}
	for _, t := range s.tokens {
		if t.Name == name {
			return t.uuid
		}
	}
	return "{" + uuidOf("user:"+name) + "}"
}

func (s *Server) commentRoutes(w http.ResponseWriter, r *http.Request, m match, c caller, pr *pullRequest, body []byte) {
	cloud := s.opts.Flavor == Cloud
	switch m.route {
	case RouteComments:
		list := []any{}
		if cloud {
			for _, cm := range pr.comments {
				list = append(list, s.commentJSON(cm))
			}
		} else {
			// Activities, newest first, ending with the opening.
			for i := len(pr.comments) - 1; i >= 0; i-- {
				cm := pr.comments[i]
				list = append(list, map[string]any{"id": cm.ID + 1_000_000, "action": "COMMENTED", "commentAction": "ADDED", "comment": s.commentJSON(cm)})
			}
			list = append(list, map[string]any{"id": 1, "action": "OPENED"})
		}
		s.paginate(w, r, list)
		return
	}
	text, version, ok := s.commentText(w, body)
	if !ok {
		return
	}
	if m.route == RouteCreateComment {
		s.nextID++
		cm := &Comment{ID: s.nextID, Text: text, Author: c.name}
		pr.comments = append(pr.comments, cm)
		writeJSON(w, http.StatusCreated, s.commentJSON(cm))
		return
	}
	var cm *Comment
	for _, x := range pr.comments {
		if x.ID == m.commentID && !x.Deleted {
			cm = x
		}
	}
	switch {
	case cm == nil && cloud:
		s.fail(w, http.StatusNotFound, "Comment not found", "")
		return
	case cm == nil:
		s.fail(w, http.StatusNotFound, "Comment "+strconv.FormatInt(m.commentID, 10)+" does not exist.", "com.atlassian.bitbucket.comment.NoSuchCommentException")
		return
	case cm.Author != c.name:
		s.fail(w, http.StatusForbidden, "You are not permitted to edit this comment", "com.atlassian.bitbucket.AuthorisationException")
		return
	case !cloud && (version == nil || *version != cm.Version):
		s.fail(w, http.StatusConflict, "You are attempting to modify a comment based on out-of-date information.", "com.atlassian.bitbucket.comment.CommentOutOfDateException")
		return
	}
	if cm.Text != text {
		cm.Text = text
		cm.Edits++
		cm.Version++
	}
	writeJSON(w, http.StatusOK, s.commentJSON(cm))
}

// commentText reads a comment write's text (Cloud content.raw, Data
// Center text and version).
func (s *Server) commentText(w http.ResponseWriter, body []byte) (string, *int, bool) {
	var in struct {
		Content *struct {
			Raw string `json:"raw"`
		} `json:"content"`
		Text    string `json:"text"`
		Version *int   `json:"version"`
	}
	if err := decodeBody(body, &in); err != nil {
		s.fail(w, http.StatusBadRequest, "the request body is not valid JSON", "")
		return "", nil, false
	}
	if s.opts.Flavor == Cloud {
		if in.Content == nil || strings.TrimSpace(in.Content.Raw) == "" {
			s.fail(w, http.StatusBadRequest, "content.raw: This field is required.", "")
			return "", nil, false
		}
		return in.Content.Raw, nil, true
	}
	switch {
	case strings.TrimSpace(in.Text) == "":
		s.fail(w, http.StatusBadRequest, "Please enter a non-empty value for the comment text.", "com.atlassian.bitbucket.validation.ArgumentValidationException")
		return "", nil, false
	case utf8.RuneCountInString(in.Text) > MaxDCComment:
		s.fail(w, http.StatusBadRequest, "The comment text must be 32768 characters or fewer.", "com.atlassian.bitbucket.validation.ArgumentValidationException")
		return "", nil, false
	}
	return in.Text, in.Version, true
}

var (
	cloudStates  = []string{"INPROGRESS", "SUCCESSFUL", "FAILED", "STOPPED"}
	dcStates     = []string{"INPROGRESS", "SUCCESSFUL", "FAILED", "CANCELLED", "UNKNOWN"}
	legacyStates = []string{"INPROGRESS", "SUCCESSFUL", "FAILED"}
)

// createStatus stores a build status: one per commit and key, a post with
// the key again overwrites it (on Cloud only its creator may).
func (s *Server) createStatus(w http.ResponseWriter, rp *repo, sha string, c caller, body []byte, legacy bool) {
	cloud := s.opts.Flavor == Cloud
	var in struct {
		Key, State, URL, Name, Description string
	}
	if err := decodeBody(body, &in); err != nil {
		s.fail(w, http.StatusBadRequest, "the request body is not valid JSON", "")
		return
	}
	states := dcStates
	switch {
	case cloud:
		states = cloudStates
	case legacy:
		states = legacyStates
	}
	var problems []string
	if in.Key == "" {
		problems = append(problems, "key: This field is required.")
	}
	if in.URL == "" {
		problems = append(problems, "url: This field is required.")
	}
	if !slices.Contains(states, in.State) {
		problems = append(problems, "state: must be one of "+strings.Join(states, ", "))
	}
	if !cloud {
		for field, v := range map[string]string{"key": in.Key, "name": in.Name, "description": in.Description} {
			if utf8.RuneCountInString(v) > MaxDCStatusField {
				problems = append(problems, field+": must be 255 characters or fewer")
			}
		}
		if utf8.RuneCountInString(in.URL) > MaxDCStatusURL {
			problems = append(problems, "url: must be 450 characters or fewer")
		}
	}
	if len(problems) > 0 {
		slices.Sort(problems)
		s.fail(w, http.StatusBadRequest, strings.Join(problems, " "), "com.atlassian.bitbucket.validation.ArgumentValidationException")
		return
	}
	var st *Status
	for _, x := range rp.statuses[sha] {
		if x.Key == in.Key {
			st = x
		}
	}
	if st == nil {
		st = &Status{Key: in.Key, Author: c.name, Legacy: legacy}
		rp.statuses[sha] = append(rp.statuses[sha], st)
	} else {
		if cloud && st.Author != c.name {
			s.fail(w, http.StatusForbidden, "Only the creator of a build status may update it.", "")
			return
		}
		st.Updates++
	}
	st.State, st.URL, st.Name, st.Description = in.State, in.URL, in.Name, in.Description
	if cloud {
		writeJSON(w, http.StatusCreated, map[string]any{"type": "build", "key": st.Key, "state": st.State, "name": st.Name, "url": st.URL, "description": st.Description})
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// legacyStatus is /rest/build-status/1.0/commits/{sha}: no repository in
// the path; the status belongs to the commit wherever it is.
func (s *Server) legacyStatus(w http.ResponseWriter, m match, c caller, body []byte) {
	if !shaRE.MatchString(m.sha) {
		s.fail(w, http.StatusBadRequest, "commit id is not valid", "")
		return
	}
	for _, rp := range s.repos {
		if rp.commits[m.sha] {
			s.createStatus(w, rp, m.sha, c, body, true)
			return
		}
	}
	w.WriteHeader(http.StatusNoContent) // Bitbucket stores it against the hash alone
}

var (
	cloudReportTypes = []string{"SECURITY", "COVERAGE", "TEST", "BUG"}
	cloudResults     = []string{"PASSED", "FAILED", "PENDING"}
	dcResults        = []string{"PASS", "FAIL"}
	annTypes         = []string{"VULNERABILITY", "CODE_SMELL", "BUG"}
	cloudSeverities  = []string{"CRITICAL", "HIGH", "MEDIUM", "LOW"}
	dcSeverities     = []string{"LOW", "MEDIUM", "HIGH"}
)

func (s *Server) reportRoutes(w http.ResponseWriter, r *http.Request, m match, c caller, rp *repo, body []byte) {
	cloud := s.opts.Flavor == Cloud
	reports := rp.reports[m.sha]
	if reports == nil {
		reports = map[string]*Report{}
		rp.reports[m.sha] = reports
	}
	rep := reports[m.key]
	if m.route != RoutePutReport && rep == nil {
		if cloud {
			s.fail(w, http.StatusNotFound, "Report not found", "")
		} else {
			s.fail(w, http.StatusNotFound, "No report with key "+m.key, "com.atlassian.bitbucket.codeinsights.NoSuchReportException")
		}
		return
	}
	switch m.route {
	case RoutePutReport:
		var in struct {
			Title      string `json:"title"`
			Details    string `json:"details"`
			Result     string `json:"result"`
			ReportType string `json:"report_type"`
			Reporter   string `json:"reporter"`
		}
		if err := decodeBody(body, &in); err != nil {
			s.fail(w, http.StatusBadRequest, "the request body is not valid JSON", "")
			return
		}
		results := dcResults
		if cloud {
			results = cloudResults
		}
		switch {
		case in.Title == "":
			s.fail(w, http.StatusBadRequest, "title: This field is required.", "")
			return
		case cloud && !slices.Contains(cloudReportTypes, in.ReportType):
			s.fail(w, http.StatusBadRequest, "report_type: must be one of "+strings.Join(cloudReportTypes, ", "), "")
			return
		case in.Result != "" && !slices.Contains(results, in.Result):
			s.fail(w, http.StatusBadRequest, "result: must be one of "+strings.Join(results, ", "), "")
			return
		case utf8.RuneCountInString(in.Details) > MaxReportDetails:
			s.fail(w, http.StatusBadRequest, "details: must be 2000 characters or fewer", "")
			return
		}
		if rep == nil {
			rep = &Report{Key: m.key, Author: c.name}
			reports[m.key] = rep
		} else if !cloud && rep.Author != c.name {
			s.fail(w, http.StatusForbidden, "Only the creator of a report may replace it", "com.atlassian.bitbucket.AuthorisationException")
			return
		}
		rep.Title, rep.Details, rep.Result, rep.ReportType, rep.Reporter = in.Title, in.Details, in.Result, in.ReportType, in.Reporter
		rep.Puts++
		writeJSON(w, http.StatusOK, map[string]any{"key": rep.Key, "title": rep.Title, "result": rep.Result})
	case RouteDelReport:
		delete(reports, m.key)
		w.WriteHeader(http.StatusNoContent)
	case RouteGetReport:
		writeJSON(w, http.StatusOK, map[string]any{"key": rep.Key, "title": rep.Title, "result": rep.Result, "details": rep.Details})
	case RouteListAnnotations:
		list := []any{}
		for _, a := range rep.Annotations {
			list = append(list, a)
		}
		if cloud {
			s.paginate(w, r, list)
		} else {
			writeJSON(w, http.StatusOK, map[string]any{"annotations": list, "totalCount": len(list)})
		}
	case RouteDelAnnotations:
		if ext := r.URL.Query().Get("externalId"); ext != "" {
			rep.Annotations = slices.DeleteFunc(rep.Annotations, func(a Annotation) bool { return a.ExternalID == ext })
		} else {
			rep.Annotations = nil
		}
		w.WriteHeader(http.StatusNoContent)
	case RouteAddAnnotations:
		s.addAnnotations(w, rep, body)
	}
}

func (s *Server) addAnnotations(w http.ResponseWriter, rep *Report, body []byte) {
	cloud := s.opts.Flavor == Cloud
	type in struct {
		ExternalID     string `json:"external_id"`
		ExternalID2    string `json:"externalId"`
		AnnotationType string `json:"annotation_type"`
		Type           string `json:"type"`
		Summary        string `json:"summary"`
		Message        string `json:"message"`
		Severity       string `json:"severity"`
		Path           string `json:"path"`
		Line           int    `json:"line"`
		Result         string `json:"result"`
	}
	var items []in
	if cloud {
		if err := decodeBody(body, &items); err != nil {
			s.fail(w, http.StatusBadRequest, "expected a JSON array of annotations", "")
			return
		}
		if len(items) > MaxCloudAnnBatch {
			s.fail(w, http.StatusBadRequest, "A maximum of 100 annotations can be created in one request", "")
			return
		}
	} else {
		var wrap struct {
			Annotations []in `json:"annotations"`
		}
		if err := decodeBody(body, &wrap); err != nil {
			s.fail(w, http.StatusBadRequest, "expected {\"annotations\": [...]}", "")
			return
		}
		items = wrap.Annotations
	}
	next := slices.Clone(rep.Annotations)
	for i, it := range items {
		a := Annotation{Path: it.Path, Line: it.Line, Severity: it.Severity, Result: it.Result}
		bad := ""
		if cloud {
			a.ExternalID, a.Type, a.Message = it.ExternalID, it.AnnotationType, it.Summary
			switch {
			case a.ExternalID == "":
				bad = "external_id: This field is required."
			case !slices.Contains(annTypes, a.Type):
				bad = "annotation_type: must be one of " + strings.Join(annTypes, ", ")
			case a.Message == "":
				bad = "summary: This field is required."
			case utf8.RuneCountInString(a.Message) > MaxCloudAnnotText:
				bad = "summary: must be 450 characters or fewer"
			case a.Severity != "" && !slices.Contains(cloudSeverities, a.Severity):
				bad = "severity: invalid"
			case it.Line < 0:
				bad = "line: must be positive"
			}
		} else {
			a.ExternalID, a.Type, a.Message = it.ExternalID2, it.Type, it.Message
			switch {
			case a.Message == "":
				bad = "message: must not be blank"
			case utf8.RuneCountInString(a.Message) > MaxReportDetails:
				bad = "message: must be 2000 characters or fewer"
			case !slices.Contains(dcSeverities, a.Severity):
				bad = "severity: must be one of LOW, MEDIUM, HIGH"
			case a.Type != "" && !slices.Contains(annTypes, a.Type):
				bad = "type: invalid"
			case it.Line < 0:
				bad = "line: must not be negative"
			}
		}
		if bad != "" {
			s.fail(w, http.StatusBadRequest, "annotation "+strconv.Itoa(i)+": "+bad, "com.atlassian.bitbucket.validation.ArgumentValidationException")
			return
		}
		if j := slices.IndexFunc(next, func(x Annotation) bool { return a.ExternalID != "" && x.ExternalID == a.ExternalID }); j >= 0 {
			next[j] = a
		} else {
			next = append(next, a)
		}
	}
	if len(next) > MaxAnnotations {
		s.fail(w, http.StatusBadRequest, "A report cannot have more than 1000 annotations", "com.atlassian.bitbucket.validation.ArgumentValidationException")
		return
	}
	rep.Annotations = next
	if cloud {
		list := make([]any, 0, len(items))
		for _, it := range items {
			list = append(list, map[string]any{"external_id": it.ExternalID})
		}
		writeJSON(w, http.StatusOK, list)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}
