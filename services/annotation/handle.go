package annotation

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"time"

	"github.com/google/uuid"

	"inthub.dev/events"
	"inthub.dev/pkg/bus"
	"inthub.dev/pkg/connectors"
	"inthub.dev/pkg/deadletter"
	"inthub.dev/pkg/fault"
)

// handle posts one scm.annotation.requested.
func (s *Service) handle(ctx context.Context, ev events.Event) error {
	err := s.post(ctx, ev)
	var r *refused
	if errors.As(err, &r) {
		// Decided before any call to the provider (invalid, unknown,
		// disabled, marked offline): the integration's breaker must not
		// count it. Counted as a failure, five requests for an integration
		// marked offline would open the breaker of a provider nobody
		// called; counted as a success, a refusal would close a half-open
		// breaker without its trial.
		return bus.NotCalled(err)
	}
	return err
}

func (s *Service) post(ctx context.Context, ev events.Event) error {
	start := time.Now()
	var req events.AnnotationRequested
	if err := ev.Decode(&req); err != nil {
		return refuse(fault.Permanentf("malformed scm.annotation.requested: %w", err))
	}
	if err := check(req); err != nil {
		return refuse(err)
	}
	log := s.log.With(slog.String("integrationId", req.IntegrationID), slog.String("tenantId", ev.TenantID),
		slog.String("operation", req.Operation), slog.String("requestId", ev.ID))
	if req.PullRequest > 0 {
		log = log.With(slog.Int("prNumber", req.PullRequest))
	}
	if req.CommitSHA != "" {
		log = log.With(slog.String("commitSha", req.CommitSHA))
	}

	// Get checks the tenant: another tenant's integration reads as unknown.
	in, ok := s.set.Get(ev.TenantID, req.IntegrationID)
	if !ok {
		if age := time.Since(ev.Time); age >= 0 && age < unknownGrace {
			// Scanner may ask right after the integration was created,
			// before this worker's copy of the bucket has it: wait a
			// little before calling it unknown.
			return bus.Defer(time.Second, "integration "+req.IntegrationID+" not known yet")
		}
		return refuse(fault.Permanentf("integration %s is unknown to tenant %s: never created, deleted, or another tenant's", req.IntegrationID, ev.TenantID))
	}
	switch in.Status {
	case statusDisabled:
		return refuse(fault.Permanentf("integration %s is disabled: enable it, then replay the dead letter", in.ID))
	case statusOffline:
		return refuse(fault.Offline(fmt.Errorf("integration %s is marked offline; the request waits in the spool until it is healthy again", in.ID)))
	}
	ann, provider, err := s.annotator(ctx, in)
	if err != nil {
		return err
	}
	log = log.With(slog.String("provider", provider))

	// Deliveries spent waiting for the budget (deferrals) are not
	// attempts; the worker counts them across restarts and replicas.
	attempt := max(int(bus.DeliveryFrom(ctx).Counted()), 1)
	areq := connectors.AnnotationRequest{ID: ev.ID, Attempt: attempt, AnnotationRequested: req}
	host, account := ann.AnnotationScope()
	host, account = provider+":"+host, provider+":"+host+"/"+account
	vs := variants(ann, areq)
	g := s.budgets.acquire(ev.ID, account, host, costs(vs))
	if g.wait > 0 {
		s.m.deferred.WithLabelValues(provider).Inc()
		log.LogAttrs(ctx, slog.LevelDebug, "write budget short: deferred", slog.Duration("wait", g.wait),
			slog.String("level", vs[g.level].name))
		return bus.Defer(g.wait, fmt.Sprintf("write budget of %s", account))
	}
	v := vs[g.level]
	v.req.Attempt = attempt
	if g.level > 0 {
		s.m.fallbacks.WithLabelValues(provider, v.name).Inc()
		log.Info("write budget short: posting a cheaper form", "level", v.name, "writes", v.cost, "requestedWrites", vs[0].cost)
	}

	// Writes to one account go one at a time, as GitHub asks.
	mu := s.writer(account)
	mu.Lock()
	posted, err := ann.Annotate(ctx, v.req)
	mu.Unlock()
	s.m.writes.WithLabelValues(provider).Add(float64(posted.Writes))
	s.m.reads.WithLabelValues(provider).Add(float64(posted.Reads))
	if rl := posted.RateLimit; rl != nil && rl.Limit > 0 && rl.Remaining <= max(rl.Limit/100, 1) && rl.Reset.After(s.cfg.Now()) {
		// Keep the last percent for whoever else shares the installation.
		s.budgets.penalize(account, rl.Reset)
		log.Warn("provider rate limit nearly spent: pausing writes", "remaining", rl.Remaining, "reset", rl.Reset)
	}
	if err != nil {
		if fault.ClassOf(err) == fault.ClassOffline {
			// One refused connection is not "down for long": the breaker
			// decides that (OfflineAfter), so a blip is retried, not spooled.
			err = fault.Transient(err)
		}
		if wait := fault.RetryAfterOf(err); wait > 0 && fault.ClassOf(err) == fault.ClassTransient {
			s.budgets.penalize(account, s.cfg.Now().Add(wait))
			log.Warn("provider asked to wait: writes to this account paused", "wait", wait, "error", err.Error())
		}
		return err
	}

	s.m.duration.WithLabelValues(provider, req.Operation).Observe(time.Since(start).Seconds())
	s.m.total.WithLabelValues(provider, req.Operation, "completed").Inc()
	log.Info("annotation posted", "url", posted.URL, "writes", posted.Writes, "reads", posted.Reads,
		"unchanged", posted.Unchanged, "notes", posted.Notes, "attempt", attempt)
	done := events.AnnotationCompleted{
		RequestID: ev.ID, IntegrationID: in.ID, Operation: req.Operation, Provider: provider,
		URL: posted.URL, ExternalID: posted.ExternalID, Attempts: attempt,
	}
	if _, err := events.New(events.SubjectAnnotationCompleted, Source, ev.TenantID, done); err != nil {
		// What the provider gave back does not fit the contract (a URL
		// that is not http(s)): report without it rather than fail a
		// request whose effect is already there.
		log.Warn("provider's answer does not fit scm.annotation.completed; reported without url and externalId",
			"error", err.Error(), "url", posted.URL)
		done.URL, done.ExternalID = "", ""
	}
	if err := s.publish(ctx, ev.TenantID, done, bus.DeliveryFrom(ctx)); err != nil && fault.ClassOf(err) == fault.ClassPermanent {
		// Posted, but the result event cannot be built: never dead-letter
		// (and so re-post) a request for that.
		log.Error("annotation posted but its completed event cannot be published", "error", err.Error())
		return nil
	} else if err != nil {
		return err
	}
	return nil
}

