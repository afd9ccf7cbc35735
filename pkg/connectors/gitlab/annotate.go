package gitlab

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"inthub.dev/events"
	"inthub.dev/pkg/connectors"
	"inthub.dev/pkg/connectors/cache"
	"inthub.dev/pkg/connectors/sticky"
	"inthub.dev/pkg/fault"
)

var _ connectors.Annotator = (*Connector)(nil)

const (
	// maxStatusField is GitLab's limit on a commit status's ref,
	// description and target_url (CommitStatus validations).
	maxStatusField = 255
	// maxNotePages bounds a listing of a merge request's notes (10,000
	// notes); beyond it a marker could be missed, so the call fails
	// rather than post a duplicate.
	maxNotePages = 100
	// maxDiffPages bounds a listing of a merge request's diff (3,000
	// files, about GitLab's own limit on a diff).
	maxDiffPages = 30
	// maxRangeScan bounds how far into an annotation's line range a
	// line of the diff is looked for.
	maxRangeScan = 1000
	// annotationTTL is how long what was read about a merge request
	// (its notes' markers, its diff) is trusted: long enough for the
	// requests of one scan, short enough that a note deleted by hand is
	// noticed.
	annotationTTL = 30 * time.Minute
)

// jobTokenRefusal is the error for an annotation through a CI job token,
// which GitLab does not let write notes, discussions or statuses.
const jobTokenRefusal = "gitlab: a CI job token cannot post merge request notes, discussions or commit statuses; " +
	"configure the integration with a project or personal access token with the api scope (token) instead of jobToken"

// annotationState is what Annotate keeps between calls of one connector:
// the markers of inthub's notes per merge request (so that a sticky
// comment is one lookup, then none), parsed diffs, the token's user, and
// locks that serialise the calls touching one merge request or commit.
type annotationState struct {
	notes           *cache.Cache[mrKey, *sticky.Index]
	diffs           *cache.Cache[diffKey, *mrDiff]
	me              atomic.Int64 // the token's user id, 0 until read
	noFilePositions atomic.Bool  // GitLab before 16.4 refused position_type "file"
	locks           *sticky.Locks
}

func newAnnotationState() *annotationState {
	return &annotationState{
		notes: cache.New[mrKey, *sticky.Index](cache.Options{Name: "gitlab_annotation_notes", Size: 2000, TTL: annotationTTL}),
		diffs: cache.New[diffKey, *mrDiff](cache.Options{Name: "gitlab_annotation_diffs", Size: 200, TTL: annotationTTL}),
		// A merge request's or a commit's calls are serialised: two
		// requests on one merge request must not both miss a marker and
		// both post.
		locks: sticky.NewLocks("gitlab"),
	}
}

type mrKey struct {
	project string // lower case: GitLab paths are case-insensitive
	iid     int
}

type diffKey struct {
	mr   mrKey
	refs diffRefs
}

// AnnotationScope is the API host and the token: GitLab's rate limits
// are per user, and a token is the closest thing known without a call.
// The account is a hash of the token's AuthRef, never the secret.
func (c *Connector) AnnotationScope() (host, account string) {
	if c.root != nil {
		host = c.root.Host
	}
	ref, kind := c.conf.Token, "token"
	switch {
	case c.conf.JobToken != "":
		ref, kind = c.conf.JobToken, "jobtoken"
	case ref == "":
		ref = c.cfg.AuthRef
	}
	sum := sha256.Sum256([]byte(ref))
	return host, kind + "/" + hex.EncodeToString(sum[:8])
}

// Writes is one for a comment or a status. A check run is one status
// plus, on a merge request, one discussion per annotated line (several
// annotations on one line share it) or, for lines that cannot be
// placed, one summary note instead; without a merge request one commit
// comment when there is anything to say. It is what a first send costs
// at most: a retry skips what is already there.
func (c *Connector) Writes(req connectors.AnnotationRequest) int {
	switch req.Operation {
	case events.OpComment, events.OpStatus:
		return 1
	case events.OpCheckRun:
		n := 1
		if cr := req.CheckRun; cr != nil {
			switch {
			case req.PullRequest > 0:
				n += len(groupAnnotations(cr.Annotations))
			case hasContent(cr):
				n++
			}
		}
		return n
	}
	return 0
}

