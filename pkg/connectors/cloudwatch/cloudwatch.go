// Package cloudwatch is the monitoring.cloudwatch connector: Amazon
// CloudWatch through aws-sdk-go-v2, with an access key pair held as
// AuthRefs. The integration feeds the enrichment service: alarm state
// changes (through an SNS subscription, or polled with DescribeAlarms) and
// chosen metrics (polled with GetMetricData). Its checks exercise exactly
// those calls, so a test that passes means the poller can read what it is
// configured to read.
//
// The package also holds what the connector and the poller share: the
// config (ParseConfig), the client (NewClient) and the error
// classification (Classify).
package cloudwatch

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	cw "github.com/aws/aws-sdk-go-v2/service/cloudwatch"
	"github.com/aws/aws-sdk-go-v2/service/cloudwatch/types"

	"inthub.dev/pkg/connectors"
	"inthub.dev/pkg/fault"
	"inthub.dev/schemas"
)

// Type is the integration type id.
const Type = "monitoring.cloudwatch"

func init() {
	schema, err := schemas.ConfigSchema(Type)
	if err != nil {
		// The schema is embedded: its absence is a broken build.
		panic(err)
	}
	connectors.Default().Register(connectors.Info{
		Type:         Type,
		Provider:     "cloudwatch",
		DisplayName:  "Amazon CloudWatch",
		Description:  "Amazon CloudWatch with an access key pair: alarm state changes (SNS subscription or polling) and chosen metrics for the enrichment service.",
		Capabilities: []string{CheckAlarms, CheckMetrics},
		ConfigSchema: schema,
	}, func(cfg connectors.Config) (connectors.Connector, error) { return New(cfg) })
}

// Interface guards.
var _ connectors.Connector = (*Connector)(nil)

// Capabilities reported as Checks.
const (
	// CheckAlarms: DescribeAlarms (one record, the configured prefix)
	// answers with these keys.
	CheckAlarms = "alarms"
	// CheckMetrics: GetMetricData of the configured metrics answers.
	CheckMetrics = "metrics"
)

// Connector is one CloudWatch integration. It is safe for concurrent use.
type Connector struct {
	cfg     connectors.Config
	conf    Config
	invalid error
	timeout time.Duration
	log     *slog.Logger
	now     func() time.Time
	client  *cw.Client
}

