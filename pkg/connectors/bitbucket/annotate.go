package bitbucket

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
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
	// MaxCommentBody is the longest comment inthub posts: Data Center
	// refuses a comment over 32,768 characters; Cloud takes more, and
	// one limit for both keeps a scan's comment the same on either.
	MaxCommentBody = 32768
	// maxStatusField bounds a build status's name and description (255
	// on Data Center; Cloud is held to the same).
	maxStatusField = 255
	// maxStatusURL is Data Center's limit on a build status's url.
	maxStatusURL = 450
	// Build status keys: Data Center takes 255 characters, Cloud's
	// keys are short identifiers ("BB-DEPLOY"); a longer context is
	// shortened with a hash so that it stays one stable key.
	maxCloudStatusKey = 40
	maxDCStatusKey    = 255
	// maxCommentPages bounds a listing of a pull request's comments
	// (10,000 on Cloud, 100,000 activities on Data Center); beyond it a
	// marker could be missed, so the call fails rather than post twice.
	maxCommentPages = 100
	annotationTTL   = 30 * time.Minute
)

// Marker is the hidden first line that identifies inthub's comment for
// key on a pull request. Bitbucket's Markdown (Cloud and Data Center)
// does not pass HTML through, so the HTML comment of
// connectors.CommentMarker would show as text; an empty link reference
// definition renders as nothing in any CommonMark renderer.
func Marker(key string) string {
	return "[//]: # (inthub:annotation key=" + url.QueryEscape(key) + ")"
}

var markerRE = regexp.MustCompile(`\[//\]: # \(inthub:annotation key=[^)\s]*\)`)

// annotationState is what Annotate keeps between calls of one connector:
// the markers of inthub's comments per pull request (so a sticky comment
// costs one listing, then none), who the credential is, whether Data
// Center has only the legacy build-status API, and locks that serialise
// the calls touching one pull request.
type annotationState struct {
	comments *cache.Cache[prKey, *sticky.Index]
	mu       sync.Mutex
	me       string // Cloud account uuid or Data Center user name, "" until known
	legacy   bool   // Data Center before 7.4: /rest/build-status/1.0 only
	locks    *sticky.Locks
}

func newAnnotationState() *annotationState {
	return &annotationState{
		comments: cache.New[prKey, *sticky.Index](cache.Options{Name: "bitbucket_annotation_comments", Size: 2000, TTL: annotationTTL}),
		locks:    sticky.NewLocks("bitbucket"),
	}
}

func (s *annotationState) setMe(id string) {
	if id == "" {
		return
	}
	s.mu.Lock()
	s.me = id
	s.mu.Unlock()
}

func (s *annotationState) getMe() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.me
}

func (s *annotationState) setLegacy() {
	s.mu.Lock()
	s.legacy = true
	s.mu.Unlock()
}

func (s *annotationState) isLegacy() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.legacy
}

type prKey struct {
	repo string // lower case "owner/slug"
	id   int
}

// AnnotationScope is the API host and a hash of the credential's AuthRef
// (never the secret): Bitbucket's limits are per user or token.
func (c *Connector) AnnotationScope() (host, account string) {
	if c.root != nil {
		host = c.root.Host
	}
	ref := c.conf.Token
	switch {
	case c.conf.Password != "":
		ref = c.conf.Username + "\x00" + c.conf.Password
	case ref == "":
		ref = c.cfg.AuthRef
	}
	sum := sha256.Sum256([]byte(ref))
	return host, "cred/" + hex.EncodeToString(sum[:8])
}

// Writes is one for a comment or a status; a check run is a Code
// Insights report, the clearing of the last run's annotations, and the
// annotations in batches of 100.
func (c *Connector) Writes(req connectors.AnnotationRequest) int {
	switch req.Operation {
	case events.OpComment, events.OpStatus:
		return 1
	case events.OpCheckRun:
		n := 0
		if req.CheckRun != nil {
			n = min(len(req.CheckRun.Annotations), maxReportAnnotations)
		}
		// The report's put, the clearing of the last run (Cloud deletes
		// the report, Data Center its annotations), the batches.
		return 2 + (n+maxAnnotationBatch-1)/maxAnnotationBatch
	}
	return 0
}

