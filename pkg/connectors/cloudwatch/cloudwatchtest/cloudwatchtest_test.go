package cloudwatchtest_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	cw "github.com/aws/aws-sdk-go-v2/service/cloudwatch"
	"github.com/aws/aws-sdk-go-v2/service/cloudwatch/types"
	"github.com/aws/smithy-go"
	"go.uber.org/goleak"

	"inthub.dev/pkg/connectors/cloudwatch/cloudwatchtest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func client(s *cloudwatchtest.Server, key, secret, region string) *cw.Client {
	return cw.New(cw.Options{Region: region, BaseEndpoint: aws.String(s.URL), HTTPClient: s.Client(), Retryer: aws.NopRetryer{},
		Credentials: aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
			return aws.Credentials{AccessKeyID: key, SecretAccessKey: secret}, nil
		})})
}

func code(err error) string {
	var api smithy.APIError
	if errors.As(err, &api) {
		return api.ErrorCode()
	}
	return ""
}

// The signature is checked for real: only the right key pair, region and
// a fresh date pass, and a body changed after signing fails.
func TestSigV4(t *testing.T) {
	s := cloudwatchtest.New(t, cloudwatchtest.Options{})
	ctx := context.Background()
	in := &cw.DescribeAlarmsInput{MaxRecords: aws.Int32(1)}
	for _, tc := range []struct {
		name, key, secret, region, want string
	}{
		{"valid", cloudwatchtest.DefaultAccessKey, cloudwatchtest.DefaultSecretKey, cloudwatchtest.DefaultRegion, ""},
		{"unknown key", "AKIDOTHER", cloudwatchtest.DefaultSecretKey, cloudwatchtest.DefaultRegion, "InvalidClientTokenId"},
		{"wrong secret", cloudwatchtest.DefaultAccessKey, "not-the-secret", cloudwatchtest.DefaultRegion, "SignatureDoesNotMatch"},
		{"wrong region", cloudwatchtest.DefaultAccessKey, cloudwatchtest.DefaultSecretKey, "us-east-1", "SignatureDoesNotMatch"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := client(s, tc.key, tc.secret, tc.region).DescribeAlarms(ctx, in)
			if got := code(err); got != tc.want {
				t.Fatalf("error code %q (%v), want %q", got, err, tc.want)
			}
		})
	}

	// Hand-signed requests: a stale date, and a body swapped after signing.
	body := []byte{0xa1, 0x6a, 'M', 'a', 'x', 'R', 'e', 'c', 'o', 'r', 'd', 's', 0x01} // {"MaxRecords": 1}
	send := func(at time.Time, sent []byte) int {
		req, _ := http.NewRequest(http.MethodPost, s.URL+"/service/GraniteServiceVersion20100801/operation/DescribeAlarms", bytes.NewReader(sent))
		req.Header.Set("Smithy-Protocol", "rpc-v2-cbor")
		req.Header.Set("Content-Type", "application/cbor")
		sum := sha256.Sum256(body)
		err := v4.NewSigner().SignHTTP(ctx, aws.Credentials{AccessKeyID: cloudwatchtest.DefaultAccessKey, SecretAccessKey: cloudwatchtest.DefaultSecretKey},
			req, hex.EncodeToString(sum[:]), "monitoring", cloudwatchtest.DefaultRegion, at)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := s.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if got := send(time.Now(), body); got != 200 {
		t.Fatalf("a hand-signed request: %d", got)
	}
	if got := send(time.Now().Add(-20*time.Minute), body); got != 403 {
		t.Errorf("a request signed 20 minutes ago: %d, want 403", got)
	}
	tampered := bytes.Clone(body)
	tampered[len(tampered)-1] = 0x02
	if got := send(time.Now(), tampered); got != 403 {
		t.Errorf("a body changed after signing: %d, want 403", got)
	}
}

