package deadletter_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	"inthub.dev/pkg/bus"
	"inthub.dev/pkg/deadletter"
	"inthub.dev/pkg/natstest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// base is the failure time of the seeded letters; far from now, so a
// filter that wrongly used the stream's store time would show.
var base = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

var auditClock = time.Date(2025, 3, 2, 9, 30, 0, 0, time.UTC)

type env struct {
	t     *testing.T
	ctx   context.Context
	js    jetstream.JetStream
	store *deadletter.Store
	audit *syncBuffer
	srv   *natstest.Server
}

func newEnv(t *testing.T) *env {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	s := natstest.Start(t)
	js, _ := s.JetStream()
	if err := bus.Provision(ctx, js, bus.DefaultStreamSettings()); err != nil {
		t.Fatal(err)
	}
	buf := &syncBuffer{}
	st, err := deadletter.New(js,
		deadletter.WithLogger(slog.New(slog.NewJSONHandler(buf, nil))),
		deadletter.WithClock(func() time.Time { return auditClock }))
	if err != nil {
		t.Fatal(err)
	}
	return &env{t: t, ctx: ctx, js: js, store: st, audit: buf, srv: s}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

// records returns the audit records logged so far, decoded.
func (b *syncBuffer) records(t *testing.T) []map[string]any {
	t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(b.b.String()), "\n") {
		if line == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("audit line %q: %v", line, err)
		}
		out = append(out, m)
	}
	return out
}

// letter is a dead letter to seed, as the worker frame writes it.
type letter struct {
	subject, tenant, integration, class, lastErr string
	deliveries                                   int
	lastFailure                                  time.Time
}

// seedLetters are numbered 1..5 in the DLQ in this order.
var seedLetters = []letter{
	{"scm.annotation.requested", "t1", "i1", "permanent", "GitHub: 404 Not Found", 1, base.Add(1 * time.Hour)},
	{"scm.annotation.requested", "t2", "i2", "transient", "timeout talking to gitlab.example", 5, base.Add(2 * time.Hour)},
	{"integration.created", "t1", "i3", "permanent", "schema: /name is required", 1, base.Add(3 * time.Hour)},
	{"integration.updated", "t2", "i1", "permanent", "decode: unexpected EOF", 1, base.Add(4 * time.Hour)},
	{"scm.annotation.completed", "t1", "i1", "transient", "retries exhausted: 503 Service Unavailable", 5, base.Add(5 * time.Hour)},
}

func body(i int, subject string) []byte {
	return fmt.Appendf(nil, `{"specversion":"1.0","id":"ev-%d","source":"inthub/test","type":%q,"tenantid":"t","data":{"n":%d}}`, i, subject, i)
}

func origID(i int) string { return fmt.Sprintf("ev-%d", i) }

