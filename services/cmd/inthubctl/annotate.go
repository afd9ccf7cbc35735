package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"inthub.dev/events"
	"inthub.dev/pkg/bus"
)

// annotateOpts are the flags of `inthubctl annotate`.
type annotateOpts struct {
	tenant, integration, repo, sha string
	pr                             int
	comment, key                   string
	status, context, desc, target  string
	checkRun, conclusion, summary  string
	wait                           time.Duration
}

func annotateCommand() command {
	return command{
		group: "annotate", summary: "publish an annotation request, as Scanner does, and wait for its result",
		about: `Publishes one scm.annotation.requested for an integration: a pull-request
comment (--comment, sticky with --key), a commit status (--status) or a check
run (--check-run). Then waits up to --wait for the scm.annotation.completed or
scm.annotation.failed that carries its request id, and prints it; exit 1 when
it failed. --wait 0 publishes and returns at once.

  inthubctl annotate --tenant T --integration I --repo acme/api --pr 42 --comment 'scan: 0 findings' --key scan
  inthubctl annotate --tenant T --integration I --repo acme/api --sha <40 hex> --status success --context scan`,
		flags: func(fs *flag.FlagSet, o *opts) {
			a := &o.ann
			fs.StringVar(&a.tenant, "tenant", "", "tenant `ID` of the integration (required)")
			fs.StringVar(&a.integration, "integration", "", "integration `ID` (required)")
			fs.StringVar(&a.repo, "repo", "", "repository `OWNER/NAME` (GitLab: the full group path, then the project) (required)")
			fs.IntVar(&a.pr, "pr", 0, "pull (merge) request `NUMBER`; required with --comment")
			fs.StringVar(&a.sha, "sha", "", "commit `SHA` (40 hex); required with --status and --check-run")
			fs.StringVar(&a.comment, "comment", "", "post a comment with this `BODY`")
			fs.StringVar(&a.key, "key", "", "sticky comment `KEY`: the comment with this key is edited instead of adding another")
			fs.StringVar(&a.status, "status", "", "post a commit status: `STATE` pending, success, failure or error")
			fs.StringVar(&a.context, "context", "inthubctl", "status `CONTEXT`")
			fs.StringVar(&a.desc, "description", "", "status `TEXT`")
			fs.StringVar(&a.target, "target-url", "", "status link `URL`")
			fs.StringVar(&a.checkRun, "check-run", "", "post a completed check run with this `NAME`")
			fs.StringVar(&a.conclusion, "conclusion", "success", "check run `CONCLUSION`")
			fs.StringVar(&a.summary, "summary", "", "check run summary `TEXT`")
			fs.DurationVar(&a.wait, "wait", 30*time.Second, "how long to wait for the result (`DURATION`; 0: do not wait)")
		},
		run: (*app).annotate,
	}
}

var repoRE = regexp.MustCompile(`^(.+)/([^/]+)$`)

// request builds the payload from the flags; a mistake is a usage error.
func (a annotateOpts) request(c string) (events.AnnotationRequested, error) {
	r := events.AnnotationRequested{IntegrationID: a.integration, PullRequest: a.pr, CommitSHA: a.sha}
	switch {
	case a.tenant == "":
		return r, usagef(c, "--tenant is required")
	case a.integration == "":
		return r, usagef(c, "--integration is required")
	}
	m := repoRE.FindStringSubmatch(a.repo)
	if m == nil {
		return r, usagef(c, "--repo %q: want OWNER/NAME", a.repo)
	}
	r.Repository = events.Repository{Owner: m[1], Name: m[2]}
	n := 0
	for _, s := range []string{a.comment, a.status, a.checkRun} {
		if s != "" {
			n++
		}
	}
	if n != 1 {
		return r, usagef(c, "give exactly one of --comment, --status, --check-run")
	}
	switch {
	case a.comment != "":
		r.Operation = events.OpComment
		r.Comment = &events.Comment{Body: a.comment, Key: a.key, UpdateExisting: a.key != ""}
	case a.status != "":
		r.Operation = events.OpStatus
		r.Status = &events.CommitStatus{State: a.status, Context: a.context, Description: a.desc, TargetURL: a.target}
	default:
		r.Operation = events.OpCheckRun
		r.CheckRun = &events.CheckRun{Name: a.checkRun, Status: "completed", Conclusion: a.conclusion, Summary: a.summary}
	}
	return r, nil
}

