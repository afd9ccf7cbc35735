package gitlabtest

import (
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

var shaRE = regexp.MustCompile(`^[0-9a-f]{40}$`)

// projectRoutes serves the routes under /projects/:id.
func (s *Server) projectRoutes(w http.ResponseWriter, r *http.Request, m match, c caller, body []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.projectByRef(m.project)
	if p == nil || !c.visible(p) {
		writeJSON(w, http.StatusNotFound, map[string]string{"message": "404 Project Not Found"})
		return
	}
	if isWrite(m.route) && !c.member(p) {
		writeJSON(w, http.StatusForbidden, map[string]string{"message": "403 Forbidden"})
		return
	}
	switch m.route {
	case RouteBranches, RouteTags:
		names := p.Branches
		if m.route == RouteTags {
			names = p.Tags
		}
		list := make([]any, 0, len(names))
		for i, n := range names {
			list = append(list, map[string]any{"name": n, "commit": map[string]any{"id": fmt.Sprintf("%040x", i+1)}})
		}
		s.paginate(w, r, list)
	case RoutePipelines, RouteFile, RouteProject:
		s.ciRoutes(w, r, m, p)
	case RouteCreateStatus:
		s.createStatus(w, r, p, m.sha, c, body)
	case RouteStatuses:
		// Without all=true GitLab lists the latest status of each name
		// (older ones of the name are "retried").
		q := r.URL.Query()
		latest := map[string]int{}
		var keep []*Status
		for _, st := range p.statuses {
			if st.SHA != m.sha || q.Get("name") != "" && q.Get("name") != st.Name || q.Get("ref") != "" && q.Get("ref") != st.Ref {
				continue
			}
			if i, ok := latest[st.Name+"\x00"+st.Ref]; ok && q.Get("all") != "true" {
				keep[i] = st
				continue
			}
			latest[st.Name+"\x00"+st.Ref] = len(keep)
			keep = append(keep, st)
		}
		list := make([]any, 0, len(keep))
		for _, st := range keep {
			list = append(list, s.statusJSON(st))
		}
		s.paginate(w, r, list)
	case RouteCommitComments, RouteCreateComment:
		if !p.commits[m.sha] {
			writeJSON(w, http.StatusNotFound, map[string]string{"message": "404 Commit Not Found"})
			return
		}
		if m.route == RouteCreateComment {
			s.createCommitComment(w, r, p, m.sha, c, body)
			return
		}
		var list []any
		for _, cc := range p.comments[m.sha] {
			list = append(list, s.commitCommentJSON(cc))
		}
		s.paginate(w, r, list)
	default:
		mr := p.mrs[m.iid]
		if mr == nil {
			writeJSON(w, http.StatusNotFound, map[string]string{"message": "404 Not found"})
			return
		}
		s.mergeRequestRoutes(w, r, m, p, mr, c, body)
	}
}

func (s *Server) mergeRequestRoutes(w http.ResponseWriter, r *http.Request, m match, p *project, mr *mergeRequest, c caller, body []byte) {
	switch m.route {
	case RouteMergeRequest:
		writeJSON(w, http.StatusOK, s.mrJSON(p, mr))
	case RouteMRDiffs:
		if s.opts.NoDiffsEndpoint {
			writeJSON(w, http.StatusNotFound, map[string]string{"error": "404 Not Found"})
			return
		}
		list := make([]any, 0, len(mr.Diffs))
		for _, d := range mr.Diffs {
			list = append(list, d)
		}
		s.paginate(w, r, list)
	case RouteMRChanges:
		out := s.mrJSON(p, mr)
		out["changes"] = mr.Diffs
		out["overflow"] = false
		writeJSON(w, http.StatusOK, out)
	case RouteNotes:
		var list []*Note
		for _, d := range mr.discussions {
			list = append(list, d.notes...)
		}
		asc := r.URL.Query().Get("sort") == "asc"
		byUpdate := r.URL.Query().Get("order_by") == "updated_at"
		slices.SortStableFunc(list, func(a, b *Note) int {
			ka, kb := a.CreatedAt, b.CreatedAt
			if byUpdate {
				ka, kb = a.UpdatedAt, b.UpdatedAt
			}
			cmp := ka.Compare(kb)
			if cmp == 0 {
				cmp = int(a.ID - b.ID)
			}
			if !asc { // GitLab's default is newest first
				cmp = -cmp
			}
			return cmp
		})
		out := make([]any, 0, len(list))
		for _, n := range list {
			out = append(out, s.noteJSON(mr, n))
		}
		s.paginate(w, r, out)
	case RouteDiscussions:
		out := make([]any, 0, len(mr.discussions))
		for _, d := range mr.discussions {
			notes := make([]any, 0, len(d.notes))
			for _, n := range d.notes {
				notes = append(notes, s.noteJSON(mr, n))
			}
			out = append(out, map[string]any{"id": d.id, "individual_note": d.individual, "notes": notes})
		}
		s.paginate(w, r, out)
	case RouteCreateNote, RouteCreateDiscussion:
		s.createNote(w, r, m, mr, c, body)
	case RouteEditNote, RouteEditThreadNote:
		s.editNote(w, r, m, mr, c, body)
	}
}

func (s *Server) mrJSON(p *project, mr *mergeRequest) map[string]any {
	var refs any
	if mr.DiffRefs.HeadSHA != "" {
		refs = mr.DiffRefs
	}
	return map[string]any{
		"id": mr.id, "iid": mr.IID, "project_id": p.ID, "title": mr.Title, "state": mr.State,
		"source_branch": mr.SourceBranch, "target_branch": mr.TargetBranch,
		"sha": mr.DiffRefs.HeadSHA, "diff_refs": refs,
		"web_url": s.URL() + "/" + p.Path + "/-/merge_requests/" + strconv.Itoa(mr.IID),
	}
}

func (s *Server) noteJSON(mr *mergeRequest, n *Note) map[string]any {
	var typ any
	if n.Type != "" {
		typ = n.Type
	}
	out := map[string]any{
		"id": n.ID, "type": typ, "body": n.Body, "attachment": nil,
		"author":     map[string]any{"id": s.userID(n.Author), "username": n.Author, "name": n.Author, "state": "active"},
		"created_at": n.CreatedAt.Format(time.RFC3339Nano), "updated_at": n.UpdatedAt.Format(time.RFC3339Nano),
		"system": n.System, "noteable_id": mr.id, "noteable_type": "MergeRequest", "noteable_iid": mr.IID,
		"resolvable": n.Type != "", "confidential": false, "internal": false,
	}
	if n.Position != nil {
		pos := map[string]any{
			"base_sha": n.Position.BaseSHA, "start_sha": n.Position.StartSHA, "head_sha": n.Position.HeadSHA,
			"position_type": n.Position.PositionType, "old_path": n.Position.OldPath, "new_path": n.Position.NewPath,
			"old_line": nil, "new_line": nil, "line_range": nil,
		}
		if n.Position.OldLine > 0 {
			pos["old_line"] = n.Position.OldLine
		}
		if n.Position.NewLine > 0 {
			pos["new_line"] = n.Position.NewLine
		}
		out["position"] = pos
	}
	return out
}

// badRequest answers as GitLab's bad_request! does: "400 Bad request - "
// and the attribute.
func badRequest(w http.ResponseWriter, what string) {
	writeJSON(w, http.StatusBadRequest, map[string]string{"message": "400 Bad request - " + what})
}

// noteBody checks a note body as GitLab's Note model does.
func (s *Server) noteBody(w http.ResponseWriter, m map[string]any, field string) (string, bool) {
	b, ok := str(m, field)
	if !ok {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": field + " is missing"})
		return "", false
	}
	if strings.TrimSpace(b) == "" {
		badRequest(w, `Note {:note=>["can't be blank"]}`)
		return "", false
	}
	if n := utf8.RuneCountInString(b); n > s.opts.MaxNoteBody {
		badRequest(w, fmt.Sprintf(`Note {:note=>["is too long (maximum is %d characters)"]}`, s.opts.MaxNoteBody))
		return "", false
	}
	return b, true
}

// lineCodeError is GitLab's answer to a position that is not on the diff.
const lineCodeError = `Note {:line_code=>["can't be blank", "must be a valid line code"], :position=>["is incomplete"]}`

func (s *Server) createNote(w http.ResponseWriter, r *http.Request, m match, mr *mergeRequest, c caller, body []byte) {
	in, err := params(r, body)
	if err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "the request body is not valid JSON"})
		return
	}
	text, ok := s.noteBody(w, in, "body")
	if !ok {
		return
	}
	if m.route == RouteCreateNote {
		n := s.newNote(c.user, text, "")
		s.addDiscussion(mr, true, n)
		writeJSON(w, http.StatusCreated, s.noteJSON(mr, n))
		return
	}
	typ := "DiscussionNote"
	var pos *Position
	if raw, present := in["position"]; present {
		pm, isMap := raw.(map[string]any)
		if !isMap {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "position is invalid"})
			return
		}
		p, msg, status := s.position(mr, pm)
		if msg != "" {
			if status == http.StatusBadRequest && !strings.HasPrefix(msg, "position[") {
				badRequest(w, msg)
			} else {
				writeJSON(w, status, map[string]string{"error": msg})
			}
			return
		}
		typ, pos = "DiffNote", p
	}
	n := s.newNote(c.user, text, typ)
	n.Position = pos
	d := s.addDiscussion(mr, false, n)
	notes := []any{s.noteJSON(mr, n)}
	writeJSON(w, http.StatusCreated, map[string]any{"id": d.id, "individual_note": false, "notes": notes})
}

