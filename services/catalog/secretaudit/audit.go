// Package secretaudit audits, in the catalog's audit log, every AuthRef
// resolution that a connector built by the shared connector builder
// (inthub.dev/pkg/connectors/connect) makes for the catalog.
package secretaudit

import (
	"context"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"inthub.dev/pkg/authref"
	"inthub.dev/pkg/connectors/connect"
	"inthub.dev/pkg/fault"
	"inthub.dev/services/catalog/store"
)

// Auditor is where audit rows go (*store.Store).
type Auditor interface {
	AuditSecretResolution(ctx context.Context, r store.SecretResolution) error
}

// auditTimeout bounds the write of one audit row; it does not depend on
// the caller's context, which may end as soon as the secret is read.
const auditTimeout = 5 * time.Second

// Audit records every AuthRef resolution done for an integration: one
// audit row each (store.ActionSecretResolve) and a counter. Its Hook is
// given to authref.WithHook.
type Audit struct {
	store   Auditor
	log     *slog.Logger
	counter *prometheus.CounterVec
}

// New returns the audit of secret resolutions into a; log may be nil.
func New(a Auditor, log *slog.Logger) *Audit {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Audit{
		store: a,
		log:   log,
		counter: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "integrations_authref_resolutions_total",
			Help: "AuthRef resolutions, by store (env, file, vault) and result (ok, cached, error).",
		}, []string{"scheme", "result"}),
	}
}

// Register adds the counter to reg.
func (a *Audit) Register(reg prometheus.Registerer) error { return reg.Register(a.counter) }

// Hook is the authref.Resolver hook. A resolution that cannot be audited
// (the database is down) is logged, not failed: the audit trail is a
// record of the call, not a gate on it.
func (a *Audit) Hook(ctx context.Context, r authref.Resolution) {
	result := "ok"
	switch {
	case r.Err != nil:
		result = "error"
	case r.Cached:
		result = "cached"
	}
	scheme := string(r.Scheme)
	if scheme == "" {
		scheme = "invalid"
	}
	a.counter.WithLabelValues(scheme, result).Inc()

	c, ok := connect.CallFrom(ctx)
	if !ok {
		// Every resolution the catalog makes goes through a connect.Builder,
		// which sets the call; one that does not is a bug worth seeing.
		a.log.WarnContext(ctx, "secret resolution outside an integration call: not audited",
			slog.String("authRef", r.Ref))
		return
	}
	rec := store.SecretResolution{
		TenantID:      c.TenantID,
		IntegrationID: c.IntegrationID,
		Actor:         c.Actor,
		Ref:           r.Ref,
		Scheme:        string(r.Scheme),
		Cached:        r.Cached,
		Failed:        r.Err != nil,
	}
	if r.Err != nil {
		rec.ErrorClass = fault.ClassOf(r.Err).String()
	}
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), auditTimeout)
	defer cancel()
	if err := a.store.AuditSecretResolution(actx, rec); err != nil {
		a.log.ErrorContext(ctx, "audit of a secret resolution failed",
			slog.String("tenantId", c.TenantID), slog.String("integrationId", c.IntegrationID),
			slog.String("authRef", r.Ref), slog.String("error", err.Error()))
	}
}
