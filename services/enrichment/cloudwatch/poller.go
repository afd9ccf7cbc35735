// Package cloudwatch polls monitoring.cloudwatch integrations with
// aws-sdk-go-v2 and publishes what it reads:
//
//   - alarms (DescribeAlarms), when the config says "pollAlarms": true:
//     each state transition as ingest.cloudwatch.alarm, in the shape of
//     the alarm JSON that CloudWatch sends through SNS, so one set of
//     mapping rules serves both ways in;
//   - metrics (GetMetricData), those the config lists in "metrics": the
//     statistic of each completed period as one ingest.cloudwatch.metric.
//
// The config is the connector's (inthub.dev/pkg/connectors/cloudwatch):
//
//	{ "region": "eu-west-1",
//	  "endpoint": "https://monitoring.eu-west-1.amazonaws.com",   // optional; any endpoint the egress policy allows
//	  "accessKeyId": "authref://vault/aws/ro#id", "secretAccessKey": "authref://vault/aws/ro#secret",
//	  "pollAlarms": true, "alarmNamePrefix": "checkout-",        // prefix optional
//	  "metrics": [ { "id": "checkout_5xx", "namespace": "AWS/ApplicationELB", "metricName": "HTTPCode_Target_5XX_Count",
//	                 "dimensions": { "LoadBalancer": "app/checkout/50dc6c495c0c9188" }, "stat": "Sum",
//	                 "periodSeconds": 60, "service": "checkout" } ] }
//
// Delivery ids are derived from what was observed (an alarm's ARN and
// transition time; a metric's id, period and period start), so two
// replicas, or a restart, publish the same event ids and JetStream keeps
// one within its duplicate window.
package cloudwatch

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"reflect"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	cw "github.com/aws/aws-sdk-go-v2/service/cloudwatch"
	"github.com/aws/aws-sdk-go-v2/service/cloudwatch/types"
	"github.com/prometheus/client_golang/prometheus"

	"inthub.dev/events"
	cwconn "inthub.dev/pkg/connectors/cloudwatch"
	"inthub.dev/pkg/egress"
	"inthub.dev/pkg/fault"
	"inthub.dev/services/enrichment/ingress"
)

// Source is the CloudEvents source of polled events.
const Source = "inthub/cloudwatch-poller"

// IntegrationType is the integration type the poller reads.
const IntegrationType = cwconn.Type

// Integrations lists the live integrations; integrationset.Set implements it.
type Integrations interface {
	All() []events.Integration
}

// Secrets resolves AuthRef URIs; authref.Resolver implements it.
type Secrets interface {
	Resolve(ctx context.Context, ref string) ([]byte, error)
}

// Publisher publishes durably; bus.Publisher implements it.
type Publisher interface {
	Publish(ctx context.Context, ev events.Event) error
}

// Config configures a Poller.
type Config struct {
	Integrations Integrations
	Secrets      Secrets
	Publisher    Publisher
	// Interval between two polls of every integration (1m).
	Interval time.Duration
	// Lookback: at the first poll of an integration, alarm transitions
	// younger than this are published, older ones only remembered; and
	// the metric periods that ended within it (at least the last one) are
	// published (2 × Interval).
	Lookback time.Duration
	// MetricDelay: a period is read once it ended this long ago, since
	// CloudWatch takes a while to ingest datapoints (2m). A datapoint
	// that arrives later than that is not published.
	MetricDelay time.Duration
	// MaxCatchUp bounds how far back a metric is read after polls that
	// failed (1h); older periods are skipped.
	MaxCatchUp time.Duration
	// Egress guards the connections to the endpoints.
	Egress  egress.Policy
	Timeout time.Duration // one API call (20s)
	Now     func() time.Time
	Logger  *slog.Logger
}

// Poller polls every monitoring.cloudwatch integration that asks for it.
type Poller struct {
	cfg     Config
	log     *slog.Logger
	http    *http.Client
	polls   *prometheus.CounterVec
	alarms  *prometheus.CounterVec
	samples *prometheus.CounterVec

	mu    sync.Mutex
	state map[string]*integrationState // by integration id
}