// position validates a discussion's position against the merge request's
// diff. msg is empty when it is valid.
func (s *Server) position(mr *mergeRequest, pm map[string]any) (*Position, string, int) {
	var p Position
	var missing []string
	for _, f := range []struct {
		key string
		dst *string
	}{{"base_sha", &p.BaseSHA}, {"start_sha", &p.StartSHA}, {"head_sha", &p.HeadSHA}, {"position_type", &p.PositionType}} {
		v, ok := str(pm, f.key)
		if !ok || v == "" {
			missing = append(missing, "position["+f.key+"] is missing")
		}
		*f.dst = v
	}
	if len(missing) > 0 {
		return nil, strings.Join(missing, ", "), http.StatusBadRequest
	}
	p.OldPath, _ = str(pm, "old_path")
	p.NewPath, _ = str(pm, "new_path")
	var err error
	if p.NewLine, err = integer(pm, "new_line"); err != nil {
		return nil, "position[new_line] is invalid", http.StatusBadRequest
	}
	if p.OldLine, err = integer(pm, "old_line"); err != nil {
		return nil, "position[old_line] is invalid", http.StatusBadRequest
	}
	switch p.PositionType {
	case "text":
	case "file":
		if s.opts.NoFilePositions {
			return nil, "position[position_type] does not have a valid value", http.StatusBadRequest
		}
	case "image":
		return nil, lineCodeError, http.StatusBadRequest
	default:
		return nil, "position[position_type] does not have a valid value", http.StatusBadRequest
	}
	refs := DiffRefs{BaseSHA: p.BaseSHA, StartSHA: p.StartSHA, HeadSHA: p.HeadSHA}
	if mr.DiffRefs.HeadSHA == "" || refs != mr.DiffRefs {
		return nil, lineCodeError, http.StatusBadRequest
	}
	fl, ok := mr.lines[p.NewPath+"\x00"+p.OldPath]
	if !ok {
		return nil, lineCodeError, http.StatusBadRequest
	}
	if p.PositionType == "file" {
		p.OldLine, p.NewLine = 0, 0
		return &p, "", 0
	}
	if !fl.allows(p.OldLine, p.NewLine) {
		return nil, lineCodeError, http.StatusBadRequest
	}
	return &p, "", 0
}

