package cloudwatch_test

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"inthub.dev/pkg/connectors"
	"inthub.dev/pkg/connectors/cloudwatch"
	"inthub.dev/pkg/connectors/cloudwatch/cloudwatchtest"
	"inthub.dev/pkg/connectors/conntest"
	"inthub.dev/pkg/egress"
	"inthub.dev/pkg/fault"
	"inthub.dev/schemas"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const (
	akRef = "authref://vault/aws/ro#id"
	skRef = "authref://vault/aws/ro#secret"
)

type secrets map[string]string

func (s secrets) Resolve(_ context.Context, r string) ([]byte, error) {
	v, ok := s[r]
	if !ok {
		return nil, fault.Permanent(errors.New("no such secret"))
	}
	return []byte(v), nil
}

var goodSecrets = secrets{akRef: cloudwatchtest.DefaultAccessKey, skRef: cloudwatchtest.DefaultSecretKey}

var now = time.Date(2026, 5, 6, 10, 5, 30, 0, time.UTC)

// fake is a TLS CloudWatch holding one alarm and a minute of requests of
// the checkout load balancer.
func fake(t *testing.T) *cloudwatchtest.Server {
	s := cloudwatchtest.New(t, cloudwatchtest.Options{TLS: true})
	s.SetAlarm(cloudwatchtest.Alarm{Name: "checkout-5xx", State: "OK", Reason: "fine", Service: "checkout", At: now.Add(-time.Hour)})
	s.PutMetricData(cloudwatchtest.Datum{Namespace: "AWS/ApplicationELB", MetricName: "RequestCount",
		Dimensions: map[string]string{"LoadBalancer": "app/checkout/1"}, Time: now.Add(-2 * time.Minute), Value: 42, Unit: "Count"})
	return s
}

func baseConfig(endpoint string) map[string]any {
	return map[string]any{
		"region": cloudwatchtest.DefaultRegion, "endpoint": endpoint, "accessKeyId": akRef, "secretAccessKey": skRef,
		"pollAlarms": true, "timeoutSeconds": int(conntest.Timeout.Seconds()),
		"metrics": []any{map[string]any{"id": "requests", "namespace": "AWS/ApplicationELB", "metricName": "RequestCount",
			"dimensions": map[string]any{"LoadBalancer": "app/checkout/1"}, "stat": "Sum", "periodSeconds": 60, "service": "checkout"}},
	}
}

