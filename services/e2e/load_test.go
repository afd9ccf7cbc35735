package e2e_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"inthub.dev/events"
	"inthub.dev/pkg/connectors/github/githubtest"
)

// What a request is expected to end as (DESIGN §4: processed once, DLQ or
// spool).
const (
	endPosted = "posted"
	endDLQ    = "dlq"
	endSpool  = "spool"
)

// sentRequest is one accepted Scanner request and how to find its effect
// on the fake GitHub.
type sentRequest struct {
	id     string
	op     string
	expect string // endPosted, endDLQ (GitHub refuses it) or endSpool (its integration is offline)
	pr     int    // comment
	sha    string // status, check run
	// context is a status's context, unique per request; externalID a
	// check run's, with notes annotations.
	context, externalID string
	notes               int
	at                  time.Time // sent (first publish attempt)
}

// annotationLoad publishes a mix of requests at a steady rate, as Scanner
// would, each accepted once (publish retried with the same Nats-Msg-Id
// until JetStream acks it):
//
//	n%10 == 0      a comment on pull request 999, which the repository
//	               does not have: GitHub's 404, permanent → DLQ
//	n%30 == 1      a status for an integration marked offline → spool
//	               (n%30 == 11, 21: as n%10 == 2)
//	n%10 in 2..4   a comment on one of pull requests 1-100
//	n%10 in 5..7   a commit status with a context of its own
//	n%10 in 8, 9   a check run with 3 annotations (60, two calls, for every
//	               other 8)
type annotationLoad struct {
	f        *fleet
	phase    string
	github   string // integration ids
	offline  string
	mu       sync.Mutex
	sent     []sentRequest
	n        int
	mixBasic bool // only requests that post (the benchmark)
}

func (l *annotationLoad) next() (events.AnnotationRequested, sentRequest) {
	l.mu.Lock()
	n := l.n
	l.n++
	l.mu.Unlock()
	repo := events.Repository{Owner: "acme", Name: "api"}
	kind := n % 10
	if kind == 1 && n%30 != 1 {
		// Few enough that the offline integration's breaker stays shut
		// (5 failures in a row open it, and an open breaker holds the
		// next request back for 30s before it is spooled).
		kind = 2
	}
	if l.mixBasic {
		kind = 2 + n%8
	}
	req := events.AnnotationRequested{IntegrationID: l.github, Repository: repo}
	// Statuses and check runs go to 50 commits, as a scanner's work
	// spreads over many: one commit with thousands of runs would time
	// the fake's listing of them.
	s := sentRequest{expect: endPosted, sha: githubtest.SHA(ghRepo, fmt.Sprintf("commit-%d", n%50))}
	switch {
	case kind == 0:
		req.Operation, req.PullRequest = events.OpComment, 999
		req.Comment = &events.Comment{Body: fmt.Sprintf("load %s %d: no such pull request", l.phase, n)}
		s.expect, s.pr = endDLQ, 999
	case kind == 1:
		req.IntegrationID, req.Operation, req.CommitSHA = l.offline, events.OpStatus, s.sha
		s.context = fmt.Sprintf("load/%s/%d", l.phase, n)
		req.Status = &events.CommitStatus{State: "pending", Context: s.context}
		s.expect = endSpool
	case kind <= 4:
		s.pr = 1 + n%100
		req.Operation, req.PullRequest = events.OpComment, s.pr
		req.Comment = &events.Comment{Body: fmt.Sprintf("load %s %d", l.phase, n)}
	case kind <= 7:
		s.context = fmt.Sprintf("load/%s/%d", l.phase, n)
		req.Operation, req.CommitSHA = events.OpStatus, s.sha
		req.Status = &events.CommitStatus{State: "success", Context: s.context, Description: "load"}
	default:
		s.externalID, s.notes = fmt.Sprintf("load-%s-%d", l.phase, n), 3
		if kind == 8 && (n/10)%2 == 0 {
			s.notes = 60
		}
		req.Operation, req.CommitSHA = events.OpCheckRun, s.sha
		req.CheckRun = &events.CheckRun{Name: "load/" + l.phase, Status: "completed", Conclusion: "success",
			ExternalID: s.externalID, Summary: "load", Annotations: annotations(s.notes)}
	}
	s.op = req.Operation
	return req, s
}

// run publishes at rate per second until ctx ends. A publish that cannot
// get through (NATS down) holds the loop; the ticker drops the ticks
// missed meanwhile, as a Scanner that waits for its publishes would.
func (l *annotationLoad) run(ctx context.Context, rate float64) error {
	tick := time.NewTicker(time.Duration(float64(time.Second) / rate))
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		req, s := l.next()
		ev, err := newRequest(req)
		if err != nil {
			return err
		}
		if err := l.publish(ctx, ev, s); err != nil {
			return err
		}
	}
}

