// Package cloudwatchtest is a fake Amazon CloudWatch for tests of code that
// uses aws-sdk-go-v2's CloudWatch client. It speaks the service's wire
// protocol (Smithy RPC v2 CBOR: POST
// /service/GraniteServiceVersion20100801/operation/<Operation>) and
// enforces the rules a real CloudWatch enforces and a lenient fake would
// let slide:
//
//   - every request carries a valid AWS Signature Version 4, recomputed
//     here from the known secret key over the method, path, query, signed
//     headers and body, scoped to the server's region and the service
//     "monitoring", and dated within 15 minutes (else 403
//     InvalidClientTokenId for an unknown key, SignatureDoesNotMatch for a
//     wrong secret, scope or time);
//   - DescribeAlarms: MaxRecords 1–100 (50 when absent), AlarmNamePrefix,
//     pages chained by NextToken (a token it did not issue is
//     InvalidNextToken);
//   - GetMetricData: 1–500 MetricDataQueries with unique ids that start
//     with a lower-case letter, a MetricStat each (namespace, metric name,
//     at most 30 dimensions, a period of 1, 5, 10, 20 or 30 seconds or a
//     multiple of 60, a statistic: Sum, Average, Minimum, Maximum,
//     SampleCount or pNN), StartTime before EndTime, at most
//     MaxDatapoints (100,800 when absent, never more) datapoints per
//     answer, the rest paged by NextToken with StatusCode PartialData on
//     the results that go on; buckets of Period seconds from StartTime,
//     newest first unless ScanBy is TimestampAscending; a metric matches
//     only with exactly its dimensions (and its unit, when one is asked);
//   - faults on demand (SetFault): Throttling (HTTP 400, as CloudWatch
//     answers it), InternalFailure (500), or no answer until the client
//     gives up.
//
// Alarms are set with SetAlarm, datapoints with PutMetricData; Requests
// counts the calls per operation.
package cloudwatchtest

import (
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/smithy-go/encoding/cbor"
)

// The credentials of AWS's SigV4 documentation, the defaults of Options.
const (
	DefaultAccessKey = "AKIDEXAMPLE"
	DefaultSecretKey = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
	DefaultRegion    = "eu-west-1"
	DefaultAccount   = "123456789012"
)

// CloudWatch's limits on GetMetricData.
const (
	MaxMetricDataQueries = 500
	MaxDatapoints        = 100_800
	MaxDimensions        = 30
)

// Options configure a fake. Zero values get the defaults noted.
type Options struct {
	AccessKey string // DefaultAccessKey
	SecretKey string // DefaultSecretKey
	Region    string // DefaultRegion: the SigV4 scope must name it
	Account   string // DefaultAccount, in alarm ARNs
	// TLS serves https with httptest's certificate (Client trusts it);
	// plain http otherwise.
	TLS bool
	// AlarmPageSize caps the alarms of one DescribeAlarms page besides
	// MaxRecords, so paging is exercised with few alarms (100).
	AlarmPageSize int
	// DatapointPageSize caps the datapoints of one GetMetricData answer
	// besides MaxDatapoints (MaxDatapoints).
	DatapointPageSize int
}

// Fault is a failure the server answers every request with.
type Fault int

const (
	NoFault Fault = iota
	// Throttle answers 400 Throttling "Rate exceeded", as CloudWatch does
	// past its request rate.
	Throttle
	// Internal answers 500 InternalFailure.
	Internal
	// Hang answers nothing until the client gives up.
	Hang
)

// Alarm is a metric alarm.
type Alarm struct {
	Name, State, Reason string // State: OK, ALARM, INSUFFICIENT_DATA
	// Service, when set, is the alarm's ServiceName dimension.
	Service    string
	Dimensions map[string]string
	At         time.Time // state transition time
}

// Datum is one raw datapoint of a metric.
type Datum struct {
	Namespace, MetricName string
	Dimensions            map[string]string
	Time                  time.Time
	Value                 float64
	Unit                  string // optional: Count, Seconds, ...
}

// Server is a fake CloudWatch; URL is its endpoint.
type Server struct {
	*httptest.Server
	opts Options
	now  func() time.Time

	mu       sync.Mutex
	alarms   map[string]Alarm
	data     []Datum
	requests map[string]int
	fault    Fault
}

