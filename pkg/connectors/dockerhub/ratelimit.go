package dockerhub

import (
	"context"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"inthub.dev/pkg/connectors"
)

// Docker Hub reports its pull budget on manifest requests as
//
//	ratelimit-limit: 100;w=21600
//	ratelimit-remaining: 76;w=21600
//
// (pulls per rolling window of w seconds; a HEAD costs nothing), and
// answers an exhausted budget with 429 TOOMANYREQUESTS and no Retry-After.
// The shared classifier reads neither form, so this transport records
// the budget for the check that asked, and gives a 429 a Retry-After
// derived from the window.

// budget is a parsed ratelimit pair.
type budget struct {
	limit, remaining int
	window           time.Duration
	source           string // docker-ratelimit-source: the IP or user id charged
}

// parseBudget reads the headers; ok is false when they are absent (a paid
// plan, a registry mirror) or malformed.
func parseBudget(h http.Header) (budget, bool) {
	limit, w1, ok1 := parseQuota(h.Get("Ratelimit-Limit"))
	remaining, w2, ok2 := parseQuota(h.Get("Ratelimit-Remaining"))
	if !ok1 || !ok2 {
		return budget{}, false
	}
	w := w1
	if w == 0 {
		w = w2
	}
	return budget{limit: limit, remaining: remaining, window: w, source: h.Get("Docker-Ratelimit-Source")}, true
}

// parseQuota reads "100;w=21600".
func parseQuota(v string) (n int, window time.Duration, ok bool) {
	head, params, _ := strings.Cut(v, ";")
	n, err := strconv.Atoi(strings.TrimSpace(head))
	if err != nil || n < 0 {
		return 0, 0, false
	}
	for p := range strings.SplitSeq(params, ";") {
		k, val, _ := strings.Cut(strings.TrimSpace(p), "=")
		if k == "w" {
			if secs, err := strconv.Atoi(val); err == nil && secs > 0 {
				window = time.Duration(secs) * time.Second
			}
		}
	}
	return n, window, true
}

// retryHint is how long to wait after a 429 that says no more: in a
// rolling window a pull frees up when the oldest one ages out, which the
// registry does not tell, so wait the mean spacing of the budget
// (window/limit), at least a minute.
func (b budget) retryHint() time.Duration {
	if b.limit <= 0 || b.window <= 0 {
		return time.Minute
	}
	return max(b.window/time.Duration(b.limit), time.Minute)
}

// RateLimit is the budget as connectors report it. The window rolls, so
// there is no reset time.
func (b budget) RateLimit() *connectors.RateLimit {
	return &connectors.RateLimit{Limit: b.limit, Remaining: b.remaining}
}

type recorderKey struct{}

// recorder keeps the last budget seen by the requests of one check.
type recorder struct {
	mu   sync.Mutex
	last budget
	seen bool
}

func withRecorder(ctx context.Context) (context.Context, *recorder) {
	r := &recorder{}
	return context.WithValue(ctx, recorderKey{}, r), r
}

func (r *recorder) get() (budget, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.last, r.seen
}

// rateTransport wraps the caller's transport (which carries the egress
// policy) for requests to the registry.
type rateTransport struct {
	base http.RoundTripper
}

func (t rateTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.base.RoundTrip(req)
	if err != nil {
		return resp, err
	}
	b, ok := parseBudget(resp.Header)
	if rec, _ := req.Context().Value(recorderKey{}).(*recorder); rec != nil && ok {
		rec.mu.Lock()
		rec.last, rec.seen = b, true
		rec.mu.Unlock()
	}
	if resp.StatusCode == http.StatusTooManyRequests && resp.Header.Get("Retry-After") == "" {
		// A 429 without even the budget headers still asks us to wait.
		resp.Header.Set("Retry-After", strconv.Itoa(int(b.retryHint().Seconds())))
	}
	return resp, nil
}

// rateClient is c with the rate transport in front of its own.
func rateClient(c *http.Client) *http.Client {
	if c == nil {
		c = http.DefaultClient
	}
	base := c.Transport
	if base == nil {
		base = http.DefaultTransport
	}
	out := *c
	out.Transport = rateTransport{base: base}
	return &out
}
