package github

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	gh "github.com/google/go-github/v62/github"

	"inthub.dev/events"
	"inthub.dev/pkg/connectors"
	"inthub.dev/pkg/connectors/cache"
	"inthub.dev/pkg/fault"
)

// Annotations: scan results written back to GitHub as the installation,
// one scm.annotation.requested per Annotate call.
//
// Every call is safe to repeat. A comment carries a hidden marker (its
// key, or the request id) and is found and edited rather than posted
// again; a check run is found by its external id, and annotations it
// already shows are not sent twice (GitHub appends annotations on every
// update and removes none). The connector remembers what it wrote, in
// bounded caches, so that a sticky comment costs one lookup once and one
// write after, and a status GitHub already shows costs nothing.

var _ connectors.Annotator = (*Connector)(nil)

const (
	// annotationCacheSize and annotationCacheTTL bound what the connector
	// remembers of its writes, per kind. A forgotten comment or check run
	// is looked up again; a forgotten status count lets GitHub's own 422
	// say when the 1,000th status is reached.
	annotationCacheSize = 10_000
	annotationCacheTTL  = 24 * time.Hour

	// maxAnnotationMessage is GitHub's bound on an annotation's message:
	// 64 KiB, in bytes.
	maxAnnotationMessage = 64 << 10

	// maxLookupPages bounds a lookup's pages (100 items each), so an
	// endpoint that always has a next page cannot keep a worker busy.
	maxLookupPages = 300

	// defaultStatusContext is the context GitHub gives a status sent
	// without one.
	defaultStatusContext = "default"
)

// annotations is the connector's memory of its writes. The zero value is
// ready: the caches are made at the first use.
type annotations struct {
	once     sync.Once
	comments *cache.Cache[commentKey, commentRef]
	statuses *cache.Cache[statusKey, statusRef]
	runs     *cache.Cache[runKey, runRef]
	locks    keyedLocks
}

func (a *annotations) init() {
	a.once.Do(func() {
		o := cache.Options{Size: annotationCacheSize, TTL: annotationCacheTTL, Sliding: true}
		a.comments = cache.New[commentKey, commentRef](o)
		a.statuses = cache.New[statusKey, statusRef](o)
		a.runs = cache.New[runKey, runRef](o)
	})
}

// commentKey names a marked comment: the repository (lower case), the
// pull request and the marker's key.
type commentKey struct {
	repo   string
	pr     int
	marker string
}

type commentRef struct {
	id   int64
	url  string
	body [sha256.Size]byte // of the body last written or read
}

type statusKey struct{ repo, sha, context string }

type statusPost struct{ state, description, targetURL string }

type statusRef struct {
	count int        // statuses this connector posted for the sha and context
	last  statusPost // the last of them
}

type runKey struct{ repo, sha, name, externalID string }

type runRef struct {
	id  int64
	url string
}

// AnnotationScope is the API host and the installation: GitHub's write
// limits (secondary limits, the hourly budget) are per installation.
func (c *Connector) AnnotationScope() (host, account string) {
	if c.apiURL != nil {
		host = c.apiURL.Host
	}
	return host, "installation/" + strconv.FormatInt(c.conf.InstallationID, 10)
}

// Writes is one for a comment or a status, and one per 50 annotations
// (at least one) for a check run: a create with the first 50, an update
// with each next 50. Lookups are reads and not counted. Two cases cost
// less (a status or comment GitHub already shows: none; a retry: only
// what is missing) and one costs more: a sticky comment someone deleted
// is edited (refused), then posted again.
func (c *Connector) Writes(req connectors.AnnotationRequest) int {
	switch req.Operation {
	case events.OpComment, events.OpStatus:
		return 1
	case events.OpCheckRun:
		n := 0
		if req.CheckRun != nil {
			n = len(req.CheckRun.Annotations)
		}
		return max(1, (n+connectors.MaxAnnotationsPerCall-1)/connectors.MaxAnnotationsPerCall)
	default:
		return 0
	}
}