// unknownGrace is how long after its publication a request for an
// integration this worker does not know is deferred rather than refused:
// the bucket's changes reach the worker a moment after the catalog commits.
const unknownGrace = 5 * time.Second

var shaRE = regexp.MustCompile(`^[0-9a-f]{40}$`)

// check is what the schema cannot say: the operation's payload and target.
func check(r events.AnnotationRequested) error {
	bad := func(field, why string) error {
		return fault.Permanentf("invalid scm.annotation.requested: %s: %s", field, why)
	}
	if r.Repository.Owner == "" || r.Repository.Name == "" {
		return bad("repository", "owner and name are required")
	}
	switch r.Operation {
	case events.OpComment:
		if r.Comment == nil {
			return bad("comment", "required for operation comment")
		}
		if r.PullRequest <= 0 {
			return bad("pullRequest", "required for operation comment")
		}
		if r.Comment.UpdateExisting && r.Comment.Key == "" {
			return bad("comment.key", "required with updateExisting")
		}
	case events.OpStatus:
		if r.Status == nil {
			return bad("status", "required for operation status")
		}
		if !shaRE.MatchString(r.CommitSHA) {
			return bad("commitSha", "40 lowercase hex characters required for operation status")
		}
	case events.OpCheckRun:
		if r.CheckRun == nil {
			return bad("checkRun", "required for operation check_run")
		}
		if !shaRE.MatchString(r.CommitSHA) {
			return bad("commitSha", "40 lowercase hex characters required for operation check_run")
		}
	default:
		return bad("operation", fmt.Sprintf("%q is not comment, status or check_run", r.Operation))
	}
	return nil
}

// publish sends a result event of the request message d; with the spool it
// returns once the event is durable, so an acked request always has its
// result.
func (s *Service) publish(ctx context.Context, tenant string, data any, d *bus.Delivery) error {
	var subject, requestID string
	switch v := data.(type) {
	case events.AnnotationCompleted:
		subject, requestID = events.SubjectAnnotationCompleted, v.RequestID
	case events.AnnotationFailed:
		subject, requestID = events.SubjectAnnotationFailed, v.RequestID
	default:
		return fault.Permanentf("annotation: no result event for %T", data)
	}
	ev, err := events.New(subject, Source, tenant, data)
	if err != nil {
		return fault.Permanentf("%s event: %w", subject, err)
	}
	// One id per request message and result: a worker that dies (or is
	// cut off from NATS) after publishing and before its ack publishes
	// again on the redelivery, and the stream's duplicate window drops
	// the second. That holds for a dead letter or a spool as for a post:
	// the redelivery dead-letters or spools again (the DLQ and the spool
	// drop the copy by its own message id) and announces it again. A
	// replay or a drain is a new message, and is announced.
	if d != nil {
		ev.ID = resultID(subject, requestID, d.Stream, d.StreamSeq)
	}
	s.mu.Lock()
	pub := s.pub
	s.mu.Unlock()
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	return pub.Publish(pctx, ev)
}