// New builds a connector without I/O; a config that decodes but is wrong
// is reported by Validate and by every call.
func New(cfg connectors.Config) (*Connector, error) {
	conf, err := ParseConfig(cfg.Config)
	var ce *ConfigError
	if err != nil && !errors.As(err, &ce) {
		return nil, err // not even decodable
	}
	c := &Connector{cfg: cfg, conf: conf, invalid: err, timeout: 30 * time.Second, log: cfg.Logger, now: cfg.Now}
	if conf.TimeoutSeconds > 0 {
		c.timeout = time.Duration(conf.TimeoutSeconds) * time.Second
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	c.log = c.log.With("provider", "cloudwatch", "integrationId", cfg.IntegrationID, "tenantId", cfg.TenantID)
	if c.now == nil {
		c.now = time.Now
	}
	if err == nil {
		c.client = NewClient(conf, cfg.Secrets, cfg.HTTPClient, 1)
	}
	return c, nil
}

func (c *Connector) Type() string     { return Type }
func (c *Connector) Provider() string { return "cloudwatch" }
func (c *Connector) Validate() error  { return c.invalid }

// Close has nothing to release: the HTTP client is the caller's.
func (c *Connector) Close() error { return nil }

// Config is the parsed config.
func (c *Connector) Config() Config { return c.conf }

// TestConnection runs the checks of real use: DescribeAlarms (one record,
// with the alarm name prefix) when alarms are polled or nothing else is
// configured, and GetMetricData of every configured metric over the last
// hour, reporting in the message (not as a failure: a metric may have no
// data when nothing happened) the metrics that returned no datapoint,
// which is what a misspelt dimension looks like.
func (c *Connector) TestConnection(ctx context.Context) connectors.Result {
	return c.probe(ctx, true)
}

// CheckHealth runs the same calls over the last period only.
func (c *Connector) CheckHealth(ctx context.Context) connectors.Result {
	return c.probe(ctx, false)
}

func (c *Connector) probe(ctx context.Context, full bool) connectors.Result {
	start := time.Now()
	if c.invalid != nil {
		return connectors.FailedResult(start, "config", c.invalid)
	}
	var checks []connectors.Check
	details := map[string]string{"region": c.conf.Region}
	if c.conf.Endpoint != "" {
		details["endpoint"] = c.conf.Endpoint
	}
	if c.conf.PollAlarms || len(c.conf.Metrics) == 0 {
		checks = append(checks, connectors.RunCheck(ctx, CheckAlarms, c.checkAlarms))
	}
	if len(c.conf.Metrics) > 0 {
		checks = append(checks, connectors.RunCheck(ctx, CheckMetrics, func(ctx context.Context) (string, error) {
			return c.checkMetrics(ctx, full, details)
		}))
	}
	r := connectors.NewResult(checks, start)
	r.Details = details
	op := "health_check"
	if full {
		op = "test_connection"
	}
	if r.Status != connectors.StatusHealthy {
		c.log.WarnContext(ctx, "cloudwatch check not healthy", "operation", op, "status", r.Status, "class", r.Class.String(), "error", r.Message)
	} else {
		c.log.DebugContext(ctx, "cloudwatch check passed", "operation", op, "latencyMs", r.Latency.Milliseconds())
	}
	return r
}

func (c *Connector) checkAlarms(ctx context.Context) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	in := &cw.DescribeAlarmsInput{MaxRecords: aws.Int32(1)}
	if c.conf.AlarmNamePrefix != "" {
		in.AlarmNamePrefix = aws.String(c.conf.AlarmNamePrefix)
	}
	out, err := c.client.DescribeAlarms(ctx, in)
	if err != nil {
		return "", Classify("DescribeAlarms", err)
	}
	n := len(out.MetricAlarms) + len(out.CompositeAlarms)
	switch {
	case n == 0 && c.conf.AlarmNamePrefix != "":
		return "alarms readable; none is named " + c.conf.AlarmNamePrefix + "…", nil
	case n == 0:
		return "alarms readable; the region has none", nil
	}
	return "alarms readable", nil
}

// checkMetrics reads every configured metric in one GetMetricData call
// (the config holds at most MaxMetrics, GetMetricData's limit).
func (c *Connector) checkMetrics(ctx context.Context, full bool, details map[string]string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	longest := 0
	queries := make([]types.MetricDataQuery, 0, len(c.conf.Metrics))
	for _, m := range c.conf.Metrics {
		longest = max(longest, m.PeriodSeconds)
		queries = append(queries, m.Query())
	}
	span := time.Duration(longest) * time.Second
	if full {
		span = max(span, time.Hour)
	}
	end := c.now().UTC().Truncate(time.Duration(longest) * time.Second)
	in := &cw.GetMetricDataInput{MetricDataQueries: queries, StartTime: aws.Time(end.Add(-span)), EndTime: aws.Time(end)}
	withData := map[string]bool{}
	for pages := 0; ; pages++ {
		if pages >= 10 {
			break // enough to know the calls work
		}
		out, err := c.client.GetMetricData(ctx, in)
		if err != nil {
			return "", Classify("GetMetricData", err)
		}
		for _, r := range out.MetricDataResults {
			if len(r.Values) > 0 {
				withData[aws.ToString(r.Id)] = true
			}
			if r.StatusCode == types.StatusCodeForbidden {
				return "", fault.Permanent(fmt.Errorf("GetMetricData: metric %s: forbidden to these credentials", aws.ToString(r.Id)))
			}
		}
		if aws.ToString(out.NextToken) == "" {
			break
		}
		in.NextToken = out.NextToken
	}
	var empty []string
	for _, m := range c.conf.Metrics {
		if !withData[m.ID] {
			empty = append(empty, m.ID)
		}
	}
	msg := fmt.Sprintf("%d of %d metrics have datapoints in the last %s", len(c.conf.Metrics)-len(empty), len(c.conf.Metrics), span)
	if len(empty) > 0 {
		slices.Sort(empty)
		details["metricsWithoutData"] = strings.Join(empty, ",")
		msg += "; none for " + strings.Join(empty, ", ") + " (check the namespace, metric name, dimensions and unit if data is expected)"
	}
	details["metrics"] = strconv.Itoa(len(c.conf.Metrics))
	return msg, nil
}