type integrationState struct {
	version      int64
	client       *cw.Client
	alarmsPolled bool
	seen         map[string]seenAlarm    // by alarm ARN
	metrics      map[string]*metricState // by metric id
}

type seenAlarm struct {
	at    time.Time
	state string
}

type metricState struct {
	def cwconn.Metric
	// next is the start of the first period not read yet.
	next time.Time
}

// New checks cfg.
func New(cfg Config) (*Poller, error) {
	switch {
	case cfg.Integrations == nil:
		return nil, errors.New("cloudwatch: Config.Integrations is required (an integrationset.Set)")
	case cfg.Secrets == nil:
		return nil, errors.New("cloudwatch: Config.Secrets is required to read the AWS keys")
	case cfg.Publisher == nil:
		return nil, errors.New("cloudwatch: Config.Publisher is required")
	}
	if cfg.Interval <= 0 {
		cfg.Interval = time.Minute
	}
	if cfg.Lookback <= 0 {
		cfg.Lookback = 2 * cfg.Interval
	}
	if cfg.MetricDelay <= 0 {
		cfg.MetricDelay = 2 * time.Minute
	}
	if cfg.MaxCatchUp <= 0 {
		cfg.MaxCatchUp = time.Hour
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 20 * time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	dialer := &net.Dialer{Timeout: 5 * time.Second, Control: cfg.Egress.DialControl()}
	p := &Poller{cfg: cfg, log: cfg.Logger, state: map[string]*integrationState{},
		http: &http.Client{Timeout: cfg.Timeout,
			// No proxy: through one, the dial-time egress check would see
			// only the proxy.
			Transport: &http.Transport{Proxy: nil, DialContext: dialer.DialContext, TLSHandshakeTimeout: 5 * time.Second,
				MaxIdleConnsPerHost: 2, IdleConnTimeout: 90 * time.Second},
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
	p.polls = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "enrichment_cloudwatch_polls_total",
		Help: "Polls of one integration's alarms (DescribeAlarms) or metrics (GetMetricData), by kind (alarms, metrics) and outcome (ok, error).",
	}, []string{"kind", "outcome"})
	p.alarms = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "enrichment_cloudwatch_transitions_total", Help: "Alarm state transitions published as ingest.cloudwatch.alarm, by new state.",
	}, []string{"state"})
	p.samples = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "enrichment_cloudwatch_metric_samples_total", Help: "Metric datapoints published as ingest.cloudwatch.metric, by namespace.",
	}, []string{"namespace"})
	return p, nil
}

// Collectors are the poller's metrics.
func (p *Poller) Collectors() []prometheus.Collector {
	return []prometheus.Collector{p.polls, p.alarms, p.samples}
}