func (e *env) seedDLQ() {
	e.t.Helper()
	for i, l := range seedLetters {
		n := i + 1
		// As the worker frame writes them: a DLQ-specific Nats-Msg-Id, the
		// event's own id in Inthub-Original-Msg-Id.
		h := nats.Header{}
		h.Set(bus.HeaderMsgID, fmt.Sprintf("%s:SCM:%d", bus.DLQSubject(l.subject), 100+n))
		h.Set(bus.HeaderOriginalMsgID, origID(n))
		h.Set(bus.HeaderTenantID, l.tenant)
		h.Set(bus.HeaderIntegrationID, l.integration)
		h.Set(bus.HeaderTraceParent, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
		h.Set(bus.HeaderOriginalSubject, l.subject)
		h.Set(bus.HeaderStreamSequence, strconv.Itoa(100+n))
		h.Set(bus.HeaderDeliveryCount, strconv.Itoa(l.deliveries))
		h.Set(bus.HeaderErrorClass, l.class)
		h.Set(bus.HeaderLastError, l.lastErr)
		h.Set(bus.HeaderService, "annotator")
		h.Set(bus.HeaderFirstFailure, l.lastFailure.Add(-time.Minute).Format(time.RFC3339))
		h.Set(bus.HeaderLastFailure, l.lastFailure.Format(time.RFC3339))
		// Stored with the letter; a replay that kept it would be refused
		// by the original stream.
		h.Set(jetstream.ExpectedStreamHeader, bus.StreamDLQ)
		ack, err := e.js.PublishMsg(e.ctx, &nats.Msg{Subject: bus.DLQSubject(l.subject), Header: h, Data: body(n, l.subject)})
		if err != nil {
			e.t.Fatal(err)
		}
		if ack.Sequence != uint64(n) {
			e.t.Fatalf("seeded letter %d got DLQ seq %d", n, ack.Sequence)
		}
	}
}

func seqs(ls []deadletter.Letter) []uint64 {
	out := []uint64{}
	for _, l := range ls {
		out = append(out, l.Seq)
	}
	return out
}

func (e *env) dlqSeqs() []uint64 {
	e.t.Helper()
	ls, err := e.store.List(e.ctx, deadletter.Filter{})
	if err != nil {
		e.t.Fatal(err)
	}
	return seqs(ls)
}

func (e *env) streamMsgs(name string) uint64 {
	e.t.Helper()
	st, err := e.js.Stream(e.ctx, name)
	if err != nil {
		e.t.Fatal(err)
	}
	return st.CachedInfo().State.Msgs
}

func TestList(t *testing.T) {
	e := newEnv(t)
	e.seedDLQ()
	tests := []struct {
		name string
		f    deadletter.Filter
		want []uint64
	}{
		{"no filter", deadletter.Filter{}, []uint64{1, 2, 3, 4, 5}},
		{"subject exact", deadletter.Filter{Subject: "scm.annotation.requested"}, []uint64{1, 2}},
		{"subject star", deadletter.Filter{Subject: "integration.*"}, []uint64{3, 4}},
		{"subject gt", deadletter.Filter{Subject: "scm.>"}, []uint64{1, 2, 5}},
		{"subject star middle", deadletter.Filter{Subject: "scm.*.completed"}, []uint64{5}},
		{"subject no match", deadletter.Filter{Subject: "ingest.>"}, []uint64{}},
		{"tenant", deadletter.Filter{TenantID: "t1"}, []uint64{1, 3, 5}},
		{"integration", deadletter.Filter{IntegrationID: "i1"}, []uint64{1, 4, 5}},
		{"error case-insensitive", deadletter.Filter{ErrorContains: "NOT FOUND"}, []uint64{1}},
		{"error substring", deadletter.Filter{ErrorContains: "exhausted"}, []uint64{5}},
		{"since inclusive", deadletter.Filter{Since: base.Add(4 * time.Hour)}, []uint64{4, 5}},
		{"until exclusive", deadletter.Filter{Until: base.Add(2 * time.Hour)}, []uint64{1}},
		{"since and until", deadletter.Filter{Since: base.Add(2 * time.Hour), Until: base.Add(4 * time.Hour)}, []uint64{2, 3}},
		{"limit", deadletter.Filter{Limit: 2}, []uint64{1, 2}},
		{"limit after filter", deadletter.Filter{TenantID: "t1", Limit: 2}, []uint64{1, 3}},
		{"tenant and subject", deadletter.Filter{TenantID: "t2", Subject: "scm.>"}, []uint64{2}},
		{"tenant and integration", deadletter.Filter{TenantID: "t2", IntegrationID: "i1"}, []uint64{4}},
		{"unknown tenant", deadletter.Filter{TenantID: "nobody"}, []uint64{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ls, err := e.store.List(e.ctx, tt.f)
			if err != nil {
				t.Fatal(err)
			}
			if got := seqs(ls); !slices.Equal(got, tt.want) {
				t.Errorf("List(%+v) = %v, want %v", tt.f, got, tt.want)
			}
		})
	}
}

func TestListRejectsBadFilter(t *testing.T) {
	e := newEnv(t)
	tests := []struct {
		name string
		f    deadletter.Filter
		want string
	}{
		{"dlq prefix", deadletter.Filter{Subject: "dlq.scm.>"}, "original subject"},
		{"gt not last", deadletter.Filter{Subject: "scm.>.x"}, "before the last token"},
		{"empty token", deadletter.Filter{Subject: "scm..x"}, "empty token"},
		{"wildcard in token", deadletter.Filter{Subject: "scm.ann*"}, "wildcard inside"},
		{"since after until", deadletter.Filter{Since: base.Add(time.Hour), Until: base}, "not before"},
		{"negative limit", deadletter.Filter{Limit: -1}, "negative"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := e.store.List(e.ctx, tt.f)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("List(%+v) error = %v, want one containing %q", tt.f, err, tt.want)
			}
		})
	}
}

// Listing must leave the server as it was: no consumer, no message gone.
func TestListChangesNothing(t *testing.T) {
	e := newEnv(t)
	e.seedDLQ()
	for range 2 {
		if _, err := e.store.List(e.ctx, deadletter.Filter{Subject: "scm.>"}); err != nil {
			t.Fatal(err)
		}
	}
	st, err := e.js.Stream(e.ctx, bus.StreamDLQ)
	if err != nil {
		t.Fatal(err)
	}
	info := st.CachedInfo()
	if info.State.Consumers != 0 || info.State.Msgs != 5 {
		t.Fatalf("after List: %d consumers, %d messages; want 0 and 5", info.State.Consumers, info.State.Msgs)
	}
}