// Annotate performs req. The Posted it returns counts the calls made
// also when it fails, so that the caller can charge its budget.
func (c *Connector) Annotate(ctx context.Context, req connectors.AnnotationRequest) (connectors.Posted, error) {
	a := &annotator{c: c, req: req}
	err := a.run(ctx)
	if err == nil && a.p.Writes == 0 {
		a.p.Unchanged = true
	}
	return a.p, err
}

// annotator is one Annotate call.
type annotator struct {
	c           *Connector
	req         connectors.AnnotationRequest
	cred        credential
	owner, slug string
	p           connectors.Posted
}

func (a *annotator) run(ctx context.Context) error {
	c, req := a.c, a.req
	if c.confErr != nil {
		return c.confErr
	}
	owner := req.Repository.Owner
	if owner == "" {
		owner = c.owner
	}
	var err error
	if a.owner, a.slug, err = c.splitRepo(owner + "/" + req.Repository.Name); err != nil {
		return err
	}
	switch req.Operation {
	case events.OpComment:
		switch {
		case req.Comment == nil:
			return fault.Permanentf("bitbucket: a comment request without its comment")
		case req.PullRequest < 1:
			return fault.Permanentf("bitbucket: a comment needs the pull request's id (pullRequest)")
		case req.Comment.UpdateExisting && req.Comment.Key == "":
			return fault.Permanentf("bitbucket: a comment with updateExisting needs a key")
		}
	case events.OpStatus:
		if req.Status == nil {
			return fault.Permanentf("bitbucket: a status request without its status")
		}
		if err := checkSHA(req.CommitSHA); err != nil {
			return err
		}
	case events.OpCheckRun:
		if req.CheckRun == nil {
			return fault.Permanentf("bitbucket: a check_run request without its checkRun")
		}
		if err := checkSHA(req.CommitSHA); err != nil {
			return err
		}
	default:
		return fault.Permanentf("bitbucket: unknown annotation operation %q", req.Operation)
	}
	if a.cred, err = c.credential(ctx); err != nil {
		return err
	}
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
		return fault.Permanentf("bitbucket: commitSha must be a commit's 40 lowercase hex digits")
	}
	return nil
}

func (a *annotator) read(ctx context.Context, cl call, out any) (response, error) {
	resp, err := a.c.get(ctx, a.cred, cl, out)
	a.p.Reads++
	a.noteResp(resp)
	return resp, err
}

func (a *annotator) write(ctx context.Context, method string, cl call, in, out any) error {
	resp, err := a.c.send(ctx, a.cred, method, cl, in, out)
	a.noteResp(resp)
	if err == nil {
		a.p.Writes++
	}
	return err
}

func (a *annotator) noteResp(resp response) {
	if resp.rateLimit != nil {
		a.p.RateLimit = resp.rateLimit
	}
	if resp.user != "" && !a.c.cloud() {
		a.c.ann.setMe(resp.user)
	}
}

func (a *annotator) note(format string, args ...any) {
	n := fmt.Sprintf(format, args...)
	if !slices.Contains(a.p.Notes, n) {
		a.p.Notes = append(a.p.Notes, n)
	}
}

// outcomeUnknown reports whether a failed write may have been applied
// anyway (its answer was lost).
func outcomeUnknown(err error) bool {
	return err != nil && fault.ClassOf(err) != fault.ClassPermanent
}

func (a *annotator) prKey() prKey {
	return prKey{repo: strings.ToLower(a.owner + "/" + a.slug), id: a.req.PullRequest}
}

func (a *annotator) repoWeb() string {
	if a.c.cloud() {
		return a.c.web + "/" + a.owner + "/" + a.slug
	}
	return a.c.web + "/projects/" + a.owner + "/repos/" + a.slug
}

func (a *annotator) prURL() string {
	return a.repoWeb() + "/pull-requests/" + strconv.Itoa(a.req.PullRequest)
}

func (a *annotator) commitURL() string { return a.repoWeb() + "/commits/" + a.req.CommitSHA }

func (a *annotator) commentURL(id int64) string {
	if a.c.cloud() {
		return a.prURL() + "#comment-" + strconv.FormatInt(id, 10)
	}
	return a.prURL() + "/overview?commentId=" + strconv.FormatInt(id, 10)
}