// Annotate performs req. The Posted it returns counts the calls made also
// when it fails, so that the caller can charge its budget.
func (c *Connector) Annotate(ctx context.Context, req connectors.AnnotationRequest) (connectors.Posted, error) {
	a := &annotator{c: c, req: req}
	err := a.run(ctx)
	if err == nil && a.p.Writes == 0 && !a.refused {
		a.p.Unchanged = true
	}
	return a.p, err
}

// annotator is one Annotate call.
type annotator struct {
	c       *Connector
	req     connectors.AnnotationRequest
	cred    credential
	project string // full path, "group/sub/name"
	p       connectors.Posted
	// refused is set when GitLab did not take a write and nothing else
	// was written in its place, so the result is not "unchanged".
	refused bool
}

func (a *annotator) run(ctx context.Context) error {
	c, req := a.c, a.req
	if c.confErr != nil {
		return c.confErr
	}
	if c.jobToken() {
		return fault.Permanentf("%s", jobTokenRefusal)
	}
	a.project = req.Repository.Owner + "/" + req.Repository.Name
	if err := checkPath("project", a.project, 2); err != nil {
		return err
	}
	switch req.Operation {
	case events.OpComment:
		switch {
		case req.Comment == nil:
			return fault.Permanentf("gitlab: a comment request without its comment")
		case req.PullRequest < 1:
			return fault.Permanentf("gitlab: a comment needs the merge request's IID (pullRequest)")
		case req.Comment.UpdateExisting && req.Comment.Key == "":
			return fault.Permanentf("gitlab: a comment with updateExisting needs a key")
		}
	case events.OpStatus:
		if req.Status == nil {
			return fault.Permanentf("gitlab: a status request without its status")
		}
		if err := checkSHA(req.CommitSHA); err != nil {
			return err
		}
	case events.OpCheckRun:
		if req.CheckRun == nil {
			return fault.Permanentf("gitlab: a check_run request without its checkRun")
		}
		if err := checkSHA(req.CommitSHA); err != nil {
			return err
		}
	default:
		return fault.Permanentf("gitlab: unknown annotation operation %q", req.Operation)
	}
	cred, err := c.credential(ctx)
	if err != nil {
		return err
	}
	a.cred = cred
	switch req.Operation {
	case events.OpComment:
		return a.comment(ctx)
	case events.OpStatus:
		return a.status(ctx)
	default:
		return a.checkRun(ctx)
	}
}

var shaRE = regexp.MustCompile(`^[0-9a-f]{40}$`)

func checkSHA(sha string) error {
	if !shaRE.MatchString(sha) {
		return fault.Permanentf("gitlab: commitSha must be a commit's 40 lowercase hex digits")
	}
	return nil
}

func (a *annotator) read(ctx context.Context, cl call, out any) (response, error) {
	resp, err := a.c.get(ctx, a.cred, cl, out)
	a.p.Reads++
	a.noteRate(resp)
	return resp, err
}

func (a *annotator) write(ctx context.Context, method string, cl call, in, out any) error {
	resp, err := a.c.send(ctx, a.cred, method, cl, in, out)
	a.noteRate(resp)
	if err == nil {
		a.p.Writes++
	}
	return err
}

func (a *annotator) noteRate(resp response) {
	if resp.rateLimit != nil {
		a.p.RateLimit = resp.rateLimit
	}
}

func (a *annotator) note(format string, args ...any) {
	n := fmt.Sprintf(format, args...)
	if !slices.Contains(a.p.Notes, n) {
		a.p.Notes = append(a.p.Notes, n)
	}
}

// compose puts the markers first (hidden, as on GitHub) and cuts the text
// so that the whole fits GitLab's note, with a visible note when cut.
func (a *annotator) compose(header, text, what string) string {
	body, cut := sticky.Compose(header, text, connectors.MaxCommentBody)
	if cut {
		a.note("%s cut to %d characters", what, connectors.MaxCommentBody)
	}
	return body
}