func TestDescribeAlarmsPaging(t *testing.T) {
	s := cloudwatchtest.New(t, cloudwatchtest.Options{AlarmPageSize: 2})
	at := time.Date(2026, 5, 6, 10, 0, 0, 0, time.UTC)
	for _, n := range []string{"a-1", "a-2", "a-3", "b-1", "a-4"} {
		s.SetAlarm(cloudwatchtest.Alarm{Name: n, State: "OK", Reason: "fine", Service: "checkout", At: at})
	}
	c := client(s, cloudwatchtest.DefaultAccessKey, cloudwatchtest.DefaultSecretKey, cloudwatchtest.DefaultRegion)
	ctx := context.Background()
	var names []string
	p := cw.NewDescribeAlarmsPaginator(c, &cw.DescribeAlarmsInput{AlarmNamePrefix: aws.String("a-"), MaxRecords: aws.Int32(100)})
	for p.HasMorePages() {
		out, err := p.NextPage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(out.MetricAlarms) > 2 {
			t.Fatalf("a page of %d alarms, the page size is 2", len(out.MetricAlarms))
		}
		for _, a := range out.MetricAlarms {
			names = append(names, aws.ToString(a.AlarmName))
			if !a.StateTransitionedTimestamp.Equal(at) || aws.ToString(a.AlarmArn) != s.AlarmARN(aws.ToString(a.AlarmName)) {
				t.Errorf("alarm %+v", a)
			}
		}
	}
	if strings.Join(names, ",") != "a-1,a-2,a-3,a-4" {
		t.Fatalf("alarms %v", names)
	}
	for _, n := range []int32{0, 101} {
		if _, err := c.DescribeAlarms(ctx, &cw.DescribeAlarmsInput{MaxRecords: aws.Int32(n)}); code(err) != "ValidationError" {
			t.Errorf("MaxRecords %d: %v", n, err)
		}
	}
	if _, err := c.DescribeAlarms(ctx, &cw.DescribeAlarmsInput{NextToken: aws.String("forged")}); code(err) != "InvalidNextToken" {
		t.Errorf("forged token: %v", err)
	}
}

func query(id string, period int32, stat string, dims ...string) types.MetricDataQuery {
	var ds []types.Dimension
	for i := 0; i+1 < len(dims); i += 2 {
		ds = append(ds, types.Dimension{Name: aws.String(dims[i]), Value: aws.String(dims[i+1])})
	}
	return types.MetricDataQuery{Id: aws.String(id), MetricStat: &types.MetricStat{
		Metric: &types.Metric{Namespace: aws.String("AWS/ApplicationELB"), MetricName: aws.String("RequestCount"), Dimensions: ds},
		Period: aws.Int32(period), Stat: aws.String(stat)}}
}

func TestGetMetricData(t *testing.T) {
	s := cloudwatchtest.New(t, cloudwatchtest.Options{DatapointPageSize: 3})
	t0 := time.Date(2026, 5, 6, 10, 0, 0, 0, time.UTC)
	lb := map[string]string{"LoadBalancer": "app/checkout/1"}
	for i := range 10 { // two raw values a minute for 5 minutes: 1..10
		s.PutMetricData(cloudwatchtest.Datum{Namespace: "AWS/ApplicationELB", MetricName: "RequestCount", Dimensions: lb,
			Time: t0.Add(time.Duration(i) * 30 * time.Second), Value: float64(i + 1), Unit: "Count"})
	}
	// Same metric with another dimension set: never mixed in.
	s.PutMetricData(cloudwatchtest.Datum{Namespace: "AWS/ApplicationELB", MetricName: "RequestCount",
		Dimensions: map[string]string{"LoadBalancer": "app/checkout/1", "AvailabilityZone": "eu-west-1a"}, Time: t0, Value: 1000})
	c := client(s, cloudwatchtest.DefaultAccessKey, cloudwatchtest.DefaultSecretKey, cloudwatchtest.DefaultRegion)
	ctx := context.Background()

	in := &cw.GetMetricDataInput{StartTime: aws.Time(t0), EndTime: aws.Time(t0.Add(5 * time.Minute)),
		MetricDataQueries: []types.MetricDataQuery{
			query("sum", 60, "Sum", "LoadBalancer", "app/checkout/1"),
			query("max", 120, "Maximum", "LoadBalancer", "app/checkout/1"),
			query("none", 60, "Sum", "LoadBalancer", "app/other/2"),
		}}
	got := map[string][]string{}
	pages := 0
	for p := cw.NewGetMetricDataPaginator(c, in); p.HasMorePages(); pages++ {
		out, err := p.NextPage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, r := range out.MetricDataResults {
			n += len(r.Values)
			for i, v := range r.Values {
				got[aws.ToString(r.Id)] = append(got[aws.ToString(r.Id)], fmt.Sprintf("%s=%g", r.Timestamps[i].UTC().Format("15:04"), v))
			}
			if out.NextToken != nil && aws.ToString(r.Id) == "max" && r.StatusCode != types.StatusCodePartialData && len(got["max"]) < 3 {
				t.Errorf("page %d: max is not complete yet but says %s", pages, r.StatusCode)
			}
		}
		if n > 3 {
			t.Fatalf("page %d holds %d datapoints, the page size is 3", pages, n)
		}
	}
	want := map[string]string{
		"sum": "10:04=19,10:03=15,10:02=11,10:01=7,10:00=3", // newest first
		"max": "10:04=10,10:02=8,10:00=4",
	}
	for id, w := range want {
		if g := strings.Join(got[id], ","); g != w {
			t.Errorf("%s = %s, want %s", id, g, w)
		}
	}
	if len(got["none"]) != 0 || pages != 3 {
		t.Errorf("none = %v, %d pages (want 3)", got["none"], pages)
	}

	// The unit filter, ascending order, a percentile.
	q := query("p", 300, "p50", "LoadBalancer", "app/checkout/1")
	q.MetricStat.Unit = types.StandardUnitCount
	out, err := c.GetMetricData(ctx, &cw.GetMetricDataInput{StartTime: aws.Time(t0), EndTime: aws.Time(t0.Add(5 * time.Minute)),
		ScanBy: types.ScanByTimestampAscending, MetricDataQueries: []types.MetricDataQuery{q}})
	if err != nil || len(out.MetricDataResults[0].Values) != 1 || out.MetricDataResults[0].Values[0] != 5 {
		t.Fatalf("p50 over 5 minutes: %+v, %v", out, err)
	}
	q.MetricStat.Unit = types.StandardUnitSeconds
	out, err = c.GetMetricData(ctx, &cw.GetMetricDataInput{StartTime: aws.Time(t0), EndTime: aws.Time(t0.Add(5 * time.Minute)),
		MetricDataQueries: []types.MetricDataQuery{q}})
	if err != nil || len(out.MetricDataResults[0].Values) != 0 {
		t.Fatalf("data recorded in Count came back for Seconds: %+v, %v", out, err)
	}
}

