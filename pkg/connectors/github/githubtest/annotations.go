package githubtest

import (
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"
)

// The write side of annotations: issue comments on pull requests, commit
// statuses and check runs, kept in memory. Every handler refuses what
// GitHub refuses, with GitHub's status and a message in its words, so a
// client that would fail on GitHub fails here too:
//
//   - comments: an empty body, or one over 65,536 characters → 422; a pull
//     request the repository does not have → 404; editing a comment the
//     app did not write → 403;
//   - statuses: a state other than pending, success, failure or error, a
//     description over 140 characters, the 1,001st status of a sha and
//     context, a sha that is not 40 hex digits → 422;
//   - check runs: a missing name or head_sha, status completed without a
//     conclusion, an output without title or summary, summary or text over
//     65,535 characters, more than 50 annotations in one call, an
//     annotation without path, lines, level or message, a level other than
//     notice, warning or failure, a title over 255 characters, a message
//     or raw_details over 64 KiB, columns on an annotation that spans lines
//     → 422. An update appends its annotations to the run's, as GitHub
//     does; nothing removes one.
//
// Lists are paginated (per_page at most 100, Link header). Listing check
// runs for a ref returns, without filter=all, only the latest run of each
// name, as GitHub's default filter=latest does.

// Limits GitHub enforces on annotations.
const (
	MaxCommentBody        = 65536 // characters
	MaxStatusDescription  = 140   // characters
	MaxStatusesPerContext = 1000  // per sha and context
	MaxCheckRunText       = 65535 // output.summary, output.text: characters
	MaxAnnotationsPerCall = 50
	MaxAnnotationTitle    = 255   // characters
	MaxAnnotationMessage  = 65536 // message, raw_details: bytes (64 KiB)
)

// AppSlug is the fake app's slug; its comments are written by
// AppSlug+"[bot]", a user of type Bot.
const AppSlug = "inthub-test"

// Comment is an issue comment on a pull request.
type Comment struct {
	ID      int64
	PR      int
	Body    string
	Author  string // login: AppSlug+"[bot]" for the app's comments
	Bot     bool   // written by the app
	Edits   int    // successful PATCHes of this comment
	HTMLURL string
}

// Status is a commit status.
type Status struct {
	ID          int64
	SHA         string
	State       string
	Context     string
	Description string
	TargetURL   string
}

// CheckRun is a check run with its annotations in the order GitHub
// received them.
type CheckRun struct {
	ID          int64
	HeadSHA     string
	Name        string
	ExternalID  string
	DetailsURL  string
	Status      string
	Conclusion  string
	Title       string // output.title
	Summary     string // output.summary
	Text        string // output.text
	Annotations []Annotation
	Updates     int // successful PATCHes of this run
	HTMLURL     string
}

// Annotation is a check-run annotation.
type Annotation struct {
	Path        string
	StartLine   int
	EndLine     int
	StartColumn int
	EndColumn   int
	Level       string
	Message     string
	Title       string
	RawDetails  string
}

// annotationState is the fake's annotations, under Server.mu.
type annotationState struct {
	lastID   int64
	comments map[string][]*Comment  // repo (lower case) → in creation order
	statuses map[string][]*Status   // repo (lower case) → in creation order
	runs     map[string][]*CheckRun // repo (lower case) → in creation order
}

func newAnnotationState() annotationState {
	return annotationState{
		lastID:   1000,
		comments: map[string][]*Comment{},
		statuses: map[string][]*Status{},
		runs:     map[string][]*CheckRun{},
	}
}

func (a *annotationState) id() int64 {
	a.lastID++
	return a.lastID
}