// publish publishes one request and records it once accepted.
func (l *annotationLoad) publish(ctx context.Context, ev events.Event, s sentRequest) error {
	s.id, s.at = ev.ID, time.Now()
	// Once started, a publish is seen through even past the load's end: a
	// request Scanner began to send is one it will retry.
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 60*time.Second)
	defer cancel()
	if err := l.f.publish(pctx, ev); err != nil {
		return err
	}
	l.mu.Lock()
	l.sent = append(l.sent, s)
	l.mu.Unlock()
	return nil
}

func (l *annotationLoad) requests() []sentRequest {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.sent)
}

// outcome is where one request ended, counted on the fake GitHub and on
// the streams.
type outcome struct {
	posted      int // comments, statuses or check runs on the fake
	annotations int // of the check run, when posted
	dlq, spool  int // messages in DLQ / SPOOL
	completed   int // scm.annotation.completed
	deadLetter  int // scm.annotation.failed with deadLettered
	spooled     int // scm.annotation.failed with spooled
}

func (o outcome) ended() bool { return o.posted+o.dlq+o.spool > 0 }

// answered: the request's end was announced on scm.annotation.*.
func (o outcome) answered() bool {
	switch {
	case o.posted > 0:
		return o.completed > 0
	case o.dlq > 0:
		return o.deadLetter > 0
	case o.spool > 0:
		return o.spooled > 0
	}
	return false
}

var markerRE = regexp.MustCompile(`<!-- inthub:annotation key=(\S+) -->`)

// outcomes counts where each request ended. The answers are read first:
// a request's effect on GitHub and its DLQ or SPOOL message precede its
// scm.annotation.completed or failed, so what is read after an answer
// shows at least what the answer announced.
func (f *fleet) outcomes(ctx context.Context, reqs []sentRequest) (map[string]*outcome, error) {
	completed, failed, err := f.results(ctx)
	if err != nil {
		return nil, err
	}
	dlq, spool, err := f.parked(ctx)
	if err != nil {
		return nil, err
	}
	markers := map[int]map[string]int{} // pr → marker key → comments
	for _, r := range reqs {
		if r.op != events.OpComment || markers[r.pr] != nil {
			continue
		}
		m := map[string]int{}
		for _, c := range f.gh.Comments(ghRepo, r.pr) {
			if !c.Bot {
				continue
			}
			for _, k := range markerRE.FindAllStringSubmatch(c.Body, -1) {
				if key, err := url.QueryUnescape(k[1]); err == nil {
					m[key]++
				}
			}
		}
		markers[r.pr] = m
	}
	contexts := map[string][]githubtest.Status{} // sha + " " + context → statuses
	shas := map[string]bool{}
	for _, r := range reqs {
		if r.op == events.OpStatus && !shas[r.sha] {
			shas[r.sha] = true
			for _, s := range f.gh.Statuses(ghRepo, r.sha) {
				contexts[r.sha+" "+s.Context] = append(contexts[r.sha+" "+s.Context], s)
			}
		}
	}
	runs, notes := map[string]int{}, map[string]int{}
	for _, r := range f.gh.CheckRuns(ghRepo) {
		runs[r.ExternalID]++
		notes[r.ExternalID] += len(r.Annotations)
	}
	out := make(map[string]*outcome, len(reqs))
	for _, r := range reqs {
		o := &outcome{dlq: len(dlq[r.id]), spool: len(spool[r.id]), completed: len(completed[r.id])}
		for _, fl := range failed[r.id] {
			if fl.DeadLettered {
				o.deadLetter++
			}
			if fl.Spooled {
				o.spooled++
			}
		}
		switch r.op {
		case events.OpComment:
			o.posted = markers[r.pr]["request:"+r.id]
		case events.OpStatus:
			// A status is posted once even when a worker dies between
			// GitHub's answer and its ack: the redelivery finds it.
			o.posted = len(contexts[r.sha+" "+r.context])
		case events.OpCheckRun:
			o.posted, o.annotations = runs[r.externalID], notes[r.externalID]
		}
		out[r.id] = o
	}
	return out, nil
}