// refused reports whether GitLab turned a write down as invalid (400):
// what was sent is wrong, and sending it again would be too.
func refused(err error) bool { return statusOf(err) == http.StatusBadRequest }

// outcomeUnknown reports whether a failed write may have been applied
// anyway (its answer was lost), so that what was read before cannot be
// trusted to tell whether it is there.
func outcomeUnknown(err error) bool {
	return err != nil && fault.ClassOf(err) != fault.ClassPermanent
}

func (a *annotator) mrKey() mrKey {
	return mrKey{project: strings.ToLower(a.project), iid: a.req.PullRequest}
}

// webRoot is the instance's web root: the API root without /api/v4.
func (c *Connector) webRoot() string {
	u := *c.root
	u.Path = strings.TrimSuffix(u.Path, "/api/v4")
	u.RawPath = ""
	return strings.TrimRight(u.String(), "/")
}

func (a *annotator) mrURL() string {
	return a.c.webRoot() + "/" + a.project + "/-/merge_requests/" + strconv.Itoa(a.req.PullRequest)
}

func (a *annotator) commitURL() string {
	return a.c.webRoot() + "/" + a.project + "/-/commit/" + a.req.CommitSHA
}

// me is the token's user id, read once per connector: only its notes are
// inthub's (a person quoting a marker must not have their note edited).
func (a *annotator) me(ctx context.Context) (int64, error) {
	if id := a.c.ann.me.Load(); id != 0 {
		return id, nil
	}
	var u struct {
		ID int64 `json:"id"`
	}
	if _, err := a.read(ctx, call{op: "read the token's user", elems: []string{"user"}}, &u); err != nil {
		return 0, err
	}
	if u.ID == 0 {
		return 0, fault.Permanentf("gitlab: read the token's user: the answer has no id")
	}
	a.c.ann.me.Store(u.ID)
	return u.ID, nil
}

// listAll reads every page of a list, calling each per item.
func listAll[T any](ctx context.Context, a *annotator, cl call, maxPages int, each func(T)) error {
	q := url.Values{}
	for k, v := range cl.query {
		q[k] = slices.Clone(v)
	}
	q.Set("per_page", strconv.Itoa(maxPerPage))
	cursor := ""
	for page := 0; ; page++ {
		if page == maxPages {
			return fault.Permanentf("gitlab: %s: more than %d pages", cl.op, maxPages)
		}
		pq := url.Values{}
		for k, v := range q {
			pq[k] = v
		}
		if err := applyCursor(pq, cursor); err != nil {
			return err
		}
		var items []T
		resp, err := a.read(ctx, call{op: cl.op, elems: cl.elems, query: pq}, &items)
		if err != nil {
			return err
		}
		for _, it := range items {
			each(it)
		}
		if resp.next == "" {
			return nil
		}
		cursor = resp.next
	}
}

// glNote is a note as GitLab lists it.
type glNote struct {
	ID     int64  `json:"id"`
	Body   string `json:"body"`
	System bool   `json:"system"`
	Author struct {
		ID int64 `json:"id"`
	} `json:"author"`
}

var markerRE = regexp.MustCompile(`<!-- inthub:annotation key=\S* -->`)

// index returns the markers of inthub's notes on the merge request:
// cached, or read from every page of its notes (which include the notes
// of discussions, diff notes too).
func (a *annotator) index(ctx context.Context) (*sticky.Index, error) {
	key := a.mrKey()
	if idx, ok := a.c.ann.notes.Get(key); ok {
		return idx, nil
	}
	me, err := a.me(ctx)
	if err != nil {
		return nil, err
	}
	idx := sticky.NewIndex(markerRE)
	err = listAll(ctx, a, call{
		op:    fmt.Sprintf("list notes of merge request !%d of %s", a.req.PullRequest, a.project),
		elems: []string{"projects", a.project, "merge_requests", strconv.Itoa(a.req.PullRequest), "notes"},
		query: url.Values{"sort": {"asc"}, "order_by": {"created_at"}},
	}, maxNotePages, func(n glNote) {
		if n.System || n.Author.ID != me {
			return
		}
		idx.Add(n.ID, 0, n.Body)
	})
	if err != nil {
		return nil, err
	}
	a.c.ann.notes.Set(key, idx)
	return idx, nil
}