func newConnector(t *testing.T, conf map[string]any, sec connectors.SecretResolver, hc *http.Client) *cloudwatch.Connector {
	t.Helper()
	raw, err := json.Marshal(conf)
	if err != nil {
		t.Fatal(err)
	}
	c, err := cloudwatch.New(connectors.Config{IntegrationID: "0190f1c2-7a3b-7c4d-8e5f-0a1b2c3d4e03",
		TenantID: "0b5a3bb0-6a43-4d7e-9a39-6f1f9d9a00a1", Type: cloudwatch.Type, Config: raw, Secrets: sec, HTTPClient: hc,
		Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

type harness struct{}

func (harness) Capabilities() []string { return nil }
func (harness) Secrets() []string      { return []string{cloudwatchtest.DefaultSecretKey} }

func (harness) New(t *testing.T, sc conntest.Scenario) connectors.Connector {
	s := fake(t)
	hc := s.Client()
	t.Cleanup(hc.CloseIdleConnections)
	sec := goodSecrets
	endpoint := s.URL
	switch sc {
	case conntest.BadCredentials:
		sec = secrets{akRef: cloudwatchtest.DefaultAccessKey, skRef: "a-wrong-secret-key"}
	case conntest.Unreachable:
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		endpoint = "https://" + l.Addr().String()
		l.Close()
	case conntest.Slow:
		s.SetFault(cloudwatchtest.Hang)
	case conntest.RateLimited:
		s.SetFault(cloudwatchtest.Throttle)
	case conntest.ServerError:
		s.SetFault(cloudwatchtest.Internal)
	}
	return newConnector(t, baseConfig(endpoint), sec, hc)
}

func TestConformance(t *testing.T) { conntest.Run(t, harness{}) }

func checkOf(r connectors.Result, capability string) (connectors.Check, bool) {
	for _, c := range r.Checks {
		if c.Capability == capability {
			return c, true
		}
	}
	return connectors.Check{}, false
}

// The checks are those of the integration's real use: DescribeAlarms with
// one record when alarms are polled (or nothing else is configured),
// GetMetricData when metrics are; a metric without data is named, not
// failed.
func TestChecksFollowTheConfig(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name           string
		mutate         func(map[string]any)
		caps           []string
		alarms, gmd    int
		messageHas     string
		withoutDataKey string
	}{
		{"alarms and metrics", func(map[string]any) {}, []string{"alarms", "metrics"}, 1, 1, "1 of 1 metrics", ""},
		{"metrics only", func(c map[string]any) { c["pollAlarms"] = false }, []string{"metrics"}, 0, 1, "", ""},
		{"nothing polled (SNS only)", func(c map[string]any) { c["pollAlarms"] = false; delete(c, "metrics") }, []string{"alarms"}, 1, 0, "", ""},
		{"a metric without data", func(c map[string]any) {
			c["metrics"] = append(c["metrics"].([]any), map[string]any{"id": "typo", "namespace": "AWS/ApplicationELB",
				"metricName": "RequestCount", "dimensions": map[string]any{"LoadBalancer": "app/chekout/1"}, "stat": "Sum", "periodSeconds": 60})
		}, []string{"alarms", "metrics"}, 1, 1, "none for typo", "typo"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := fake(t)
			conf := baseConfig(s.URL)
			tc.mutate(conf)
			c := newConnector(t, conf, goodSecrets, s.Client())
			r := c.TestConnection(ctx)
			if r.Status != connectors.StatusHealthy {
				t.Fatalf("%s: %s", r.Status, r.Message)
			}
			if len(r.Checks) != len(tc.caps) {
				t.Fatalf("checks %+v, want %v", r.Checks, tc.caps)
			}
			for _, capName := range tc.caps {
				if _, ok := checkOf(r, capName); !ok {
					t.Errorf("no %s check in %+v", capName, r.Checks)
				}
			}
			if a, g := s.Requests("DescribeAlarms"), s.Requests("GetMetricData"); a != tc.alarms || g != tc.gmd {
				t.Errorf("%d DescribeAlarms and %d GetMetricData calls, want %d and %d", a, g, tc.alarms, tc.gmd)
			}
			m, _ := checkOf(r, "metrics")
			if !strings.Contains(m.Message, tc.messageHas) || r.Details["metricsWithoutData"] != tc.withoutDataKey {
				t.Errorf("metrics check %q, details %v", m.Message, r.Details)
			}
			if h := c.CheckHealth(ctx); h.Status != connectors.StatusHealthy {
				t.Errorf("health: %s: %s", h.Status, h.Message)
			}
		})
	}
}

// What each failure is, as the worker frame acts on it.
func TestErrorClasses(t *testing.T) {
	ctx := context.Background()
	loopbackRefused := &http.Client{Transport: &http.Transport{Proxy: nil,
		DialContext: (&net.Dialer{Control: egress.Policy{AllowPorts: []int{1}}.DialControl()}).DialContext}}
	for _, tc := range []struct {
		name     string
		setup    func(*cloudwatchtest.Server) (secrets, *http.Client)
		class    fault.Class
		retry    bool
		mentions string
	}{
		{"unknown access key", func(s *cloudwatchtest.Server) (secrets, *http.Client) {
			return secrets{akRef: "AKIDUNKNOWN", skRef: cloudwatchtest.DefaultSecretKey}, s.Client()
		}, fault.ClassPermanent, false, "InvalidClientTokenId"},
		{"wrong secret key", func(s *cloudwatchtest.Server) (secrets, *http.Client) {
			return secrets{akRef: cloudwatchtest.DefaultAccessKey, skRef: "nope"}, s.Client()
		}, fault.ClassPermanent, false, "SignatureDoesNotMatch"},
		{"secret not resolvable", func(s *cloudwatchtest.Server) (secrets, *http.Client) {
			return secrets{akRef: cloudwatchtest.DefaultAccessKey}, s.Client()
		}, fault.ClassPermanent, false, "secretAccessKey"},
		{"throttled", func(s *cloudwatchtest.Server) (secrets, *http.Client) {
			s.SetFault(cloudwatchtest.Throttle)
			return goodSecrets, s.Client()
		}, fault.ClassTransient, true, "Throttling"},
		{"internal failure", func(s *cloudwatchtest.Server) (secrets, *http.Client) {
			s.SetFault(cloudwatchtest.Internal)
			return goodSecrets, s.Client()
		}, fault.ClassTransient, false, "InternalFailure"},
		{"egress policy refuses the address", func(s *cloudwatchtest.Server) (secrets, *http.Client) {
			return goodSecrets, loopbackRefused
		}, fault.ClassPermanent, false, "egress policy"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := fake(t)
			sec, hc := tc.setup(s)
			c := newConnector(t, baseConfig(s.URL), sec, hc)
			r := c.CheckHealth(ctx)
			if r.Status != connectors.StatusUnhealthy || r.Class != tc.class || (fault.RetryAfterOf(r.Err) > 0) != tc.retry {
				t.Fatalf("%s %v retry %v: %s", r.Status, r.Class, fault.RetryAfterOf(r.Err), r.Message)
			}
			if !strings.Contains(r.Message, tc.mentions) || strings.Contains(r.Message, cloudwatchtest.DefaultSecretKey) {
				t.Errorf("message %q should mention %q", r.Message, tc.mentions)
			}
			var re *connectors.RequestError
			if tc.name != "secret not resolvable" && !errors.As(r.Err, &re) {
				t.Errorf("Err %T is not a *connectors.RequestError", r.Err)
			}
		})
	}
}

