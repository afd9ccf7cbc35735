package gitlab

// The check run of scm.annotation.requested, which GitLab does not have:
// emulated with a commit status, discussions on the merge request's diff
// and, for what cannot be placed there, one note.

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"inthub.dev/events"
	"inthub.dev/pkg/connectors"
	"inthub.dev/pkg/fault"
)

// checkState maps a check run's status and conclusion to a commit
// status state.
func checkState(cr *events.CheckRun) (string, error) {
	if cr.Conclusion == "" {
		switch cr.Status {
		case "", "queued":
			return "pending", nil
		case "in_progress":
			return "running", nil
		case "completed":
			return "", fault.Permanentf("gitlab: a completed check run needs a conclusion")
		}
		return "", fault.Permanentf("gitlab: unknown check run status %q", cr.Status)
	}
	switch cr.Conclusion {
	case "success", "neutral":
		return "success", nil
	case "skipped":
		return "skipped", nil
	case "cancelled":
		return "canceled", nil
	case "failure", "timed_out", "action_required":
		return "failed", nil
	}
	return "", fault.Permanentf("gitlab: unknown check run conclusion %q", cr.Conclusion)
}

// checkDescription is the status description of a check run: the first
// line of its summary, or its state in words.
func checkDescription(cr *events.CheckRun) string {
	for _, l := range strings.Split(cr.Summary, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			return l
		}
	}
	switch {
	case cr.Conclusion != "":
		return "completed: " + strings.ReplaceAll(cr.Conclusion, "_", " ")
	case cr.Status == "in_progress":
		return "in progress"
	}
	return "queued"
}

func hasContent(cr *events.CheckRun) bool {
	return strings.TrimSpace(cr.Summary) != "" || strings.TrimSpace(cr.Text) != "" || len(cr.Annotations) > 0
}

// checkRun emulates a check run: a commit status named after it, then
// on a merge request one discussion per annotated line (lines the diff
// does not show fall back to a discussion on the file, then to one
// summary note), or without one a commit comment with the summary.
func (a *annotator) checkRun(ctx context.Context) error {
	cr := a.req.CheckRun
	state, err := checkState(cr)
	if err != nil {
		return err
	}
	desc, cut := connectors.CutPlain(checkDescription(cr), connectors.MaxStatusDescription)
	if cut {
		a.note("status description cut to %d characters", connectors.MaxStatusDescription)
	}
	a.p.URL = a.commitURL()
	if err := a.setStatus(ctx, cr.Name, state, desc, ""); err != nil {
		return err
	}
	ext := cr.ExternalID
	if ext == "" {
		ext = "request:" + a.req.ID
	}
	if a.req.PullRequest > 0 {
		a.p.URL = a.mrURL()
		return a.threads(ctx, cr, ext)
	}
	return a.commitComment(ctx, cr, ext)
}

// group is the annotations on one line of one file: one discussion.
type group struct {
	path      string
	line, end int
	items     []events.Annotation
}

// groupAnnotations groups annotations by file and first line, in the
// order they come.
func groupAnnotations(anns []events.Annotation) []group {
	var out []group
	at := map[string]int{}
	for _, an := range anns {
		p := strings.TrimLeft(strings.TrimPrefix(an.Path, "./"), "/")
		k := p + "\x00" + strconv.Itoa(an.StartLine)
		i, ok := at[k]
		if !ok {
			i = len(out)
			at[k] = i
			out = append(out, group{path: p, line: an.StartLine, end: an.StartLine})
		}
		out[i].items = append(out[i].items, an)
		out[i].end = max(out[i].end, an.EndLine)
	}
	return out
}

func levelLabel(level string) string {
	switch level {
	case "failure":
		return "Failure"
	case "warning":
		return "Warning"
	}
	return "Notice"
}

func (g group) where() string {
	if g.end > g.line {
		return fmt.Sprintf("%s:%d-%d", g.path, g.line, g.end)
	}
	return fmt.Sprintf("%s:%d", g.path, g.line)
}

