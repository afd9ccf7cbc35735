package cloudwatch

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"strconv"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	cw "github.com/aws/aws-sdk-go-v2/service/cloudwatch"
	"github.com/aws/aws-sdk-go-v2/service/cloudwatch/types"

	"inthub.dev/events"
	cwconn "inthub.dev/pkg/connectors/cloudwatch"
)

// Sample is the payload of ingest.cloudwatch.metric: the statistic of one
// metric over one completed period, named as GetMetricData names things
// (CloudWatch has no document of its own for a datapoint).
type Sample struct {
	ID         string      `json:"Id"`
	Label      string      `json:"Label,omitempty"`
	Namespace  string      `json:"Namespace"`
	MetricName string      `json:"MetricName"`
	Dimensions []Dimension `json:"Dimensions"` // sorted by name
	Stat       string      `json:"Stat"`
	Period     int         `json:"Period"` // seconds
	Unit       string      `json:"Unit,omitempty"`
	Timestamp  time.Time   `json:"Timestamp"` // start of the period, UTC
	Value      float64     `json:"Value"`
	Region     string      `json:"Region"`
	Service    string      `json:"Service,omitempty"`
}

// Dimension is a metric's dimension.
type Dimension struct {
	Name  string `json:"Name"`
	Value string `json:"Value"`
}

// MetricDeliveryID is the delivery id of a metric's period: the same for
// every poller that reads it, so a restart or a second replica publishes
// the same event id.
func MetricDeliveryID(m cwconn.Metric, start time.Time) string {
	key := sha256.Sum256([]byte(m.ID + "/" + strconv.Itoa(m.PeriodSeconds)))
	return "metric:" + hex.EncodeToString(key[:16]) + "@" + start.UTC().Format(time.RFC3339)
}

// window is the periods of one metric to read now: [from, to).
type window struct {
	m        cwconn.Metric
	st       *metricState
	from, to time.Time
}

// pollMetrics reads every configured metric's completed periods since the
// last one published (at the first poll: those that ended within the
// lookback, at least the last one), and publishes one event per period
// that has a datapoint, oldest first. A metric whose read or publish
// fails keeps its place and is read again at the next poll.
func (p *Poller) pollMetrics(ctx context.Context, in events.Integration, c cwconn.Config, st *integrationState) error {
	now := p.cfg.Now().UTC()
	// Metrics that share a time range share a GetMetricData call (at most
	// cwconn.MaxMetrics queries, which is the config's limit too).
	groups := map[[2]time.Time][]*window{}
	var keys [][2]time.Time
	for _, m := range c.Metrics {
		ms := st.metrics[m.ID]
		if ms == nil {
			ms = &metricState{def: m}
			st.metrics[m.ID] = ms
		}
		period := time.Duration(m.PeriodSeconds) * time.Second
		to := now.Add(-p.cfg.MetricDelay).Truncate(period)
		from := ms.next
		if from.IsZero() {
			from = to.Add(-max(roundUp(p.cfg.Lookback, period), period))
		}
		if oldest := to.Add(-roundUp(p.cfg.MaxCatchUp, period)); from.Before(oldest) {
			from = oldest
		}
		if !from.Before(to) {
			continue
		}
		k := [2]time.Time{from, to}
		if groups[k] == nil {
			keys = append(keys, k)
		}
		groups[k] = append(groups[k], &window{m: m, st: ms, from: from, to: to})
	}
	var errs []error
	for _, k := range keys {
		if err := p.readWindow(ctx, in, c, st.client, groups[k], now); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func roundUp(d, unit time.Duration) time.Duration {
	return (d + unit - 1) / unit * unit
}

func (p *Poller) readWindow(ctx context.Context, in events.Integration, c cwconn.Config, client *cw.Client, ws []*window, now time.Time) error {
	byID := map[string]*window{}
	queries := make([]types.MetricDataQuery, 0, len(ws))
	for _, w := range ws {
		byID[w.m.ID] = w
		queries = append(queries, w.m.Query())
	}
	type point struct {
		at    time.Time
		value float64
	}
	points := map[string][]point{}
	labels := map[string]string{}
	failed := map[string]string{}
	input := &cw.GetMetricDataInput{MetricDataQueries: queries, StartTime: aws.Time(ws[0].from), EndTime: aws.Time(ws[0].to),
		ScanBy: types.ScanByTimestampAscending}
	for pages := 0; ; pages++ {
		if pages >= 100 {
			return errors.New("GetMetricData: more than 100 pages; list fewer metrics or longer periods")
		}
		cctx, cancel := context.WithTimeout(ctx, p.cfg.Timeout)
		out, err := client.GetMetricData(cctx, input)
		cancel()
		if err != nil {
			return cwconn.Classify("GetMetricData", err)
		}
		for _, r := range out.MetricDataResults {
			id := aws.ToString(r.Id)
			if byID[id] == nil {
				continue
			}
			switch r.StatusCode {
			case types.StatusCodeForbidden, types.StatusCodeInternalError:
				failed[id] = string(r.StatusCode)
			}
			if l := aws.ToString(r.Label); l != "" {
				labels[id] = l
			}
			for i, v := range r.Values {
				if i < len(r.Timestamps) {
					points[id] = append(points[id], point{r.Timestamps[i].UTC(), v})
				}
			}
		}
		if aws.ToString(out.NextToken) == "" {
			break
		}
		input.NextToken = out.NextToken
	}
	var errs []error
	for _, w := range ws {
		if s, bad := failed[w.m.ID]; bad {
			errs = append(errs, fmt.Errorf("GetMetricData: metric %s: %s", w.m.ID, s))
			continue
		}
		ps := points[w.m.ID]
		slices.SortFunc(ps, func(a, b point) int { return a.at.Compare(b.at) })
		ok := true
		for i, pt := range ps {
			if pt.at.Before(w.from) || !pt.at.Before(w.to) || (i > 0 && pt.at.Equal(ps[i-1].at)) ||
				math.IsNaN(pt.value) || math.IsInf(pt.value, 0) {
				continue
			}
			ev, err := metricEvent(in, c, w.m, labels[w.m.ID], pt.at, pt.value, now)
			if err == nil {
				err = p.publish(ctx, ev)
			}
			if err != nil {
				errs = append(errs, fmt.Errorf("metric %s at %s: %w", w.m.ID, pt.at.Format(time.RFC3339), err))
				ok = false
				break
			}
			// Published periods are behind us even if a later one fails.
			w.st.next = pt.at.Add(time.Duration(w.m.PeriodSeconds) * time.Second)
			p.samples.WithLabelValues(w.m.Namespace).Inc()
		}
		if ok {
			w.st.next = w.to
		}
	}
	return errors.Join(errs...)
}

func metricEvent(in events.Integration, c cwconn.Config, m cwconn.Metric, label string, start time.Time, value float64, now time.Time) (events.Event, error) {
	dims := make([]Dimension, 0, len(m.Dimensions))
	for _, k := range slices.Sorted(maps.Keys(m.Dimensions)) {
		dims = append(dims, Dimension{Name: k, Value: m.Dimensions[k]})
	}
	s := Sample{ID: m.ID, Label: label, Namespace: m.Namespace, MetricName: m.MetricName, Dimensions: dims, Stat: m.Stat,
		Period: m.PeriodSeconds, Unit: m.Unit, Timestamp: start.UTC(), Value: value, Region: c.Region, Service: m.Service}
	return ingestEvent(in, events.SubjectIngestCloudWatchMetric, "metric", MetricDeliveryID(m, start), s, now)
}