// Annotate performs req: a pull-request comment, a commit status or a
// check run. The Posted it returns counts the calls made also when it
// fails, so the caller can charge its budget.
func (c *Connector) Annotate(ctx context.Context, req connectors.AnnotationRequest) (connectors.Posted, error) {
	var p connectors.Posted
	if err := c.Validate(); err != nil {
		return p, err
	}
	c.ann.init()
	owner, name, err := c.splitRepo(req.Repository.Owner + "/" + req.Repository.Name)
	if err != nil {
		return p, err
	}
	w := &writer{c: c, req: req, p: &p, owner: owner, name: name, repo: owner + "/" + name}
	switch req.Operation {
	case events.OpComment:
		err = w.comment(ctx)
	case events.OpStatus:
		err = w.status(ctx)
	case events.OpCheckRun:
		err = w.checkRun(ctx)
	default:
		err = fault.Permanentf("scm.github: operation %q is not comment, status or check_run", req.Operation)
	}
	if err == nil {
		c.log.LogAttrs(ctx, slog.LevelDebug, "annotation written", slog.String("operation", req.Operation),
			slog.String("repository", w.repo), slog.Int("prNumber", req.PullRequest), slog.String("commitSha", req.CommitSHA),
			slog.Int("reads", p.Reads), slog.Int("writes", p.Writes), slog.Bool("unchanged", p.Unchanged))
	}
	return p, err
}

// writer performs one request.
type writer struct {
	c           *Connector
	req         connectors.AnnotationRequest
	p           *connectors.Posted
	owner, name string
	repo        string // owner/name as GitHub spells it in the request
}

// call makes one API call, counts it and keeps the rate limit it reports.
func (w *writer) call(ctx context.Context, o op, write bool, f func(ctx context.Context) (*gh.Response, error)) error {
	if write {
		w.p.Writes++
	} else {
		w.p.Reads++
	}
	o.kind, o.repo = opRepo, w.repo
	return w.c.call(ctx, o, func(ctx context.Context) error {
		resp, err := f(ctx)
		if resp != nil && resp.Rate.Limit > 0 {
			w.p.RateLimit = &connectors.RateLimit{Limit: resp.Rate.Limit, Remaining: resp.Rate.Remaining, Reset: resp.Rate.Reset.Time.UTC()}
		}
		return err
	})
}

func (w *writer) note(format string, args ...any) {
	w.p.Notes = append(w.p.Notes, fmt.Sprintf(format, args...))
}

// --- comments

const commentPerm = "issues: write or pull_requests: write"

func (w *writer) comment(ctx context.Context) error {
	cm, pr := w.req.Comment, w.req.PullRequest
	if cm == nil {
		return fault.Permanentf("scm.github: a comment request without a comment")
	}
	if pr < 1 {
		return fault.Permanentf("scm.github: a comment needs the pull request's number")
	}
	// A sticky comment is found by its key; any other by the request's
	// id, so that a retry finds what an earlier attempt posted. The key
	// marks a comment that is not sticky too, so that a later sticky
	// request with that key takes it over.
	marker := "request:" + w.req.ID
	header := connectors.CommentMarker(marker)
	switch {
	case cm.UpdateExisting && cm.Key != "":
		marker = cm.Key
		header = connectors.CommentMarker(marker)
	case cm.Key != "":
		header += "\n" + connectors.CommentMarker(cm.Key)
	}
	const sep = "\n\n"
	text, cut := connectors.Cut(cm.Body, connectors.MaxCommentBody-utf8.RuneCountInString(header+sep))
	if cut {
		w.note("comment body cut to fit GitHub's %d characters", connectors.MaxCommentBody)
	}
	body := header + sep + text

	key := commentKey{repo: strings.ToLower(w.repo), pr: pr, marker: marker}
	unlock, err := w.c.ann.locks.lock(ctx, key)
	if err != nil {
		return err
	}
	defer unlock()

	if !cm.UpdateExisting && w.req.Attempt <= 1 {
		return w.createComment(ctx, key, body)
	}
	ref, ok := w.c.ann.comments.Get(key)
	if !ok {
		found, err := w.findComment(ctx, marker)
		if err != nil {
			return err
		}
		if found != nil {
			ref, ok = commentRef{id: found.GetID(), url: found.GetHTMLURL(), body: sha256.Sum256([]byte(found.GetBody()))}, true
			w.c.ann.comments.Set(key, ref)
		}
	}
	if !ok {
		return w.createComment(ctx, key, body)
	}
	w.p.URL, w.p.ExternalID = ref.url, strconv.FormatInt(ref.id, 10)
	if ref.body == sha256.Sum256([]byte(body)) {
		w.p.Unchanged = true
		return nil
	}
	err = w.editComment(ctx, key, ref.id, body)
	if isStatus(err, http.StatusNotFound) {
		// Someone deleted the comment: post it again.
		w.c.ann.comments.Delete(key)
		return w.createComment(ctx, key, body)
	}
	return err
}