// New starts a fake, stopped at the test's cleanup.
func New(tb testing.TB, o Options) *Server {
	tb.Helper()
	if o.AccessKey == "" {
		o.AccessKey = DefaultAccessKey
	}
	if o.SecretKey == "" {
		o.SecretKey = DefaultSecretKey
	}
	if o.Region == "" {
		o.Region = DefaultRegion
	}
	if o.Account == "" {
		o.Account = DefaultAccount
	}
	if o.AlarmPageSize <= 0 {
		o.AlarmPageSize = 100
	}
	if o.DatapointPageSize <= 0 || o.DatapointPageSize > MaxDatapoints {
		o.DatapointPageSize = MaxDatapoints
	}
	s := &Server{opts: o, now: time.Now, alarms: map[string]Alarm{}, requests: map[string]int{}}
	if o.TLS {
		s.Server = httptest.NewTLSServer(http.HandlerFunc(s.serve))
	} else {
		s.Server = httptest.NewServer(http.HandlerFunc(s.serve))
	}
	tb.Cleanup(func() {
		s.CloseClientConnections()
		s.Close()
	})
	return s
}

// SetAlarm adds or replaces an alarm (by name).
func (s *Server) SetAlarm(a Alarm) {
	s.mu.Lock()
	s.alarms[a.Name] = a
	s.mu.Unlock()
}

// PutMetricData records raw datapoints.
func (s *Server) PutMetricData(d ...Datum) {
	s.mu.Lock()
	s.data = append(s.data, d...)
	s.mu.Unlock()
}

// SetFault makes every later request fail with f (NoFault: none).
func (s *Server) SetFault(f Fault) {
	s.mu.Lock()
	s.fault = f
	s.mu.Unlock()
}

// Requests counts the requests for an operation ("DescribeAlarms",
// "GetMetricData"), or all of them for "", refused ones included.
func (s *Server) Requests(op string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if op == "" {
		n := 0
		for _, c := range s.requests {
			n += c
		}
		return n
	}
	return s.requests[op]
}

// AlarmARN is the ARN the server gives an alarm.
func (s *Server) AlarmARN(name string) string {
	return "arn:aws:cloudwatch:" + s.opts.Region + ":" + s.opts.Account + ":alarm:" + name
}

const opPrefix = "/service/GraniteServiceVersion20100801/operation/"

func fail(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Smithy-Protocol", "rpc-v2-cbor")
	w.Header().Set("Content-Type", "application/cbor")
	// The awsQueryCompatible trait: the Query protocol's error code.
	w.Header().Set("X-Amzn-Query-Error", code+";Sender")
	w.WriteHeader(status)
	_, _ = w.Write(cbor.Encode(cbor.Map{"__type": cbor.String("com.amazonaws.cloudwatch#" + code), "message": cbor.String(msg)}))
}

func reply(w http.ResponseWriter, v cbor.Map) {
	w.Header().Set("Smithy-Protocol", "rpc-v2-cbor")
	w.Header().Set("Content-Type", "application/cbor")
	w.Header().Set("X-Amzn-Requestid", "00000000-0000-4000-8000-000000000000")
	_, _ = w.Write(cbor.Encode(v))
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	op, _ := strings.CutPrefix(r.URL.Path, opPrefix)
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		return
	}
	s.mu.Lock()
	s.requests[op]++
	f := s.fault
	s.mu.Unlock()

	if r.Method != http.MethodPost || !strings.HasPrefix(r.URL.Path, opPrefix) {
		fail(w, http.StatusNotFound, "UnknownOperationException", "unknown operation")
		return
	}
	if r.Header.Get("Smithy-Protocol") != "rpc-v2-cbor" || r.Header.Get("Content-Type") != "application/cbor" {
		fail(w, http.StatusBadRequest, "InvalidRequest", "not rpc-v2-cbor")
		return
	}
	if code, msg, ok := verifySigV4(r, body, s.opts.AccessKey, s.opts.SecretKey, s.opts.Region, "monitoring", s.now()); !ok {
		fail(w, http.StatusForbidden, code, msg)
		return
	}
	switch f {
	case Throttle:
		fail(w, http.StatusBadRequest, "Throttling", "Rate exceeded")
		return
	case Internal:
		fail(w, http.StatusInternalServerError, "InternalFailure", "The request processing has failed because of an unknown error, exception or failure.")
		return
	case Hang:
		<-r.Context().Done()
		return
	}
	in := cbor.Map{}
	if len(body) > 0 {
		v, err := cbor.Decode(body)
		m, ok := v.(cbor.Map)
		if err != nil || !ok {
			fail(w, http.StatusBadRequest, "SerializationException", "the body is not a CBOR map")
			return
		}
		in = m
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	switch op {
	case "DescribeAlarms":
		s.describeAlarms(w, in)
	case "GetMetricData":
		s.getMetricData(w, in)
	default:
		fail(w, http.StatusBadRequest, "UnknownOperationException", "the fake does not implement "+op)
	}
}