// settle waits until every request has ended somewhere and its end was
// announced, then checks the conservation law: each request posted once,
// or in the DLQ once, or in the spool once; none lost, none posted twice,
// none both posted and parked. It returns the outcomes and a summary.
func (f *fleet) settle(t testing.TB, reqs []sentRequest, d time.Duration) (map[string]*outcome, string) {
	t.Helper()
	var outs map[string]*outcome
	pending := func() []sentRequest {
		var p []sentRequest
		for _, r := range reqs {
			if o := outs[r.id]; !o.ended() || !o.answered() {
				p = append(p, r)
			}
		}
		return p
	}
	ok := eventually(d, func() bool {
		var err error
		if outs, err = f.outcomes(f.ctx, reqs); err != nil {
			t.Logf("counting outcomes: %v", err) // NATS may be on its way back
			return false
		}
		return len(pending()) == 0
	})
	if !ok {
		p := pending()
		var b strings.Builder
		for i, r := range p {
			if i == 10 {
				fmt.Fprintf(&b, "  ... and %d more\n", len(p)-10)
				break
			}
			fmt.Fprintf(&b, "  %s %s (expected %s): %+v\n", r.id, r.op, r.expect, *outs[r.id])
		}
		t.Errorf("%d of %d accepted requests not ended and announced after %v (lost?):\n%s", len(p), len(reqs), d, b.String())
	}
	counts := map[string]int{}
	dupResults := 0
	for _, r := range reqs {
		o := outs[r.id]
		if o == nil {
			continue
		}
		ends := 0
		for _, n := range []int{o.posted, o.dlq, o.spool} {
			if n > 0 {
				ends++
			}
		}
		switch {
		case o.posted > 1:
			t.Errorf("request %s (%s) posted %d times", r.id, r.op, o.posted)
		case o.dlq > 1 || o.spool > 1:
			t.Errorf("request %s (%s) in the DLQ %d times, in the spool %d times", r.id, r.op, o.dlq, o.spool)
		case ends > 1:
			t.Errorf("request %s (%s) ended in more than one place: %+v", r.id, r.op, *o)
		}
		if o.posted > 0 && r.op == events.OpCheckRun && o.annotations != r.notes {
			t.Errorf("check run %s shows %d annotations, want %d", r.externalID, o.annotations, r.notes)
		}
		end := endPosted
		switch {
		case o.dlq > 0:
			end = endDLQ
		case o.spool > 0:
			end = endSpool
		case o.posted == 0:
			end = "nowhere"
		}
		counts[end]++
		// The refused and the offline requests have one possible end; a
		// request GitHub accepts may still be dead-lettered after its
		// retries (the law allows it), which the summary shows.
		if r.expect != endPosted && end != r.expect {
			t.Errorf("request %s (%s) ended %s, want %s", r.id, r.op, end, r.expect)
		}
		if o.completed+o.deadLetter+o.spooled > 1 {
			dupResults++
		}
	}
	summary := fmt.Sprintf("%d accepted: %d posted, %d dead-lettered, %d spooled; %d answered more than once",
		len(reqs), counts[endPosted], counts[endDLQ], counts[endSpool], dupResults)
	return outs, summary
}

// --- integration changes through the API

// lifecycle is one integration that a change worker created, renamed and
// deleted, each change accepted by the API exactly once.
type lifecycle struct {
	id string
	// created, updated, deleted: when the request that the API accepted
	// was sent (the benchmark's clock).
	created, updated, deleted time.Time
}

// changeLoad drives integration changes through the catalog's API the way
// onboarding automation should: a create with an Idempotency-Key, an
// update with If-Match, a delete; each retried across transport errors
// and 5xx (the catalog killed, PostgreSQL cut) until the API accepts it,
// so each change happens once however often it is sent.
type changeLoad struct {
	f     *fleet
	phase string
	// pace is the least time between two lifecycles of one worker (0:
	// none); limit, when positive, stops after that many lifecycles.
	pace  time.Duration
	limit int
	mu    sync.Mutex
	n     int
	done  []lifecycle
	errs  []string
}

func (l *changeLoad) run(ctx context.Context, workers int) {
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			var pace <-chan time.Time
			if l.pace > 0 {
				t := time.NewTicker(l.pace)
				defer t.Stop()
				pace = t.C
			}
			for ctx.Err() == nil {
				if pace != nil {
					select {
					case <-ctx.Done():
						return
					case <-pace:
					}
				}
				l.mu.Lock()
				n := l.n
				l.n++
				l.mu.Unlock()
				if l.limit > 0 && n >= l.limit {
					return
				}
				// The lifecycle begun is finished even past the load's end.
				lc, err := l.one(context.WithoutCancel(ctx), n)
				l.mu.Lock()
				if err != nil {
					l.errs = append(l.errs, err.Error())
				} else {
					l.done = append(l.done, lc)
				}
				l.mu.Unlock()
				if err != nil {
					return
				}
			}
		})
	}
	wg.Wait()
}

func (l *changeLoad) lifecycles() ([]lifecycle, []string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.done), slices.Clone(l.errs)
}