// remember records a note inthub wrote in the cached index, if there is
// one (without one, the next lookup lists the notes anyway).
func (a *annotator) remember(id int64, body string) {
	idx, ok := a.c.ann.notes.Get(a.mrKey())
	if !ok {
		return
	}
	idx.Add(id, 0, body)
}

// forget drops what is known of the merge request's notes after a write
// whose outcome is unknown: the next attempt reads them again.
func (a *annotator) forget(err error) {
	if outcomeUnknown(err) {
		a.c.ann.notes.Delete(a.mrKey())
	}
}

// mrCall is a call on the request's merge request.
func (a *annotator) mrCall(op string, elems ...string) call {
	return call{
		op:    fmt.Sprintf("%s (merge request !%d of %s)", op, a.req.PullRequest, a.project),
		elems: append([]string{"projects", a.project, "merge_requests", strconv.Itoa(a.req.PullRequest)}, elems...),
	}
}

func (a *annotator) createNote(ctx context.Context, body string) (int64, error) {
	var n glNote
	err := a.write(ctx, http.MethodPost, a.mrCall("post a note", "notes"), map[string]string{"body": body}, &n)
	if err != nil {
		a.forget(err)
		return 0, err
	}
	a.remember(n.ID, body)
	return n.ID, nil
}

// editNote edits an inthub note; gone is set when it no longer exists
// (deleted by hand), for the caller to post it again.
func (a *annotator) editNote(ctx context.Context, id int64, body string) (gone bool, err error) {
	var n glNote
	err = a.write(ctx, http.MethodPut, a.mrCall("edit note "+strconv.FormatInt(id, 10), "notes", strconv.FormatInt(id, 10)), map[string]string{"body": body}, &n)
	switch {
	case statusOf(err) == http.StatusNotFound:
		if idx, ok := a.c.ann.notes.Get(a.mrKey()); ok {
			idx.Drop(id)
		}
		return true, nil
	case err != nil:
		a.forget(err)
		return false, err
	}
	a.remember(id, body)
	return false, nil
}

// upsertNote makes the note marked with marker read body: unchanged when
// it does, edited when it differs, posted when there is none.
func (a *annotator) upsertNote(ctx context.Context, idx *sticky.Index, marker, body string) (int64, error) {
	return sticky.Upsert(ctx, idx, marker, body, a.createNote, a.editRef)
}

// editRef is editNote for sticky.
func (a *annotator) editRef(ctx context.Context, ref sticky.Ref, body string) (bool, error) {
	return a.editNote(ctx, ref.ID, body)
}

// comment posts or edits a merge request note. A sticky comment
// (updateExisting) is found by its key's marker; any other carries the
// request's marker, which a retry looks up so that it does not post
// twice, and its key's, so that a later sticky request takes it over.
func (a *annotator) comment(ctx context.Context) error {
	header, lookup := sticky.Plan(connectors.CommentMarker, a.req)
	body := a.compose(header, a.req.Comment.Body, "comment body")

	unlock, err := a.c.ann.locks.Lock(ctx, "mr:"+a.mrKey().project+"!"+strconv.Itoa(a.req.PullRequest))
	if err != nil {
		return err
	}
	defer unlock()

	id, err := sticky.Put(ctx, lookup, a.req.Comment.UpdateExisting, body, a.index, a.createNote, a.editRef)
	if err != nil {
		return err
	}
	a.p.URL = a.mrURL() + "#note_" + strconv.FormatInt(id, 10)
	a.p.ExternalID = strconv.FormatInt(id, 10)
	return nil
}

// statusStates maps the contract's status states to GitLab's.
var statusStates = map[string]string{"pending": "pending", "success": "success", "failure": "failed", "error": "failed"}

