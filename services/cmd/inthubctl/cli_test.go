package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"inthub.dev/events"
	"net"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	"inthub.dev/pkg/bus"
	"inthub.dev/pkg/natstest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// now is the CLI's clock in tests; the seeded failures lie just before it,
// so relative --since values select among them.
var now = time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)

type fixture struct {
	t   *testing.T
	ctx context.Context
	url string
	js  jetstream.JetStream
	env map[string]string
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	s := natstest.Start(t)
	js, _ := s.JetStream()
	if err := bus.Provision(ctx, js, bus.DefaultStreamSettings()); err != nil {
		t.Fatal(err)
	}
	return &fixture{t: t, ctx: ctx, url: s.URL(), js: js, env: map[string]string{"USER": "tester"}}
}

type result struct {
	code           int
	stdout, stderr string
}

// run runs inthubctl in-process against the fixture's server.
func (f *fixture) run(args ...string) result {
	f.t.Helper()
	if f.url != "" {
		args = append([]string{"--nats-url", f.url}, args...)
	}
	return runWith(f.ctx, f.env, args...)
}

func runWith(ctx context.Context, envs map[string]string, args ...string) result {
	var out, errb bytes.Buffer
	code := runEnv(ctx, args, &out, &errb, env{
		getenv: func(k string) string { return envs[k] },
		now:    func() time.Time { return now },
	})
	return result{code, out.String(), errb.String()}
}

// seed writes dead letters as the worker frame does: 1 and 2 for tenant
// acme, 3 for tenant globex with a body that is not JSON.
func (f *fixture) seed() {
	f.t.Helper()
	letters := []struct {
		subject, tenant, integration, class, err string
		ago                                      time.Duration
		body                                     []byte
	}{
		{"scm.annotation.requested", "acme", "gh-1", "permanent", "GitHub 422: Validation Failed: the line is outside the diff, so no annotation can be placed there", 3 * time.Hour, []byte(`{"specversion":"1.0","id":"e1","type":"scm.annotation.requested"}`)},
		{"integration.created", "acme", "gl-2", "transient", "retries exhausted: dial tcp: i/o timeout", 90 * time.Minute, []byte(`{"specversion":"1.0","id":"e2","type":"integration.created"}`)},
		{"scm.annotation.requested", "globex", "gh-3", "permanent", "decode: invalid character", 10 * time.Minute, []byte("\x00not json")},
	}
	for i, l := range letters {
		h := nats.Header{}
		h.Set(bus.HeaderMsgID, "e"+strconv.Itoa(i+1))
		h.Set(bus.HeaderTenantID, l.tenant)
		h.Set(bus.HeaderIntegrationID, l.integration)
		h.Set(bus.HeaderOriginalSubject, l.subject)
		h.Set(bus.HeaderErrorClass, l.class)
		h.Set(bus.HeaderLastError, l.err)
		h.Set(bus.HeaderDeliveryCount, strconv.Itoa(i+1))
		h.Set(bus.HeaderService, "annotator")
		h.Set(bus.HeaderFirstFailure, now.Add(-l.ago-time.Minute).Format(time.RFC3339))
		h.Set(bus.HeaderLastFailure, now.Add(-l.ago).Format(time.RFC3339))
		if _, err := f.js.PublishMsg(f.ctx, &nats.Msg{Subject: bus.DLQSubject(l.subject), Header: h, Data: l.body}); err != nil {
			f.t.Fatal(err)
		}
	}
}

func (f *fixture) msgs(stream string) uint64 {
	f.t.Helper()
	st, err := f.js.Stream(f.ctx, stream)
	if err != nil {
		f.t.Fatal(err)
	}
	return st.CachedInfo().State.Msgs
}

func TestHelp(t *testing.T) {
	tests := [][]string{
		{"--help"}, {"-h"}, {"help"}, {"help", "dlq"},
		{"dlq", "--help"}, {"spool", "-h"},
		{"dlq", "list", "--help"}, {"dlq", "show", "--help"}, {"dlq", "replay", "-h"},
		{"dlq", "purge", "--help"}, {"spool", "list", "--help"}, {"spool", "drain", "--help"},
	}
	for _, args := range tests {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			r := runWith(context.Background(), nil, args...)
			if r.code != exitOK || !strings.HasPrefix(r.stdout, "Usage: inthubctl") || r.stderr != "" {
				t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
			}
		})
	}
	r := runWith(context.Background(), nil, "dlq", "purge", "--help")
	for _, want := range []string{"--all", "--dry-run", "--seq", "--operator", "--subject", "--since", "--nats-url", "-o"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("dlq purge --help lacks %s:\n%s", want, r.stdout)
		}
	}
}

