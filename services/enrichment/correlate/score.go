package correlate

import (
	"context"
	"math"
	"sort"
	"time"

	"inthub.dev/events"
)

// Params tune matching and scoring.
type Params struct {
	// Window is how far before and after the request's time an event may
	// have occurred to match (2h). A request may narrow it, never widen it.
	Window time.Duration
	// HalfLife is the time distance at which proximity counts half (15m).
	HalfLife time.Duration
	// MaxMatches is the default and the cap of matches per answer (10).
	MaxMatches int
	// MinScore drops matches below it (0.05): with no key in common, an
	// event far in time is noise.
	MinScore float64
	// MaxCandidates bounds the events read per request (500).
	MaxCandidates int
}

func (p Params) withDefaults() Params {
	if p.Window <= 0 {
		p.Window = 2 * time.Hour
	}
	if p.HalfLife <= 0 {
		p.HalfLife = 15 * time.Minute
	}
	if p.MaxMatches <= 0 {
		p.MaxMatches = 10
	}
	if p.MinScore <= 0 {
		p.MinScore = 0.05
	}
	if p.MaxCandidates <= 0 {
		p.MaxCandidates = 500
	}
	return p
}

// Score tiers: any resource id in common beats any metadata in common,
// which beats closeness in time alone; within a tier, closeness in time and
// the confidence of the keys order the matches.
const (
	keyBase  = 0.70
	tagBase  = 0.40
	tierSpan = 0.29
	timeSpan = 0.39
	// At most this many hints and links are added to one answer.
	maxAdded = 100
)

// Enricher answers enrichment requests from a Store.
type Enricher struct {
	store  *Store
	params Params
}

// NewEnricher returns an Enricher on store.
func NewEnricher(store *Store, p Params) *Enricher {
	return &Enricher{store: store, params: p.withDefaults()}
}

// Params are the effective parameters.
func (e *Enricher) Params() Params { return e.params }

// Enrich answers one request (requestID is its CloudEvents id) from the
// requesting tenant's events only.
func (e *Enricher) Enrich(ctx context.Context, requestID string, req events.EnrichmentRequested, now time.Time) (events.Enriched, error) {
	window := e.params.Window
	if req.WindowSeconds > 0 {
		window = min(window, time.Duration(req.WindowSeconds)*time.Second)
	}
	at := req.At.UTC()
	cands, err := e.store.Candidates(ctx, req.TenantID, req.EventID, keysOf(req.Keys), at,
		at.Add(-window), at.Add(window), e.params.MaxCandidates)
	if err != nil {
		return events.Enriched{}, err
	}
	return Score(requestID, req, cands, e.params, window, now), nil
}