// commentsCall is the pull request's comments: Cloud's comments, Data
// Center's comment resource (listed through its activities).
func (a *annotator) commentsCall(op string, elems ...string) call {
	pr := strconv.Itoa(a.req.PullRequest)
	if a.c.cloud() {
		return call{op: fmt.Sprintf("%s (pull request #%s of %s/%s)", op, pr, a.owner, a.slug),
			elems: append([]string{"repositories", a.owner, a.slug, "pullrequests", pr, "comments"}, elems...), scope: "pullrequest:write"}
	}
	return call{op: fmt.Sprintf("%s (pull request #%s of %s/%s)", op, pr, a.owner, a.slug),
		elems: append([]string{"projects", a.owner, "repos", a.slug, "pull-requests", pr, "comments"}, elems...), perm: "REPO_READ"}
}

// me is who the credential is, for telling inthub's comments from a
// person's who quoted a marker: the Cloud account's uuid (read once; an
// access token has no account to read, so "" and the marker alone
// decides) or the Data Center user name (from X-AUSERNAME, which every
// authenticated answer carries).
func (a *annotator) me(ctx context.Context) (string, error) {
	if id := a.c.ann.getMe(); id != "" || !a.c.cloud() || a.c.bearer() {
		return id, nil
	}
	var u struct {
		UUID string `json:"uuid"`
	}
	if _, err := a.read(ctx, call{op: "read the account", elems: []string{"user"}, scope: "account"}, &u); err != nil {
		if statusOf(err) == http.StatusForbidden {
			// A scoped API token without read:user:bitbucket: the
			// marker alone decides, as for an access token.
			return "", nil
		}
		return "", err
	}
	a.c.ann.setMe(u.UUID)
	return u.UUID, nil
}

// bbComment is either flavour's comment.
type bbComment struct {
	ID      int64 `json:"id"`
	Content *struct {
		Raw string `json:"raw"`
	} `json:"content"` // Cloud
	User *struct {
		UUID string `json:"uuid"`
	} `json:"user"` // Cloud
	Deleted bool            `json:"deleted"` // Cloud
	Inline  json.RawMessage `json:"inline"`  // Cloud
	Parent  json.RawMessage `json:"parent"`  // Cloud
	Text    string          `json:"text"`    // Data Center
	Version int             `json:"version"` // Data Center
	Author  *struct {
		Name string `json:"name"`
	} `json:"author"` // Data Center
}

func (b bbComment) text() string {
	if b.Content != nil {
		return b.Content.Raw
	}
	return b.Text
}

func (b bbComment) author() string {
	switch {
	case b.User != nil:
		return b.User.UUID
	case b.Author != nil:
		return b.Author.Name
	}
	return ""
}

// index returns the markers of inthub's comments on the pull request:
// cached, or read from every page of its comments (Cloud) or activities
// (Data Center).
func (a *annotator) index(ctx context.Context) (*sticky.Index, error) {
	key := a.prKey()
	if idx, ok := a.c.ann.comments.Get(key); ok {
		return idx, nil
	}
	me, err := a.me(ctx)
	if err != nil {
		return nil, err
	}
	var all []bbComment
	if err := a.listComments(ctx, func(b bbComment) { all = append(all, b) }); err != nil {
		return nil, err
	}
	if me == "" {
		me = a.c.ann.getMe() // Data Center: learnt from the listing's answers
	}
	idx := sticky.NewIndex(markerRE)
	slices.SortFunc(all, func(x, y bbComment) int { return int(x.ID - y.ID) })
	for _, b := range all {
		if b.Deleted || (me != "" && b.author() != me) {
			continue
		}
		idx.Add(b.ID, b.Version, b.text())
	}
	a.c.ann.comments.Set(key, idx)
	return idx, nil
}