func (s *Server) annotationRoutes(mux *http.ServeMux) {
	p := s.opts.Prefix
	for _, r := range []struct {
		route   Route
		pattern string
		h       http.HandlerFunc
	}{
		{RouteListComments, "GET /repos/{owner}/{repo}/issues/{number}/comments", s.listComments},
		{RouteCreateComment, "POST /repos/{owner}/{repo}/issues/{number}/comments", s.createComment},
		{RouteEditComment, "PATCH /repos/{owner}/{repo}/issues/comments/{id}", s.editComment},
		{RouteCreateStatus, "POST /repos/{owner}/{repo}/statuses/{sha}", s.createStatus},
		{RouteListStatuses, "GET /repos/{owner}/{repo}/commits/{ref}/statuses", s.listStatuses},
		{RouteCreateCheckRun, "POST /repos/{owner}/{repo}/check-runs", s.createCheckRun},
		{RouteUpdateCheckRun, "PATCH /repos/{owner}/{repo}/check-runs/{id}", s.updateCheckRun},
		{RouteListCheckRuns, "GET /repos/{owner}/{repo}/commits/{ref}/check-runs", s.listCheckRuns},
		{RouteListAnnotations, "GET /repos/{owner}/{repo}/check-runs/{id}/annotations", s.listAnnotations},
	} {
		method, path, _ := strings.Cut(r.pattern, " ")
		mux.HandleFunc(method+" "+p+path, s.route(r.route, s.installation(r.h)))
	}
}

// WebRoot is the web UI's root that html_url values start with:
// https://github.com/ for the fake at api.github.com, the server's root
// for a GHES.
func (s *Server) WebRoot() string {
	host := s.opts.Hosts[0]
	if s.opts.Prefix == "" {
		host = strings.TrimPrefix(host, "api.")
	}
	return "https://" + host + strings.TrimSuffix(s.opts.Prefix, "/api/v3") + "/"
}

// Comments are the comments on pull request pr of repo ("owner/name"), in
// the order they were written.
func (s *Server) Comments(repo string, pr int) []Comment {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Comment
	for _, c := range s.ann.comments[strings.ToLower(repo)] {
		if c.PR == pr {
			out = append(out, *c)
		}
	}
	return out
}

// AddComment writes a comment as the user author (not the app), as
// people do on a pull request, and returns its id.
func (s *Server) AddComment(repo string, pr int, author, body string) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := &Comment{ID: s.ann.id(), PR: pr, Body: body, Author: author}
	c.HTMLURL = fmt.Sprintf("%s%s/pull/%d#issuecomment-%d", s.WebRoot(), repo, pr, c.ID)
	key := strings.ToLower(repo)
	s.ann.comments[key] = append(s.ann.comments[key], c)
	return c.ID
}

// DeleteComment deletes comment id, as a user may, and reports whether
// it was there.
func (s *Server) DeleteComment(id int64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for repo, list := range s.ann.comments {
		for i, c := range list {
			if c.ID == id {
				s.ann.comments[repo] = slices.Delete(list, i, i+1)
				return true
			}
		}
	}
	return false
}

// Statuses are the statuses of sha in repo, in the order they were
// posted.
func (s *Server) Statuses(repo, sha string) []Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Status
	for _, st := range s.ann.statuses[strings.ToLower(repo)] {
		if st.SHA == sha {
			out = append(out, *st)
		}
	}
	return out
}

// CheckRuns are the check runs of repo, in the order they were created,
// each with its annotations in order.
func (s *Server) CheckRuns(repo string) []CheckRun {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []CheckRun
	for _, r := range s.ann.runs[strings.ToLower(repo)] {
		c := *r
		c.Annotations = slices.Clone(r.Annotations)
		out = append(out, c)
	}
	return out
}

// fieldError is one of GitHub's validation errors.
type fieldError struct {
	Resource string `json:"resource,omitempty"`
	Field    string `json:"field,omitempty"`
	Code     string `json:"code"`
	Message  string `json:"message,omitempty"`
}

func invalid(w http.ResponseWriter, errs ...fieldError) {
	writeJSON(w, http.StatusUnprocessableEntity, map[string]any{
		"message": "Validation Failed", "errors": errs,
		"documentation_url": "https://docs.github.com/rest",
	})
}

func custom(resource, field, format string, args ...any) fieldError {
	return fieldError{Resource: resource, Field: field, Code: "custom", Message: fmt.Sprintf(format, args...)}
}