// Score ranks candidates for req and builds the answer. It is pure: the
// store decides which events are candidates, and only the requesting
// tenant's are (a candidate of another tenant is dropped here too).
func Score(requestID string, req events.EnrichmentRequested, cands []Record, p Params, window time.Duration, now time.Time) events.Enriched {
	p = p.withDefaults()
	limit := p.MaxMatches
	if req.MaxMatches > 0 {
		limit = min(limit, req.MaxMatches)
	}
	want := map[string]events.CorrelationHint{}
	for _, h := range req.Keys {
		if h.Type == events.HintTemporal {
			continue
		}
		k := Key(h.Key, h.Value)
		if old, ok := want[k]; !ok || h.Confidence > old.Confidence {
			want[k] = h
		}
	}
	type scored struct {
		r     *Record
		m     events.EnrichmentMatch
		delta time.Duration
	}
	// Pointers: the records are large, and sorting moves elements.
	var all []*scored
	at := req.At.UTC()
	for i := range cands {
		r := &cands[i]
		if r.TenantID != req.TenantID || r.EventID == req.EventID {
			continue
		}
		delta := r.OccurredAt.Sub(at)
		if delta < 0 {
			delta = -delta
		}
		if delta > window {
			continue
		}
		proximity := math.Pow(0.5, float64(delta)/float64(p.HalfLife))
		mode, conf := events.MatchTime, 0.0
		var common []string
		seen := map[string]bool{}
		for _, h := range r.Hints {
			if h.Type == events.HintTemporal {
				continue
			}
			k := Key(h.Key, h.Value)
			w, ok := want[k]
			if !ok || seen[k] {
				continue
			}
			seen[k] = true
			common = append(common, k)
			c := w.Confidence * h.Confidence
			exact := w.Type == events.HintResourceID && h.Type == events.HintResourceID
			switch {
			case exact && mode != events.MatchKey:
				mode, conf = events.MatchKey, c
			case exact:
				conf = max(conf, c)
			case mode == events.MatchTime:
				mode, conf = events.MatchTag, c
			case mode == events.MatchTag:
				conf = max(conf, c)
			}
		}
		var score float64
		switch mode {
		case events.MatchKey:
			score = keyBase + tierSpan*proximity*conf
		case events.MatchTag:
			score = tagBase + tierSpan*proximity*conf
		default:
			score = timeSpan * proximity
		}
		score = math.Round(score*10000) / 10000
		if score < p.MinScore {
			continue
		}
		sort.Strings(common)
		all = append(all, &scored{r: r, delta: delta, m: events.EnrichmentMatch{
			EventID: r.EventID, Category: r.Category, Kind: r.Kind, Summary: r.Summary,
			SourceIntegration: r.SourceIntegration, OccurredAt: r.OccurredAt, Score: score, Match: mode, Keys: common,
		}})
	}
	sort.SliceStable(all, func(i, j int) bool {
		a, b := all[i], all[j]
		if a.m.Score != b.m.Score {
			return a.m.Score > b.m.Score
		}
		if a.delta != b.delta {
			return a.delta < b.delta
		}
		return a.m.EventID < b.m.EventID
	})
	if len(all) > limit {
		all = all[:limit]
	}

	out := events.Enriched{TenantID: req.TenantID, RequestID: requestID, EventID: req.EventID, EventType: req.EventType, At: at,
		Matches: []events.EnrichmentMatch{}, EvidenceLinks: []events.EvidenceLink{}, CorrelationHints: []events.CorrelationHint{},
		EnrichmentMetadata: events.EnrichmentMetadata{EnrichedAt: now.UTC(), WindowSeconds: int64(max(window/time.Second, 1)), Candidates: len(cands)}}
	seenURL := map[string]bool{}
	hintAt := map[string]int{}
	for _, s := range all {
		out.Matches = append(out.Matches, s.m)
		for _, l := range s.r.Links {
			if seenURL[l.URL] || len(out.EvidenceLinks) >= maxAdded {
				continue
			}
			seenURL[l.URL] = true
			conf := s.m.Score
			l.SourceIntegration, l.Confidence = s.r.SourceIntegration, &conf
			out.EvidenceLinks = append(out.EvidenceLinks, l)
		}
		for _, h := range s.r.Hints {
			k := Key(h.Key, h.Value)
			if h.Type == events.HintTemporal {
				continue
			}
			if _, asked := want[k]; asked {
				continue
			}
			c := math.Round(h.Confidence*s.m.Score*10000) / 10000
			if i, ok := hintAt[k]; ok {
				// Already added from a better match.
				if c > out.CorrelationHints[i].Confidence && out.CorrelationHints[i].SourceIntegration == s.r.SourceIntegration {
					out.CorrelationHints[i].Confidence = c
				}
				continue
			}
			if len(out.CorrelationHints) >= maxAdded {
				continue
			}
			hintAt[k] = len(out.CorrelationHints)
			h.Confidence, h.SourceIntegration = c, s.r.SourceIntegration
			out.CorrelationHints = append(out.CorrelationHints, h)
		}
	}
	return out
}
