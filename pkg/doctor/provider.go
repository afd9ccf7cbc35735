package doctor

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"inthub.dev/pkg/connectors"
	"inthub.dev/pkg/fault"
)

// authCapabilities are the checks in which connectors prove their
// credentials ("auth": the connector could not be built or provisioned).
var authCapabilities = []string{"auth", "config", "app", "installation", "user", "job", "token", "login", "connector"}

// provider runs the checks that go through the connector: one test
// connection (authentication, rate limit), the scopes (authorization,
// version), and Probes health checks (latency).
func (r *run) provider(ctx context.Context) []CheckResult {
	names := []string{CheckAuthentication, CheckAuthorization, CheckVersion, CheckRateLimit, CheckLatency}
	if r.t.Connect == nil {
		return skipped("no connector for the integration's type", names...)
	}
	start := time.Now()
	conn, err := r.t.Connect(ctx)
	if err != nil {
		auth := CheckResult{Name: CheckAuthentication, Status: StatusFail, DurationMs: ms(time.Since(start)),
			Message: "the connector could not be set up: " + err.Error()}
		auth.Suggestions = []string{"Check the integration's config and that its AuthRef resolves (the secret exists and the catalog may read it)."}
		r.ev.add(evidenceLine{Check: CheckAuthentication, Probe: "connector_setup", Status: string(StatusFail),
			DurationMs: auth.DurationMs, Message: auth.Message})
		return append([]CheckResult{auth}, skipped("not run: the connector could not be set up", names[1:]...)...)
	}
	defer conn.Close()

	res := conn.TestConnection(ctx)
	r.evidenceOfResult(CheckAuthentication, "test_connection", res)
	auth := authentication(res)
	out := []CheckResult{auth}
	if auth.Status == StatusFail {
		return append(out, skipped("not run: the credentials did not authenticate", names[1:]...)...)
	}

	scopes, scopeDur, scopesErr := r.scopes(ctx, conn)
	out = append(out, authorization(scopes, scopesErr, scopeDur), version(scopes, scopesErr, res))

	// The latency probes also refresh the rate limit: the last answer is
	// the freshest budget.
	lat, rl := r.latency(ctx, conn)
	if rl == nil {
		rl = res.RateLimit
	}
	out = append(out, rateLimit(rl), lat)
	return out
}

func skipped(why string, names ...string) []CheckResult {
	out := make([]CheckResult, 0, len(names))
	for _, n := range names {
		out = append(out, CheckResult{Name: n, Status: StatusSkip, Message: why})
	}
	return out
}

func (r *run) evidenceOfResult(check, probe string, res connectors.Result) {
	for _, c := range res.Checks {
		st := StatusPass
		if !c.OK {
			st = StatusFail
		}
		r.ev.add(evidenceLine{Check: check, Probe: probe, Target: c.Capability, Status: string(st),
			DurationMs: ms(c.Latency), Message: c.Message})
	}
	if len(res.Checks) == 0 {
		r.ev.add(evidenceLine{Check: check, Probe: probe, Status: string(res.Status), DurationMs: ms(res.Latency), Message: res.Message})
	}
}

// authentication judges a test connection: credentials refused (a 401 or
// 403, or a failed check of a capability that proves them) fail; a
// failure of every check for another reason fails too (nothing shows the
// credentials work); a capability failing after the credentials were
// accepted warns, since real use of that capability will fail.
func authentication(res connectors.Result) CheckResult {
	c := CheckResult{Name: CheckAuthentication, DurationMs: ms(res.Latency), Details: map[string]any{"testStatus": string(res.Status)}}
	if res.CredentialExpiry != nil {
		c.Details["credentialExpiry"] = res.CredentialExpiry.UTC().Format(time.RFC3339)
	}
	if res.OK() && res.Status == connectors.StatusHealthy {
		c.Status, c.Message = StatusPass, res.Message
		return c
	}
	var failed, passed []connectors.Check
	authFailed := false
	for _, ck := range res.Checks {
		if ck.OK {
			passed = append(passed, ck)
			continue
		}
		if strings.HasPrefix(ck.Message, "not run") {
			continue
		}
		failed = append(failed, ck)
		if slices.Contains(authCapabilities, ck.Capability) || refusedCredentials(ck.Err) {
			authFailed = true
		}
	}
	if res.Status == connectors.StatusDegraded && len(failed) == 0 {
		// Degraded for a reason of its own (a budget nearly spent, a token
		// about to expire): the credentials work; the other checks say
		// the rest.
		c.Status, c.Message = StatusPass, res.Message
		return c
	}
	msgs := make([]string, 0, len(failed))
	for _, f := range failed {
		msgs = append(msgs, f.Capability+": "+f.Message)
	}
	detail := strings.Join(msgs, "; ")
	if detail == "" {
		detail = res.Message
	}
	switch {
	case authFailed || len(passed) == 0:
		c.Status = StatusFail
		c.Message = "the credentials could not be proven: " + detail
		c.Details["errorClass"] = classOf(res)
		c.Suggestions = []string{"Check that the integration's AuthRef points at a current, unrevoked credential for this endpoint."}
		if classOf(res) != fault.ClassPermanent.String() {
			c.Suggestions = append(c.Suggestions, "The failure is "+classOf(res)+": the provider may be unreachable or busy; run the doctor again later.")
		}
	default:
		c.Status = StatusWarn
		c.Message = "the credentials are accepted, but " + detail
		c.Suggestions = []string{"The failing capability will fail in real use too: check the credential's access to it."}
	}
	return c
}