func missing(resource, field string) fieldError {
	return fieldError{Resource: resource, Field: field, Code: "missing_field"}
}

// decode reads a JSON request body; false when it answered 400.
func decode(w http.ResponseWriter, r *http.Request, v any) bool {
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 16<<20)).Decode(v); err != nil {
		writeError(w, http.StatusBadRequest, "Problems parsing JSON", "https://docs.github.com/rest")
		return false
	}
	return true
}

var hexSHA = regexp.MustCompile(`^[0-9a-f]{40}$`)

// pullRequest finds the repository and pull request of the path, or
// answers 404.
func (s *Server) pullRequest(w http.ResponseWriter, r *http.Request) (Repo, int, bool) {
	rp, ok := s.repo(w, r)
	if !ok {
		return Repo{}, 0, false
	}
	n, err := strconv.Atoi(r.PathValue("number"))
	if err != nil || !slices.Contains(rp.PullRequests, n) {
		writeError(w, http.StatusNotFound, "Not Found", "https://docs.github.com/rest/issues/comments#create-an-issue-comment")
		return Repo{}, 0, false
	}
	return rp, n, true
}

func (s *Server) commentJSON(rp Repo, c *Comment) map[string]any {
	typ := "User"
	if c.Bot {
		typ = "Bot"
	}
	return map[string]any{
		"id": c.ID, "body": c.Body, "html_url": c.HTMLURL,
		"url":       fmt.Sprintf("%srepos/%s/issues/comments/%d", s.APIRoot(), rp.FullName, c.ID),
		"issue_url": fmt.Sprintf("%srepos/%s/issues/%d", s.APIRoot(), rp.FullName, c.PR),
		"user":      map[string]any{"login": c.Author, "type": typ},
	}
}

func (s *Server) listComments(w http.ResponseWriter, r *http.Request) {
	rp, pr, ok := s.pullRequest(w, r)
	if !ok {
		return
	}
	s.mu.Lock()
	var all []map[string]any
	for _, c := range s.ann.comments[strings.ToLower(rp.FullName)] {
		if c.PR == pr {
			all = append(all, s.commentJSON(rp, c))
		}
	}
	s.mu.Unlock()
	from, to := paginate(w, r, len(all))
	writeJSON(w, http.StatusOK, append([]map[string]any{}, all[from:to]...))
}

// commentBody checks a comment body as GitHub does; false when it
// answered 422.
func commentBody(w http.ResponseWriter, body *string) bool {
	switch {
	case body == nil || strings.TrimSpace(*body) == "":
		invalid(w, missing("IssueComment", "body"))
		return false
	case utf8.RuneCountInString(*body) > MaxCommentBody:
		invalid(w, custom("IssueComment", "body", "Body is too long (maximum is %d characters)", MaxCommentBody))
		return false
	}
	return true
}

func (s *Server) createComment(w http.ResponseWriter, r *http.Request) {
	rp, pr, ok := s.pullRequest(w, r)
	if !ok {
		return
	}
	var in struct {
		Body *string `json:"body"`
	}
	if !decode(w, r, &in) || !commentBody(w, in.Body) {
		return
	}
	s.mu.Lock()
	c := &Comment{ID: s.ann.id(), PR: pr, Body: *in.Body, Author: AppSlug + "[bot]", Bot: true}
	c.HTMLURL = fmt.Sprintf("%s%s/pull/%d#issuecomment-%d", s.WebRoot(), rp.FullName, pr, c.ID)
	key := strings.ToLower(rp.FullName)
	s.ann.comments[key] = append(s.ann.comments[key], c)
	out := s.commentJSON(rp, c)
	s.mu.Unlock()
	writeJSON(w, http.StatusCreated, out)
}