// Run polls every Interval until ctx ends.
func (p *Poller) Run(ctx context.Context) error {
	t := time.NewTicker(p.cfg.Interval)
	defer t.Stop()
	for {
		p.PollOnce(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// PollOnce polls every integration once; one integration's failure (or
// one kind's: alarms, metrics) is logged and counted, and does not stop
// the others.
func (p *Poller) PollOnce(ctx context.Context) {
	live := map[string]bool{}
	for _, in := range p.cfg.Integrations.All() {
		if in.Type != IntegrationType || in.Status == "disabled" {
			continue
		}
		c, err := cwconn.ParseConfig(in.Config)
		if !wantsPolling(in.Config, c, err) {
			continue
		}
		live[in.ID] = true
		log := p.log.With("integrationId", in.ID, "tenantId", in.TenantID, "provider", "cloudwatch")
		var st *integrationState
		if err == nil {
			st, err = p.stateOf(in, c)
		}
		if err != nil {
			p.polls.WithLabelValues("config", "error").Inc()
			log.Warn("cloudwatch integration not polled", "error", err)
			continue
		}
		if c.PollAlarms {
			p.count(ctx, log, "alarms", p.pollAlarms(ctx, in, c, st))
		}
		if len(c.Metrics) > 0 {
			p.count(ctx, log, "metrics", p.pollMetrics(ctx, in, c, st))
		}
		if ctx.Err() != nil {
			return
		}
	}
	p.mu.Lock()
	for id := range p.state {
		if !live[id] {
			delete(p.state, id)
		}
	}
	p.mu.Unlock()
}

// wantsPolling: the config asks for alarms or metrics. A config that does
// not parse is reported only if it seems to ask (an SNS-only integration
// is none of the poller's business).
func wantsPolling(raw json.RawMessage, c cwconn.Config, err error) bool {
	if err == nil {
		return c.PollAlarms || len(c.Metrics) > 0
	}
	var loose struct {
		PollAlarms bool            `json:"pollAlarms"`
		Metrics    json.RawMessage `json:"metrics"`
	}
	_ = json.Unmarshal(raw, &loose)
	return loose.PollAlarms || len(loose.Metrics) > 0
}

func (p *Poller) count(ctx context.Context, log *slog.Logger, kind string, err error) {
	if err == nil {
		p.polls.WithLabelValues(kind, "ok").Inc()
		return
	}
	if ctx.Err() != nil {
		return // shutting down
	}
	p.polls.WithLabelValues(kind, "error").Inc()
	log.Warn("cloudwatch poll failed", "kind", kind, "class", fault.ClassOf(err).String(), "error", err)
}

func (p *Poller) stateOf(in events.Integration, c cwconn.Config) (*integrationState, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	st, ok := p.state[in.ID]
	if ok && st.version == in.Version {
		return st, nil
	}
	if c.Endpoint != "" {
		// The addresses are checked at every dial (Egress.DialControl);
		// here only what a dial cannot see.
		u, err := url.Parse(c.Endpoint)
		if err != nil || u.Host == "" || u.User != nil || (u.Scheme != "https" && !(u.Scheme == "http" && p.cfg.Egress.AllowHTTP)) {
			return nil, errors.New("endpoint must be an https URL without credentials")
		}
	}
	next := &integrationState{version: in.Version, client: cwconn.NewClient(c, p.cfg.Secrets, p.http, 2),
		seen: map[string]seenAlarm{}, metrics: map[string]*metricState{}}
	if ok {
		// A config change keeps what was already published: the alarms
		// seen, and the metrics whose definition did not change.
		next.seen, next.alarmsPolled = st.seen, st.alarmsPolled
		for _, m := range c.Metrics {
			if old, found := st.metrics[m.ID]; found && reflect.DeepEqual(old.def, m) {
				next.metrics[m.ID] = old
			}
		}
	}
	p.state[in.ID] = next
	return next, nil
}

func (p *Poller) pollAlarms(ctx context.Context, in events.Integration, c cwconn.Config, st *integrationState) error {
	first := !st.alarmsPolled
	now := p.cfg.Now()
	input := &cw.DescribeAlarmsInput{MaxRecords: aws.Int32(100)}
	if c.AlarmNamePrefix != "" {
		input.AlarmNamePrefix = aws.String(c.AlarmNamePrefix)
	}
	for pages := 0; ; pages++ {
		if pages >= 100 {
			return errors.New("more than 100 pages of alarms; set alarmNamePrefix")
		}
		cctx, cancel := context.WithTimeout(ctx, p.cfg.Timeout)
		out, err := st.client.DescribeAlarms(cctx, input)
		cancel()
		if err != nil {
			return cwconn.Classify("DescribeAlarms", err)
		}
		for _, a := range out.MetricAlarms {
			if err := p.observe(ctx, in, c, st, a, first, now); err != nil {
				return err
			}
		}
		if out.NextToken == nil || *out.NextToken == "" {
			st.alarmsPolled = true
			return nil
		}
		input.NextToken = out.NextToken
	}
}

// observe publishes a transition not seen before.
func (p *Poller) observe(ctx context.Context, in events.Integration, c cwconn.Config, st *integrationState, a types.MetricAlarm, first bool, now time.Time) error {
	arn := aws.ToString(a.AlarmArn)
	at := a.StateTransitionedTimestamp
	if at == nil {
		at = a.StateUpdatedTimestamp
	}
	if arn == "" || at == nil {
		return nil
	}
	prev, known := st.seen[arn]
	if known && !at.After(prev.at) {
		return nil
	}
	if first && now.Sub(*at) > p.cfg.Lookback {
		st.seen[arn] = seenAlarm{at: *at, state: string(a.StateValue)}
		return nil
	}
	ev, err := alarmEvent(in, c, a, arn, *at, prev.state, now)
	if err != nil {
		return err
	}
	if err := p.publish(ctx, ev); err != nil {
		return err
	}
	st.seen[arn] = seenAlarm{at: *at, state: string(a.StateValue)}
	p.alarms.WithLabelValues(string(a.StateValue)).Inc()
	return nil
}

func (p *Poller) publish(ctx context.Context, ev events.Event) error {
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 15*time.Second)
	defer cancel()
	if err := p.cfg.Publisher.Publish(pctx, ev); err != nil {
		return fmt.Errorf("publish: %w", err)
	}
	return nil
}

// alarmEvent builds the ingest event of one transition in the shape of
// CloudWatch's SNS alarm JSON.
func alarmEvent(in events.Integration, c cwconn.Config, a types.MetricAlarm, arn string, at time.Time, prevState string, now time.Time) (events.Event, error) {
	account := ""
	if parts := strings.Split(arn, ":"); len(parts) > 4 {
		account = parts[4]
	}
	dims := make([]map[string]string, 0, len(a.Dimensions))
	for _, d := range a.Dimensions {
		dims = append(dims, map[string]string{"name": aws.ToString(d.Name), "value": aws.ToString(d.Value)})
	}
	trigger := map[string]any{"MetricName": aws.ToString(a.MetricName), "Namespace": aws.ToString(a.Namespace),
		"Statistic": string(a.Statistic), "ComparisonOperator": string(a.ComparisonOperator), "Dimensions": dims}
	if a.Period != nil {
		trigger["Period"] = *a.Period
	}
	if a.EvaluationPeriods != nil {
		trigger["EvaluationPeriods"] = *a.EvaluationPeriods
	}
	if a.Threshold != nil {
		trigger["Threshold"] = *a.Threshold
	}
	doc := map[string]any{
		"AlarmName": aws.ToString(a.AlarmName), "AlarmDescription": aws.ToString(a.AlarmDescription), "AWSAccountId": account,
		"NewStateValue": string(a.StateValue), "NewStateReason": aws.ToString(a.StateReason),
		"StateChangeTime": at.UTC().Format("2006-01-02T15:04:05.000-0700"), "Region": c.Region, "AlarmArn": arn,
		"OldStateValue": prevState, "Trigger": trigger,
	}
	key := sha256.Sum256([]byte(arn + "@" + at.UTC().Format(time.RFC3339Nano)))
	return ingestEvent(in, events.SubjectIngestCloudWatchAlarm, "alarm", "poll:"+hex.EncodeToString(key[:16]), doc, now)
}

func ingestEvent(in events.Integration, subject, kind, delivery string, doc any, now time.Time) (events.Event, error) {
	payload, err := json.Marshal(doc)
	if err != nil {
		return events.Event{}, err
	}
	sum := sha256.Sum256(payload)
	ev, err := events.New(subject, Source, in.TenantID, events.Ingested{
		IntegrationID: in.ID, TenantID: in.TenantID, Provider: "cloudwatch", Kind: kind, DeliveryID: delivery,
		Via: events.ViaPoll, ReceivedAt: now.UTC().Truncate(time.Millisecond), BodySHA256: hex.EncodeToString(sum[:]), Payload: payload})
	if err != nil {
		return events.Event{}, err
	}
	ev.ID = ingress.EventID("cloudwatch", in.ID, delivery)
	return ev, nil
}
