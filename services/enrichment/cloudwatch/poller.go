// Package cloudwatch polls the alarms of monitoring.cloudwatch
// integrations (DescribeAlarms, aws-sdk-go-v2) and publishes each state
// transition as ingest.cloudwatch.alarm, in the shape of the alarm JSON
// that CloudWatch sends through SNS, so one set of mapping rules serves
// both ways in.
//
// An integration is polled when its config says "pollAlarms": true:
//
//	{ "region": "eu-west-1",
//	  "endpoint": "https://monitoring.eu-west-1.amazonaws.com",   // optional; any endpoint the egress policy allows
//	  "accessKeyId": "authref://vault/aws/ro#id", "secretAccessKey": "authref://vault/aws/ro#secret",
//	  "pollAlarms": true, "alarmNamePrefix": "checkout-" }        // prefix optional
//
// The delivery id of a transition is derived from the alarm ARN and the
// transition time, so two replicas, or a restart, publish the same event
// id and JetStream keeps one.
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
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	cw "github.com/aws/aws-sdk-go-v2/service/cloudwatch"
	"github.com/aws/aws-sdk-go-v2/service/cloudwatch/types"
	"github.com/prometheus/client_golang/prometheus"

	"inthub.dev/events"
	"inthub.dev/pkg/egress"
	"inthub.dev/services/enrichment/ingress"
)

// Source is the CloudEvents source of polled alarm events.
const Source = "inthub/cloudwatch-poller"

// IntegrationType is the integration type the poller reads.
const IntegrationType = "monitoring.cloudwatch"

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
	// Lookback: at the first poll of an integration, transitions younger
	// than this are published, older ones only remembered (2 × Interval).
	Lookback time.Duration
	// Egress guards the connections to the endpoints.
	Egress  egress.Policy
	Timeout time.Duration // one API call (20s)
	Now     func() time.Time
	Logger  *slog.Logger
}

// Config of a monitoring.cloudwatch integration, as far as the poller
// reads it.
type integrationConfig struct {
	Region          string `json:"region"`
	Endpoint        string `json:"endpoint"`
	AccessKeyID     string `json:"accessKeyId"`
	SecretAccessKey string `json:"secretAccessKey"`
	PollAlarms      bool   `json:"pollAlarms"`
	AlarmNamePrefix string `json:"alarmNamePrefix"`
}

// Poller polls every monitoring.cloudwatch integration that asks for it.
type Poller struct {
	cfg    Config
	log    *slog.Logger
	http   *http.Client
	polls  *prometheus.CounterVec
	alarms *prometheus.CounterVec

	mu    sync.Mutex
	state map[string]*integrationState // by integration id
}

type integrationState struct {
	version int64
	client  *cw.Client
	seen    map[string]seenAlarm // by alarm ARN
}

type seenAlarm struct {
	at    time.Time
	state string
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
		Name: "enrichment_cloudwatch_polls_total", Help: "DescribeAlarms polls by integration outcome (ok, error).",
	}, []string{"outcome"})
	p.alarms = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "enrichment_cloudwatch_transitions_total", Help: "Alarm state transitions published as ingest.cloudwatch.alarm, by new state.",
	}, []string{"state"})
	return p, nil
}