// The Go check and the JSON schema agree on every config: what one
// refuses, the other refuses too.
func TestConfigAgreesWithSchema(t *testing.T) {
	b, err := schemas.ConfigSchema(cloudwatch.Type)
	if err != nil {
		t.Fatal(err)
	}
	cv, err := schemas.CompileConfig(b, nil)
	if err != nil {
		t.Fatal(err)
	}
	metric := func(mut func(map[string]any)) map[string]any {
		m := map[string]any{"id": "requests", "namespace": "AWS/ApplicationELB", "metricName": "RequestCount",
			"dimensions": map[string]any{"LoadBalancer": "app/checkout/1"}, "stat": "p99.5", "periodSeconds": 300, "unit": "Count"}
		mut(m)
		return m
	}
	for _, tc := range []struct {
		name   string
		mutate func(map[string]any)
		field  string // "" = valid
	}{
		{"valid", func(map[string]any) {}, ""},
		{"no region", func(c map[string]any) { delete(c, "region") }, "region"},
		{"bad region", func(c map[string]any) { c["region"] = "Europe" }, "region"},
		{"endpoint with credentials", func(c map[string]any) { c["endpoint"] = "https://u:p@monitoring.example.com" }, "endpoint"},
		{"endpoint ftp", func(c map[string]any) { c["endpoint"] = "ftp://monitoring.example.com" }, "endpoint"},
		{"no access key", func(c map[string]any) { delete(c, "accessKeyId") }, "accessKeyId"},
		{"unknown field", func(c map[string]any) { c["pollMetrics"] = true }, "pollMetrics"},
		{"bad topic", func(c map[string]any) { c["snsTopicArns"] = []any{"arn:aws:sqs:eu-west-1:123456789012:q"} }, "snsTopicArns"},
		{"metric id upper-case", func(c map[string]any) { c["metrics"] = []any{metric(func(m map[string]any) { m["id"] = "Requests" })} }, "metrics"},
		{"period 90", func(c map[string]any) {
			c["metrics"] = []any{metric(func(m map[string]any) { m["periodSeconds"] = 90 })}
		}, "metrics"},
		{"period 30", func(c map[string]any) {
			c["metrics"] = []any{metric(func(m map[string]any) { m["periodSeconds"] = 30 })}
		}, "metrics"},
		{"stat median", func(c map[string]any) { c["metrics"] = []any{metric(func(m map[string]any) { m["stat"] = "Median" })} }, "metrics"},
		{"unit parsecs", func(c map[string]any) { c["metrics"] = []any{metric(func(m map[string]any) { m["unit"] = "Parsecs" })} }, "metrics"},
		{"no namespace", func(c map[string]any) {
			c["metrics"] = []any{metric(func(m map[string]any) { delete(m, "namespace") })}
		}, "metrics"},
		{"metric extra field", func(c map[string]any) { c["metrics"] = []any{metric(func(m map[string]any) { m["region"] = "x" })} }, "region"},
		{"empty dimension value", func(c map[string]any) {
			c["metrics"] = []any{metric(func(m map[string]any) { m["dimensions"] = map[string]any{"LoadBalancer": ""} })}
		}, "metrics"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conf := baseConfig("https://monitoring.eu-west-1.amazonaws.com")
			conf["metrics"] = []any{metric(func(map[string]any) {})}
			tc.mutate(conf)
			raw, _ := json.Marshal(conf)
			_, goErr := cloudwatch.ParseConfig(raw)
			var doc any
			_ = json.Unmarshal(raw, &doc)
			schemaErr := cv.Validate(doc)
			if tc.field == "" {
				if goErr != nil || schemaErr != nil {
					t.Fatalf("valid config refused: go %v, schema %v", goErr, schemaErr)
				}
				return
			}
			if goErr == nil || schemaErr == nil {
				t.Fatalf("go %v, schema %v: both must refuse", goErr, schemaErr)
			}
			if !strings.Contains(goErr.Error(), tc.field) || fault.ClassOf(goErr) != fault.ClassPermanent {
				t.Errorf("go error %q does not name %s or is not permanent", goErr, tc.field)
			}
		})
	}
	// Repeated metric ids: beyond what the schema can say.
	conf := baseConfig("")
	delete(conf, "endpoint")
	conf["metrics"] = []any{metric(func(map[string]any) {}), metric(func(map[string]any) {})}
	raw, _ := json.Marshal(conf)
	c, err := cloudwatch.New(connectors.Config{Type: cloudwatch.Type, Config: raw})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "metrics[1].id") {
		t.Errorf("repeated ids: %v", err)
	}
	if r := c.TestConnection(context.Background()); r.Status != connectors.StatusUnhealthy || r.Class != fault.ClassPermanent {
		t.Errorf("a test of an invalid config: %s %v", r.Status, r.Class)
	}
}

// A second JSON value after the config is refused like an unknown field,
// not silently dropped.
func TestConfigRefusesTrailingData(t *testing.T) {
	raw, _ := json.Marshal(baseConfig("https://monitoring.eu-west-1.amazonaws.com"))
	if _, err := cloudwatch.ParseConfig(append(raw, []byte(` {"region":"us-east-1"}`)...)); err == nil || !strings.Contains(err.Error(), "trailing data") {
		t.Errorf("ParseConfig with trailing data = %v, want it refused", err)
	}
}