// Usage errors exit 2 before any connection is made (there is no server).
func TestUsageErrors(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{nil, "missing command"},
		{[]string{"--bogus"}, "bogus"},
		{[]string{"frobnicate"}, "unknown command"},
		{[]string{"dlq"}, "missing dlq command"},
		{[]string{"dlq", "nope"}, "unknown dlq command"},
		{[]string{"dlq", "list", "--bogus"}, "bogus"},
		{[]string{"dlq", "list", "extra"}, "unexpected argument"},
		{[]string{"dlq", "list", "-o", "yaml"}, "not table or json"},
		{[]string{"dlq", "list", "--since", "yesterday"}, "--since"},
		{[]string{"dlq", "list", "--until", "-2h"}, "--until"},
		{[]string{"dlq", "list", "--limit", "-1"}, "negative"},
		{[]string{"dlq", "show"}, "exactly one"},
		{[]string{"dlq", "show", "abc"}, "not a stream sequence"},
		{[]string{"dlq", "replay", "--seq", "1,x"}, "not a stream sequence"},
		{[]string{"dlq", "purge"}, "refusing to purge"},
		{[]string{"dlq", "purge", "--dry-run"}, "refusing to purge"},
		{[]string{"spool", "drain", "--seq", "1"}, "-seq"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			r := runWith(context.Background(), map[string]string{"USER": "tester", "NATS_URL": "nats://127.0.0.1:1"}, tt.args...)
			if r.code != exitUsage || !strings.Contains(r.stderr, tt.want) || !strings.Contains(r.stderr, "--help") {
				t.Fatalf("exit %d, stderr %q; want exit 2 with %q and a pointer to --help", r.code, r.stderr, tt.want)
			}
		})
	}
	r := runWith(context.Background(), map[string]string{}, "dlq", "replay", "--tenant", "acme")
	if r.code != exitUsage || !strings.Contains(r.stderr, "--operator") {
		t.Errorf("replay without $USER or --operator: exit %d, %q", r.code, r.stderr)
	}
}

func TestPurgeRefusesWithoutFilter(t *testing.T) {
	f := newFixture(t)
	f.seed()
	r := f.run("dlq", "purge")
	if r.code != exitUsage || !strings.Contains(r.stderr, "--all") {
		t.Fatalf("exit %d, stderr %q", r.code, r.stderr)
	}
	if n := f.msgs(bus.StreamDLQ); n != 3 {
		t.Fatalf("DLQ has %d letters after a refused purge, want 3", n)
	}
}

func TestConnectError(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	url := "nats://" + l.Addr().String()
	l.Close()
	r := runWith(context.Background(), map[string]string{"NATS_URL": url}, "dlq", "list")
	if r.code != exitError || !strings.Contains(r.stderr, url) || !strings.Contains(r.stderr, "NATS_URL") {
		t.Fatalf("exit %d, stderr %q; want 1 naming the URL and NATS_URL", r.code, r.stderr)
	}
}

func TestDLQListTable(t *testing.T) {
	f := newFixture(t)
	f.seed()
	r := f.run("dlq", "list")
	if r.code != exitOK {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	lines := strings.Split(strings.TrimRight(r.stdout, "\n"), "\n")
	if len(lines) != 4 {
		t.Fatalf("want a header and 3 rows:\n%s", r.stdout)
	}
	if got := strings.Fields(lines[0]); !slices.Equal(got, []string{"SEQ", "SUBJECT", "TENANT", "INTEGRATION", "CLASS", "DELIVERIES", "LAST", "FAILURE", "ERROR"}) {
		t.Errorf("header = %q", lines[0])
	}
	row := strings.Fields(lines[1])
	if want := []string{"1", "scm.annotation.requested", "acme", "gh-1", "permanent", "1", now.Add(-3 * time.Hour).Format(time.RFC3339), "GitHub"}; !slices.Equal(row[:8], want) {
		t.Errorf("row 1 = %q, want it to start %q", lines[1], want)
	}
	if !strings.HasSuffix(lines[1], "…") || strings.Contains(lines[1], "placed there") {
		t.Errorf("long error not truncated: %q", lines[1])
	}

	// Filters: a relative --since, the tenant, the error text, the subject.
	tests := []struct {
		args []string
		want []string // first column
	}{
		{[]string{"--since", "2h"}, []string{"2", "3"}},
		{[]string{"--since", now.Add(-2 * time.Hour).Format(time.RFC3339), "--until", "30m"}, []string{"2"}},
		{[]string{"--tenant", "acme"}, []string{"1", "2"}},
		{[]string{"--error", "TIMEOUT"}, []string{"2"}},
		{[]string{"--subject", "scm.>", "--limit", "1"}, []string{"1"}},
		{[]string{"--integration", "gh-3"}, []string{"3"}},
		{[]string{"--tenant", "nobody"}, nil},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			r := f.run(append([]string{"dlq", "list"}, tt.args...)...)
			if r.code != exitOK {
				t.Fatalf("exit %d: %s", r.code, r.stderr)
			}
			var got []string
			for _, line := range strings.Split(strings.TrimRight(r.stdout, "\n"), "\n")[1:] {
				got = append(got, strings.Fields(line)[0])
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("seqs = %v, want %v\n%s", got, tt.want, r.stdout)
			}
		})
	}
}

