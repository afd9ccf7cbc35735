package events_test

import (
	"errors"
	"fmt"
	"math/rand"
	"reflect"
	"slices"
	"testing"
	"testing/quick"
	"time"

	"inthub.dev/events"
)

// Generated values are built from quick's *rand.Rand so that a failure
// reports a reproducible input.

// alphabet mixes what breaks encoders: HTML, quotes, escapes, line
// separators, multi-byte and astral runes.
var alphabet = []rune("abcXYZ019 _-./<>&\"'\\\n\t\u2028é漢🙂")

func randString(r *rand.Rand, max int) string {
	rs := make([]rune, r.Intn(max+1))
	for i := range rs {
		rs[i] = alphabet[r.Intn(len(alphabet))]
	}
	return string(rs)
}

func randUUID(r *rand.Rand) string {
	return fmt.Sprintf("%08x-%04x-4%03x-%x%03x-%012x",
		r.Uint32(), r.Intn(1<<16), r.Intn(1<<12), 8+r.Intn(4), r.Intn(1<<12), r.Int63n(1<<48))
}

func randTime(r *rand.Rand) time.Time {
	start := time.Date(1970, 1, 1, 0, 0, 0, 0, time.UTC).Unix()
	end := time.Date(2200, 1, 1, 0, 0, 0, 0, time.UTC).Unix()
	return time.Unix(start+r.Int63n(end-start), r.Int63n(1e9)).UTC()
}

func pick[T any](r *rand.Rand, xs ...T) T { return xs[r.Intn(len(xs))] }

var healthStatuses = []events.HealthStatus{events.HealthHealthy, events.HealthDegraded, events.HealthUnhealthy, events.HealthUnknown}

type genHealthChecked struct{ events.HealthChecked }

func (genHealthChecked) Generate(r *rand.Rand, _ int) reflect.Value {
	return reflect.ValueOf(genHealthChecked{events.HealthChecked{
		IntegrationID: randUUID(r),
		TenantID:      randUUID(r),
		Type:          pick(r, "scm.github", "scm.gitlab", "registry.harbor", "registry.oci", "vault.hashicorp", "test.inmemory", "x.y-z.w_1"),
		Status:        pick(r, healthStatuses...),
		LatencyMs:     r.Int63n(1 << 40),
		Message:       randString(r, 200),
		CheckedAt:     randTime(r),
	}})
}

// roundTrip publishes p as a consumer would receive it and reports whether
// it arrives valid and unchanged.
func roundTrip(t *testing.T, subject, tenant string, p events.Payload, into events.Payload) bool {
	t.Helper()
	e, err := events.New(subject, source, tenant, p)
	if err != nil {
		t.Logf("New(%+v): %v", p, err)
		return false
	}
	b, err := e.Marshal()
	if err != nil {
		t.Logf("Marshal: %v", err)
		return false
	}
	got, err := events.Parse(b)
	if err != nil {
		t.Logf("Parse(%s): %v", b, err)
		return false
	}
	if err := got.Decode(into); err != nil {
		t.Logf("Decode(%s): %v", got.Data, err)
		return false
	}
	if d := reflect.ValueOf(into).Elem().Interface(); !reflect.DeepEqual(d, p) {
		t.Logf("Decode = %+v, want %+v", d, p)
		return false
	}
	return reflect.DeepEqual(got, e) && got.IntegrationID() == e.IntegrationID()
}

// TestPropertyHealthCheckedRoundTrip: any well-formed health check result
// is valid and reaches a consumer unchanged.
func TestPropertyHealthCheckedRoundTrip(t *testing.T) {
	f := func(g genHealthChecked) bool {
		return roundTrip(t, events.SubjectIntegrationHealthChecked, g.TenantID, g.HealthChecked, &events.HealthChecked{})
	}
	if err := quick.Check(f, &quick.Config{MaxCount: 300}); err != nil {
		t.Fatal(err)
	}
}