func (a *annotator) status(ctx context.Context) error {
	st := a.req.Status
	state, ok := statusStates[st.State]
	if !ok {
		return fault.Permanentf("gitlab: unknown status state %q (pending, success, failure or error)", st.State)
	}
	desc, cut := connectors.CutPlain(st.Description, connectors.MaxStatusDescription)
	if cut {
		a.note("status description cut to %d characters", connectors.MaxStatusDescription)
	}
	target := st.TargetURL
	if utf8.RuneCountInString(target) > maxStatusField {
		target = ""
		a.note("target URL left out: GitLab takes at most %d characters", maxStatusField)
	}
	a.p.URL = a.commitURL()
	return a.setStatus(ctx, st.Context, state, desc, target)
}

// transitionRE reads GitLab's refusal of a status change; its "from" is
// the state the status keeps.
var transitionRE = regexp.MustCompile(`Cannot transition status via :(\w+) from :(\w+)`)

// setStatus posts a commit status. GitLab updates a pending or running
// status of the same name in place and refuses a change its state machine
// does not have: the same state again is no change at all; a step back
// (pending after running) leaves the later state standing; skipped after
// running, which GitLab cannot do, becomes canceled.
func (a *annotator) setStatus(ctx context.Context, name, state, desc, target string) error {
	in := map[string]string{"state": state, "name": name}
	if desc != "" {
		in["description"] = desc
	}
	if target != "" {
		in["target_url"] = target
	}
	if a.req.Attempt > 1 {
		// An earlier attempt may have set it: GitLab would add a finished
		// status again rather than refuse it.
		id, same, err := a.currentStatus(ctx, name, state, desc, target)
		if err != nil {
			return err
		}
		if same {
			a.p.ExternalID = strconv.FormatInt(id, 10)
			return nil
		}
	}
	var out struct {
		ID int64 `json:"id"`
	}
	err := a.write(ctx, http.MethodPost, call{
		op:    fmt.Sprintf("set commit status %q of %s in %s", name, a.req.CommitSHA[:12], a.project),
		elems: []string{"projects", a.project, "statuses", a.req.CommitSHA},
	}, in, &out)
	if err == nil {
		a.p.ExternalID = strconv.FormatInt(out.ID, 10)
		return nil
	}
	m := transitionRE.FindStringSubmatch(gitlabSaid(err))
	if !refused(err) || m == nil {
		return err
	}
	switch from := m[2]; {
	case from == state:
		return nil
	case state == "pending" && from == "running":
		a.note("GitLab keeps the status %q running: a status does not go back to pending", name)
		a.refused = true
		return nil
	case state == "skipped" && from == "running":
		a.note("GitLab cannot mark a running status skipped: %q set to canceled", name)
		return a.setStatus(ctx, name, "canceled", desc, target)
	default:
		return err
	}
}

// currentStatus reads the latest status of name on the commit and tells
// whether it already is what would be posted.
func (a *annotator) currentStatus(ctx context.Context, name, state, desc, target string) (int64, bool, error) {
	type glStatus struct {
		ID          int64   `json:"id"`
		Status      string  `json:"status"`
		Name        string  `json:"name"`
		Description *string `json:"description"`
		TargetURL   *string `json:"target_url"`
	}
	var latest *glStatus
	err := listAll(ctx, a, call{
		op:    fmt.Sprintf("read commit status %q of %s in %s", name, a.req.CommitSHA[:12], a.project),
		elems: []string{"projects", a.project, "repository", "commits", a.req.CommitSHA, "statuses"},
		query: url.Values{"name": {name}},
	}, 10, func(s glStatus) {
		if s.Name == name && (latest == nil || s.ID > latest.ID) {
			latest = &s
		}
	})
	if err != nil || latest == nil {
		return 0, false, err
	}
	deref := func(p *string) string {
		if p == nil {
			return ""
		}
		return *p
	}
	return latest.ID, latest.Status == state && deref(latest.Description) == desc && deref(latest.TargetURL) == target, nil
}