// findComment looks for the app's comment carrying marker on the pull
// request, oldest first. Only comments of a bot count: a person who
// quotes the marker must not have their comment taken for inthub's.
func (w *writer) findComment(ctx context.Context, marker string) (*gh.IssueComment, error) {
	pr := w.req.PullRequest
	o := op{name: fmt.Sprintf("look up inthub's comment on pull request #%d of %s", pr, w.repo), target: fmt.Sprintf("pull request #%d", pr)}
	opts := &gh.IssueListCommentsOptions{ListOptions: gh.ListOptions{PerPage: maxPerPage}}
	for range maxLookupPages {
		var list []*gh.IssueComment
		var resp *gh.Response
		err := w.call(ctx, o, false, func(ctx context.Context) (*gh.Response, error) {
			var err error
			list, resp, err = w.c.inst.Issues.ListComments(ctx, w.owner, w.name, pr, opts)
			return resp, err
		})
		if err != nil {
			return nil, err
		}
		for _, cm := range list {
			if cm.GetUser().GetType() == "Bot" && connectors.HasMarker(cm.GetBody(), marker) {
				return cm, nil
			}
		}
		if resp.NextPage == 0 {
			return nil, nil
		}
		opts.Page = resp.NextPage
	}
	return nil, fault.Permanentf("scm.github: %s: pull request #%d has more than %d comments; not searched further", o.name, pr, maxLookupPages*maxPerPage)
}

func (w *writer) createComment(ctx context.Context, key commentKey, body string) error {
	pr := w.req.PullRequest
	var cm *gh.IssueComment
	err := w.call(ctx, op{name: fmt.Sprintf("comment on pull request #%d of %s", pr, w.repo), target: fmt.Sprintf("pull request #%d", pr), perm: commentPerm}, true,
		func(ctx context.Context) (*gh.Response, error) {
			var resp *gh.Response
			var err error
			cm, resp, err = w.c.inst.Issues.CreateComment(ctx, w.owner, w.name, pr, &gh.IssueComment{Body: &body})
			return resp, err
		})
	if err != nil {
		return err
	}
	w.remember(key, cm, body)
	return nil
}

func (w *writer) editComment(ctx context.Context, key commentKey, id int64, body string) error {
	var cm *gh.IssueComment
	err := w.call(ctx, op{name: fmt.Sprintf("edit comment %d on pull request #%d of %s", id, w.req.PullRequest, w.repo),
		target: fmt.Sprintf("comment %d", id), perm: commentPerm}, true,
		func(ctx context.Context) (*gh.Response, error) {
			var resp *gh.Response
			var err error
			cm, resp, err = w.c.inst.Issues.EditComment(ctx, w.owner, w.name, id, &gh.IssueComment{Body: &body})
			return resp, err
		})
	if err != nil {
		return err
	}
	w.remember(key, cm, body)
	return nil
}

func (w *writer) remember(key commentKey, cm *gh.IssueComment, body string) {
	ref := commentRef{id: cm.GetID(), url: cm.GetHTMLURL(), body: sha256.Sum256([]byte(body))}
	w.c.ann.comments.Set(key, ref)
	w.p.URL, w.p.ExternalID = ref.url, strconv.FormatInt(ref.id, 10)
}

// --- statuses

// commitSHA is a full commit id: go-github puts it into the URL's path
// unescaped, so nothing else may pass.
var commitSHA = regexp.MustCompile(`^(?:[0-9a-f]{40}|[0-9a-f]{64})$`)