func (s *Server) editNote(w http.ResponseWriter, r *http.Request, m match, mr *mergeRequest, c caller, body []byte) {
	var n *Note
	for _, d := range mr.discussions {
		if m.route == RouteEditThreadNote && d.id != m.discussionID {
			continue
		}
		for _, dn := range d.notes {
			if dn.ID == m.noteID {
				n = dn
			}
		}
	}
	if n == nil {
		writeJSON(w, http.StatusNotFound, map[string]string{"message": "404 Note Not Found"})
		return
	}
	if n.System || n.Author != c.user {
		writeJSON(w, http.StatusForbidden, map[string]string{"message": "403 Forbidden"})
		return
	}
	in, err := params(r, body)
	if err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "the request body is not valid JSON"})
		return
	}
	text, ok := s.noteBody(w, in, "body")
	if !ok {
		return
	}
	if text != n.Body {
		n.Body = text
		n.Edits++
		n.UpdatedAt = s.now().UTC()
	}
	writeJSON(w, http.StatusOK, s.noteJSON(mr, n))
}

// createStatus follows GitLab's Ci::CreateCommitStatusService: a status
// of the same name, ref and user that is still pending or running is
// moved to the new state; otherwise a new one starts from "created".
// A transition the state machine does not have is a 400.
func (s *Server) createStatus(w http.ResponseWriter, r *http.Request, p *project, sha string, c caller, body []byte) {
	if !shaRE.MatchString(sha) || !p.commits[sha] {
		writeJSON(w, http.StatusNotFound, map[string]string{"message": "404 Commit Not Found"})
		return
	}
	in, err := params(r, body)
	if err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "the request body is not valid JSON"})
		return
	}
	state, ok := str(in, "state")
	if !ok || state == "" {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "state is missing"})
		return
	}
	if !slices.Contains([]string{"pending", "running", "success", "failed", "canceled", "skipped"}, state) {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "state does not have a valid value"})
		return
	}
	name, _ := str(in, "name")
	if name == "" {
		name, _ = str(in, "context")
	}
	if name == "" {
		name = "default"
	}
	ref, _ := str(in, "ref")
	if ref == "" {
		ref = s.refOf(p, sha)
	}
	if ref == "" {
		writeJSON(w, http.StatusNotFound, map[string]string{"message": "404 References for commit Not Found"})
		return
	}
	desc, hasDesc := str(in, "description")
	target, hasTarget := str(in, "target_url")
	errs := map[string][]string{}
	for field, v := range map[string]string{"ref": ref, "description": desc, "target_url": target} {
		if utf8.RuneCountInString(v) > maxStatusField {
			errs[field] = append(errs[field], fmt.Sprintf("is too long (maximum is %d characters)", maxStatusField))
		}
	}
	if target != "" {
		if u, err := url.Parse(target); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			errs["target_url"] = append(errs["target_url"], "is blocked: Only allowed schemes are http, https")
		}
	}
	if len(errs) > 0 {
		writeJSON(w, http.StatusBadRequest, map[string]any{"message": errs})
		return
	}

	var st *Status
	for i := len(p.statuses) - 1; i >= 0; i-- {
		cur := p.statuses[i]
		if cur.SHA == sha && cur.Ref == ref && cur.Name == name && cur.Author == c.user && (cur.State == "pending" || cur.State == "running") {
			st = cur
			break
		}
	}
	fresh := st == nil
	if fresh {
		st = &Status{SHA: sha, Ref: ref, Name: name, State: "created", Author: c.user}
	}
	next, event, ok := transition(st.State, state)
	if !ok {
		writeJSON(w, http.StatusBadRequest, map[string]string{
			"message": fmt.Sprintf(`Cannot transition status via :%s from :%s (Reason(s): Status cannot transition via "%s")`, event, st.State, event),
		})
		return
	}
	if fresh {
		s.nextID++
		st.ID = s.nextID
		st.History = []string{"created"}
		p.statuses = append(p.statuses, st)
	}
	st.State = next
	st.History = append(st.History, next)
	if hasDesc {
		st.Description = desc
	}
	if hasTarget {
		st.TargetURL = target
	}
	writeJSON(w, http.StatusCreated, s.statusJSON(st))
}

