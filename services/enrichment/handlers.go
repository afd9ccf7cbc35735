package enrichment

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"inthub.dev/events"
	"inthub.dev/pkg/bus"
	"inthub.dev/pkg/fault"
	"inthub.dev/services/enrichment/correlate"
	"inthub.dev/services/enrichment/mapping"
)

// publishTimeout bounds a handler's publish; the bus publisher spools when
// NATS is down, so this only waits for the disk.
const publishTimeout = 15 * time.Second

func (s *Service) mapperWorker(pub *bus.Publisher) (*bus.Worker, error) {
	w, err := bus.NewWorker(s.js, s.workerConfig("enrichment-mapper", bus.StreamIngest))
	if err != nil {
		return nil, fmt.Errorf("enrichment: %w", err)
	}
	for _, subject := range s.ingestSubjects() {
		w.Handle(subject, func(ctx context.Context, ev events.Event) error { return s.mapIngest(ctx, pub, ev) })
	}
	return w, nil
}

// mapIngest maps one ingest event and publishes the canonical event. The
// canonical id derives from the ingest id, so a redelivered ingest
// message yields a duplicate that JetStream drops, and the index ignores.
func (s *Service) mapIngest(ctx context.Context, pub *bus.Publisher, ev events.Event) error {
	var in events.Ingested
	if err := ev.Decode(&in); err != nil {
		s.mapFailed.WithLabelValues("unknown").Inc()
		return fault.Permanentf("ingest payload: %w", err)
	}
	log := s.log.With("provider", in.Provider, "integrationId", in.IntegrationID, "tenantId", in.TenantID, "ingestId", ev.ID)
	c, err := s.mapper.Map(ctx, in, ev.ID)
	if err != nil {
		var me *mapping.Error
		if errors.As(err, &me) {
			s.mapFailed.WithLabelValues(in.Provider).Inc()
			log.Info("document not mapped", "error", err)
			return fault.Permanent(err)
		}
		return err
	}
	out, err := events.New(events.CanonicalSubject(c.Category), Source, c.TenantID, c)
	if err != nil {
		s.mapFailed.WithLabelValues(in.Provider).Inc()
		log.Info("mapped event does not validate", "error", err)
		return fault.Permanentf("mapped event of %s does not validate: %w", ev.Type, err)
	}
	out.ID = derivedID("canonical", ev.ID)
	out.TraceParent = ev.TraceParent
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), publishTimeout)
	defer cancel()
	if err := pub.Publish(pctx, out); err != nil {
		return err
	}
	s.mapped.WithLabelValues(in.Provider, c.Category).Inc()
	log.Debug("document mapped", "kind", c.Kind, "eventId", out.ID)
	return nil
}

func (s *Service) correlatorWorker(pub *bus.Publisher) (*bus.Worker, error) {
	w, err := bus.NewWorker(s.js, s.workerConfig("enrichment-correlator", bus.StreamEvents))
	if err != nil {
		return nil, fmt.Errorf("enrichment: %w", err)
	}
	enricher := correlate.NewEnricher(s.store.Load(), s.cfg.Correlation)
	for _, c := range []string{events.CategoryDelivery, events.CategorySystem, events.CategorySecurity} {
		w.Handle(events.CanonicalSubject(c), func(ctx context.Context, ev events.Event) error { return s.index(ctx, pub, ev) })
	}
	w.Handle(events.SubjectEnrichmentRequested, func(ctx context.Context, ev events.Event) error {
		return s.enrich(ctx, pub, enricher, ev)
	})
	return w, nil
}

// KindMetricSample is the canonical kind of one CloudWatch metric
// datapoint. Samples are indexed, as evidence for other events, but never
// enriched on their own: one per metric per minute would each cost an
// enrichment.requested and an event.enriched that nobody reads.
const KindMetricSample = "metric.sample"

// index stores a canonical event (anyone's: other teams may publish their
// own) and, for the categories configured, asks for its enrichment.
func (s *Service) index(ctx context.Context, pub *bus.Publisher, ev events.Event) error {
	var c events.Canonical
	if err := ev.Decode(&c); err != nil {
		return fault.Permanentf("canonical payload: %w", err)
	}
	if err := s.store.Load().Index(ctx, ev.ID, c); err != nil {
		return err
	}
	s.indexed.WithLabelValues(c.Category).Inc()
	if !s.auto[c.Category] || c.Kind == KindMetricSample {
		return nil
	}
	keys := make([]events.CorrelationHint, 0, len(c.Context.CorrelationHints))
	for _, h := range c.Context.CorrelationHints {
		if h.Type != events.HintTemporal && len(keys) < 50 {
			keys = append(keys, h)
		}
	}
	req, err := events.New(events.SubjectEnrichmentRequested, Source, c.TenantID, events.EnrichmentRequested{
		TenantID: c.TenantID, EventID: ev.ID, EventType: ev.Type, At: c.Context.OriginalTimestamp, Keys: keys})
	if err != nil {
		return fault.Permanentf("enrichment request for %s: %w", ev.ID, err)
	}
	req.ID = derivedID("enrichment.requested", ev.ID)
	req.TraceParent = ev.TraceParent
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), publishTimeout)
	defer cancel()
	return pub.Publish(pctx, req)
}

// enrich answers enrichment.requested. The answer's id derives from the
// request's, so a redelivered request is answered once.
func (s *Service) enrich(ctx context.Context, pub *bus.Publisher, e *correlate.Enricher, ev events.Event) error {
	var req events.EnrichmentRequested
	if err := ev.Decode(&req); err != nil {
		return fault.Permanentf("enrichment request: %w", err)
	}
	out, err := e.Enrich(ctx, ev.ID, req, time.Now())
	if err != nil {
		return err
	}
	ans, err := events.New(events.SubjectEnriched, Source, req.TenantID, out)
	if err != nil {
		return fault.Permanentf("event.enriched for %s: %w", ev.ID, err)
	}
	ans.ID = derivedID("event.enriched", ev.ID)
	ans.TraceParent = ev.TraceParent
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), publishTimeout)
	defer cancel()
	if err := pub.Publish(pctx, ans); err != nil {
		return err
	}
	s.enriched.WithLabelValues(strconv.FormatBool(len(out.Matches) > 0)).Inc()
	s.enrichMatches.Observe(float64(len(out.Matches)))
	s.log.Debug("enriched", "tenantId", req.TenantID, "eventId", req.EventID, "matches", len(out.Matches))
	return nil
}
