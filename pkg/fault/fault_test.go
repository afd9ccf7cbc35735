package fault_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"testing"
	"time"

	"inthub.dev/pkg/fault"
)

func TestClassOf(t *testing.T) {
	base := io.ErrUnexpectedEOF
	tests := []struct {
		name      string
		err       error
		want      fault.Class
		retryable bool
	}{
		{"nil", nil, fault.ClassUnknown, true},
		{"plain", base, fault.ClassUnknown, true},
		{"transient", fault.Transient(base), fault.ClassTransient, true},
		{"permanent", fault.Permanent(base), fault.ClassPermanent, false},
		{"offline", fault.Offline(base), fault.ClassOffline, false},
		{"wrapped permanent", fmt.Errorf("post comment: %w", fault.Permanent(base)), fault.ClassPermanent, false},
		{"outermost wins", fault.Permanent(fault.Transient(base)), fault.ClassPermanent, false},
		{"deadline", fmt.Errorf("call: %w", context.DeadlineExceeded), fault.ClassTransient, true},
		{"retry after", fault.RetryAfter(base, time.Second), fault.ClassTransient, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := fault.ClassOf(tt.err); got != tt.want {
				t.Fatalf("ClassOf = %v, want %v", got, tt.want)
			}
			if tt.err != nil {
				if got := fault.Retryable(tt.err); got != tt.retryable {
					t.Fatalf("Retryable = %v, want %v", got, tt.retryable)
				}
			}
		})
	}
}

func TestErrorsAsAndIs(t *testing.T) {
	err := fmt.Errorf("ctx: %w", fault.RetryAfter(io.EOF, 3*time.Second))
	var f *fault.Error
	if !errors.As(err, &f) {
		t.Fatal("errors.As did not find *fault.Error")
	}
	if f.Class != fault.ClassTransient || f.RetryAfter != 3*time.Second {
		t.Fatalf("got %v %v", f.Class, f.RetryAfter)
	}
	if !errors.Is(err, io.EOF) {
		t.Fatal("cause lost")
	}
	if fault.RetryAfterOf(err) != 3*time.Second {
		t.Fatal("RetryAfterOf")
	}
	if fault.Transient(nil) != nil {
		t.Fatal("nil must stay nil")
	}
}

func TestParseClassRoundTrip(t *testing.T) {
	for _, c := range []fault.Class{fault.ClassUnknown, fault.ClassTransient, fault.ClassPermanent, fault.ClassOffline} {
		if got := fault.ParseClass(c.String()); got != c {
			t.Fatalf("ParseClass(%q) = %v", c.String(), got)
		}
	}
}