// transition applies the event a requested state stands for, as
// CommitStatus's state machine does.
func transition(from, to string) (next, event string, ok bool) {
	switch to {
	case "pending":
		return "pending", "enqueue", slices.Contains([]string{"created", "skipped", "manual", "scheduled"}, from)
	case "running":
		// The service calls enqueue (without failing) and then run!.
		if slices.Contains([]string{"created", "skipped", "manual", "scheduled"}, from) {
			from = "pending"
		}
		return "running", "run", from == "pending"
	case "success":
		return "success", "success", slices.Contains([]string{"created", "pending", "running"}, from)
	case "failed":
		return "failed", "drop", slices.Contains([]string{"created", "pending", "running", "manual", "scheduled"}, from)
	case "canceled":
		return "canceled", "cancel", slices.Contains([]string{"created", "pending", "running", "manual", "scheduled"}, from)
	case "skipped":
		return "skipped", "skip", slices.Contains([]string{"created", "pending"}, from)
	}
	return "", to, false
}

// refOf is the ref GitLab picks when the request names none: the source
// branch of a merge request at that commit, else the default branch.
func (s *Server) refOf(p *project, sha string) string {
	for _, mr := range p.mrs {
		if mr.DiffRefs.HeadSHA == sha {
			return mr.SourceBranch
		}
	}
	return p.DefaultBranch
}

func (s *Server) statusJSON(st *Status) map[string]any {
	var desc, target any
	if st.Description != "" {
		desc = st.Description
	}
	if st.TargetURL != "" {
		target = st.TargetURL
	}
	return map[string]any{
		"id": st.ID, "sha": st.SHA, "ref": st.Ref, "status": st.State, "name": st.Name,
		"description": desc, "target_url": target, "allow_failure": false,
		"author": map[string]any{"id": s.userID(st.Author), "username": st.Author},
	}
}

func (s *Server) createCommitComment(w http.ResponseWriter, r *http.Request, p *project, sha string, c caller, body []byte) {
	in, err := params(r, body)
	if err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "the request body is not valid JSON"})
		return
	}
	text, ok := s.noteBody(w, in, "note")
	if !ok {
		return
	}
	cc := CommitComment{Note: text, Author: c.user, CreatedAt: s.now().UTC()}
	cc.Path, _ = str(in, "path")
	if cc.Line, err = integer(in, "line"); err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
		return
	}
	cc.LineType, _ = str(in, "line_type")
	p.comments[sha] = append(p.comments[sha], cc)
	writeJSON(w, http.StatusCreated, s.commitCommentJSON(cc))
}

func (s *Server) commitCommentJSON(cc CommitComment) map[string]any {
	var path, line, lineType any
	if cc.Path != "" {
		path, line, lineType = cc.Path, cc.Line, cc.LineType
	}
	return map[string]any{
		"note": cc.Note, "path": path, "line": line, "line_type": lineType,
		"author":     map[string]any{"id": s.userID(cc.Author), "username": cc.Author},
		"created_at": cc.CreatedAt.Format(time.RFC3339Nano),
	}
}