// TestPropertyHealthChangedIsATransition: a health_changed event is valid
// exactly when the status changed.
func TestPropertyHealthChangedIsATransition(t *testing.T) {
	f := func(g genHealthChecked, prev uint8) bool {
		h := g.HealthChecked
		p := events.HealthChanged{IntegrationID: h.IntegrationID, TenantID: h.TenantID, Type: h.Type, Status: h.Status,
			PreviousStatus: healthStatuses[int(prev)%len(healthStatuses)], LatencyMs: h.LatencyMs, Message: h.Message, CheckedAt: h.CheckedAt}
		if p.PreviousStatus != p.Status {
			return roundTrip(t, events.SubjectIntegrationHealthChanged, h.TenantID, p, &events.HealthChanged{})
		}
		_, err := events.New(events.SubjectIntegrationHealthChanged, source, h.TenantID, p)
		var ve *events.ValidationError
		return errors.As(err, &ve) && ve.Field == "data.previousStatus"
	}
	if err := quick.Check(f, &quick.Config{MaxCount: 200}); err != nil {
		t.Fatal(err)
	}
}

// TestPropertyUnknownHealthStatusRejected: any status outside the enum is
// refused, and the error names the field.
func TestPropertyUnknownHealthStatusRejected(t *testing.T) {
	f := func(g genHealthChecked, s string) bool {
		if slices.Contains(healthStatuses, events.HealthStatus(s)) {
			return true
		}
		g.Status = events.HealthStatus(s)
		_, err := events.New(events.SubjectIntegrationHealthChecked, source, g.TenantID, g.HealthChecked)
		var ve *events.ValidationError
		return errors.As(err, &ve) && ve.Field == "data.status"
	}
	if err := quick.Check(f, &quick.Config{MaxCount: 200}); err != nil {
		t.Fatal(err)
	}
}

type genRequest struct{ events.AnnotationRequested }

func (genRequest) Generate(r *rand.Rand, _ int) reflect.Value {
	nonEmpty := func(max int) string { return "x" + randString(r, max) }
	req := events.AnnotationRequested{
		IntegrationID: randUUID(r),
		Operation:     pick(r, events.OpComment, events.OpStatus, events.OpCheckRun),
		Repository:    events.Repository{Owner: nonEmpty(20), Name: nonEmpty(20)},
	}
	if r.Intn(2) == 0 || req.Operation == events.OpComment {
		req.PullRequest = 1 + r.Intn(1<<20)
	}
	if r.Intn(2) == 0 || req.Operation != events.OpComment {
		req.CommitSHA = fmt.Sprintf("%016x%016x%08x", r.Uint64(), r.Uint64(), r.Uint32())
	}
	switch req.Operation {
	case events.OpComment:
		c := &events.Comment{Body: nonEmpty(500), UpdateExisting: r.Intn(2) == 0}
		if c.UpdateExisting || r.Intn(2) == 0 {
			c.Key = nonEmpty(10)
		}
		req.Comment = c
	case events.OpStatus:
		req.Status = &events.CommitStatus{
			State: pick(r, "pending", "success", "failure", "error"), Context: nonEmpty(30),
			Description: randString(r, 140), TargetURL: pick(r, "", "https://scan.example/r/1", "http://localhost:8080/x?y=z&w=<1>"),
		}
	case events.OpCheckRun:
		cr := &events.CheckRun{Name: nonEmpty(30), Status: pick(r, "", "queued", "in_progress", "completed"),
			ExternalID: randString(r, 10), Summary: randString(r, 100), Text: randString(r, 100)}
		if cr.Status == "completed" || (cr.Status == "" && r.Intn(2) == 0) {
			cr.Conclusion = pick(r, "success", "failure", "neutral", "cancelled", "skipped", "timed_out", "action_required")
		}
		for range r.Intn(4) {
			start := 1 + r.Intn(1000)
			cr.Annotations = append(cr.Annotations, events.Annotation{
				Path: nonEmpty(40), StartLine: start, EndLine: start + r.Intn(10),
				Level: pick(r, "notice", "warning", "failure"), Message: nonEmpty(80), Title: randString(r, 20),
			})
		}
		req.CheckRun = cr
	}
	return reflect.ValueOf(genRequest{req})
}

// TestPropertyAnnotationRequestedRoundTrip: any request that follows the
// one-operation rules is valid and reaches the annotation service unchanged.
func TestPropertyAnnotationRequestedRoundTrip(t *testing.T) {
	f := func(g genRequest) bool {
		return roundTrip(t, events.SubjectAnnotationRequested, "", g.AnnotationRequested, &events.AnnotationRequested{})
	}
	if err := quick.Check(f, &quick.Config{MaxCount: 300}); err != nil {
		t.Fatal(err)
	}
}
