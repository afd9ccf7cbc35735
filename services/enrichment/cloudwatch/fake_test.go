package cloudwatch_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/smithy-go/encoding/cbor"
)

// fakeCloudWatch serves DescribeAlarms in CloudWatch's protocol (Smithy
// RPC v2 CBOR, as aws-sdk-go-v2 speaks it) with CloudWatch's rules: a
// SigV4-signed request from the one known access key (else
// InvalidClientTokenId, 403), MaxRecords 1-100 (else ValidationError),
// pages chained by NextToken, and a request rate above which it answers
// Throttling.
type fakeCloudWatch struct {
	*httptest.Server
	accessKey string
	pageSize  int // at most this many alarms per page, besides MaxRecords

	mu       sync.Mutex
	alarms   map[string]alarm // by name
	requests int
	throttle bool // answer Throttling to everything
}

type alarm struct {
	name, state, reason, service string
	at                           time.Time
}

func newFakeCloudWatch(t *testing.T, accessKey string) *fakeCloudWatch {
	t.Helper()
	f := &fakeCloudWatch{accessKey: accessKey, pageSize: 2, alarms: map[string]alarm{}}
	f.Server = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.Close)
	return f
}

func (f *fakeCloudWatch) set(a alarm) {
	f.mu.Lock()
	f.alarms[a.name] = a
	f.mu.Unlock()
}

func (f *fakeCloudWatch) fail(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Smithy-Protocol", "rpc-v2-cbor")
	w.Header().Set("Content-Type", "application/cbor")
	w.Header().Set("X-Amzn-Query-Error", code+";Sender")
	w.WriteHeader(status)
	_, _ = w.Write(cbor.Encode(cbor.Map{"__type": cbor.String("com.amazonaws.cloudwatch#" + code), "message": cbor.String(msg)}))
}

func (f *fakeCloudWatch) serve(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.requests++
	if r.Method != http.MethodPost || r.URL.Path != "/service/GraniteServiceVersion20100801/operation/DescribeAlarms" {
		f.fail(w, 404, "UnknownOperationException", "unknown operation")
		return
	}
	if r.Header.Get("Smithy-Protocol") != "rpc-v2-cbor" || r.Header.Get("Content-Type") != "application/cbor" {
		f.fail(w, 400, "InvalidRequest", "not rpc-v2-cbor")
		return
	}
	auth := r.Header.Get("Authorization")
	if !strings.HasPrefix(auth, "AWS4-HMAC-SHA256 Credential="+f.accessKey+"/") || !strings.Contains(auth, "/monitoring/aws4_request") ||
		r.Header.Get("X-Amz-Date") == "" {
		f.fail(w, 403, "InvalidClientTokenId", "The security token included in the request is invalid.")
		return
	}
	if f.throttle {
		f.fail(w, 400, "Throttling", "Rate exceeded")
		return
	}
	body, _ := io.ReadAll(r.Body)
	in := cbor.Map{}
	if len(body) > 0 {
		v, err := cbor.Decode(body)
		if err != nil {
			f.fail(w, 400, "SerializationException", "bad CBOR")
			return
		}
		in, _ = v.(cbor.Map)
	}
	max := 50 // CloudWatch's default
	if v, ok := in["MaxRecords"]; ok {
		n, err := cbor.AsInt64(v)
		if err != nil || n < 1 || n > 100 {
			f.fail(w, 400, "ValidationError", "MaxRecords must be between 1 and 100")
			return
		}
		max = int(n)
	}
	prefix := ""
	if v, ok := in["AlarmNamePrefix"].(cbor.String); ok {
		prefix = string(v)
	}
	var names []string
	for n := range f.alarms {
		if strings.HasPrefix(n, prefix) {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	start := 0
	if v, ok := in["NextToken"].(cbor.String); ok {
		s, err := strconv.Atoi(strings.TrimPrefix(string(v), "tok-"))
		if err != nil || s < 0 || s > len(names) {
			f.fail(w, 400, "InvalidNextToken", "The service couldn't process your request because of an invalid token")
			return
		}
		start = s
	}
	end := min(len(names), start+min(max, f.pageSize))
	list := cbor.List{}
	for _, n := range names[start:end] {
		a := f.alarms[n]
		arn := "arn:aws:cloudwatch:eu-west-1:123456789012:alarm:" + a.name
		ts := cbor.Tag{ID: 1, Value: cbor.Float64(float64(a.at.UnixMilli()) / 1000)}
		list = append(list, cbor.Map{
			"AlarmName": cbor.String(a.name), "AlarmArn": cbor.String(arn), "StateValue": cbor.String(a.state),
			"StateReason": cbor.String(a.reason), "StateUpdatedTimestamp": ts, "StateTransitionedTimestamp": ts,
			"MetricName": cbor.String("HTTPCode_Target_5XX_Count"), "Namespace": cbor.String("AWS/ApplicationELB"),
			"Statistic": cbor.String("Sum"), "Period": cbor.Uint(60), "EvaluationPeriods": cbor.Uint(1),
			"Threshold": cbor.Float64(5), "ComparisonOperator": cbor.String("GreaterThanThreshold"),
			"Dimensions": cbor.List{cbor.Map{"Name": cbor.String("ServiceName"), "Value": cbor.String(a.service)}},
		})
	}
	out := cbor.Map{"MetricAlarms": list, "CompositeAlarms": cbor.List{}}
	if end < len(names) {
		out["NextToken"] = cbor.String("tok-" + strconv.Itoa(end))
	}
	w.Header().Set("Smithy-Protocol", "rpc-v2-cbor")
	w.Header().Set("Content-Type", "application/cbor")
	_, _ = w.Write(cbor.Encode(out))
}