// A letter without failure-time headers (written by hand, say) is placed
// in time by when the stream stored it.
func TestListTimeFallsBackToStoredAt(t *testing.T) {
	e := newEnv(t)
	e.seedDLQ()
	if _, err := e.js.Publish(e.ctx, "dlq.scm.annotation.requested", []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	ls, err := e.store.List(e.ctx, deadletter.Filter{Since: time.Now().Add(-time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	if got := seqs(ls); !slices.Equal(got, []uint64{6}) {
		t.Fatalf("List(since an hour ago) = %v, want [6]", got)
	}
	if ls[0].OriginalSubject != "scm.annotation.requested" {
		t.Errorf("OriginalSubject = %q, want it taken from the DLQ subject", ls[0].OriginalSubject)
	}
}

func TestShow(t *testing.T) {
	e := newEnv(t)
	e.seedDLQ()
	l, err := e.store.Show(e.ctx, 2)
	if err != nil {
		t.Fatal(err)
	}
	want := deadletter.Letter{
		Seq: 2, Subject: "dlq.scm.annotation.requested", OriginalSubject: "scm.annotation.requested",
		MsgID: "ev-2", TenantID: "t2", IntegrationID: "i2", ErrorClass: "transient",
		LastError: "timeout talking to gitlab.example", Service: "annotator", DeliveryCount: 5,
		FirstFailure: base.Add(2*time.Hour - time.Minute), LastFailure: base.Add(2 * time.Hour),
	}
	got := l
	got.Header, got.Data, got.StoredAt = nil, nil, time.Time{}
	if !equalLetter(got, want) {
		t.Errorf("Show(2) =\n%+v\nwant\n%+v", got, want)
	}
	if !bytes.Equal(l.Data, body(2, "scm.annotation.requested")) {
		t.Errorf("Data = %s", l.Data)
	}
	if l.Header.Get(bus.HeaderStreamSequence) != "102" || l.StoredAt.IsZero() {
		t.Errorf("Header or StoredAt missing: %v %v", l.Header, l.StoredAt)
	}

	for _, seq := range []uint64{0, 99} {
		if _, err := e.store.Show(e.ctx, seq); !errors.Is(err, deadletter.ErrNotFound) {
			t.Errorf("Show(%d) error = %v, want ErrNotFound", seq, err)
		}
	}
}

func equalLetter(a, b deadletter.Letter) bool {
	return a.Seq == b.Seq && a.Subject == b.Subject && a.OriginalSubject == b.OriginalSubject &&
		a.MsgID == b.MsgID && a.TenantID == b.TenantID && a.IntegrationID == b.IntegrationID &&
		a.ErrorClass == b.ErrorClass && a.LastError == b.LastError && a.Service == b.Service &&
		a.DeliveryCount == b.DeliveryCount && a.FirstFailure.Equal(b.FirstFailure) &&
		a.LastFailure.Equal(b.LastFailure) && a.SpooledAt.Equal(b.SpooledAt)
}

func TestReplay(t *testing.T) {
	e := newEnv(t)
	e.seedDLQ()
	f := deadletter.Filter{TenantID: "t1", Subject: "scm.>"}
	res, err := e.store.Replay(e.ctx, f, deadletter.ReplayOptions{Operator: "alice"})
	if err != nil {
		t.Fatal(err)
	}
	if res.DryRun || len(res.Replayed) != 2 {
		t.Fatalf("Replay = %+v, want 2 replayed (seqs 1 and 5)", res)
	}

	// Each replayed message is in the original stream, body byte for byte,
	// under a new id that points back at its letter.
	for i, r := range res.Replayed {
		wantSeq := []uint64{1, 5}[i]
		if r.Seq != wantSeq || r.OriginalSubject != seedLetters[wantSeq-1].subject {
			t.Errorf("Replayed[%d] = %+v, want seq %d to %s", i, r, wantSeq, seedLetters[wantSeq-1].subject)
		}
		if _, err := uuid.Parse(r.NewMsgID); err != nil {
			t.Errorf("NewMsgID %q is not a UUID: %v", r.NewMsgID, err)
		}
		m := e.lastOn(bus.StreamSCM, r.OriginalSubject)
		if !bytes.Equal(m.Data, body(int(wantSeq), r.OriginalSubject)) {
			t.Errorf("replayed body = %s, want it byte-identical to the letter's", m.Data)
		}
		h := m.Header
		checks := map[string]string{
			bus.HeaderMsgID:         r.NewMsgID,
			bus.HeaderReplayOf:      strconv.FormatUint(wantSeq, 10),
			bus.HeaderOriginalMsgID: origID(int(wantSeq)),
			bus.HeaderTenantID:      "t1",
			bus.HeaderIntegrationID: seedLetters[wantSeq-1].integration,
			bus.HeaderTraceParent:   "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
		}
		for k, v := range checks {
			if h.Get(k) != v {
				t.Errorf("replayed header %s = %q, want %q", k, h.Get(k), v)
			}
		}
		for _, k := range []string{bus.HeaderErrorClass, bus.HeaderLastError, bus.HeaderDeliveryCount, bus.HeaderFirstFailure,
			bus.HeaderLastFailure, bus.HeaderService, bus.HeaderOriginalSubject, bus.HeaderStreamSequence} {
			if _, ok := h[k]; ok {
				t.Errorf("replayed message still has failure header %s", k)
			}
		}
	}
	if n := e.streamMsgs(bus.StreamSCM); n != 2 {
		t.Errorf("SCM stream has %d messages, want 2", n)
	}
	if got := e.dlqSeqs(); !slices.Equal(got, []uint64{2, 3, 4}) {
		t.Errorf("DLQ after replay = %v, want [2 3 4]", got)
	}

	recs := e.audit.records(t)
	if len(recs) != 1 {
		t.Fatalf("audit records = %v, want exactly one", recs)
	}
	r := recs[0]
	if r["msg"] != "dlq replay" || r["level"] != "INFO" || r["operator"] != "alice" || r["count"] != 2.0 || r["dry_run"] != false {
		t.Errorf("audit record = %v", r)
	}
	if r["time"] != auditClock.Format(time.RFC3339) {
		t.Errorf("audit time = %v, want the store's clock %v", r["time"], auditClock)
	}
	if fl, _ := r["filter"].(map[string]any); fl["tenant"] != "t1" || fl["subject"] != "scm.>" {
		t.Errorf("audit filter = %v, want tenant t1 and subject scm.>", r["filter"])
	}
	if ids := fmt.Sprint(r["new_msg_ids"]); ids != fmt.Sprint([]any{res.Replayed[0].NewMsgID, res.Replayed[1].NewMsgID}) {
		t.Errorf("audit new_msg_ids = %v", ids)
	}
	if s := fmt.Sprint(r["seqs"]); s != "[1 5]" {
		t.Errorf("audit seqs = %v, want [1 5]", s)
	}
}

// lastOn returns the last message on subject in stream.
func (e *env) lastOn(stream, subject string) *jetstream.RawStreamMsg {
	e.t.Helper()
	st, err := e.js.Stream(e.ctx, stream)
	if err != nil {
		e.t.Fatal(err)
	}
	m, err := st.GetLastMsgForSubject(e.ctx, subject)
	if err != nil {
		e.t.Fatalf("last message on %s in %s: %v", subject, stream, err)
	}
	return m
}

// A consumer of the original stream receives the replay like any message.
func TestReplayReachesConsumer(t *testing.T) {
	e := newEnv(t)
	e.seedDLQ()
	cons, err := e.js.CreateConsumer(e.ctx, bus.StreamIntegrations, jetstream.ConsumerConfig{
		Durable: "test", AckPolicy: jetstream.AckExplicitPolicy, FilterSubject: "integration.created",
	})
	if err != nil {
		t.Fatal(err)
	}
	res, err := e.store.Replay(e.ctx, deadletter.Filter{}, deadletter.ReplayOptions{Operator: "bob", Seqs: []uint64{3}})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Replayed) != 1 {
		t.Fatalf("Replay(seq 3) = %+v", res)
	}
	msg, err := cons.Next(jetstream.FetchMaxWait(5 * time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if err := msg.Ack(); err != nil {
		t.Fatal(err)
	}
	if msg.Headers().Get(bus.HeaderReplayOf) != "3" || !bytes.Equal(msg.Data(), body(3, "integration.created")) {
		t.Errorf("consumer got %v %s", msg.Headers(), msg.Data())
	}
	if got := e.dlqSeqs(); !slices.Equal(got, []uint64{1, 2, 4, 5}) {
		t.Errorf("DLQ after replay = %v, want [1 2 4 5]", got)
	}
}

func TestReplayDryRunChangesNothing(t *testing.T) {
	e := newEnv(t)
	e.seedDLQ()
	res, err := e.store.Replay(e.ctx, deadletter.Filter{Subject: "scm.>"}, deadletter.ReplayOptions{DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	if !res.DryRun || !slices.Equal(replayedSeqs(res), []uint64{1, 2, 5}) {
		t.Fatalf("dry run = %+v, want seqs 1 2 5", res)
	}
	for _, r := range res.Replayed {
		if r.NewMsgID != "" {
			t.Errorf("dry run invented a message id %q", r.NewMsgID)
		}
	}
	if got := e.dlqSeqs(); len(got) != 5 {
		t.Errorf("DLQ after dry run = %v, want all 5", got)
	}
	if n := e.streamMsgs(bus.StreamSCM); n != 0 {
		t.Errorf("SCM stream has %d messages after a dry run", n)
	}
	recs := e.audit.records(t)
	if len(recs) != 1 || recs[0]["dry_run"] != true || recs[0]["count"] != 3.0 {
		t.Errorf("audit = %v, want one dry-run record with count 3", recs)
	}
}

func replayedSeqs(r deadletter.ReplayResult) []uint64 {
	out := []uint64{}
	for _, x := range r.Replayed {
		out = append(out, x.Seq)
	}
	return out
}

func TestReplayRefusals(t *testing.T) {
	e := newEnv(t)
	e.seedDLQ()
	tests := []struct {
		name string
		f    deadletter.Filter
		opts deadletter.ReplayOptions
		is   error
		want string
	}{
		{"no operator", deadletter.Filter{}, deadletter.ReplayOptions{}, nil, "operator"},
		{"unknown seq", deadletter.Filter{}, deadletter.ReplayOptions{Operator: "a", Seqs: []uint64{3, 99}}, deadletter.ErrNotFound, "99"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := e.store.Replay(e.ctx, tt.f, tt.opts)
			if err == nil || !strings.Contains(err.Error(), tt.want) || (tt.is != nil && !errors.Is(err, tt.is)) {
				t.Fatalf("Replay error = %v, want one containing %q (is %v)", err, tt.want, tt.is)
			}
		})
	}
	if got := e.dlqSeqs(); len(got) != 5 {
		t.Errorf("DLQ after refused replays = %v, want all 5", got)
	}
	if n := e.streamMsgs(bus.StreamSCM) + e.streamMsgs(bus.StreamIntegrations); n != 0 {
		t.Errorf("%d messages replayed by refused runs", n)
	}
}

// A letter whose original subject no stream takes cannot be replayed: the
// run stops there, keeps that letter, and still reports what it did.
func TestReplayStopsAtFailedPublish(t *testing.T) {
	e := newEnv(t)
	e.seedDLQ()
	if _, err := e.js.Publish(e.ctx, "dlq.nowhere.thing", []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	if _, err := e.js.Publish(e.ctx, "dlq.integration.deleted", []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	res, err := e.store.Replay(e.ctx, deadletter.Filter{}, deadletter.ReplayOptions{Operator: "carol", Seqs: []uint64{1, 6, 7}})
	if err == nil || !strings.Contains(err.Error(), "nowhere.thing") {
		t.Fatalf("Replay error = %v, want one naming nowhere.thing", err)
	}
	if !slices.Equal(replayedSeqs(res), []uint64{1}) {
		t.Errorf("Replayed = %v, want [1] (the one before the failure)", replayedSeqs(res))
	}
	if got := e.dlqSeqs(); !slices.Equal(got, []uint64{2, 3, 4, 5, 6, 7}) {
		t.Errorf("DLQ = %v, want everything but 1", got)
	}
	recs := e.audit.records(t)
	if len(recs) != 1 || recs[0]["count"] != 1.0 || !strings.Contains(fmt.Sprint(recs[0]["error"]), "nowhere.thing") {
		t.Errorf("audit = %v, want one record with count 1 and the error", recs)
	}
}

func TestPurge(t *testing.T) {
	tests := []struct {
		name    string
		f       deadletter.Filter
		opts    deadletter.PurgeOptions
		want    int
		left    []uint64
		wantErr string
	}{
		{"tenant", deadletter.Filter{TenantID: "t2"}, deadletter.PurgeOptions{Operator: "o"}, 2, []uint64{1, 3, 5}, ""},
		{"error text and since", deadletter.Filter{ErrorContains: "503", Since: base}, deadletter.PurgeOptions{Operator: "o"}, 1, []uint64{1, 2, 3, 4}, ""},
		{"seqs narrowed by filter", deadletter.Filter{TenantID: "t1"}, deadletter.PurgeOptions{Operator: "o", Seqs: []uint64{1, 2}}, 1, []uint64{2, 3, 4, 5}, ""},
		{"dry run", deadletter.Filter{Subject: "scm.>"}, deadletter.PurgeOptions{Operator: "o", DryRun: true}, 3, []uint64{1, 2, 3, 4, 5}, ""},
		{"no filter refused", deadletter.Filter{}, deadletter.PurgeOptions{Operator: "o"}, 0, []uint64{1, 2, 3, 4, 5}, "every dead letter"},
		{"all", deadletter.Filter{}, deadletter.PurgeOptions{Operator: "o", All: true}, 5, []uint64{}, ""},
		{"no operator", deadletter.Filter{TenantID: "t1"}, deadletter.PurgeOptions{}, 0, []uint64{1, 2, 3, 4, 5}, "operator"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			e.seedDLQ()
			n, err := e.store.Purge(e.ctx, tt.f, tt.opts)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Purge error = %v, want one containing %q", err, tt.wantErr)
				}
			} else if err != nil {
				t.Fatal(err)
			}
			if n != tt.want {
				t.Errorf("Purge = %d, want %d", n, tt.want)
			}
			if got := e.dlqSeqs(); !slices.Equal(got, tt.left) {
				t.Errorf("DLQ after purge = %v, want %v", got, tt.left)
			}
			recs := e.audit.records(t)
			if tt.wantErr != "" {
				if len(recs) != 0 {
					t.Errorf("a refused purge left audit records %v", recs)
				}
				return
			}
			if len(recs) != 1 || recs[0]["msg"] != "dlq purge" || recs[0]["count"] != float64(tt.want) || recs[0]["dry_run"] != tt.opts.DryRun {
				t.Errorf("audit = %v", recs)
			}
		})
	}
}

// spooled is a payload held for an offline integration.
type spooled struct{ subject, integration, id string }

var seedSpool = []spooled{
	{"scm.annotation.requested", "i1", "a1"},
	{"scm.annotation.requested", "i2", "b1"},
	{"scm.annotation.requested", "i1", "a2"},
	{"integration.updated", "i2", "b2"},
	{"scm.annotation.requested", "i1", "a3"},
	{"scm.annotation.requested", "i2", "b3"},
}

func (e *env) seedSpool() {
	e.t.Helper()
	for i, s := range seedSpool {
		h := nats.Header{}
		h.Set(bus.HeaderMsgID, fmt.Sprintf("%s:SCM:%d", bus.SpoolSubject(s.subject, s.integration), 200+i))
		h.Set(bus.HeaderOriginalMsgID, s.id)
		h.Set(bus.HeaderTenantID, "t1")
		h.Set(bus.HeaderIntegrationID, s.integration)
		h.Set(bus.HeaderOriginalSubject, s.subject)
		h.Set(bus.HeaderErrorClass, "offline")
		h.Set(bus.HeaderLastError, "integration "+s.integration+" is offline")
		h.Set(bus.HeaderSpooledAt, base.Add(time.Duration(i)*time.Minute).Format(time.RFC3339))
		if _, err := e.js.PublishMsg(e.ctx, &nats.Msg{Subject: bus.SpoolSubject(s.subject, s.integration), Header: h, Data: spoolBody(s.id)}); err != nil {
			e.t.Fatal(err)
		}
	}
}

func spoolBody(id string) []byte { return fmt.Appendf(nil, `{"specversion":"1.0","id":%q}`, id) }

func TestSpoolList(t *testing.T) {
	e := newEnv(t)
	e.seedSpool()
	tests := []struct {
		name string
		f    deadletter.Filter
		want []uint64
	}{
		{"all", deadletter.Filter{}, []uint64{1, 2, 3, 4, 5, 6}},
		{"integration", deadletter.Filter{IntegrationID: "i1"}, []uint64{1, 3, 5}},
		{"subject and integration", deadletter.Filter{Subject: "scm.annotation.requested", IntegrationID: "i2"}, []uint64{2, 6}},
		{"subject", deadletter.Filter{Subject: "integration.*"}, []uint64{4}},
		{"subject gt", deadletter.Filter{Subject: "scm.>"}, []uint64{1, 2, 3, 5, 6}},
		{"since", deadletter.Filter{Since: base.Add(4 * time.Minute)}, []uint64{5, 6}},
		{"until", deadletter.Filter{Until: base.Add(time.Minute)}, []uint64{1}},
		{"limit", deadletter.Filter{IntegrationID: "i2", Limit: 1}, []uint64{2}},
		{"error", deadletter.Filter{ErrorContains: "I2 IS OFFLINE"}, []uint64{2, 4, 6}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ls, err := e.store.SpoolList(e.ctx, tt.f)
			if err != nil {
				t.Fatal(err)
			}
			if got := seqs(ls); !slices.Equal(got, tt.want) {
				t.Errorf("SpoolList(%+v) = %v, want %v", tt.f, got, tt.want)
			}
		})
	}

	ls, err := e.store.SpoolList(e.ctx, deadletter.Filter{Limit: 1})
	if err != nil {
		t.Fatal(err)
	}
	l := ls[0]
	if l.OriginalSubject != "scm.annotation.requested" || l.IntegrationID != "i1" || l.MsgID != "a1" || l.TenantID != "t1" ||
		!l.SpooledAt.Equal(base) || l.ErrorClass != "offline" {
		t.Errorf("spool letter = %+v", l)
	}
}

// An entry spooled by hand, without the Inthub headers, is read from its
// subject: spool.<original subject>.<integration>.
func TestSpoolListFromSubject(t *testing.T) {
	e := newEnv(t)
	if _, err := e.js.Publish(e.ctx, "spool.integration.created.i9", []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	ls, err := e.store.SpoolList(e.ctx, deadletter.Filter{IntegrationID: "i9"})
	if err != nil {
		t.Fatal(err)
	}
	if len(ls) != 1 || ls[0].OriginalSubject != "integration.created" || ls[0].IntegrationID != "i9" || ls[0].ErrorClass != "" {
		t.Fatalf("SpoolList = %+v", ls)
	}
}

func TestSpoolDrain(t *testing.T) {
	e := newEnv(t)
	e.seedSpool()
	res, err := e.store.SpoolDrain(e.ctx, deadletter.Filter{Subject: "scm.annotation.requested"}, deadletter.ReplayOptions{Operator: "annotation-worker"})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(replayedSeqs(res), []uint64{1, 2, 3, 5, 6}) {
		t.Fatalf("drained %v, want spool seqs 1 2 3 5 6", replayedSeqs(res))
	}
	for _, r := range res.Replayed {
		want := fmt.Sprintf("%s:drain:%d", seedSpool[r.Seq-1].id, r.Seq)
		if r.NewMsgID != want || r.Duplicate {
			t.Errorf("Replayed %+v, want NewMsgID %q and no duplicate", r, want)
		}
	}

	// Order in the target stream, per integration and overall, is spool order.
	byIntegration := map[string][]string{}
	var all []string
	st, err := e.js.Stream(e.ctx, bus.StreamSCM)
	if err != nil {
		t.Fatal(err)
	}
	for seq := uint64(1); seq <= st.CachedInfo().State.LastSeq; seq++ {
		m, err := st.GetMsg(e.ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		var ev struct{ ID string }
		if err := json.Unmarshal(m.Data, &ev); err != nil {
			t.Fatal(err)
		}
		in := m.Header.Get(bus.HeaderIntegrationID)
		byIntegration[in] = append(byIntegration[in], ev.ID)
		all = append(all, ev.ID)
		if m.Header.Get(bus.HeaderSpooledAt) != "" || m.Header.Get(bus.HeaderOriginalSubject) != "" ||
			m.Header.Get(bus.HeaderErrorClass) != "" || m.Header.Get(bus.HeaderLastError) != "" {
			t.Errorf("drained message keeps spool headers: %v", m.Header)
		}
		if m.Header.Get(bus.HeaderOriginalMsgID) != ev.ID {
			t.Errorf("drained message Original-Msg-Id = %q, want %q", m.Header.Get(bus.HeaderOriginalMsgID), ev.ID)
		}
	}
	if got := fmt.Sprint(byIntegration); got != "map[i1:[a1 a2 a3] i2:[b1 b3]]" {
		t.Errorf("per-integration order = %s", got)
	}
	if got := strings.Join(all, " "); got != "a1 b1 a2 a3 b3" {
		t.Errorf("order in SCM = %s, want spool order", got)
	}

	left, err := e.store.SpoolList(e.ctx, deadletter.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	if got := seqs(left); !slices.Equal(got, []uint64{4}) {
		t.Errorf("spool after drain = %v, want [4] (other subject)", got)
	}
	recs := e.audit.records(t)
	if len(recs) != 1 || recs[0]["msg"] != "spool drain" || recs[0]["count"] != 5.0 || recs[0]["operator"] != "annotation-worker" {
		t.Errorf("audit = %v", recs)
	}
}

// A drain that crashed after publishing but before deleting the entry is
// run again: the derived message id makes JetStream drop the second copy.
func TestSpoolDrainAfterCrashDeliversOnce(t *testing.T) {
	e := newEnv(t)
	e.seedSpool()
	ls, err := e.store.SpoolList(e.ctx, deadletter.Filter{IntegrationID: "i1", Limit: 1})
	if err != nil {
		t.Fatal(err)
	}
	first := ls[0]
	// What the crashed drain got as far as: the publish, not the delete.
	h := nats.Header{}
	h.Set(bus.HeaderMsgID, deadletter.DrainMsgID(first))
	h.Set(bus.HeaderIntegrationID, "i1")
	if _, err := e.js.PublishMsg(e.ctx, &nats.Msg{Subject: first.OriginalSubject, Header: h, Data: first.Data}); err != nil {
		t.Fatal(err)
	}

	res, err := e.store.SpoolDrain(e.ctx, deadletter.Filter{IntegrationID: "i1"}, deadletter.ReplayOptions{Operator: "ops"})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Replayed) != 3 || !res.Replayed[0].Duplicate || res.Replayed[1].Duplicate {
		t.Fatalf("drain = %+v, want 3 with only the first a duplicate", res)
	}
	if n := e.streamMsgs(bus.StreamSCM); n != 3 {
		t.Errorf("SCM stream has %d messages, want 3: the crashed drain's copy and the redo are one", n)
	}
	left, err := e.store.SpoolList(e.ctx, deadletter.Filter{IntegrationID: "i1"})
	if err != nil {
		t.Fatal(err)
	}
	if len(left) != 0 {
		t.Errorf("spool still holds %v for i1", seqs(left))
	}
}

func TestSpoolDrainDryRun(t *testing.T) {
	e := newEnv(t)
	e.seedSpool()
	res, err := e.store.SpoolDrain(e.ctx, deadletter.Filter{IntegrationID: "i2"}, deadletter.ReplayOptions{DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(replayedSeqs(res), []uint64{2, 4, 6}) || res.Replayed[0].NewMsgID != "b1:drain:2" {
		t.Fatalf("dry run = %+v", res)
	}
	if n := e.streamMsgs(bus.StreamSpool); n != 6 {
		t.Errorf("spool has %d entries after a dry run, want 6", n)
	}
	if n := e.streamMsgs(bus.StreamSCM) + e.streamMsgs(bus.StreamIntegrations); n != 0 {
		t.Errorf("dry run published %d messages", n)
	}
}

// Compact sees every matching entry first; those it names are deleted, not
// drained, and the rest keep their order.
func TestSpoolDrainCompact(t *testing.T) {
	for _, dry := range []bool{false, true} {
		t.Run(fmt.Sprintf("dry=%v", dry), func(t *testing.T) {
			e := newEnv(t)
			e.seedSpool()
			var seen []uint64
			compact := func(ls []deadletter.Letter) map[uint64]string {
				seen = seqs(ls)
				return map[uint64]string{1: "superseded by seq 5", 3: "superseded by seq 5"}
			}
			res, err := e.store.SpoolDrain(e.ctx, deadletter.Filter{IntegrationID: "i1"},
				deadletter.ReplayOptions{Operator: "ops", DryRun: dry, Compact: compact})
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(seen, []uint64{1, 3, 5}) {
				t.Errorf("Compact saw %v, want [1 3 5]", seen)
			}
			if !slices.Equal(replayedSeqs(res), []uint64{5}) || len(res.Dropped) != 2 ||
				res.Dropped[0] != (deadletter.Dropped{Seq: 1, Reason: "superseded by seq 5"}) {
				t.Fatalf("drain = %+v, want seq 5 drained and 1, 3 dropped", res)
			}
			wantSpool, wantSCM := uint64(3), uint64(1)
			if dry {
				wantSpool, wantSCM = 6, 0
			}
			if n := e.streamMsgs(bus.StreamSpool); n != wantSpool {
				t.Errorf("spool holds %d entries, want %d", n, wantSpool)
			}
			if n := e.streamMsgs(bus.StreamSCM); n != wantSCM {
				t.Errorf("SCM holds %d messages, want %d", n, wantSCM)
			}
		})
	}
}

func TestMissingStream(t *testing.T) {
	s := natstest.Start(t)
	js, _ := s.JetStream()
	st, err := deadletter.New(js, deadletter.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = st.List(ctx, deadletter.Filter{})
	if !errors.Is(err, jetstream.ErrStreamNotFound) || !strings.Contains(err.Error(), "provisioned") {
		t.Fatalf("List without streams = %v, want ErrStreamNotFound with a hint", err)
	}
}

// nats.go reads with direct gets when a stream allows them; the letters
// must look the same either way, with no Nats-Stream & co. added.
func TestListWithDirectGet(t *testing.T) {
	e := newEnv(t)
	e.seedDLQ()
	st, err := e.js.Stream(e.ctx, bus.StreamDLQ)
	if err != nil {
		t.Fatal(err)
	}
	cfg := st.CachedInfo().Config
	cfg.AllowDirect = true
	if _, err := e.js.UpdateStream(e.ctx, cfg); err != nil {
		t.Fatal(err)
	}
	ls, err := e.store.List(e.ctx, deadletter.Filter{Subject: "scm.>", TenantID: "t1"})
	if err != nil {
		t.Fatal(err)
	}
	if got := seqs(ls); !slices.Equal(got, []uint64{1, 5}) {
		t.Fatalf("List = %v, want [1 5]", got)
	}
	l, err := e.store.Show(e.ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{jetstream.StreamHeader, jetstream.SequenceHeader, jetstream.TimeStampHeaer, jetstream.SubjectHeader} {
		if _, ok := l.Header[k]; ok {
			t.Errorf("letter has direct-get header %s: %v", k, l.Header)
		}
	}
	if l.MsgID != "ev-1" || l.StoredAt.IsZero() || !bytes.Equal(l.Data, body(1, "scm.annotation.requested")) {
		t.Errorf("letter via direct get = %+v", l)
	}
	if _, err := e.store.Show(e.ctx, 99); !errors.Is(err, deadletter.ErrNotFound) {
		t.Errorf("Show(99) via direct get = %v, want ErrNotFound", err)
	}
}