func (s *Server) describeAlarms(w http.ResponseWriter, in cbor.Map) {
	max := 50
	if v, ok := in["MaxRecords"]; ok {
		n, err := cbor.AsInt64(v)
		if err != nil || n < 1 || n > 100 {
			fail(w, http.StatusBadRequest, "ValidationError", "1 validation error detected: Value at 'maxRecords' failed to satisfy constraint: Member must have value between 1 and 100")
			return
		}
		max = int(n)
	}
	prefix := ""
	if v, ok := in["AlarmNamePrefix"].(cbor.String); ok {
		prefix = string(v)
	}
	var names []string
	for n := range s.alarms {
		if strings.HasPrefix(n, prefix) {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	start, ok := token(in, "alarms-", len(names))
	if !ok {
		fail(w, http.StatusBadRequest, "InvalidNextToken", "The service couldn't process your request because of an invalid token")
		return
	}
	end := min(len(names), start+min(max, s.opts.AlarmPageSize))
	list := cbor.List{}
	for _, n := range names[start:end] {
		a := s.alarms[n]
		ts := timestamp(a.At)
		dims := cbor.List{}
		keys := make([]string, 0, len(a.Dimensions))
		for k := range a.Dimensions {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			dims = append(dims, cbor.Map{"Name": cbor.String(k), "Value": cbor.String(a.Dimensions[k])})
		}
		if a.Service != "" {
			dims = append(dims, cbor.Map{"Name": cbor.String("ServiceName"), "Value": cbor.String(a.Service)})
		}
		list = append(list, cbor.Map{
			"AlarmName": cbor.String(a.Name), "AlarmArn": cbor.String(s.AlarmARN(a.Name)), "StateValue": cbor.String(a.State),
			"StateReason": cbor.String(a.Reason), "StateUpdatedTimestamp": ts, "StateTransitionedTimestamp": ts,
			"MetricName": cbor.String("HTTPCode_Target_5XX_Count"), "Namespace": cbor.String("AWS/ApplicationELB"),
			"Statistic": cbor.String("Sum"), "Period": cbor.Uint(60), "EvaluationPeriods": cbor.Uint(1),
			"Threshold": cbor.Float64(5), "ComparisonOperator": cbor.String("GreaterThanThreshold"),
			"Dimensions": dims,
		})
	}
	out := cbor.Map{"MetricAlarms": list, "CompositeAlarms": cbor.List{}}
	if end < len(names) {
		out["NextToken"] = cbor.String("alarms-" + strconv.Itoa(end))
	}
	reply(w, out)
}

// token reads a NextToken the server issued: an offset in [0, n].
func token(in cbor.Map, prefix string, n int) (int, bool) {
	v, ok := in["NextToken"]
	if !ok {
		return 0, true
	}
	t, ok := v.(cbor.String)
	if !ok {
		return 0, false
	}
	off, err := strconv.Atoi(strings.TrimPrefix(string(t), prefix))
	if !strings.HasPrefix(string(t), prefix) || err != nil || off < 0 || off > n {
		return 0, false
	}
	return off, true
}

func timestamp(t time.Time) cbor.Value {
	return &cbor.Tag{ID: 1, Value: cbor.Float64(float64(t.UnixMilli()) / 1000)}
}

var (
	queryID = regexp.MustCompile(`^[a-z][a-zA-Z0-9_]*$`)
	pStat   = regexp.MustCompile(`^p(\d{1,2}(\.\d{1,2})?|100)$`)
)

type query struct {
	id, label, namespace, name, stat, unit string
	dims                                   map[string]string
	period                                 time.Duration
}

type point struct {
	q     int
	at    time.Time
	value float64
}

func validation(w http.ResponseWriter, msg string) {
	fail(w, http.StatusBadRequest, "ValidationError", msg)
}

func (s *Server) getMetricData(w http.ResponseWriter, in cbor.Map) {
	raw, _ := in["MetricDataQueries"].(cbor.List)
	switch {
	case len(raw) == 0:
		validation(w, "The parameter MetricDataQueries is required.")
		return
	case len(raw) > MaxMetricDataQueries:
		validation(w, fmt.Sprintf("The collection MetricDataQueries must not have a size greater than %d.", MaxMetricDataQueries))
		return
	}
	start, err1 := asTime(in["StartTime"])
	end, err2 := asTime(in["EndTime"])
	if err1 != nil || err2 != nil {
		validation(w, "The parameters StartTime and EndTime are required.")
		return
	}
	if !start.Before(end) {
		validation(w, "The parameter StartTime must be less than the parameter EndTime.")
		return
	}
	pageMax := s.opts.DatapointPageSize
	if v, ok := in["MaxDatapoints"]; ok {
		n, err := cbor.AsInt64(v)
		if err != nil || n < 1 {
			validation(w, "The parameter MaxDatapoints must be greater than 0.")
			return
		}
		pageMax = min(pageMax, int(min(n, MaxDatapoints)))
	}
	ascending := false
	if v, ok := in["ScanBy"].(cbor.String); ok {
		switch v {
		case "TimestampAscending":
			ascending = true
		case "TimestampDescending":
		default:
			validation(w, "The parameter ScanBy must be TimestampDescending or TimestampAscending.")
			return
		}
	}
	qs := make([]query, 0, len(raw))
	seen := map[string]bool{}
	for i, rv := range raw {
		q, msg := parseQuery(rv)
		if msg != "" {
			validation(w, fmt.Sprintf("MetricDataQueries[%d]: %s", i, msg))
			return
		}
		if seen[q.id] {
			validation(w, "The value "+q.id+" for parameter MetricDataQueries.member.Id is not unique.")
			return
		}
		seen[q.id] = true
		qs = append(qs, q)
	}

	var points []point
	remaining := make([]int, len(qs))
	for i, q := range qs {
		buckets := map[time.Time][]float64{}
		for _, d := range s.data {
			if d.Namespace != q.namespace || d.MetricName != q.name || !sameDims(d.Dimensions, q.dims) ||
				(q.unit != "" && d.Unit != q.unit) || d.Time.Before(start) || !d.Time.Before(end) {
				continue
			}
			b := start.Add(d.Time.Sub(start).Truncate(q.period))
			buckets[b] = append(buckets[b], d.Value)
		}
		var ats []time.Time
		for b := range buckets {
			ats = append(ats, b)
		}
		slices.SortFunc(ats, func(a, b time.Time) int {
			if ascending {
				return a.Compare(b)
			}
			return b.Compare(a)
		})
		for _, at := range ats {
			points = append(points, point{q: i, at: at, value: statistic(q.stat, buckets[at])})
		}
		remaining[i] = len(ats)
	}
	off, ok := token(in, "datapoints-", len(points))
	if !ok {
		fail(w, http.StatusBadRequest, "InvalidNextToken", "The service couldn't process your request because of an invalid token")
		return
	}
	stop := min(len(points), off+pageMax)
	for _, p := range points[:off] {
		remaining[p.q]--
	}
	type result struct {
		ts, vs cbor.List
	}
	results := make([]result, len(qs))
	for _, p := range points[off:stop] {
		results[p.q].ts = append(results[p.q].ts, timestamp(p.at))
		results[p.q].vs = append(results[p.q].vs, cbor.Float64(p.value))
		remaining[p.q]--
	}
	list := cbor.List{}
	for i, q := range qs {
		status := "Complete"
		if remaining[i] > 0 {
			status = "PartialData"
		}
		ts, vs := results[i].ts, results[i].vs
		if ts == nil {
			ts, vs = cbor.List{}, cbor.List{}
		}
		list = append(list, cbor.Map{"Id": cbor.String(q.id), "Label": cbor.String(q.label), "Timestamps": ts, "Values": vs,
			"StatusCode": cbor.String(status), "Messages": cbor.List{}})
	}
	out := cbor.Map{"MetricDataResults": list, "Messages": cbor.List{}}
	if stop < len(points) {
		out["NextToken"] = cbor.String("datapoints-" + strconv.Itoa(stop))
	}
	reply(w, out)
}

func parseQuery(v cbor.Value) (query, string) {
	m, ok := v.(cbor.Map)
	if !ok {
		return query{}, "not a structure"
	}
	var q query
	id, _ := m["Id"].(cbor.String)
	q.id = string(id)
	if !queryID.MatchString(q.id) || len(q.id) > 255 {
		return q, "The value for parameter Id must start with a lowercase letter and contain only letters, numbers and underscores."
	}
	if _, ok := m["Expression"]; ok {
		return q, "the fake answers MetricStat queries only"
	}
	ms, ok := m["MetricStat"].(cbor.Map)
	if !ok {
		return q, "Exactly one of MetricStat and Expression is required."
	}
	metric, _ := ms["Metric"].(cbor.Map)
	ns, _ := metric["Namespace"].(cbor.String)
	name, _ := metric["MetricName"].(cbor.String)
	if ns == "" || name == "" {
		return q, "MetricStat.Metric needs Namespace and MetricName."
	}
	q.namespace, q.name = string(ns), string(name)
	q.dims = map[string]string{}
	dims, _ := metric["Dimensions"].(cbor.List)
	if len(dims) > MaxDimensions {
		return q, fmt.Sprintf("A metric has at most %d dimensions.", MaxDimensions)
	}
	for _, d := range dims {
		dm, _ := d.(cbor.Map)
		k, _ := dm["Name"].(cbor.String)
		val, _ := dm["Value"].(cbor.String)
		if k == "" || val == "" {
			return q, "A dimension needs Name and Value."
		}
		q.dims[string(k)] = string(val)
	}
	period, err := cbor.AsInt64(ms["Period"])
	if err != nil || period < 1 || (period%60 != 0 && !slices.Contains([]int64{1, 5, 10, 20, 30}, period)) {
		return q, "The parameter MetricStat.Period must be 1, 5, 10, 20, 30 or a multiple of 60."
	}
	q.period = time.Duration(period) * time.Second
	stat, _ := ms["Stat"].(cbor.String)
	q.stat = string(stat)
	if !slices.Contains([]string{"Sum", "Average", "Minimum", "Maximum", "SampleCount"}, q.stat) && !pStat.MatchString(q.stat) {
		return q, "The parameter MetricStat.Stat must be a valid statistic."
	}
	if u, ok := ms["Unit"].(cbor.String); ok {
		q.unit = string(u)
	}
	q.label = q.name
	if l, ok := m["Label"].(cbor.String); ok && l != "" {
		q.label = string(l)
	}
	return q, ""
}

func asTime(v cbor.Value) (time.Time, error) {
	if v == nil {
		return time.Time{}, fmt.Errorf("missing")
	}
	return cbor.AsTime(v)
}

func sameDims(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

func statistic(stat string, vs []float64) float64 {
	sum := 0.0
	for _, v := range vs {
		sum += v
	}
	switch stat {
	case "Sum":
		return sum
	case "Average":
		return sum / float64(len(vs))
	case "Minimum":
		return slices.Min(vs)
	case "Maximum":
		return slices.Max(vs)
	case "SampleCount":
		return float64(len(vs))
	}
	// pNN: nearest rank.
	p, _ := strconv.ParseFloat(stat[1:], 64)
	sorted := slices.Sorted(slices.Values(vs))
	rank := int(math.Ceil(p / 100 * float64(len(sorted))))
	return sorted[max(0, min(len(sorted)-1, rank-1))]
}