// listComments reads every comment of the pull request.
func (a *annotator) listComments(ctx context.Context, each func(bbComment)) error {
	cursor := ""
	for n := 0; ; n++ {
		if n == maxCommentPages {
			return fault.Permanentf("bitbucket: list comments of pull request #%d: more than %d pages", a.req.PullRequest, maxCommentPages)
		}
		q := url.Values{}
		var cl call
		if a.c.cloud() {
			q.Set("pagelen", strconv.Itoa(maxCloudPageLen))
			cl = a.commentsCall("list comments")
			cl.scope = "pullrequest"
		} else {
			q.Set("limit", strconv.Itoa(maxDCLimit))
			pr := strconv.Itoa(a.req.PullRequest)
			cl = call{op: fmt.Sprintf("list activities (pull request #%s of %s/%s)", pr, a.owner, a.slug),
				elems: []string{"projects", a.owner, "repos", a.slug, "pull-requests", pr, "activities"}, perm: "REPO_READ"}
		}
		if err := a.c.applyCursor(q, cursor); err != nil {
			return err
		}
		cl.query = q
		if a.c.cloud() {
			var p page[bbComment]
			if _, err := a.read(ctx, cl, &p); err != nil {
				return err
			}
			for _, b := range p.Values {
				// Inline comments and replies are never inthub's
				// sticky comment.
				if len(b.Inline) == 0 && len(b.Parent) == 0 {
					each(b)
				}
			}
			cursor = a.c.cursor(p.Next, nil, nil)
		} else {
			var p page[struct {
				Action  string     `json:"action"`
				Comment *bbComment `json:"comment"`
			}]
			if _, err := a.read(ctx, cl, &p); err != nil {
				return err
			}
			for _, act := range p.Values {
				if act.Action == "COMMENTED" && act.Comment != nil {
					each(*act.Comment)
				}
			}
			cursor = a.c.cursor("", p.IsLastPage, p.NextPageStart)
		}
		if cursor == "" {
			return nil
		}
	}
}

func (a *annotator) remember(b bbComment) {
	idx, ok := a.c.ann.comments.Get(a.prKey())
	if !ok {
		return
	}
	idx.Add(b.ID, b.Version, b.text())
}

func (a *annotator) drop(id int64) {
	if idx, ok := a.c.ann.comments.Get(a.prKey()); ok {
		idx.Drop(id)
	}
}

// forget drops what is known of the pull request's comments after a
// write whose outcome is unknown: the next attempt reads them again.
func (a *annotator) forget(err error) {
	if outcomeUnknown(err) {
		a.c.ann.comments.Delete(a.prKey())
	}
}

func (a *annotator) commentBody(text string) any {
	if a.c.cloud() {
		return map[string]any{"content": map[string]string{"raw": text}}
	}
	return map[string]any{"text": text}
}

func (a *annotator) createComment(ctx context.Context, body string) (int64, error) {
	var b bbComment
	if err := a.write(ctx, http.MethodPost, a.commentsCall("post a comment"), a.commentBody(body), &b); err != nil {
		a.forget(err)
		return 0, err
	}
	if b.ID == 0 {
		return 0, fault.Permanentf("bitbucket: post a comment: the answer has no id")
	}
	if b.text() == "" {
		b.Text = body
	}
	a.remember(b)
	return b.ID, nil
}

// editComment edits an inthub comment; gone is set when it no longer
// exists (deleted by hand) or is not the credential's to edit (a person
// quoted the marker), for the caller to post it again.
func (a *annotator) editComment(ctx context.Context, ref sticky.Ref, body string) (gone bool, err error) {
	in := a.commentBody(body)
	if !a.c.cloud() {
		in.(map[string]any)["version"] = ref.Version
	}
	var b bbComment
	err = a.write(ctx, http.MethodPut, a.commentsCall("edit comment "+strconv.FormatInt(ref.ID, 10), strconv.FormatInt(ref.ID, 10)), in, &b)
	switch code := statusOf(err); {
	case code == http.StatusNotFound, code == http.StatusForbidden:
		a.drop(ref.ID)
		return true, nil
	case code == http.StatusConflict:
		// Data Center: someone edited it since it was read. Read again;
		// the next attempt edits the version there is now.
		a.c.ann.comments.Delete(a.prKey())
		return false, fault.Transient(err)
	case err != nil:
		a.forget(err)
		return false, err
	}
	if b.ID == 0 {
		b.ID = ref.ID
	}
	if b.text() == "" {
		b.Text = body
	}
	a.remember(b)
	return false, nil
}

// compose puts the marker first and cuts the text so that the whole fits
// Bitbucket's comment, with a visible note when cut.
func (a *annotator) compose(header, text, what string) string {
	body, cut := sticky.Compose(header, text, MaxCommentBody)
	if cut {
		a.note("%s cut to %d characters", what, MaxCommentBody)
	}
	return body
}

