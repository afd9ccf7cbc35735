package doctor

import "testing"

func TestJudgeJSON(t *testing.T) {
	rule := &PackParse{JSON: &PackJSONRule{Field: "status.indicator", Pass: []string{"none"}, Warn: []string{"minor"}}}
	for _, tc := range []struct {
		out  string
		want Status
	}{
		{`{"status":{"indicator":"none"}}`, StatusPass},
		{`{"status":{"indicator":"minor"}}`, StatusWarn},
		{`{"status":{"indicator":"major"}}`, StatusFail},
		{`{"status":{}}`, StatusFail},
		{`not json`, StatusFail},
	} {
		if got, msg := judge(rule, nil, 0, []byte(tc.out)); got != tc.want {
			t.Errorf("%s: %s (%s), want %s", tc.out, got, msg, tc.want)
		}
	}
	if got, _ := judge(nil, nil, 3, nil); got != StatusFail {
		t.Errorf("exit 3 without a rule: %s", got)
	}
}