func threadText(name string, g group) string {
	var b strings.Builder
	for i, an := range g.items {
		if i > 0 {
			b.WriteString("\n\n---\n\n")
		}
		fmt.Fprintf(&b, "**%s** · %s", levelLabel(an.Level), name)
		if an.Title != "" {
			fmt.Fprintf(&b, ": **%s**", an.Title)
		}
		if an.EndLine > an.StartLine {
			fmt.Fprintf(&b, " (lines %d-%d)", an.StartLine, an.EndLine)
		}
		b.WriteString("\n\n")
		b.WriteString(an.Message)
	}
	return b.String()
}

func listText(gs []group) string {
	var b strings.Builder
	for _, g := range gs {
		for _, an := range g.items {
			fmt.Fprintf(&b, "- `%s` **%s**", g.where(), levelLabel(an.Level))
			if an.Title != "" {
				fmt.Fprintf(&b, " %s:", an.Title)
			}
			fmt.Fprintf(&b, " %s\n", strings.ReplaceAll(an.Message, "\n", " "))
		}
	}
	return b.String()
}

// mergeRequest is what the annotator reads of a merge request.
type mergeRequest struct {
	IID      int       `json:"iid"`
	SHA      string    `json:"sha"`
	WebURL   string    `json:"web_url"`
	DiffRefs *diffRefs `json:"diff_refs"`
}

type diffRefs struct {
	BaseSHA  string `json:"base_sha"`
	StartSHA string `json:"start_sha"`
	HeadSHA  string `json:"head_sha"`
}

// threads posts one discussion per annotated line, skipping those an
// earlier attempt posted (found by their markers), and one summary note
// for what cannot be placed.
func (a *annotator) threads(ctx context.Context, cr *events.CheckRun, ext string) error {
	groups := groupAnnotations(cr.Annotations)
	if len(groups) == 0 {
		return nil
	}
	unlock, err := a.c.ann.locks.Lock(ctx, "mr:"+a.mrKey().project+"!"+strconv.Itoa(a.req.PullRequest))
	if err != nil {
		return err
	}
	defer unlock()

	var mr mergeRequest
	if _, err := a.read(ctx, a.mrCall("read the merge request"), &mr); err != nil {
		return err
	}
	if mr.WebURL != "" {
		a.p.URL = mr.WebURL
	}
	if mr.DiffRefs == nil || mr.DiffRefs.HeadSHA == "" {
		return fault.Transient(fmt.Errorf("gitlab: merge request !%d of %s: GitLab is still preparing its diff", a.req.PullRequest, a.project))
	}
	var diff *mrDiff
	reason := ""
	if mr.DiffRefs.HeadSHA != a.req.CommitSHA {
		// The lines are those of an older push: placed on today's diff
		// they would point at the wrong code.
		reason = fmt.Sprintf("the merge request's head is now %s, the annotations are for %s", mr.DiffRefs.HeadSHA[:min(12, len(mr.DiffRefs.HeadSHA))], a.req.CommitSHA[:12])
	} else if diff, err = a.diff(ctx, *mr.DiffRefs); err != nil {
		return err
	}
	idx, err := a.index(ctx)
	if err != nil {
		return err
	}
	var unplaced []group
	for _, g := range groups {
		if diff == nil {
			unplaced = append(unplaced, g)
			continue
		}
		marker := connectors.CommentMarker(fmt.Sprintf("check:%s:%s:%d", ext, g.path, g.line))
		body := a.compose(marker, threadText(cr.Name, g), "annotation text")
		if ref, ok := idx.Lookup(marker); ok {
			if ref.Reads(body) {
				continue
			}
			gone, err := a.editNote(ctx, ref.ID, body)
			if err != nil {
				return err
			}
			if !gone {
				continue
			}
		}
		placed, err := a.place(ctx, diff, g, body)
		if err != nil {
			return err
		}
		if !placed {
			unplaced = append(unplaced, g)
		}
	}
	if len(unplaced) == 0 {
		return nil
	}
	if reason == "" {
		reason = "their lines are not part of the merge request's diff"
	}
	n := 0
	for _, g := range unplaced {
		n += len(g.items)
	}
	a.note("%d annotations listed in one note: %s", n, reason)
	marker := connectors.CommentMarker("check:" + ext + ":summary")
	text := fmt.Sprintf("**%s**: %d findings could not be placed on the diff (%s).\n\n", cr.Name, n, reason)
	if s := strings.TrimSpace(cr.Summary); s != "" {
		text += s + "\n\n"
	}
	_, err = a.upsertNote(ctx, idx, marker, a.compose(marker, text+listText(unplaced), "summary note"))
	return err
}