func TestGetMetricDataLimits(t *testing.T) {
	s := cloudwatchtest.New(t, cloudwatchtest.Options{})
	c := client(s, cloudwatchtest.DefaultAccessKey, cloudwatchtest.DefaultSecretKey, cloudwatchtest.DefaultRegion)
	t0 := time.Date(2026, 5, 6, 10, 0, 0, 0, time.UTC)
	many := make([]types.MetricDataQuery, cloudwatchtest.MaxMetricDataQueries+1)
	for i := range many {
		many[i] = query(fmt.Sprintf("m%d", i), 60, "Sum")
	}
	ok := []types.MetricDataQuery{query("a", 60, "Sum")}
	for _, tc := range []struct {
		name       string
		queries    []types.MetricDataQuery
		start, end time.Time
		maxPoints  *int32
		wantCode   string
	}{
		{"500 queries", many[:500], t0, t0.Add(time.Hour), nil, ""},
		{"501 queries", many, t0, t0.Add(time.Hour), nil, "ValidationError"},
		{"period 90", []types.MetricDataQuery{query("a", 90, "Sum")}, t0, t0.Add(time.Hour), nil, "ValidationError"},
		{"period 30 (high resolution)", []types.MetricDataQuery{query("a", 30, "Sum")}, t0, t0.Add(time.Hour), nil, ""},
		{"bad stat", []types.MetricDataQuery{query("a", 60, "Median")}, t0, t0.Add(time.Hour), nil, "ValidationError"},
		{"id starts upper-case", []types.MetricDataQuery{query("A", 60, "Sum")}, t0, t0.Add(time.Hour), nil, "ValidationError"},
		{"ids repeat", []types.MetricDataQuery{query("a", 60, "Sum"), query("a", 60, "Sum")}, t0, t0.Add(time.Hour), nil, "ValidationError"},
		{"start = end", ok, t0, t0, nil, "ValidationError"},
		{"start after end", ok, t0.Add(time.Hour), t0, nil, "ValidationError"},
		{"MaxDatapoints 0", ok, t0, t0.Add(time.Hour), aws.Int32(0), "ValidationError"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := c.GetMetricData(context.Background(), &cw.GetMetricDataInput{MetricDataQueries: tc.queries,
				StartTime: aws.Time(tc.start), EndTime: aws.Time(tc.end), MaxDatapoints: tc.maxPoints})
			if got := code(err); got != tc.wantCode {
				t.Fatalf("code %q (%v), want %q", got, err, tc.wantCode)
			}
		})
	}
}

func TestFaults(t *testing.T) {
	s := cloudwatchtest.New(t, cloudwatchtest.Options{TLS: true})
	c := client(s, cloudwatchtest.DefaultAccessKey, cloudwatchtest.DefaultSecretKey, cloudwatchtest.DefaultRegion)
	for _, tc := range []struct {
		f    cloudwatchtest.Fault
		want string
	}{{cloudwatchtest.Throttle, "Throttling"}, {cloudwatchtest.Internal, "InternalFailure"}, {cloudwatchtest.NoFault, ""}} {
		s.SetFault(tc.f)
		if _, err := c.DescribeAlarms(context.Background(), &cw.DescribeAlarmsInput{}); code(err) != tc.want {
			t.Errorf("fault %d: %v, want %s", tc.f, err, tc.want)
		}
	}
	s.SetFault(cloudwatchtest.Hang)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if _, err := c.DescribeAlarms(ctx, &cw.DescribeAlarmsInput{}); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("hang: %v", err)
	}
	if n := s.Requests("DescribeAlarms"); n != 4 {
		t.Errorf("%d DescribeAlarms requests counted, want 4", n)
	}
}
