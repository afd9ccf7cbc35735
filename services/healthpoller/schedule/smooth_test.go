package schedule

import (
	"fmt"
	"strings"
	"testing"
)

func TestSmoothing(t *testing.T) {
	const (
		H = StatusHealthy
		D = StatusDegraded
		U = StatusUnhealthy
		K = StatusUnknown
	)
	tests := []struct {
		name     string
		th       Thresholds
		observed []string
		reported []string
	}{
		{"first result is reported as measured", Thresholds{3, 1}, []string{U}, []string{U}},
		{"first healthy", Thresholds{3, 1}, []string{H, H}, []string{H, H}},
		{"two failures do not flip", Thresholds{3, 1}, []string{H, U, U, H, U, U, H}, []string{H, H, H, H, H, H, H}},
		{"three failures flip, one success recovers", Thresholds{3, 1}, []string{H, U, U, U, H}, []string{H, H, H, U, H}},
		{"success threshold 2", Thresholds{3, 2}, []string{U, H, U, H, H, U}, []string{U, U, U, U, H, H}},
		{"mixed non-healthy results count together, last one wins", Thresholds{3, 1}, []string{H, D, U, D}, []string{H, H, H, D}},
		{"unknown counts as not healthy", Thresholds{2, 1}, []string{H, K, K, H}, []string{H, H, K, H}},
		{"degraded to unhealthy needs the failure threshold of unhealthy", Thresholds{3, 1},
			[]string{D, U, U, D, U, U, U}, []string{D, D, D, D, D, D, U}},
		{"unhealthy to degraded likewise", Thresholds{2, 1}, []string{U, D, U, D, D}, []string{U, U, U, U, D}},
		{"thresholds of one follow every result", Thresholds{1, 1}, []string{H, U, D, H, K}, []string{H, U, D, H, K}},
		{"a flapping integration flips at most every Failure+Success results", Thresholds{3, 1},
			[]string{H, U, H, U, H, U, H}, []string{H, H, H, H, H, H, H}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var m smoothing
			var got []string
			for _, o := range tc.observed {
				got = append(got, m.observe(o, tc.th))
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.reported) {
				t.Errorf("observed %v → reported %v, want %v", tc.observed, got, tc.reported)
			}
		})
	}
}

// TestSmoothingProperties checks the rule on every sequence of length 8
// over the four statuses (65,536 cases): the reported status only ever
// changes to a status observed in that very check, and only after the
// threshold's worth of agreeing results.
func TestSmoothingProperties(t *testing.T) {
	all := []string{StatusHealthy, StatusDegraded, StatusUnhealthy, StatusUnknown}
	th := Thresholds{Failure: 3, Success: 2}
	seq := make([]string, 8)
	var walk func(int)
	walk = func(i int) {
		if i < len(seq) {
			for _, s := range all {
				seq[i] = s
				walk(i + 1)
			}
			return
		}
		var m smoothing
		prev := ""
		for j, o := range seq {
			got := m.observe(o, th)
			if j == 0 {
				if got != o {
					t.Fatalf("%v: first reported %s, want %s", seq, got, o)
				}
				prev = got
				continue
			}
			if got == prev {
				continue
			}
			if got != o {
				t.Fatalf("%v: at %d reported %s, not the observed %s", seq, j, got, o)
			}
			need := th.Failure
			if o == StatusHealthy {
				need = th.Success
			}
			if j+1 < need {
				t.Fatalf("%v: flipped at %d with fewer than %d results", seq, j, need)
			}
			for k := j - need + 1; k <= j; k++ {
				agree := seq[k] != StatusHealthy
				if o == StatusHealthy || prev != StatusHealthy {
					agree = seq[k] == o
				}
				if !agree {
					t.Fatalf("%v: flipped %s→%s at %d without %d agreeing results (%s)", seq, prev, o, j,
						need, strings.Join(seq[j-need+1:j+1], ","))
				}
			}
			prev = got
		}
	}
	walk(0)
}