// place posts a group's discussion on its line, else on its file; placed
// is false when GitLab takes neither.
func (a *annotator) place(ctx context.Context, diff *mrDiff, g group, body string) (bool, error) {
	f := diff.file(g.path)
	if f == nil {
		return false, nil
	}
	refs := diff.refs
	pos := map[string]any{
		"base_sha": refs.BaseSHA, "start_sha": refs.StartSHA, "head_sha": refs.HeadSHA,
		"old_path": f.oldPath, "new_path": f.newPath,
	}
	if oldLine, newLine, ok := f.line(g.line, g.end); ok {
		pos["position_type"] = "text"
		pos["new_line"] = newLine
		if oldLine > 0 {
			pos["old_line"] = oldLine
		}
		ok, err := a.postThread(ctx, body, pos)
		if ok || err != nil {
			return ok, err
		}
		// GitLab reads the diff differently: the file is still a place.
		delete(pos, "new_line")
		delete(pos, "old_line")
	}
	if a.c.ann.noFilePositions.Load() {
		return false, nil
	}
	pos["position_type"] = "file"
	return a.postThread(ctx, body, pos)
}

// postThread posts a discussion at pos; ok is false when GitLab refuses
// the position (400).
func (a *annotator) postThread(ctx context.Context, body string, pos map[string]any) (bool, error) {
	var d struct {
		Notes []glNote `json:"notes"`
	}
	err := a.write(ctx, http.MethodPost, a.mrCall("start a discussion", "discussions"), map[string]any{"body": body, "position": pos}, &d)
	switch {
	case refused(err):
		if pos["position_type"] == "file" && strings.Contains(gitlabSaid(err), "position_type") {
			// GitLab before 16.4 has no file-level discussions.
			a.c.ann.noFilePositions.Store(true)
		}
		return false, nil
	case err != nil:
		a.forget(err)
		return false, err
	}
	if len(d.Notes) > 0 {
		a.remember(d.Notes[0].ID, body)
	}
	return true, nil
}

// commitComment posts the check run's summary as a comment on the
// commit, once: GitLab cannot edit a commit comment, so one with the
// same marker and body already there is the same comment.
func (a *annotator) commitComment(ctx context.Context, cr *events.CheckRun, ext string) error {
	if !hasContent(cr) {
		return nil
	}
	marker := connectors.CommentMarker("check:" + ext + ":commit")
	state, _ := checkState(cr)
	text := fmt.Sprintf("**%s**: %s", cr.Name, state)
	for _, s := range []string{cr.Summary, cr.Text} {
		if s = strings.TrimSpace(s); s != "" {
			text += "\n\n" + s
		}
	}
	if len(cr.Annotations) > 0 {
		text += "\n\n" + listText(groupAnnotations(cr.Annotations))
	}
	body := a.compose(marker, text, "commit comment")

	unlock, err := a.c.ann.locks.Lock(ctx, "commit:"+strings.ToLower(a.project)+"@"+a.req.CommitSHA)
	if err != nil {
		return err
	}
	defer unlock()
	me, err := a.me(ctx)
	if err != nil {
		return err
	}
	elems := []string{"projects", a.project, "repository", "commits", a.req.CommitSHA, "comments"}
	there := false
	err = listAll(ctx, a, call{op: fmt.Sprintf("list comments of commit %s in %s", a.req.CommitSHA[:12], a.project), elems: elems}, maxNotePages,
		func(c struct {
			Note   string `json:"note"`
			Author struct {
				ID int64 `json:"id"`
			} `json:"author"`
		}) {
			there = there || c.Author.ID == me && c.Note == body
		})
	if err != nil || there {
		return err
	}
	return a.write(ctx, http.MethodPost, call{op: fmt.Sprintf("comment on commit %s in %s", a.req.CommitSHA[:12], a.project), elems: elems},
		map[string]string{"note": body}, nil)
}