// Collectors are the poller's metrics.
func (p *Poller) Collectors() []prometheus.Collector {
	return []prometheus.Collector{p.polls, p.alarms}
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

// PollOnce polls every integration once; one integration's failure is
// logged and counted, and does not stop the others.
func (p *Poller) PollOnce(ctx context.Context) {
	live := map[string]bool{}
	for _, in := range p.cfg.Integrations.All() {
		if in.Type != IntegrationType || in.Status == "disabled" {
			continue
		}
		var c integrationConfig
		if err := json.Unmarshal(in.Config, &c); err != nil || !c.PollAlarms {
			continue
		}
		live[in.ID] = true
		if err := p.poll(ctx, in, c); err != nil {
			if ctx.Err() != nil {
				return
			}
			p.polls.WithLabelValues("error").Inc()
			p.log.Warn("cloudwatch poll failed", "integrationId", in.ID, "tenantId", in.TenantID, "error", err)
			continue
		}
		p.polls.WithLabelValues("ok").Inc()
	}
	p.mu.Lock()
	for id := range p.state {
		if !live[id] {
			delete(p.state, id)
		}
	}
	p.mu.Unlock()
}

func (p *Poller) stateOf(in events.Integration, c integrationConfig) (*integrationState, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	st, ok := p.state[in.ID]
	if ok && st.version == in.Version {
		return st, nil
	}
	if c.Region == "" {
		return nil, errors.New("config has no region")
	}
	if c.Endpoint != "" {
		// The addresses are checked at every dial (Egress.DialControl);
		// here only what a dial cannot see.
		u, err := url.Parse(c.Endpoint)
		if err != nil || u.Host == "" || u.User != nil || (u.Scheme != "https" && !(u.Scheme == "http" && p.cfg.Egress.AllowHTTP)) {
			return nil, errors.New("endpoint must be an https URL without credentials")
		}
	}
	secrets, secret := p.cfg.Secrets, c
	opts := cw.Options{
		Region:           c.Region,
		HTTPClient:       p.http,
		RetryMaxAttempts: 2,
		Credentials: aws.NewCredentialsCache(aws.CredentialsProviderFunc(func(ctx context.Context) (aws.Credentials, error) {
			id, err := secrets.Resolve(ctx, secret.AccessKeyID)
			if err != nil {
				return aws.Credentials{}, fmt.Errorf("accessKeyId: %w", err)
			}
			key, err := secrets.Resolve(ctx, secret.SecretAccessKey)
			if err != nil {
				return aws.Credentials{}, fmt.Errorf("secretAccessKey: %w", err)
			}
			return aws.Credentials{AccessKeyID: string(id), SecretAccessKey: string(key), Source: "inthub authref",
				CanExpire: true, Expires: time.Now().Add(5 * time.Minute)}, nil
		})),
	}
	if c.Endpoint != "" {
		opts.BaseEndpoint = aws.String(c.Endpoint)
	}
	seen := map[string]seenAlarm{}
	if ok {
		seen = st.seen // a config change keeps what was already published
	}
	st = &integrationState{version: in.Version, client: cw.New(opts), seen: seen}
	p.state[in.ID] = st
	return st, nil
}

func (p *Poller) poll(ctx context.Context, in events.Integration, c integrationConfig) error {
	st, err := p.stateOf(in, c)
	if err != nil {
		return err
	}
	first := len(st.seen) == 0
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
			return fmt.Errorf("DescribeAlarms: %w", err)
		}
		for _, a := range out.MetricAlarms {
			if err := p.observe(ctx, in, c, st, a, first, now); err != nil {
				return err
			}
		}
		if out.NextToken == nil || *out.NextToken == "" {
			return nil
		}
		input.NextToken = out.NextToken
	}
}

// observe publishes a transition not seen before.
func (p *Poller) observe(ctx context.Context, in events.Integration, c integrationConfig, st *integrationState, a types.MetricAlarm, first bool, now time.Time) error {
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
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 15*time.Second)
	defer cancel()
	if err := p.cfg.Publisher.Publish(pctx, ev); err != nil {
		return fmt.Errorf("publish: %w", err)
	}
	st.seen[arn] = seenAlarm{at: *at, state: string(a.StateValue)}
	p.alarms.WithLabelValues(string(a.StateValue)).Inc()
	return nil
}

// alarmEvent builds the ingest event of one transition in the shape of
// CloudWatch's SNS alarm JSON.
func alarmEvent(in events.Integration, c integrationConfig, a types.MetricAlarm, arn string, at time.Time, prevState string, now time.Time) (events.Event, error) {
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
	payload, err := json.Marshal(doc)
	if err != nil {
		return events.Event{}, err
	}
	sum := sha256.Sum256(payload)
	key := sha256.Sum256([]byte(arn + "@" + at.UTC().Format(time.RFC3339Nano)))
	delivery := "poll:" + hex.EncodeToString(key[:16])
	received := now.UTC().Truncate(time.Millisecond)
	ev, err := events.New(events.SubjectIngestCloudWatchAlarm, Source, in.TenantID, events.Ingested{
		IntegrationID: in.ID, TenantID: in.TenantID, Provider: "cloudwatch", Kind: "alarm", DeliveryID: delivery,
		Via: events.ViaPoll, ReceivedAt: received, BodySHA256: hex.EncodeToString(sum[:]), Payload: payload})
	if err != nil {
		return events.Event{}, err
	}
	ev.ID = ingress.EventID("cloudwatch", in.ID, delivery)
	return ev, nil
}