// onFailure reports a request that ended in the DLQ or the spool as
// scm.annotation.failed, and counts every failed delivery.
func (s *Service) onFailure(ctx context.Context, f bus.Failure) {
	if bus.IsDeferral(f.Err) {
		return
	}
	ev, err := events.Parse(f.Body)
	var req events.AnnotationRequested
	if err == nil {
		err = ev.Decode(&req)
	}
	provider := "unknown"
	if in, ok := s.set.Lookup(req.IntegrationID); ok {
		if p := s.builder.Provider(in.Type); p != "" {
			provider = p
		}
	}
	op := req.Operation
	status := "retry"
	switch f.Outcome {
	case bus.OutcomeDeadLetter:
		status = "dead_lettered"
	case bus.OutcomeSpooled:
		status = "spooled"
	}
	s.m.total.WithLabelValues(provider, labelOr(op), status).Inc()
	if f.Outcome == bus.OutcomeRedeliver || err != nil || ev.TenantID == "" {
		// A body that does not decode has no request to answer: the dead
		// letter's reason is all there is.
		return
	}
	attempts := int(f.Delivery.Counted())
	var r *refused
	if errors.As(f.Err, &r) {
		attempts = 0
	}
	msg := f.Err.Error()
	if len(msg) > 2000 {
		msg = msg[:2000] + "…"
	}
	fail := events.AnnotationFailed{
		RequestID: ev.ID, IntegrationID: req.IntegrationID, Operation: op, Provider: provider,
		ErrorClass: f.Class.String(), Error: msg, Attempts: attempts,
		DeadLettered: f.Outcome == bus.OutcomeDeadLetter, Spooled: f.Outcome == bus.OutcomeSpooled,
	}
	if fail.ErrorClass == fault.ClassUnknown.String() {
		fail.ErrorClass = fault.ClassTransient.String() // retries exhausted on an unclassified error
	}
	if err := s.publish(ctx, ev.TenantID, fail, f.Delivery); err != nil {
		s.log.Error("cannot report a failed annotation", "requestId", ev.ID, "error", err.Error())
	}
}

func labelOr(op string) string {
	switch op {
	case events.OpComment, events.OpStatus, events.OpCheckRun:
		return op
	}
	return "invalid"
}

// healthChanged drains an integration's spool when it is healthy again.
func (s *Service) healthChanged(ctx context.Context, ev events.Event) error {
	var hc events.HealthChanged
	if err := ev.Decode(&hc); err != nil {
		return fault.Permanentf("malformed integration.health_changed: %w", err)
	}
	if hc.Status != events.HealthHealthy {
		return nil
	}
	s.mu.Lock()
	work := s.work
	s.mu.Unlock()
	if work != nil {
		work.Breakers().Reset(hc.IntegrationID)
	}
	n, err := s.Drain(ctx, hc.IntegrationID, "annotation-worker")
	if err != nil {
		return fault.Transient(fmt.Errorf("drain the spool of %s: %w", hc.IntegrationID, err))
	}
	if n > 0 {
		s.log.Info("integration healthy again: spool drained", "integrationId", hc.IntegrationID, "drained", n)
	}
	return nil
}

// Drain re-publishes the spooled requests of integration id in order, the
// newest per target only (Compact), and returns how many it re-published.
func (s *Service) Drain(ctx context.Context, id, operator string) (int, error) {
	res, err := s.dl.SpoolDrain(ctx, deadletter.Filter{Subject: events.SubjectAnnotationRequested, IntegrationID: id},
		deadletter.ReplayOptions{Operator: operator, Compact: Compact})
	s.drained.Add(uint64(len(res.Replayed)))
	s.m.spoolDropped.Add(float64(len(res.Dropped)))
	return len(res.Replayed), err
}

// resultNamespace derives the ids of scm.annotation.completed and .failed
// events (the namespace of the first, which had it alone: its ids are
// unchanged).
var resultNamespace = uuid.MustParse("6f0f6a52-2d0e-4b9c-8a59-3c4b7d1e9a20")

func resultID(subject, requestID, stream string, seq uint64) string {
	return uuid.NewSHA1(resultNamespace, fmt.Appendf(nil, "%s\n%s\n%s/%d", subject, requestID, stream, seq)).String()
}
