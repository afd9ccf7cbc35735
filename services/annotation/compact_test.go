package annotation

import (
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"inthub.dev/events"
	"inthub.dev/pkg/bus"
	"inthub.dev/pkg/deadletter"
)

const tenant = "0b5a3bb0-6a43-4d7e-9a39-6f1f9d9a00a1"

func letter(t *testing.T, spoolSeq, origSeq uint64, at time.Time, req events.AnnotationRequested) deadletter.Letter {
	t.Helper()
	ev, err := events.New(events.SubjectAnnotationRequested, "scanner", tenant, req)
	if err != nil {
		t.Fatal(err)
	}
	ev.Time = at
	b, err := ev.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	h := nats.Header{}
	h.Set(bus.HeaderStreamSequence, strconv.FormatUint(origSeq, 10))
	return deadletter.Letter{Seq: spoolSeq, Header: h, Data: b}
}

func TestCompact(t *testing.T) {
	in := "5f0c7a4e-1111-4222-8333-444455556666"
	repo := events.Repository{Owner: "acme", Name: "api"}
	sha := func(c byte) string {
		b := make([]byte, 40)
		for i := range b {
			b[i] = c
		}
		return string(b)
	}
	sticky := func(body string) events.AnnotationRequested {
		return events.AnnotationRequested{IntegrationID: in, Operation: events.OpComment, Repository: repo, PullRequest: 7,
			Comment: &events.Comment{Body: body, Key: "scan", UpdateExisting: true}}
	}
	plain := events.AnnotationRequested{IntegrationID: in, Operation: events.OpComment, Repository: repo, PullRequest: 7,
		Comment: &events.Comment{Body: "once"}}
	status := func(head string, pr int) events.AnnotationRequested {
		return events.AnnotationRequested{IntegrationID: in, Operation: events.OpStatus, Repository: repo, PullRequest: pr,
			CommitSHA: head, Status: &events.CommitStatus{State: "success", Context: "scan"}}
	}
	t0 := time.Date(2026, 1, 1, 10, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name    string
		letters []deadletter.Letter
		dropped []uint64
	}{
		{"newest by time wins, whatever the spool order", []deadletter.Letter{
			letter(t, 1, 20, t0.Add(time.Second), sticky("new")),
			letter(t, 2, 10, t0, sticky("old")),
		}, []uint64{2}},
		{"same millisecond: the later in the stream wins", []deadletter.Letter{
			letter(t, 1, 11, t0, sticky("new")),
			letter(t, 2, 10, t0, sticky("old")),
		}, []uint64{2}},
		{"comments without a key are never merged", []deadletter.Letter{
			letter(t, 1, 1, t0, plain), letter(t, 2, 2, t0.Add(time.Second), plain),
		}, nil},
		{"a superseded head of the PR is dropped", []deadletter.Letter{
			letter(t, 1, 1, t0, status(sha('a'), 7)),
			letter(t, 2, 2, t0.Add(time.Second), status(sha('b'), 7)),
		}, []uint64{1}},
		{"different commits without a PR both stay", []deadletter.Letter{
			letter(t, 1, 1, t0, status(sha('a'), 0)),
			letter(t, 2, 2, t0.Add(time.Second), status(sha('b'), 0)),
		}, nil},
		{"undecodable entries are kept", []deadletter.Letter{{Seq: 1, Data: []byte("{")}}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			drop := Compact(tc.letters)
			if len(drop) != len(tc.dropped) {
				t.Fatalf("dropped %v, want seqs %v", drop, tc.dropped)
			}
			for _, s := range tc.dropped {
				if drop[s] == "" {
					t.Errorf("seq %d kept, want dropped (dropped: %v)", s, drop)
				}
			}
		})
	}
}