func (w *writer) sha() (string, error) {
	sha := strings.ToLower(w.req.CommitSHA)
	if !commitSHA.MatchString(sha) {
		return "", fault.Permanentf("scm.github: commitSha %q is not a full commit id (40 hex digits)", w.req.CommitSHA)
	}
	return sha, nil
}

func (w *writer) status(ctx context.Context) error {
	st := w.req.Status
	if st == nil {
		return fault.Permanentf("scm.github: a status request without a status")
	}
	sha, err := w.sha()
	if err != nil {
		return err
	}
	desc, cut := connectors.CutPlain(st.Description, connectors.MaxStatusDescription)
	if cut {
		w.note("status description cut to %d characters", connectors.MaxStatusDescription)
	}
	post := statusPost{state: st.State, description: desc, targetURL: st.TargetURL}
	name := st.Context
	if name == "" {
		name = defaultStatusContext
	}
	key := statusKey{repo: strings.ToLower(w.repo), sha: sha, context: name}
	unlock, err := w.c.ann.locks.lock(ctx, key)
	if err != nil {
		return err
	}
	defer unlock()

	w.p.URL = w.c.webRoot() + w.repo + "/commit/" + sha
	ref, ok := w.c.ann.statuses.Get(key)
	if !ok && w.req.Attempt > 1 {
		// A redelivery may follow a worker that created the status and
		// died before its ack: GitHub keeps every status, so posting the
		// same one again would list it twice and spend the context's
		// 1,000. The newest status of the context tells.
		if ref, err = w.findStatus(ctx, sha, name); err != nil {
			return err
		}
		w.c.ann.statuses.Set(key, ref)
	}
	if ref.count > 0 && ref.last == post {
		w.p.Unchanged = true
		return nil
	}
	if ref.count >= connectors.MaxStatusesPerSHAContext {
		return fault.Permanent(&apiError{op: fmt.Sprintf("set status %q on commit %s of %s", name, short(sha), w.repo),
			msg: fmt.Sprintf("the commit already has %d statuses for this context, GitHub's limit; a new status needs a new commit or another context",
				connectors.MaxStatusesPerSHAContext)})
	}
	rs := &gh.RepoStatus{State: &post.state, Context: &name}
	if desc != "" {
		rs.Description = &desc
	}
	if st.TargetURL != "" {
		rs.TargetURL = &post.targetURL
	}
	var out *gh.RepoStatus
	err = w.call(ctx, op{name: fmt.Sprintf("set status %q on commit %s of %s", name, short(sha), w.repo), perm: "statuses: write"}, true,
		func(ctx context.Context) (*gh.Response, error) {
			var resp *gh.Response
			var err error
			out, resp, err = w.c.inst.Repositories.CreateStatus(ctx, w.owner, w.name, sha, rs)
			return resp, err
		})
	if err != nil {
		return err
	}
	w.c.ann.statuses.Set(key, statusRef{count: ref.count + 1, last: post})
	w.p.ExternalID = strconv.FormatInt(out.GetID(), 10)
	return nil
}

// findStatus reads the newest page of the commit's statuses (100, newest
// first) and returns the newest of context name with the number of that
// context seen there: a lower bound past the first page, which is as far
// as a redelivery is worth reading.
func (w *writer) findStatus(ctx context.Context, sha, name string) (statusRef, error) {
	var list []*gh.RepoStatus
	o := op{name: fmt.Sprintf("look up status %q on commit %s of %s", name, short(sha), w.repo), target: "commit " + short(sha)}
	err := w.call(ctx, o, false, func(ctx context.Context) (*gh.Response, error) {
		var resp *gh.Response
		var err error
		list, resp, err = w.c.inst.Repositories.ListStatuses(ctx, w.owner, w.name, sha, &gh.ListOptions{PerPage: maxPerPage})
		return resp, err
	})
	if err != nil {
		return statusRef{}, err
	}
	var ref statusRef
	for _, st := range list {
		if st.GetContext() != name {
			continue
		}
		if ref.count == 0 {
			ref.last = statusPost{state: st.GetState(), description: st.GetDescription(), targetURL: st.GetTargetURL()}
		}
		ref.count++
	}
	return ref, nil
}