func refusedCredentials(err error) bool {
	var re *connectors.RequestError
	return errors.As(err, &re) && (re.StatusCode == 401 || re.StatusCode == 403)
}

func classOf(res connectors.Result) string {
	if res.Class == fault.ClassUnknown {
		return fault.ClassTransient.String()
	}
	return res.Class.String()
}

func (r *run) scopes(ctx context.Context, conn connectors.Connector) (*connectors.ScopeReport, time.Duration, error) {
	sr, ok := conn.(connectors.ScopeReporter)
	if !ok {
		return nil, 0, connectors.ErrScopesNotReported
	}
	ctx, cancel := context.WithTimeout(ctx, 3*r.d.o.Timeout)
	defer cancel()
	start := time.Now()
	rep, err := sr.Scopes(ctx)
	took := time.Since(start)
	line := evidenceLine{Check: CheckAuthorization, Probe: "scopes", DurationMs: ms(took)}
	switch {
	case err != nil:
		line.Status, line.Message = string(StatusFail), err.Error()
	case len(rep.Missing) > 0:
		line.Status, line.Message = string(StatusFail), "missing "+strings.Join(rep.Missing, ", ")
	default:
		line.Status, line.Message = string(StatusPass), "granted "+strings.Join(rep.Granted, ", ")
	}
	r.ev.add(line)
	return &rep, took, err
}

