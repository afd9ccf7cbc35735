package oci

import (
	"context"
	"fmt"
	"time"

	"inthub.dev/pkg/connectors"
	"inthub.dev/pkg/fault"
)

// Capabilities reported as Checks.
const (
	CheckPing   = "ping"   // /v2/ answers and the credentials are accepted
	CheckTags   = "tags"   // the probe repository's tags can be listed
	CheckDigest = "digest" // a tag resolves to a digest (HEAD)
)

// TestConnection runs what the integration is used for, one Check each:
// ping (with the auth flow), the probe repository's tag list, and a tag →
// digest resolution by HEAD. Without a probeRepository only the ping runs,
// and Details say so.
func (c *Connector) TestConnection(ctx context.Context) connectors.Result {
	return c.probe(ctx, true)
}

// CheckHealth is the periodic check: ping, then HEAD of the probe tag (the
// first tag of the probe repository when no probeTag is set).
func (c *Connector) CheckHealth(ctx context.Context) connectors.Result {
	return c.probe(ctx, false)
}

// Probe runs the checks and appends them to r; Harbor runs it after its own.
func (c *Connector) probe(ctx context.Context, full bool) connectors.Result {
	start := time.Now()
	r := connectors.Result{Details: map[string]string{}}
	err := c.Run(ctx, full, &r)
	r = Finish(r, start, err, "registry API answers")
	if err != nil {
		c.log.WarnContext(ctx, "registry check failed", "operation", operation(full), "class", r.Class.String(), "error", r.Message)
	} else {
		c.log.DebugContext(ctx, "registry check passed", "operation", operation(full), "latencyMs", r.Latency.Milliseconds())
	}
	return r
}

// Run appends the registry checks to r (ping; tag list when full; digest)
// and fills Details. It stops at the first failure, as each check needs
// the one before, and returns it.
func (c *Connector) Run(ctx context.Context, full bool, r *connectors.Result) error {
	if r.Details == nil {
		r.Details = map[string]string{}
	}
	if err := c.ready(); err != nil {
		r.Checks = append(r.Checks, Failed(CheckPing, 0, err))
		return err
	}
	r.Details["endpoint"] = c.base.String()
	s := c.session()

	t := time.Now()
	if err := s.ping(ctx); err != nil {
		r.Checks = append(r.Checks, Failed(CheckPing, time.Since(t), err))
		return err
	}
	r.Checks = append(r.Checks, Passed(CheckPing, time.Since(t), "/v2/ answered; credentials accepted"))

	repo := c.conf.ProbeRepository
	if repo == "" {
		r.Details["probe"] = "no probeRepository configured: tags and digest were not checked"
		return nil
	}
	r.Details["repository"] = repo
	tag := c.conf.ProbeTag
	if full || tag == "" {
		limit := 100
		if !full {
			limit = 1
		}
		t = time.Now()
		page, err := s.listTags(ctx, repo, connectors.ListOptions{Limit: limit})
		if err != nil {
			r.Checks = append(r.Checks, Failed(CheckTags, time.Since(t), err))
			return err
		}
		if full {
			more := ""
			if page.Next != "" {
				more = " (first page)"
			}
			r.Checks = append(r.Checks, Passed(CheckTags, time.Since(t), fmt.Sprintf("%d tags listed in %s%s", len(page.Items), repo, more)))
		}
		if tag == "" {
			if len(page.Items) == 0 {
				err := fault.Permanent(fmt.Errorf("repository %s has no tags to resolve: push one or set probeTag", repo))
				r.Checks = append(r.Checks, Failed(CheckDigest, 0, err))
				return err
			}
			tag = page.Items[0].Name
		}
	}
	r.Details["tag"] = tag
	t = time.Now()
	d, err := s.resolveTag(ctx, repo, tag)
	if err != nil {
		r.Checks = append(r.Checks, Failed(CheckDigest, time.Since(t), err))
		return err
	}
	r.Details["digest"] = d
	r.Checks = append(r.Checks, Passed(CheckDigest, time.Since(t), fmt.Sprintf("%s:%s resolves to %s", repo, tag, d)))
	return nil
}

// Finish sets Status, Class, Message, Err and Latency: healthy when err is
// nil, else unhealthy with err's class and the failed check's message,
// since an integration whose capability fails cannot be used for it.
func Finish(r connectors.Result, start time.Time, err error, okMessage string) connectors.Result {
	r.Latency = time.Since(start)
	if err == nil {
		r.Status = connectors.StatusHealthy
		r.Message = okMessage
		return r
	}
	r.Status = connectors.StatusUnhealthy
	r.Err = err
	r.Class = classOf(err)
	r.Message = err.Error()
	for _, ch := range r.Checks {
		if !ch.OK {
			r.Message = ch.Capability + ": " + ch.Message
			break
		}
	}
	return r
}

func operation(full bool) string {
	if full {
		return "test_connection"
	}
	return "health_check"
}

func classOf(err error) fault.Class {
	if c := fault.ClassOf(err); c != fault.ClassUnknown {
		return c
	}
	// Unclassified is retried by the frame anyway; say so plainly.
	return fault.ClassTransient
}