// short is a commit id as people read it in a message.
func short(sha string) string { return sha[:12] }

// webRoot is the web UI's root, for links to what has no html_url of its
// own (a commit, for a status).
func (c *Connector) webRoot() string {
	host := c.apiURL.Host
	switch {
	case host == "api.github.com":
		return "https://github.com/"
	case strings.HasPrefix(host, "api.") && strings.HasSuffix(host, ".ghe.com"):
		return "https://" + strings.TrimPrefix(host, "api.") + "/"
	default:
		return strings.TrimSuffix(c.ends.api, "api/v3/")
	}
}

// --- check runs

func (w *writer) checkRun(ctx context.Context) error {
	cr := w.req.CheckRun
	if cr == nil || cr.Name == "" {
		return fault.Permanentf("scm.github: a check_run request without a check run name")
	}
	sha, err := w.sha()
	if err != nil {
		return err
	}
	extID := cr.ExternalID
	if extID == "" {
		extID = w.req.ID
	}
	anns := w.annotations(cr.Annotations)
	summary, cutSummary := connectors.Cut(cr.Summary, connectors.MaxCheckRunText)
	text, cutText := connectors.Cut(cr.Text, connectors.MaxCheckRunText)
	if cutSummary {
		w.note("check run summary cut to %d characters", connectors.MaxCheckRunText)
	}
	if cutText {
		w.note("check run text cut to %d characters", connectors.MaxCheckRunText)
	}
	if summary == "" && (text != "" || len(anns) > 0) {
		// GitHub requires a summary with any output.
		summary = fmt.Sprintf("%d annotations", len(anns))
	}
	output := func(batch []*gh.CheckRunAnnotation) *gh.CheckRunOutput {
		if summary == "" {
			return nil
		}
		o := &gh.CheckRunOutput{Title: &cr.Name, Summary: &summary, Annotations: batch}
		if text != "" {
			o.Text = &text
		}
		return o
	}
	opt := func(s string) *string {
		if s == "" {
			return nil
		}
		return &s
	}

	key := runKey{repo: strings.ToLower(w.repo), sha: sha, name: cr.Name, externalID: extID}
	unlock, err := w.c.ann.locks.lock(ctx, key)
	if err != nil {
		return err
	}
	defer unlock()

	ref, found := w.c.ann.runs.Get(key)
	if !found {
		run, err := w.findRun(ctx, sha, cr.Name, extID)
		if err != nil {
			return err
		}
		if run != nil {
			ref, found = runRef{id: run.GetID(), url: run.GetHTMLURL()}, true
			w.c.ann.runs.Set(key, ref)
		}
	}
	pending := anns
	if found && len(anns) > 0 {
		// A retry, or a later request for the same run: GitHub keeps
		// every annotation it was sent, so send only those it lacks.
		have, err := w.listAnnotations(ctx, ref.id)
		if err != nil {
			return err
		}
		pending = missing(anns, have)
	}
	batch, rest := split(pending)

	if !found {
		var run *gh.CheckRun
		err := w.call(ctx, op{name: fmt.Sprintf("create check run %q on commit %s of %s", cr.Name, short(sha), w.repo), perm: "checks: write"}, true,
			func(ctx context.Context) (*gh.Response, error) {
				var resp *gh.Response
				var err error
				run, resp, err = w.c.inst.Checks.CreateCheckRun(ctx, w.owner, w.name, gh.CreateCheckRunOptions{
					Name: cr.Name, HeadSHA: sha, ExternalID: &extID,
					Status: opt(cr.Status), Conclusion: opt(cr.Conclusion), Output: output(batch),
				})
				return resp, err
			})
		if err != nil {
			return err
		}
		ref = runRef{id: run.GetID(), url: run.GetHTMLURL()}
		w.c.ann.runs.Set(key, ref)
	} else if err := w.updateRun(ctx, ref.id, gh.UpdateCheckRunOptions{
		Name: cr.Name, Status: opt(cr.Status), Conclusion: opt(cr.Conclusion), Output: output(batch),
	}); err != nil {
		return err
	}
	w.p.URL, w.p.ExternalID = ref.url, strconv.FormatInt(ref.id, 10)
	for len(rest) > 0 {
		batch, rest = split(rest)
		if err := w.updateRun(ctx, ref.id, gh.UpdateCheckRunOptions{Name: cr.Name, Output: output(batch)}); err != nil {
			return err
		}
	}
	return nil
}