func (a *app) annotate(o *opts, pos []string) error {
	const c = "inthubctl annotate"
	if err := noArgs(c, pos); err != nil {
		return err
	}
	req, err := o.ann.request(c)
	if err != nil {
		return err
	}
	// The schema says what else is wrong (a comment without --pr, a short
	// sha), naming the field.
	ev, err := events.New(events.SubjectAnnotationRequested, "inthubctl", o.ann.tenant, req)
	if err != nil {
		return usagef(c, "%v", err)
	}
	nc, err := dialNATS(o.natsURL)
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(a.ctx, o.ann.wait+10*time.Second)
	defer cancel()
	// Listen before publishing, so a fast answer is not missed.
	var results jetstream.Consumer
	if o.ann.wait > 0 {
		// An ephemeral consumer exists once this returns (an ordered one
		// would be created at the first fetch, after a fast answer).
		results, err = js.CreateConsumer(ctx, bus.StreamSCM, jetstream.ConsumerConfig{
			FilterSubjects:    []string{events.SubjectAnnotationCompleted, events.SubjectAnnotationFailed},
			DeliverPolicy:     jetstream.DeliverNewPolicy,
			AckPolicy:         jetstream.AckNonePolicy,
			InactiveThreshold: time.Minute,
		})
		if err != nil {
			return fmt.Errorf("listen for the result: %w", err)
		}
	}
	body, err := ev.Marshal()
	if err != nil {
		return err
	}
	msg := &nats.Msg{Subject: ev.Type, Data: body, Header: nats.Header{}}
	msg.Header.Set(bus.HeaderMsgID, ev.ID)
	msg.Header.Set(bus.HeaderTenantID, ev.TenantID)
	msg.Header.Set(bus.HeaderIntegrationID, req.IntegrationID)
	if _, err := js.PublishMsg(ctx, msg); err != nil {
		return fmt.Errorf("publish: %w", err)
	}
	fmt.Fprintf(a.stdout, "published %s %s (request id %s)\n", ev.Type, req.Operation, ev.ID)
	if o.ann.wait <= 0 {
		return nil
	}
	return a.awaitResult(ctx, results, ev.ID, o)
}

func (a *app) awaitResult(ctx context.Context, cons jetstream.Consumer, id string, o *opts) error {
	it, err := cons.Messages()
	if err != nil {
		return fmt.Errorf("read results: %w", err)
	}
	defer it.Stop()
	deadline := time.Now().Add(o.ann.wait)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return fmt.Errorf("no result for request %s within %s: is the annotation worker running? (the request stays on the bus)", id, o.ann.wait)
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		m, err := it.Next(jetstream.NextMaxWait(min(left, 2*time.Second)))
		if errors.Is(err, nats.ErrTimeout) {
			continue
		}
		if err != nil {
			return fmt.Errorf("read results: %w", err)
		}
		ev, err := events.Parse(m.Data())
		if err != nil {
			continue
		}
		var ref struct {
			RequestID string `json:"requestId"`
		}
		if json.Unmarshal(ev.Data, &ref) != nil || ref.RequestID != id {
			continue
		}
		if o.output == "json" {
			if err := writeJSON(a.stdout, ev); err != nil {
				return err
			}
		} else {
			fmt.Fprintf(a.stdout, "%s\n%s\n", ev.Type, indent(string(ev.Data)))
		}
		if ev.Type == events.SubjectAnnotationFailed {
			return errors.New("the annotation failed (see above; inthubctl dlq list shows dead letters)")
		}
		return nil
	}
}

func indent(s string) string { return "  " + strings.ReplaceAll(s, "\n", "\n  ") }
