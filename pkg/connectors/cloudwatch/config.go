package cloudwatch

import (
	"encoding/json"
	"fmt"
	"maps"
	"net/url"
	"regexp"
	"slices"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/cloudwatch/types"

	"inthub.dev/pkg/connectors/strictjson"
	"inthub.dev/pkg/fault"
)

// Config is the integration's config (schemas/config/monitoring.cloudwatch.json).
// The enrichment service's SNS ingress reads SNSTopicArns, its poller
// PollAlarms, AlarmNamePrefix and Metrics; the rest is shared.
type Config struct {
	Region string `json:"region"`
	// Endpoint overrides the regional endpoint (a VPC endpoint, a
	// compatible server); the egress policy applies at dial time.
	Endpoint string `json:"endpoint,omitempty"`
	// AccessKeyID and SecretAccessKey are AuthRef URIs.
	AccessKeyID     string   `json:"accessKeyId"`
	SecretAccessKey string   `json:"secretAccessKey"`
	PollAlarms      bool     `json:"pollAlarms,omitempty"`
	AlarmNamePrefix string   `json:"alarmNamePrefix,omitempty"`
	Metrics         []Metric `json:"metrics,omitempty"`
	SNSTopicArns    []string `json:"snsTopicArns,omitempty"`
	TimeoutSeconds  int      `json:"timeoutSeconds,omitempty"`

	HealthIntervalSeconds int `json:"healthIntervalSeconds,omitempty"`
}

// Metric is one metric the poller reads with GetMetricData: a statistic
// of one metric (namespace, name, exactly these dimensions) over periods
// of PeriodSeconds.
type Metric struct {
	// ID names the metric within the integration (GetMetricData's query
	// id: a lower-case letter, then letters, digits, _).
	ID            string            `json:"id"`
	Namespace     string            `json:"namespace"`
	MetricName    string            `json:"metricName"`
	Dimensions    map[string]string `json:"dimensions,omitempty"`
	Stat          string            `json:"stat"`
	PeriodSeconds int               `json:"periodSeconds"`
	// Unit, when set, asks only for data recorded in that unit, and is
	// carried with each sample.
	Unit string `json:"unit,omitempty"`
	// Service tags the samples with the service they measure, a
	// correlation hint beside the dimensions.
	Service string `json:"service,omitempty"`
}

// Limits of the config, CloudWatch's where it has one.
const (
	MaxMetrics       = 500 // GetMetricData's MetricDataQueries per call
	MaxDimensions    = 30
	MinPeriodSeconds = 60
	MaxPeriodSeconds = 86400
)

// ConfigError is a config field that is wrong; its text names the field
// and never quotes a secret.
type ConfigError struct {
	Field  string
	Reason string
}

func (e *ConfigError) Error() string {
	return "monitoring.cloudwatch: config: " + e.Field + " " + e.Reason
}

var (
	regionRE   = regexp.MustCompile(`^[a-z]{2}(-[a-z]+)+-[0-9]{1,2}$`)
	metricIDRE = regexp.MustCompile(`^[a-z][a-zA-Z0-9_]{0,254}$`)
	pStatRE    = regexp.MustCompile(`^p([0-9]{1,2}(\.[0-9]{1,2})?|100)$`)
	topicRE    = regexp.MustCompile(`^arn:aws[a-z-]*:sns:[a-z0-9-]+:[0-9]{12}:[A-Za-z0-9_.-]{1,256}$`)
)

// Stats lists the statistics a Metric may name besides percentiles (pNN).
var Stats = []string{"Average", "Maximum", "Minimum", "SampleCount", "Sum"}

// ParseConfig decodes a config strictly (an unknown field is an error)
// and checks it; errors are permanent *ConfigError.
func ParseConfig(raw json.RawMessage) (Config, error) {
	var c Config
	if err := strictjson.Decode(raw, &c); err != nil {
		return c, fault.Permanent(fmt.Errorf("monitoring.cloudwatch: config: %w", err))
	}
	return c, c.Check()
}