func split(anns []*gh.CheckRunAnnotation) (batch, rest []*gh.CheckRunAnnotation) {
	n := min(len(anns), connectors.MaxAnnotationsPerCall)
	return anns[:n], anns[n:]
}

func (w *writer) updateRun(ctx context.Context, id int64, o gh.UpdateCheckRunOptions) error {
	return w.call(ctx, op{name: fmt.Sprintf("update check run %d of %s", id, w.repo), target: fmt.Sprintf("check run %d", id), perm: "checks: write"}, true,
		func(ctx context.Context) (*gh.Response, error) {
			_, resp, err := w.c.inst.Checks.UpdateCheckRun(ctx, w.owner, w.name, id, o)
			return resp, err
		})
}

// findRun looks for the app's check run of name with extID on sha. It
// asks for every run (filter=all): GitHub's default shows only the latest
// run of each name.
func (w *writer) findRun(ctx context.Context, sha, name, extID string) (*gh.CheckRun, error) {
	o := op{name: fmt.Sprintf("look up check run %q of commit %s of %s", name, short(sha), w.repo)}
	appID := w.c.conf.AppID
	opts := &gh.ListCheckRunsOptions{CheckName: &name, Filter: gh.String("all"), AppID: &appID, ListOptions: gh.ListOptions{PerPage: maxPerPage}}
	for range maxLookupPages {
		var res *gh.ListCheckRunsResults
		var resp *gh.Response
		err := w.call(ctx, o, false, func(ctx context.Context) (*gh.Response, error) {
			var err error
			res, resp, err = w.c.inst.Checks.ListCheckRunsForRef(ctx, w.owner, w.name, sha, opts)
			return resp, err
		})
		if err != nil {
			return nil, err
		}
		for _, run := range res.CheckRuns {
			if run.GetExternalID() == extID {
				return run, nil
			}
		}
		if resp.NextPage == 0 {
			return nil, nil
		}
		opts.Page = resp.NextPage
	}
	return nil, fault.Permanentf("scm.github: %s: more than %d check runs; not searched further", o.name, maxLookupPages*maxPerPage)
}

func (w *writer) listAnnotations(ctx context.Context, id int64) ([]*gh.CheckRunAnnotation, error) {
	o := op{name: fmt.Sprintf("list the annotations of check run %d of %s", id, w.repo), target: fmt.Sprintf("check run %d", id)}
	opts := &gh.ListOptions{PerPage: maxPerPage}
	var all []*gh.CheckRunAnnotation
	for range maxLookupPages {
		var list []*gh.CheckRunAnnotation
		var resp *gh.Response
		err := w.call(ctx, o, false, func(ctx context.Context) (*gh.Response, error) {
			var err error
			list, resp, err = w.c.inst.Checks.ListCheckRunAnnotations(ctx, w.owner, w.name, id, opts)
			return resp, err
		})
		if err != nil {
			return nil, err
		}
		all = append(all, list...)
		if resp.NextPage == 0 {
			return all, nil
		}
		opts.Page = resp.NextPage
	}
	return nil, fault.Permanentf("scm.github: %s: more than %d annotations; not read further", o.name, maxLookupPages*maxPerPage)
}

