package inmemory

import (
	"context"
	"fmt"
	"sync"

	"inthub.dev/pkg/connectors"
)

var _ connectors.Annotator = (*Connector)(nil)

// AnnotationScope is one account on a host of its own per integration.
func (c *Connector) AnnotationScope() (host, account string) {
	return "inmemory", c.cfg.IntegrationID
}

// Writes is one write per request, as a status on GitHub.
func (c *Connector) Writes(connectors.AnnotationRequest) int { return 1 }

// Annotate posts nothing anywhere: it takes the configured latency, fails
// as failWith (or the script's step) says, and otherwise reports a post at
// a made-up URL. The same sticky comment key on the same pull request
// keeps one id, as a real provider's edited comment does.
func (c *Connector) Annotate(ctx context.Context, req connectors.AnnotationRequest) (connectors.Posted, error) {
	if err := c.enter(ctx); err != nil {
		return connectors.Posted{}, err
	}
	switch step := c.step(); step {
	case stepTransient, stepPermanent, stepOffline:
		return connectors.Posted{}, c.failure(step)
	}
	repo := req.Repository.Owner + "/" + req.Repository.Name
	id := req.ID
	var url string
	switch req.Operation {
	case "comment":
		if req.Comment != nil && req.Comment.UpdateExisting {
			id = c.stickyID(fmt.Sprintf("%s#%d/%s", repo, req.PullRequest, req.Comment.Key), req.ID)
		}
		url = fmt.Sprintf("https://inmemory.invalid/%s/pull/%d#comment-%s", repo, req.PullRequest, id)
	case "check_run":
		url = fmt.Sprintf("https://inmemory.invalid/%s/commit/%s/checks/%s", repo, req.CommitSHA, id)
	default:
		url = fmt.Sprintf("https://inmemory.invalid/%s/commit/%s/statuses", repo, req.CommitSHA)
	}
	return connectors.Posted{URL: url, ExternalID: id, Writes: 1}, nil
}

// stickies remembers sticky comment ids per connector (one integration
// version in the worker's cache).
type stickies struct {
	mu sync.Mutex
	m  map[string]string
}

func (c *Connector) stickyID(key, fresh string) string {
	c.sticky.mu.Lock()
	defer c.sticky.mu.Unlock()
	if c.sticky.m == nil {
		c.sticky.m = map[string]string{}
	}
	if id, ok := c.sticky.m[key]; ok {
		return id
	}
	c.sticky.m[key] = fresh
	return fresh
}
