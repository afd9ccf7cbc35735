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
		if got, msg := judge(rule, nil, 0, []byte(tc.out), nil); got != tc.want {
			t.Errorf("%s: %s (%s), want %s", tc.out, got, msg, tc.want)
		}
	}
	if got, _ := judge(nil, nil, 3, nil, nil); got != StatusFail {
		t.Errorf("exit 3 without a rule: %s", got)
	}
}

func TestJudgeRegex(t *testing.T) {
	c := PackCheck{Parse: &PackParse{Regex: `^Verification: OK$`, NoMatch: StatusWarn}}
	if err := c.checkParse(); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		out, errOut string
		want        Status
	}{
		{"", "CONNECTION ESTABLISHED\nVerification: OK\n", StatusPass}, // openssl -brief writes to stderr
		{"Verification: OK\r\n", "", StatusPass},
		{"Verification error: certificate has expired\n", "", StatusWarn},
		{"xVerification: OK", "", StatusWarn},
	} {
		if got, msg := judge(c.Parse, c.re, 0, []byte(tc.out), []byte(tc.errOut)); got != tc.want {
			t.Errorf("%q / %q: %s (%s), want %s", tc.out, tc.errOut, got, msg, tc.want)
		}
	}
}