// retry sends one change until the API answers something other than a
// transport error or a 5xx, for at most a minute. sent is when the
// answered attempt was sent.
func (l *changeLoad) retry(ctx context.Context, method, path string, body any, header map[string]string) (r apiResult, sent time.Time, err error) {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	for {
		rctx, rcancel := context.WithTimeout(ctx, 10*time.Second)
		sent = time.Now()
		r, err = l.f.call(rctx, method, path, body, header)
		rcancel()
		if err == nil && r.status < 500 {
			return r, sent, nil
		}
		select {
		case <-ctx.Done():
			if err == nil {
				err = fmt.Errorf("%d: %s", r.status, r.body)
			}
			return r, sent, fmt.Errorf("%s %s: not accepted within a minute: %w", method, path, err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (l *changeLoad) one(ctx context.Context, n int) (lifecycle, error) {
	name := fmt.Sprintf("chg-%s-%d", l.phase, n)
	var lc lifecycle
	config := map[string]any{"healthy": true}
	r, sent, err := l.retry(ctx, "POST", "/api/v1/integrations", map[string]any{"type": "test.inmemory", "name": name, "config": config},
		map[string]string{"Idempotency-Key": name})
	if err != nil {
		return lc, err
	}
	if r.status != http.StatusCreated {
		return lc, fmt.Errorf("create %s: %d %s", name, r.status, r.body)
	}
	lc.created = sent
	var it integration
	if err := jsonUnmarshal(r.body, &it); err != nil {
		return lc, err
	}
	lc.id = it.ID
	path := "/api/v1/integrations/" + it.ID
	r, sent, err = l.retry(ctx, "PUT", path, map[string]any{"type": it.Type, "name": name + "-u", "config": config},
		map[string]string{"If-Match": strconv.Quote("1")})
	if err != nil {
		return lc, err
	}
	switch r.status {
	case http.StatusOK:
	case http.StatusPreconditionFailed:
		// An earlier attempt went through but its answer was lost: the
		// version and the name say whether the change is ours.
		g, _, err := l.retry(ctx, "GET", path, nil, nil)
		if err != nil {
			return lc, err
		}
		var cur integration
		if err := jsonUnmarshal(g.body, &cur); err != nil || cur.Version != 2 || cur.Name != name+"-u" {
			return lc, fmt.Errorf("update %s: 412, and the integration reads %s", name, g.body)
		}
	default:
		return lc, fmt.Errorf("update %s: %d %s", name, r.status, r.body)
	}
	lc.updated = sent
	r, sent, err = l.retry(ctx, "DELETE", path, nil, nil)
	if err != nil {
		return lc, err
	}
	// 404: an earlier attempt deleted it and its answer was lost.
	if r.status != http.StatusNoContent && r.status != http.StatusNotFound {
		return lc, fmt.Errorf("delete %s: %d %s", name, r.status, r.body)
	}
	lc.deleted = sent
	return lc, nil
}

// checkLifecycles waits until the subscriber has every accepted change of
// every lifecycle and checks that each integration shows created v1,
// updated v2, deleted, each once and in that order, and health
// transitions that chain (previous status = the last announced) and none
// after the delete.
func checkLifecycles(t testing.TB, sig *signals, lcs []lifecycle, d time.Duration) {
	t.Helper()
	lifecycleOnly := func(rs []received) []string {
		var out []string
		for _, r := range rs {
			if r.subject != events.SubjectIntegrationHealthChanged {
				out = append(out, r.String())
			}
		}
		return out
	}
	want := []string{events.SubjectIntegrationCreated + " v1", events.SubjectIntegrationUpdated + " v2", events.SubjectIntegrationDeleted}
	deadline := time.Now().Add(d)
	for _, lc := range lcs {
		got, _ := sig.waitFor(time.Until(deadline), lc.id, func(rs []received) bool { return len(lifecycleOnly(rs)) >= 3 })
		if have := lifecycleOnly(got); !slices.Equal(have, want) {
			t.Errorf("integration %s: the subscriber received %v, want %v", lc.id, have, want)
		}
		prev, deleted := events.HealthUnknown, false
		for _, r := range got {
			switch r.subject {
			case events.SubjectIntegrationDeleted:
				deleted = true
			case events.SubjectIntegrationHealthChanged:
				if deleted || r.prev != prev || r.status == r.prev {
					t.Errorf("integration %s: %s after %v (deleted %v)", lc.id, r, prev, deleted)
				}
				prev = r.status
			}
		}
	}
	if p := sig.problems(); len(p) > 0 {
		t.Errorf("subscriber: %v", p)
	}
}

func jsonUnmarshal(b []byte, v any) error {
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%w: %s", err, b)
	}
	return nil
}