func authorization(rep *connectors.ScopeReport, err error, took time.Duration) CheckResult {
	c := CheckResult{Name: CheckAuthorization, DurationMs: ms(took)}
	switch {
	case errors.Is(err, connectors.ErrScopesNotReported):
		c.Status, c.Message = StatusSkip, "the provider does not report this credential's scopes"
		if rep != nil {
			c.Message += "; the integration needs " + strings.Join(rep.Required, ", ")
		}
		return c
	case err != nil:
		c.Status, c.Message = StatusFail, "the credential's scopes could not be read: "+err.Error()
		return c
	}
	c.Details = map[string]any{"granted": nonNil(rep.Granted), "required": nonNil(rep.Required)}
	if len(rep.Missing) == 0 {
		c.Status = StatusPass
		c.Message = "the credential has every scope the integration needs (" + strings.Join(rep.Required, ", ") + ")"
		return c
	}
	c.Details["missing"] = rep.Missing
	c.Status = StatusFail
	c.Message = "the credential lacks " + strings.Join(rep.Missing, ", ") + ": the integration's writes (comments, statuses, check runs) will be refused"
	c.Suggestions = rep.Suggestions
	c.HowToFix = &HowToFix{
		Summary:  "Grant " + strings.Join(rep.Missing, ", ") + ", then run the doctor again",
		Commands: append(slices.Clone(rep.Commands), "inthubctl doctor <integration-id>"),
	}
	return c
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

func version(rep *connectors.ScopeReport, scopesErr error, res connectors.Result) CheckResult {
	c := CheckResult{Name: CheckVersion}
	v := ""
	if rep != nil {
		v = rep.APIVersion
	}
	if v == "" {
		v = res.Details["version"]
	}
	if v == "" || strings.HasPrefix(v, "unknown") {
		c.Status, c.Message = StatusSkip, "the provider did not report its version"
		return c
	}
	c.Details = map[string]any{"version": v}
	if rep != nil && rep.VersionProblem != "" {
		c.Status, c.Message = StatusFail, rep.VersionProblem
		c.Suggestions = []string{"Upgrade the provider, or use a connector built for its version."}
		return c
	}
	c.Status, c.Message = StatusPass, "version "+v+" is supported"
	return c
}

func rateLimit(rl *connectors.RateLimit) CheckResult {
	c := CheckResult{Name: CheckRateLimit}
	if rl == nil || rl.Limit <= 0 {
		c.Status, c.Message = StatusSkip, "the provider reported no rate limit"
		return c
	}
	h := rl.Headroom()
	c.Details = map[string]any{"limit": rl.Limit, "remaining": rl.Remaining, "headroomPercent": math.Round(1000*h) / 10}
	if !rl.Reset.IsZero() {
		c.Details["reset"] = rl.Reset.UTC().Format(time.RFC3339)
	}
	left := fmt.Sprintf("%d of %d requests left (%.1f%%)", rl.Remaining, rl.Limit, 100*h)
	switch {
	case rl.Remaining <= 0:
		c.Status, c.Message = StatusFail, "the rate-limit budget is spent: "+left
	case h <= MinHeadroom:
		c.Status, c.Message = StatusWarn, "little rate-limit headroom: "+left
	default:
		c.Status, c.Message = StatusPass, left
		return c
	}
	c.Suggestions = []string{"Something else spends this credential's budget, or the hub calls too often: lengthen the integration's healthIntervalSeconds, or give the hub its own credential."}
	if !rl.Reset.IsZero() {
		c.Suggestions = append(c.Suggestions, "The budget resets at "+rl.Reset.UTC().Format(time.RFC3339)+".")
	}
	return c
}

// latency runs Probes health checks one after the other and judges their
// p99 (nearest rank: with a few probes, the slowest).
func (r *run) latency(ctx context.Context, conn connectors.Connector) (CheckResult, *connectors.RateLimit) {
	c := CheckResult{Name: CheckLatency}
	var (
		samples []time.Duration
		failed  []string
		rl      *connectors.RateLimit
	)
	start := time.Now()
	for i := range r.d.o.Probes {
		res := conn.CheckHealth(ctx)
		r.evidenceOfResult(CheckLatency, fmt.Sprintf("health_probe_%d", i+1), res)
		samples = append(samples, res.Latency)
		if res.RateLimit != nil {
			rl = res.RateLimit
		}
		if !res.OK() {
			failed = append(failed, res.Message)
		}
		if ctx.Err() != nil {
			break
		}
	}
	c.DurationMs = ms(time.Since(start))
	p99 := percentile(samples, 0.99)
	p50 := percentile(samples, 0.50)
	c.Details = map[string]any{"probes": len(samples), "p50Ms": ms(p50), "p99Ms": ms(p99), "failedProbes": len(failed)}
	switch {
	case len(failed) == len(samples):
		c.Status = StatusFail
		c.Message = fmt.Sprintf("every health probe failed (%s)", failed[0])
	case p99 >= MaxP99:
		c.Status = StatusWarn
		c.Message = fmt.Sprintf("p99 latency %d ms over %d probes, at or above %d ms", ms(p99), len(samples), MaxP99.Milliseconds())
		c.Suggestions = []string{"The provider or the network to it is slow: raise the integration's timeoutSeconds, or look at the route from the hub."}
	case len(failed) > 0:
		c.Status = StatusWarn
		c.Message = fmt.Sprintf("%d of %d health probes failed (%s); p99 %d ms", len(failed), len(samples), failed[0], ms(p99))
	default:
		c.Status = StatusPass
		c.Message = fmt.Sprintf("p99 latency %d ms over %d probes (p50 %d ms)", ms(p99), len(samples), ms(p50))
	}
	return c, rl
}

// percentile is the nearest-rank percentile of samples (0 for none).
func percentile(samples []time.Duration, p float64) time.Duration {
	if len(samples) == 0 {
		return 0
	}
	s := slices.Clone(samples)
	slices.Sort(s)
	rank := int(math.Ceil(p*float64(len(s)))) - 1
	return s[min(max(rank, 0), len(s)-1)]
}
