package events_test

import (
	"strings"
	"testing"

	"inthub.dev/events"
)

// benchRequest is a check run request of about 1 KiB on the wire, the size
// of a typical Scanner message.
func benchRequest() events.AnnotationRequested {
	p := checkRunRequest()
	p.CheckRun.Summary = strings.Repeat("summary ", 40)
	p.CheckRun.Annotations = append(p.CheckRun.Annotations, p.CheckRun.Annotations...)
	return p
}

func BenchmarkNew(b *testing.B) {
	p := benchRequest()
	e, err := events.New(events.SubjectAnnotationRequested, source, tenantID, p)
	if err != nil {
		b.Fatal(err)
	}
	wire, _ := e.Marshal()
	b.SetBytes(int64(len(wire)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := events.New(events.SubjectAnnotationRequested, source, tenantID, p); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkParse(b *testing.B) {
	e, err := events.New(events.SubjectAnnotationRequested, source, tenantID, benchRequest())
	if err != nil {
		b.Fatal(err)
	}
	wire, err := e.Marshal()
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(wire)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := events.Parse(wire); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkIntegrationID(b *testing.B) {
	e, err := events.New(events.SubjectAnnotationRequested, source, tenantID, benchRequest())
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if e.IntegrationID() == "" {
			b.Fatal("no id")
		}
	}
}