func (s *Server) editComment(w http.ResponseWriter, r *http.Request) {
	rp, ok := s.repo(w, r)
	if !ok {
		return
	}
	id, _ := strconv.ParseInt(r.PathValue("id"), 10, 64)
	var in struct {
		Body *string `json:"body"`
	}
	if !decode(w, r, &in) {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var c *Comment
	for _, cm := range s.ann.comments[strings.ToLower(rp.FullName)] {
		if cm.ID == id {
			c = cm
		}
	}
	switch {
	case c == nil:
		writeError(w, http.StatusNotFound, "Not Found", "https://docs.github.com/rest/issues/comments#update-an-issue-comment")
		return
	case !c.Bot:
		writeError(w, http.StatusForbidden, "Resource not accessible by integration", "https://docs.github.com/rest/issues/comments#update-an-issue-comment")
		return
	}
	if !commentBody(w, in.Body) {
		return
	}
	c.Body = *in.Body
	c.Edits++
	writeJSON(w, http.StatusOK, s.commentJSON(rp, c))
}

func (s *Server) createStatus(w http.ResponseWriter, r *http.Request) {
	rp, ok := s.repo(w, r)
	if !ok {
		return
	}
	sha := r.PathValue("sha")
	var in struct {
		State       *string `json:"state"`
		TargetURL   *string `json:"target_url"`
		Description *string `json:"description"`
		Context     *string `json:"context"`
	}
	if !decode(w, r, &in) {
		return
	}
	st := &Status{SHA: sha, Context: "default"}
	if in.Context != nil && *in.Context != "" {
		st.Context = *in.Context
	}
	if in.State != nil {
		st.State = *in.State
	}
	if in.Description != nil {
		st.Description = *in.Description
	}
	if in.TargetURL != nil {
		st.TargetURL = *in.TargetURL
	}
	if !hexSHA.MatchString(sha) {
		invalid(w, custom("Status", "sha", "No commit found for SHA: %s", sha))
		return
	}
	switch st.State {
	case "pending", "success", "failure", "error":
	case "":
		invalid(w, missing("Status", "state"))
		return
	default:
		invalid(w, custom("Status", "state", "state is not included in the list"))
		return
	}
	if utf8.RuneCountInString(st.Description) > MaxStatusDescription {
		invalid(w, custom("Status", "description", "description is too long (maximum is %d characters)", MaxStatusDescription))
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	key := strings.ToLower(rp.FullName)
	n := 0
	for _, o := range s.ann.statuses[key] {
		if o.SHA == sha && o.Context == st.Context {
			n++
		}
	}
	if n >= MaxStatusesPerContext {
		invalid(w, custom("Status", "", "This SHA and context has reached the maximum number of statuses."))
		return
	}
	st.ID = s.ann.id()
	s.ann.statuses[key] = append(s.ann.statuses[key], st)
	writeJSON(w, http.StatusCreated, map[string]any{
		"id": st.ID, "state": st.State, "description": st.Description, "target_url": st.TargetURL, "context": st.Context,
		"url":     fmt.Sprintf("%srepos/%s/statuses/%s", s.APIRoot(), rp.FullName, sha),
		"creator": map[string]any{"login": AppSlug + "[bot]", "type": "Bot"},
	})
}

// listStatuses lists the statuses of a commit (a SHA or a branch), newest
// first, paged like GitHub (per_page at most 100).
func (s *Server) listStatuses(w http.ResponseWriter, r *http.Request) {
	rp, ok := s.repo(w, r)
	if !ok {
		return
	}
	ref := r.PathValue("ref")
	sha := ref
	if slices.Contains(rp.Branches, ref) {
		sha = SHA(rp.FullName, ref)
	} else if !hexSHA.MatchString(ref) {
		invalid(w, custom("Status", "ref", "No commit found for SHA: %s", ref))
		return
	}
	s.mu.Lock()
	var match []*Status
	list := s.ann.statuses[strings.ToLower(rp.FullName)]
	for i := len(list) - 1; i >= 0; i-- {
		if list[i].SHA == sha {
			match = append(match, list[i])
		}
	}
	from, to := paginate(w, r, len(match))
	out := make([]map[string]any, 0, to-from)
	for _, st := range match[from:to] {
		out = append(out, map[string]any{
			"id": st.ID, "state": st.State, "description": st.Description, "target_url": st.TargetURL, "context": st.Context,
			"creator": map[string]any{"login": AppSlug + "[bot]", "type": "Bot"},
		})
	}
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, out)
}

// checkRunInput is the body of a check-run create or update.
type checkRunInput struct {
	Name       *string `json:"name"`
	HeadSHA    *string `json:"head_sha"`
	ExternalID *string `json:"external_id"`
	DetailsURL *string `json:"details_url"`
	Status     *string `json:"status"`
	Conclusion *string `json:"conclusion"`
	Output     *struct {
		Title       *string           `json:"title"`
		Summary     *string           `json:"summary"`
		Text        *string           `json:"text"`
		Annotations []annotationInput `json:"annotations"`
	} `json:"output"`
}

type annotationInput struct {
	Path            *string `json:"path"`
	StartLine       *int    `json:"start_line"`
	EndLine         *int    `json:"end_line"`
	StartColumn     *int    `json:"start_column"`
	EndColumn       *int    `json:"end_column"`
	AnnotationLevel *string `json:"annotation_level"`
	Message         *string `json:"message"`
	Title           *string `json:"title"`
	RawDetails      *string `json:"raw_details"`
}

var (
	runStatuses    = []string{"queued", "in_progress", "completed"}
	runConclusions = []string{"action_required", "cancelled", "failure", "neutral", "success", "skipped", "stale", "timed_out"}
	levels         = []string{"notice", "warning", "failure"}
)

func str(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}

func num(p *int) int {
	if p == nil {
		return 0
	}
	return *p
}

// validate checks a create (run nil) or an update of run as GitHub does.
func (in *checkRunInput) validate(run *CheckRun) []fieldError {
	const res = "CheckRun"
	var errs []fieldError
	if run == nil {
		if str(in.Name) == "" {
			errs = append(errs, missing(res, "name"))
		}
		if in.HeadSHA == nil || *in.HeadSHA == "" {
			errs = append(errs, missing(res, "head_sha"))
		} else if !hexSHA.MatchString(*in.HeadSHA) {
			errs = append(errs, custom(res, "head_sha", "No commit found for SHA: %s", *in.HeadSHA))
		}
	} else if in.Name != nil && *in.Name == "" {
		errs = append(errs, custom(res, "name", "name can't be blank"))
	}
	if in.Status != nil && !slices.Contains(runStatuses, *in.Status) {
		errs = append(errs, custom(res, "status", "status is not included in the list"))
	}
	if in.Conclusion != nil && !slices.Contains(runConclusions, *in.Conclusion) {
		errs = append(errs, custom(res, "conclusion", "conclusion is not included in the list"))
	}
	if str(in.Status) == "completed" && in.Conclusion == nil && (run == nil || run.Conclusion == "") {
		errs = append(errs, custom(res, "conclusion", "conclusion must be given when status is completed"))
	}
	o := in.Output
	if o == nil {
		return errs
	}
	if str(o.Title) == "" {
		errs = append(errs, missing(res, "output.title"))
	}
	if o.Summary == nil || *o.Summary == "" {
		errs = append(errs, missing(res, "output.summary"))
	}
	for _, f := range []struct {
		field string
		v     *string
	}{{"output.summary", o.Summary}, {"output.text", o.Text}} {
		if utf8.RuneCountInString(str(f.v)) > MaxCheckRunText {
			errs = append(errs, custom(res, f.field, "%s is too long (maximum is %d characters)", f.field, MaxCheckRunText))
		}
	}
	if len(o.Annotations) > MaxAnnotationsPerCall {
		errs = append(errs, custom(res, "output.annotations", "Only %d annotations can be sent in one request (got %d)", MaxAnnotationsPerCall, len(o.Annotations)))
	}
	for i, a := range o.Annotations {
		field := fmt.Sprintf("output.annotations[%d]", i)
		for _, req := range []struct {
			name string
			ok   bool
		}{
			{"path", str(a.Path) != ""}, {"start_line", a.StartLine != nil}, {"end_line", a.EndLine != nil},
			{"annotation_level", a.AnnotationLevel != nil}, {"message", str(a.Message) != ""},
		} {
			if !req.ok {
				errs = append(errs, missing(res, field+"."+req.name))
			}
		}
		if a.AnnotationLevel != nil && !slices.Contains(levels, *a.AnnotationLevel) {
			errs = append(errs, custom(res, field+".annotation_level", "annotation_level is not included in the list"))
		}
		if a.StartLine != nil && (*a.StartLine < 1 || num(a.EndLine) < *a.StartLine) {
			errs = append(errs, custom(res, field+".start_line", "start_line must be at least 1 and at most end_line"))
		}
		if (a.StartColumn != nil || a.EndColumn != nil) && num(a.StartLine) != num(a.EndLine) {
			errs = append(errs, custom(res, field+".start_column", "start_column and end_column are only allowed when start_line and end_line are equal"))
		}
		if utf8.RuneCountInString(str(a.Title)) > MaxAnnotationTitle {
			errs = append(errs, custom(res, field+".title", "title is too long (maximum is %d characters)", MaxAnnotationTitle))
		}
		if len(str(a.Message)) > MaxAnnotationMessage || len(str(a.RawDetails)) > MaxAnnotationMessage {
			errs = append(errs, custom(res, field+".message", "message and raw_details are limited to 64 KiB"))
		}
	}
	return errs
}

// apply writes a validated create or update into run.
func (in *checkRunInput) apply(run *CheckRun) {
	set := func(dst *string, v *string) {
		if v != nil {
			*dst = *v
		}
	}
	set(&run.Name, in.Name)
	set(&run.ExternalID, in.ExternalID)
	set(&run.DetailsURL, in.DetailsURL)
	set(&run.Status, in.Status)
	set(&run.Conclusion, in.Conclusion)
	if in.Conclusion != nil {
		// A conclusion completes the run, whatever status said.
		run.Status = "completed"
	}
	if run.Status == "" {
		run.Status = "queued"
	}
	if o := in.Output; o != nil {
		run.Title, run.Summary, run.Text = str(o.Title), str(o.Summary), str(o.Text)
		for _, a := range o.Annotations {
			run.Annotations = append(run.Annotations, Annotation{
				Path: str(a.Path), StartLine: num(a.StartLine), EndLine: num(a.EndLine),
				StartColumn: num(a.StartColumn), EndColumn: num(a.EndColumn),
				Level: str(a.AnnotationLevel), Message: str(a.Message), Title: str(a.Title), RawDetails: str(a.RawDetails),
			})
		}
	}
}

func (s *Server) checkRunJSON(rp Repo, run *CheckRun) map[string]any {
	api := fmt.Sprintf("%srepos/%s/check-runs/%d", s.APIRoot(), rp.FullName, run.ID)
	var conclusion any
	if run.Conclusion != "" {
		conclusion = run.Conclusion
	}
	return map[string]any{
		"id": run.ID, "head_sha": run.HeadSHA, "external_id": run.ExternalID, "name": run.Name,
		"status": run.Status, "conclusion": conclusion, "details_url": run.DetailsURL,
		"url": api, "html_url": run.HTMLURL,
		"app": map[string]any{"id": s.opts.AppID, "slug": AppSlug},
		"output": map[string]any{
			"title": run.Title, "summary": run.Summary, "text": run.Text,
			"annotations_count": len(run.Annotations), "annotations_url": api + "/annotations",
		},
	}
}

func (s *Server) createCheckRun(w http.ResponseWriter, r *http.Request) {
	rp, ok := s.repo(w, r)
	if !ok {
		return
	}
	var in checkRunInput
	if !decode(w, r, &in) {
		return
	}
	if errs := in.validate(nil); len(errs) > 0 {
		invalid(w, errs...)
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	run := &CheckRun{ID: s.ann.id(), HeadSHA: *in.HeadSHA}
	run.HTMLURL = fmt.Sprintf("%s%s/runs/%d", s.WebRoot(), rp.FullName, run.ID)
	in.apply(run)
	key := strings.ToLower(rp.FullName)
	s.ann.runs[key] = append(s.ann.runs[key], run)
	writeJSON(w, http.StatusCreated, s.checkRunJSON(rp, run))
}

// checkRun finds the run of the path's id, or answers 404. Called with
// s.mu held.
func (s *Server) checkRun(w http.ResponseWriter, r *http.Request, rp Repo) *CheckRun {
	id, _ := strconv.ParseInt(r.PathValue("id"), 10, 64)
	for _, run := range s.ann.runs[strings.ToLower(rp.FullName)] {
		if run.ID == id {
			return run
		}
	}
	writeError(w, http.StatusNotFound, "Not Found", "https://docs.github.com/rest/checks/runs")
	return nil
}

func (s *Server) updateCheckRun(w http.ResponseWriter, r *http.Request) {
	rp, ok := s.repo(w, r)
	if !ok {
		return
	}
	var in checkRunInput
	if !decode(w, r, &in) {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	run := s.checkRun(w, r, rp)
	if run == nil {
		return
	}
	if errs := in.validate(run); len(errs) > 0 {
		invalid(w, errs...)
		return
	}
	in.apply(run)
	run.Updates++
	writeJSON(w, http.StatusOK, s.checkRunJSON(rp, run))
}

func (s *Server) listCheckRuns(w http.ResponseWriter, r *http.Request) {
	rp, ok := s.repo(w, r)
	if !ok {
		return
	}
	ref := r.PathValue("ref")
	sha := ref
	if slices.Contains(rp.Branches, ref) {
		sha = SHA(rp.FullName, ref)
	} else if !hexSHA.MatchString(ref) {
		invalid(w, custom("CheckRun", "ref", "No commit found for SHA: %s", ref))
		return
	}
	q := r.URL.Query()
	name, status, filter := q.Get("check_name"), q.Get("status"), q.Get("filter")
	appID := q.Get("app_id")
	s.mu.Lock()
	var match []*CheckRun
	runs := s.ann.runs[strings.ToLower(rp.FullName)]
	// Newest first, as GitHub lists them.
	for i := len(runs) - 1; i >= 0; i-- {
		run := runs[i]
		switch {
		case run.HeadSHA != sha,
			name != "" && run.Name != name,
			status != "" && run.Status != status,
			appID != "" && appID != strconv.FormatInt(s.opts.AppID, 10):
			continue
		}
		if filter != "all" && slices.ContainsFunc(match, func(m *CheckRun) bool { return m.Name == run.Name }) {
			// filter=latest (the default): an older run of a name is hidden.
			continue
		}
		match = append(match, run)
	}
	from, to := paginate(w, r, len(match))
	out := make([]map[string]any, 0, to-from)
	for _, run := range match[from:to] {
		out = append(out, s.checkRunJSON(rp, run))
	}
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, map[string]any{"total_count": len(match), "check_runs": out})
}

func (s *Server) listAnnotations(w http.ResponseWriter, r *http.Request) {
	rp, ok := s.repo(w, r)
	if !ok {
		return
	}
	s.mu.Lock()
	run := s.checkRun(w, r, rp)
	if run == nil {
		s.mu.Unlock()
		return
	}
	anns := slices.Clone(run.Annotations)
	s.mu.Unlock()
	from, to := paginate(w, r, len(anns))
	out := make([]map[string]any, 0, to-from)
	for _, a := range anns[from:to] {
		out = append(out, map[string]any{
			"path": a.Path, "start_line": a.StartLine, "end_line": a.EndLine,
			"start_column": nullable(a.StartColumn), "end_column": nullable(a.EndColumn),
			"annotation_level": a.Level, "message": a.Message, "title": a.Title, "raw_details": a.RawDetails,
			"blob_href": fmt.Sprintf("%s%s/blob/%s/%s", s.WebRoot(), rp.FullName, run.HeadSHA, a.Path),
		})
	}
	writeJSON(w, http.StatusOK, out)
}

func nullable(n int) any {
	if n == 0 {
		return nil
	}
	return n
}