func TestDLQListJSON(t *testing.T) {
	f := newFixture(t)
	f.seed()
	// Global flags are accepted after the subcommand too.
	r := f.run("dlq", "list", "-o", "json")
	if r.code != exitOK {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	var got []map[string]json.RawMessage
	if err := json.Unmarshal([]byte(r.stdout), &got); err != nil {
		t.Fatalf("%v\n%s", err, r.stdout)
	}
	if len(got) != 3 {
		t.Fatalf("%d letters, want 3", len(got))
	}
	var keys []string
	for k := range got[0] {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	want := []string{"data", "dataEncoding", "deliveryCount", "errorClass", "firstFailure", "headers", "integrationId",
		"lastError", "lastFailure", "msgId", "originalSubject", "seq", "service", "spooledAt", "storedAt", "subject", "tenantId"}
	if !slices.Equal(keys, want) {
		t.Errorf("JSON fields = %v\nwant %v", keys, want)
	}
	checks := map[string]string{
		"seq": `1`, "subject": `"dlq.scm.annotation.requested"`, "originalSubject": `"scm.annotation.requested"`,
		"msgId": `"e1"`, "tenantId": `"acme"`, "integrationId": `"gh-1"`, "errorClass": `"permanent"`,
		"service": `"annotator"`, "deliveryCount": `1`, "dataEncoding": `"json"`,
		"lastFailure": strconv.Quote(now.Add(-3 * time.Hour).Format(time.RFC3339)),
		"data":        `{"specversion":"1.0","id":"e1","type":"scm.annotation.requested"}`,
	}
	for k, v := range checks {
		var c bytes.Buffer
		if err := json.Compact(&c, got[0][k]); err != nil || c.String() != v {
			t.Errorf("%s = %s, want %s", k, got[0][k], v)
		}
	}
	// A body that is not JSON is base64, and says so.
	var data string
	if err := json.Unmarshal(got[2]["data"], &data); err != nil || string(got[2]["dataEncoding"]) != `"base64"` {
		t.Fatalf("letter 3 data = %s (%s)", got[2]["data"], got[2]["dataEncoding"])
	}
	if b, _ := base64.StdEncoding.DecodeString(data); string(b) != "\x00not json" {
		t.Errorf("letter 3 data decodes to %q", b)
	}

	r = f.run("dlq", "list", "-o", "json", "--tenant", "nobody")
	if r.code != exitOK || strings.TrimSpace(r.stdout) != "[]" {
		t.Errorf("empty list = %q (exit %d), want []", r.stdout, r.code)
	}
}

func TestDLQShow(t *testing.T) {
	f := newFixture(t)
	f.seed()
	r := f.run("dlq", "show", "2")
	if r.code != exitOK {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	for _, want := range []string{"Seq:", "dlq.integration.created", "retries exhausted: dial tcp: i/o timeout",
		bus.HeaderLastFailure + ": " + now.Add(-90*time.Minute).Format(time.RFC3339), `"id": "e2"`} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("show lacks %q:\n%s", want, r.stdout)
		}
	}

	// Flags after the positional argument work.
	r = f.run("dlq", "show", "2", "-o", "json")
	var got struct {
		Seq     uint64              `json:"seq"`
		Headers map[string][]string `json:"headers"`
		Data    map[string]any      `json:"data"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &got); err != nil || r.code != exitOK {
		t.Fatalf("exit %d, %v:\n%s", r.code, err, r.stdout)
	}
	if got.Seq != 2 || got.Headers[bus.HeaderTenantID][0] != "acme" || got.Data["id"] != "e2" {
		t.Errorf("show -o json = %+v", got)
	}

	r = f.run("dlq", "show", "42")
	if r.code != exitError || !strings.Contains(r.stderr, "not found") {
		t.Errorf("show 42: exit %d, %q; want 1 and not found", r.code, r.stderr)
	}
}

func TestDLQReplayDryRun(t *testing.T) {
	f := newFixture(t)
	f.seed()
	r := f.run("dlq", "replay", "--dry-run", "--tenant", "acme")
	if r.code != exitOK {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	if !strings.Contains(r.stdout, "dry run: would have replayed 2 dead letters; nothing changed") {
		t.Errorf("stdout:\n%s", r.stdout)
	}
	if n := f.msgs(bus.StreamDLQ); n != 3 {
		t.Errorf("DLQ has %d letters after a dry run, want 3", n)
	}
	if n := f.msgs(bus.StreamSCM) + f.msgs(bus.StreamIntegrations); n != 0 {
		t.Errorf("dry run published %d messages", n)
	}
	if !strings.Contains(r.stderr, `"msg":"dlq replay"`) || !strings.Contains(r.stderr, `"dry_run":true`) {
		t.Errorf("no dry-run audit record on stderr: %q", r.stderr)
	}
}

func TestDLQReplay(t *testing.T) {
	f := newFixture(t)
	f.seed()
	r := f.run("dlq", "replay", "--seq", "1", "--seq", "3", "--tenant", "acme", "--operator", "alice", "-o", "json")
	if r.code != exitOK {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	var res struct {
		DryRun   bool `json:"dryRun"`
		Count    int  `json:"count"`
		Replayed []struct {
			Seq             uint64 `json:"seq"`
			OriginalSubject string `json:"originalSubject"`
			NewMsgID        string `json:"newMsgId"`
		} `json:"replayed"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &res); err != nil {
		t.Fatalf("%v\n%s", err, r.stdout)
	}
	// --seq 3 is globex, so --tenant acme leaves only 1.
	if res.DryRun || res.Count != 1 || res.Replayed[0].Seq != 1 || res.Replayed[0].NewMsgID == "" {
		t.Fatalf("replay = %+v", res)
	}
	st, err := f.js.Stream(f.ctx, bus.StreamSCM)
	if err != nil {
		t.Fatal(err)
	}
	m, err := st.GetLastMsgForSubject(f.ctx, "scm.annotation.requested")
	if err != nil {
		t.Fatal(err)
	}
	if m.Header.Get(bus.HeaderMsgID) != res.Replayed[0].NewMsgID || m.Header.Get(bus.HeaderReplayOf) != "1" {
		t.Errorf("replayed headers = %v", m.Header)
	}
	if n := f.msgs(bus.StreamDLQ); n != 2 {
		t.Errorf("DLQ has %d letters, want 2", n)
	}
	var audit map[string]any
	if err := json.Unmarshal([]byte(strings.TrimSpace(r.stderr)), &audit); err != nil {
		t.Fatalf("stderr is not one audit record: %q", r.stderr)
	}
	if audit["operator"] != "alice" || audit["count"] != 1.0 || fmt.Sprint(audit["new_msg_ids"]) != "["+res.Replayed[0].NewMsgID+"]" {
		t.Errorf("audit = %v", audit)
	}
}

func TestDLQPurge(t *testing.T) {
	f := newFixture(t)
	f.seed()
	r := f.run("dlq", "purge", "--subject", "scm.>", "--dry-run")
	if r.code != exitOK || !strings.Contains(r.stdout, "would have purged 2 dead letters") || f.msgs(bus.StreamDLQ) != 3 {
		t.Fatalf("dry run: exit %d, %q, %s", r.code, r.stdout, r.stderr)
	}
	r = f.run("dlq", "purge", "--seq", "1,3", "-o", "json")
	if r.code != exitOK || strings.Join(strings.Fields(r.stdout), "") != `{"dryRun":false,"count":2}` {
		t.Fatalf("purge: exit %d, %q, %s", r.code, r.stdout, r.stderr)
	}
	if !strings.Contains(r.stderr, `"operator":"tester"`) {
		t.Errorf("operator does not default to $USER: %q", r.stderr)
	}
	r = f.run("dlq", "purge", "--all")
	if r.code != exitOK || !strings.Contains(r.stdout, "purged 1 dead letter\n") || f.msgs(bus.StreamDLQ) != 0 {
		t.Fatalf("purge --all: exit %d, %q, %s", r.code, r.stdout, r.stderr)
	}
}

func TestSpool(t *testing.T) {
	f := newFixture(t)
	// The URL comes from the environment this time.
	f.env["NATS_URL"], f.url = f.url, ""
	for i, in := range []string{"gh-1", "gh-2", "gh-1"} {
		h := nats.Header{}
		id := fmt.Sprintf("s%d", i+1)
		h.Set(bus.HeaderMsgID, id)
		h.Set(bus.HeaderTenantID, "acme")
		h.Set(bus.HeaderIntegrationID, in)
		h.Set(bus.HeaderOriginalSubject, "scm.annotation.requested")
		h.Set(bus.HeaderSpooledAt, now.Add(time.Duration(i-10)*time.Minute).Format(time.RFC3339))
		if _, err := f.js.PublishMsg(f.ctx, &nats.Msg{Subject: bus.SpoolSubject("scm.annotation.requested", in), Header: h, Data: fmt.Appendf(nil, `{"id":%q}`, id)}); err != nil {
			t.Fatal(err)
		}
	}
	r := f.run("spool", "list", "--integration", "gh-1")
	if r.code != exitOK {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	lines := strings.Split(strings.TrimRight(r.stdout, "\n"), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "SEQ") || strings.Fields(lines[1])[4] != "s1" || strings.Fields(lines[2])[4] != "s3" {
		t.Fatalf("spool list:\n%s", r.stdout)
	}

	r = f.run("spool", "drain", "--integration", "gh-1", "--operator", "ops")
	if r.code != exitOK || !strings.Contains(r.stdout, "s1:drain:1") || !strings.Contains(r.stdout, "drained 2 spooled payloads") {
		t.Fatalf("drain: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	if f.msgs(bus.StreamSpool) != 1 || f.msgs(bus.StreamSCM) != 2 {
		t.Errorf("after drain: spool %d, SCM %d; want 1 and 2", f.msgs(bus.StreamSpool), f.msgs(bus.StreamSCM))
	}
	if !strings.Contains(r.stderr, `"msg":"spool drain"`) {
		t.Errorf("no audit record: %q", r.stderr)
	}
}

// spool drain applies the annotation worker's merge rule: only the newest
// request per target is drained.
func TestSpoolDrainKeepsTheNewestPerTarget(t *testing.T) {
	f := newFixture(t)
	in := "5f0c7a4e-1111-4222-8333-444455556666"
	tenant := "0b5a3bb0-6a43-4d7e-9a39-6f1f9d9a0001"
	var ids []string
	for i, state := range []string{"pending", "failure", "success"} {
		ev, err := events.New(events.SubjectAnnotationRequested, "scanner", tenant, events.AnnotationRequested{
			IntegrationID: in, Operation: events.OpStatus, Repository: events.Repository{Owner: "acme", Name: "api"},
			CommitSHA: "0123456789abcdef0123456789abcdef01234567",
			Status:    &events.CommitStatus{State: state, Context: "scan"},
		})
		if err != nil {
			t.Fatal(err)
		}
		ev.Time = now.Add(time.Duration(i) * time.Second)
		b, err := ev.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, ev.ID)
		h := nats.Header{}
		h.Set(bus.HeaderMsgID, ev.ID)
		h.Set(bus.HeaderIntegrationID, in)
		h.Set(bus.HeaderOriginalSubject, events.SubjectAnnotationRequested)
		if _, err := f.js.PublishMsg(f.ctx, &nats.Msg{Subject: bus.SpoolSubject(events.SubjectAnnotationRequested, in), Header: h, Data: b}); err != nil {
			t.Fatal(err)
		}
	}
	r := f.run("spool", "drain", "--integration", in, "--operator", "ops")
	if r.code != exitOK || !strings.Contains(r.stdout, "drained 1 spooled payload") ||
		strings.Count(r.stdout, "superseded, not drained") != 2 || !strings.Contains(r.stdout, ids[2]+":drain:3") {
		t.Fatalf("drain: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	if f.msgs(bus.StreamSpool) != 0 || f.msgs(bus.StreamSCM) != 1 {
		t.Errorf("after drain: spool %d, SCM %d; want 0 and 1", f.msgs(bus.StreamSpool), f.msgs(bus.StreamSCM))
	}
}