// Check validates the config without I/O.
func (c Config) Check() error {
	bad := func(field, reason string) error { return fault.Permanent(&ConfigError{Field: field, Reason: reason}) }
	if !regionRE.MatchString(c.Region) {
		return bad("region", "must be an AWS region such as eu-west-1")
	}
	if c.Endpoint != "" {
		u, err := url.Parse(c.Endpoint)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
			return bad("endpoint", "must be an absolute http(s) URL without credentials, query or fragment")
		}
	}
	if c.AccessKeyID == "" {
		return bad("accessKeyId", "is required (an AuthRef URI)")
	}
	if c.SecretAccessKey == "" {
		return bad("secretAccessKey", "is required (an AuthRef URI)")
	}
	if len(c.AlarmNamePrefix) > 255 {
		return bad("alarmNamePrefix", "is longer than 255 characters")
	}
	for i, t := range c.SNSTopicArns {
		if !topicRE.MatchString(t) {
			return bad(fmt.Sprintf("snsTopicArns[%d]", i), "must be an SNS topic ARN")
		}
	}
	if len(c.Metrics) > MaxMetrics {
		return bad("metrics", fmt.Sprintf("has more than %d entries", MaxMetrics))
	}
	ids := map[string]bool{}
	for i, m := range c.Metrics {
		f := fmt.Sprintf("metrics[%d].", i)
		switch {
		case !metricIDRE.MatchString(m.ID):
			return bad(f+"id", "must start with a lower-case letter and hold only letters, digits and _ (at most 255)")
		case ids[m.ID]:
			return bad(f+"id", "repeats an earlier metric's id")
		case m.Namespace == "" || len(m.Namespace) > 255:
			return bad(f+"namespace", "is required (at most 255 characters)")
		case m.MetricName == "" || len(m.MetricName) > 255:
			return bad(f+"metricName", "is required (at most 255 characters)")
		case len(m.Dimensions) > MaxDimensions:
			return bad(f+"dimensions", fmt.Sprintf("has more than %d entries", MaxDimensions))
		case !slices.Contains(Stats, m.Stat) && !pStatRE.MatchString(m.Stat):
			return bad(f+"stat", "must be Average, Maximum, Minimum, SampleCount, Sum or a percentile such as p99")
		case m.PeriodSeconds < MinPeriodSeconds || m.PeriodSeconds > MaxPeriodSeconds || m.PeriodSeconds%60 != 0:
			return bad(f+"periodSeconds", "must be a multiple of 60 from 60 to 86400")
		case m.Unit != "" && !slices.Contains(types.StandardUnit("").Values(), types.StandardUnit(m.Unit)):
			return bad(f+"unit", "must be a CloudWatch unit such as Count, Seconds, Percent or Bytes")
		case len(m.Service) > 255:
			return bad(f+"service", "is longer than 255 characters")
		}
		for k, v := range m.Dimensions {
			if k == "" || v == "" || len(k) > 255 || len(v) > 1024 || strings.HasPrefix(k, ":") {
				return bad(f+"dimensions", "names and values must be non-empty (names at most 255, values at most 1024 characters)")
			}
		}
		ids[m.ID] = true
	}
	return nil
}

// Query is m as a GetMetricData query.
func (m Metric) Query() types.MetricDataQuery {
	dims := make([]types.Dimension, 0, len(m.Dimensions))
	for _, k := range slices.Sorted(maps.Keys(m.Dimensions)) {
		dims = append(dims, types.Dimension{Name: aws.String(k), Value: aws.String(m.Dimensions[k])})
	}
	q := types.MetricDataQuery{
		Id: aws.String(m.ID),
		MetricStat: &types.MetricStat{
			Metric: &types.Metric{Namespace: aws.String(m.Namespace), MetricName: aws.String(m.MetricName), Dimensions: dims},
			Period: aws.Int32(int32(m.PeriodSeconds)),
			Stat:   aws.String(m.Stat),
		},
		ReturnData: aws.Bool(true),
	}
	if m.Unit != "" {
		q.MetricStat.Unit = types.StandardUnit(m.Unit)
	}
	return q
}