// annotations turns the request's annotations into GitHub's, fitted to
// its limits; what was changed is noted once per kind.
func (w *writer) annotations(in []events.Annotation) []*gh.CheckRunAnnotation {
	out := make([]*gh.CheckRunAnnotation, 0, len(in))
	var titles, messages int
	unknown := map[string]bool{}
	for _, a := range in {
		level, known := annotationLevel(a.Level)
		if !known {
			unknown[a.Level] = true
		}
		title, cut := connectors.CutPlain(a.Title, connectors.MaxAnnotationTitle)
		if cut {
			titles++
		}
		msg, cut := cutBytes(a.Message, maxAnnotationMessage)
		if cut {
			messages++
		}
		if msg == "" {
			msg = "(no message)"
		}
		start := max(a.StartLine, 1)
		end := max(a.EndLine, start)
		ga := &gh.CheckRunAnnotation{Path: gh.String(a.Path), StartLine: gh.Int(start), EndLine: gh.Int(end),
			AnnotationLevel: gh.String(level), Message: gh.String(msg)}
		if title != "" {
			ga.Title = gh.String(title)
		}
		out = append(out, ga)
	}
	if titles > 0 {
		w.note("%d annotation titles cut to %d characters", titles, connectors.MaxAnnotationTitle)
	}
	if messages > 0 {
		w.note("%d annotation messages cut to 64 KiB", messages)
	}
	for l := range unknown {
		w.note("annotation level %q is not GitHub's; shown as warning", l)
	}
	return out
}

// annotationLevel maps a severity onto GitHub's three levels.
func annotationLevel(s string) (level string, known bool) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "failure", "error", "critical", "high", "fatal":
		return "failure", true
	case "warning", "warn", "medium", "moderate":
		return "warning", true
	case "notice", "info", "low", "note":
		return "notice", true
	default:
		return "warning", false
	}
}

// cutBytes is connectors.Cut for a limit in bytes: the longest cut (in
// characters) whose result fits.
func cutBytes(s string, max int) (string, bool) {
	if len(s) <= max {
		return s, false
	}
	lo, hi := 0, max // characters; a cut to max characters may still be too many bytes
	for lo < hi {
		mid := (lo + hi + 1) / 2
		if out, _ := connectors.Cut(s, mid); len(out) <= max {
			lo = mid
		} else {
			hi = mid - 1
		}
	}
	out, _ := connectors.Cut(s, lo)
	return out, true
}

// annotationID is what tells two annotations apart: where, and what it
// says. Level and title stay out, in case GitHub reports them otherwise
// than they were sent (an absent title as ""), which must not make a
// retry send an annotation twice.
type annotationID struct {
	path       string
	start, end int
	message    string
}

func idOf(a *gh.CheckRunAnnotation) annotationID {
	return annotationID{a.GetPath(), a.GetStartLine(), a.GetEndLine(), a.GetMessage()}
}

// missing is want without what have already holds (as a multiset), in
// want's order.
func missing(want, have []*gh.CheckRunAnnotation) []*gh.CheckRunAnnotation {
	seen := make(map[annotationID]int, len(have))
	for _, a := range have {
		seen[idOf(a)]++
	}
	var out []*gh.CheckRunAnnotation
	for _, a := range want {
		if id := idOf(a); seen[id] > 0 {
			seen[id]--
			continue
		}
		out = append(out, a)
	}
	return out
}

// isStatus reports whether err is GitHub's answer with status code.
func isStatus(err error, code int) bool {
	var er *gh.ErrorResponse
	return errors.As(err, &er) && er.Response != nil && er.Response.StatusCode == code
}

// keyedLocks serialises the calls for one thing (a comment's key, a check
// run, a status context), so that two concurrent requests for it cannot
// both miss the lookup and both create.
type keyedLocks struct {
	mu sync.Mutex
	m  map[any]*keyLock
}

type keyLock struct {
	ch    chan struct{}
	users int
}

func (k *keyedLocks) lock(ctx context.Context, key any) (unlock func(), err error) {
	k.mu.Lock()
	if k.m == nil {
		k.m = map[any]*keyLock{}
	}
	l := k.m[key]
	if l == nil {
		l = &keyLock{ch: make(chan struct{}, 1)}
		k.m[key] = l
	}
	l.users++
	k.mu.Unlock()
	select {
	case l.ch <- struct{}{}:
		return func() {
			<-l.ch
			k.release(key, l)
		}, nil
	case <-ctx.Done():
		k.release(key, l)
		return nil, fault.Transient(fmt.Errorf("scm.github: waiting for another call on the same annotation: %w", ctx.Err()))
	}
}

func (k *keyedLocks) release(key any, l *keyLock) {
	k.mu.Lock()
	defer k.mu.Unlock()
	l.users--
	if l.users == 0 {
		delete(k.m, key)
	}
}