// comment posts or edits a pull request comment. A sticky comment
// (updateExisting) is found by its key's marker; any other carries the
// request's marker, which a retry looks up so that it does not post twice.
func (a *annotator) comment(ctx context.Context) error {
	header, lookup := sticky.Plan(Marker, a.req)
	body := a.compose(header, a.req.Comment.Body, "comment body")

	unlock, err := a.c.ann.locks.Lock(ctx, "pr:"+a.prKey().repo+"#"+strconv.Itoa(a.req.PullRequest))
	if err != nil {
		return err
	}
	defer unlock()

	id, err := sticky.Put(ctx, lookup, a.req.Comment.UpdateExisting, body, a.index, a.createComment, a.editComment)
	if err != nil {
		return err
	}
	a.p.URL = a.commentURL(id)
	a.p.ExternalID = strconv.FormatInt(id, 10)
	return nil
}

// statusState maps the contract's status states to Bitbucket's.
var statusStates = map[string]string{"pending": "INPROGRESS", "success": "SUCCESSFUL", "failure": "FAILED", "error": "FAILED"}

func (a *annotator) status(ctx context.Context) error {
	st := a.req.Status
	state, ok := statusStates[st.State]
	if !ok {
		return fault.Permanentf("bitbucket: unknown status state %q (pending, success, failure or error)", st.State)
	}
	return a.setStatus(ctx, st.Context, state, st.Description, st.TargetURL)
}

// statusKey is the build status key of a context: the context itself when
// it fits, else a prefix and a hash of the whole, stable across calls.
func (a *annotator) statusKey(context string) string {
	limit := maxDCStatusKey
	if a.c.cloud() {
		limit = maxCloudStatusKey
	}
	if context == "" {
		context = "inthub"
	}
	if utf8.RuneCountInString(context) <= limit {
		return context
	}
	sum := sha256.Sum256([]byte(context))
	h := hex.EncodeToString(sum[:])[:12]
	a.note("status key shortened to %d characters (the name keeps the full context)", limit)
	return string([]rune(context)[:limit-len(h)-1]) + "-" + h
}

// setStatus posts a build status. Bitbucket keeps one status per commit
// and key and overwrites it on the next post, so a repeat is the same
// status, never a second one; nothing needs reading first.
func (a *annotator) setStatus(ctx context.Context, context, state, desc, target string) error {
	key := a.statusKey(context)
	name, cut := connectors.CutPlain(context, maxStatusField)
	if cut {
		a.note("status name cut to %d characters", maxStatusField)
	}
	if desc, cut = connectors.CutPlain(desc, maxStatusField); cut {
		a.note("status description cut to %d characters", maxStatusField)
	}
	a.p.URL = a.commitURL()
	if target == "" {
		// Both flavours require a url: the commit is the page there is.
		target = a.p.URL
	} else if utf8.RuneCountInString(target) > maxStatusURL {
		a.note("target URL replaced by the commit's: Bitbucket takes at most %d characters", maxStatusURL)
		target = a.p.URL
	}
	in := map[string]any{"key": key, "state": state, "name": name, "url": target}
	if desc != "" {
		in["description"] = desc
	}
	a.p.ExternalID = key
	op := fmt.Sprintf("set build status %q of %s in %s/%s", key, a.req.CommitSHA[:12], a.owner, a.slug)
	if a.c.cloud() {
		return a.write(ctx, http.MethodPost, call{op: op, scope: "repository",
			elems: []string{"repositories", a.owner, a.slug, "commit", a.req.CommitSHA, "statuses", "build"}}, in, nil)
	}
	if in["state"] == "STOPPED" {
		in["state"] = "CANCELLED"
	}
	if !a.c.ann.isLegacy() {
		err := a.write(ctx, http.MethodPost, call{op: op, perm: "REPO_READ",
			elems: []string{"projects", a.owner, "repos", a.slug, "commits", a.req.CommitSHA, "builds"}}, in, nil)
		if statusOf(err) != http.StatusNotFound || strings.HasPrefix(saidOf(err).exception, "com.atlassian.bitbucket.") {
			return err
		}
		// No such resource (rather than no such repository or commit):
		// Data Center before 7.4 has only the legacy API.
		a.c.ann.setLegacy()
		a.note("Bitbucket Data Center before 7.4: build status posted through the legacy build-status API")
	}
	if in["state"] == "CANCELLED" {
		in["state"] = "FAILED" // the legacy API has no CANCELLED
	}
	return a.write(ctx, http.MethodPost, call{op: op, perm: "REPO_READ", root: "/rest/build-status/1.0",
		elems: []string{"commits", a.req.CommitSHA}}, in, nil)
}
