package ingress_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"inthub.dev/events"
	"inthub.dev/services/enrichment/ingress"
	"inthub.dev/services/enrichment/internal/snstest"
)

const (
	cwID     = "0190f1c2-7a3b-7c4d-8e5f-0a1b2c3d4e05"
	topic    = "arn:aws:sns:eu-west-1:123456789012:alarms"
	certURL  = snstest.CertURL
	subURL   = "https://sns.eu-west-1.amazonaws.com/?Action=ConfirmSubscription&TopicArn=" + topic + "&Token=2336412f37"
	alarmMsg = `{"AlarmName":"checkout-5xx","NewStateValue":"ALARM","NewStateReason":"Threshold Crossed","StateChangeTime":"2026-05-06T07:05:00.000+0000","AlarmArn":"arn:aws:cloudwatch:eu-west-1:123456789012:alarm:checkout-5xx","OldStateValue":"OK","Trigger":{"Dimensions":[{"value":"checkout","name":"ServiceName"}]}}`
)

var snsNow = time.Date(2026, 5, 6, 7, 8, 9, 0, time.UTC)

func notification(id string) snstest.Message {
	return snstest.Message{"Type": "Notification", "MessageId": id, "TopicArn": topic, "Subject": `ALARM: "checkout-5xx" in EU (Ireland)`,
		"Message": alarmMsg, "Timestamp": "2026-05-06T07:05:01.123Z",
		"UnsubscribeURL": "https://sns.eu-west-1.amazonaws.com/?Action=Unsubscribe&SubscriptionArn=" + topic + ":1"}
}

func confirmation() snstest.Message {
	return snstest.Message{"Type": "SubscriptionConfirmation", "MessageId": "165545c9-2a5c-472c-8df2-7ff2be2b3b1b", "Token": "2336412f37",
		"TopicArn": topic, "Message": "You have chosen to subscribe to the topic " + topic + ".", "SubscribeURL": subURL,
		"Timestamp": "2026-05-06T07:05:01.123Z"}
}

func snsHandler(t *testing.T, ca *snstest.CA, served []byte) (*ingress.Handler, *publisher, *snstest.Fetcher) {
	t.Helper()
	pub := &publisher{}
	f := &snstest.Fetcher{Cert: served}
	h, err := ingress.New(ingress.Config{
		Integrations: integrations{cwID: integration(cwID, "monitoring.cloudwatch", `{"snsTopicArns":["`+topic+`"]}`)},
		Secrets:      secrets{}, Publisher: pub, MaxBody: 64 << 10,
		Now: func() time.Time { return snsNow },
		SNS: ingress.SNSConfig{Roots: ca.Pool, Get: f.Get},
	})
	if err != nil {
		t.Fatal(err)
	}
	return h, pub, f
}

func postSNS(t *testing.T, h http.Handler, m snstest.Message) int {
	t.Helper()
	return post(t, h, req{path: "/webhooks/sns/" + cwID, body: string(m.JSON()),
		header: map[string]string{"Content-Type": "text/plain; charset=UTF-8", "X-Amz-Sns-Message-Type": m["Type"]}}).Code
}

func TestCheckSNSURL(t *testing.T) {
	tests := []struct {
		url  string
		cert bool
		ok   bool
	}{
		{certURL, true, true},
		{"https://sns.cn-north-1.amazonaws.com.cn/SimpleNotificationService-3242342098.pem", true, true},
		{subURL, false, true},
		{"https://sns.eu-west-1.amazonaws.com.evil.com/SimpleNotificationService-x.pem", true, false},
		{"https://sns.eu-west-1.amazonaws.com@evil.com/SimpleNotificationService-x.pem", true, false},
		{"https://evil.com@sns.eu-west-1.amazonaws.com/SimpleNotificationService-x.pem", true, false},
		{"https://s3.amazonaws.com/SimpleNotificationService-x.pem", true, false},
		{"https://sns.amazonaws.com/SimpleNotificationService-x.pem", true, false},
		{"http://sns.eu-west-1.amazonaws.com/SimpleNotificationService-x.pem", true, false},
		{"https://sns.eu-west-1.amazonaws.com:8443/SimpleNotificationService-x.pem", true, false},
		{"https://sns.eu-west-1.amazonaws.com/evil.pem", true, false},
		{"https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-x.pem?x=1", true, false},
		{"https://sns.eu-west-1.amazonaws.com/a/../SimpleNotificationService-x.pem", true, false},
		{"https://SNS.eu-west-1.amazonaws.com/SimpleNotificationService-x.pem", true, false},
		{"//sns.eu-west-1.amazonaws.com/SimpleNotificationService-x.pem", true, false},
	}
	for _, tt := range tests {
		if err := ingress.CheckSNSURL(tt.url, tt.cert); (err == nil) != tt.ok {
			t.Errorf("CheckSNSURL(%q) = %v, want ok=%v", tt.url, err, tt.ok)
		}
	}
}

func TestSNSSignatures(t *testing.T) {
	ca := snstest.NewCA(t, snsNow)
	other := snstest.NewCA(t, snsNow)
	withCert := func(m snstest.Message, u string) snstest.Message { m["SigningCertURL"] = u; return m }
	tampered := func(m snstest.Message) snstest.Message {
		m["Message"] = strings.Replace(m["Message"], "ALARM", "ALARm", 1)
		return m
	}
	tests := []struct {
		name   string
		msg    func() snstest.Message
		served []byte // the certificate at the URL
		code   int
	}{
		{"v1", func() snstest.Message { return ca.Sign(t, notification("m1"), "1", "1") }, ca.LeafPEM, 200},
		{"v2", func() snstest.Message { return ca.Sign(t, notification("m1"), "2", "2") }, ca.LeafPEM, 200},
		{"no Subject", func() snstest.Message { m := notification("m1"); delete(m, "Subject"); return ca.Sign(t, m, "2", "2") }, ca.LeafPEM, 200},
		{"one byte changed", func() snstest.Message { return tampered(ca.Sign(t, notification("m1"), "2", "2")) }, ca.LeafPEM, 401},
		{"v2 signature labelled v1", func() snstest.Message { return ca.Sign(t, notification("m1"), "2", "1") }, ca.LeafPEM, 401},
		{"v1 signature labelled v2", func() snstest.Message { return ca.Sign(t, notification("m1"), "1", "2") }, ca.LeafPEM, 401},
		{"unknown version", func() snstest.Message { return ca.Sign(t, notification("m1"), "2", "3") }, ca.LeafPEM, 401},
		{"certificate of another CA", func() snstest.Message { return other.Sign(t, notification("m1"), "2", "2") }, other.LeafPEM, 401},
		{"host .amazonaws.com.evil.com", func() snstest.Message {
			return ca.Sign(t, withCert(notification("m1"), "https://sns.eu-west-1.amazonaws.com.evil.com/SimpleNotificationService-1.pem"), "2", "2")
		}, ca.LeafPEM, 401},
		{"userinfo @evil.com", func() snstest.Message {
			return ca.Sign(t, withCert(notification("m1"), "https://sns.eu-west-1.amazonaws.com@evil.com/SimpleNotificationService-1.pem"), "2", "2")
		}, ca.LeafPEM, 401},
		{"s3 host", func() snstest.Message {
			return ca.Sign(t, withCert(notification("m1"), "https://s3.amazonaws.com/SimpleNotificationService-1.pem"), "2", "2")
		}, ca.LeafPEM, 401},
		{"http", func() snstest.Message {
			return ca.Sign(t, withCert(notification("m1"), "http://sns.eu-west-1.amazonaws.com/SimpleNotificationService-1.pem"), "2", "2")
		}, ca.LeafPEM, 401},
		{"port", func() snstest.Message {
			return ca.Sign(t, withCert(notification("m1"), "https://sns.eu-west-1.amazonaws.com:443/SimpleNotificationService-1.pem"), "2", "2")
		}, ca.LeafPEM, 401},
		{"topic not allowed", func() snstest.Message {
			m := notification("m1")
			m["TopicArn"] += "-other"
			return ca.Sign(t, m, "2", "2")
		}, ca.LeafPEM, 403},
		{"too old", func() snstest.Message {
			m := notification("m1")
			m["Timestamp"] = "2026-05-06T05:00:00Z"
			return ca.Sign(t, m, "2", "2")
		}, ca.LeafPEM, 401},
		{"not base64", func() snstest.Message {
			m := ca.Sign(t, notification("m1"), "2", "2")
			m["Signature"] = "%%%"
			return m
		}, ca.LeafPEM, 401},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, pub, _ := snsHandler(t, ca, tt.served)
			if code := postSNS(t, h, tt.msg()); code != tt.code {
				t.Fatalf("status %d, want %d", code, tt.code)
			}
			got := pub.published()
			if tt.code != 200 {
				if len(got) != 0 {
					t.Fatalf("published %d events for a refused message", len(got))
				}
				return
			}
			if len(got) != 1 || got[0].Type != events.SubjectIngestCloudWatchAlarm || got[0].ID != ingress.EventID("cloudwatch", cwID, "m1") {
				t.Fatalf("published %v", got)
			}
			var in events.Ingested
			if err := got[0].Decode(&in); err != nil {
				t.Fatal(err)
			}
			if in.Via != events.ViaSNS || in.DeliveryID != "m1" || string(in.Payload) != alarmMsg || in.Headers["TopicArn"] != topic {
				t.Fatalf("ingest %+v", in)
			}
		})
	}
}

func TestSNSSubscriptionConfirmation(t *testing.T) {
	ca := snstest.NewCA(t, snsNow)
	t.Run("confirmed after the signature checks", func(t *testing.T) {
		h, pub, f := snsHandler(t, ca, ca.LeafPEM)
		if code := postSNS(t, h, ca.Sign(t, confirmation(), "1", "1")); code != 200 {
			t.Fatalf("status %d", code)
		}
		if f.Count(subURL) != 1 || len(pub.published()) != 0 {
			t.Fatalf("SubscribeURL visited %d times, %d events", f.Count(subURL), len(pub.published()))
		}
	})
	t.Run("bad signature: never visited", func(t *testing.T) {
		h, _, f := snsHandler(t, ca, ca.LeafPEM)
		m := ca.Sign(t, confirmation(), "2", "2")
		m["SubscribeURL"] = "https://sns.eu-west-1.amazonaws.com/?Action=ConfirmSubscription&TopicArn=" + topic + "&Token=other"
		if code := postSNS(t, h, m); code != 401 {
			t.Fatalf("status %d", code)
		}
		if u := f.URLs(); len(u) != 1 || !strings.HasSuffix(u[0], ".pem") {
			t.Fatalf("fetched %v: only the certificate may be fetched", u)
		}
	})
	t.Run("signed, but SubscribeURL off SNS", func(t *testing.T) {
		h, _, f := snsHandler(t, ca, ca.LeafPEM)
		m := confirmation()
		m["SubscribeURL"] = "https://169.254.169.254/latest/meta-data/"
		if code := postSNS(t, h, ca.Sign(t, m, "2", "2")); code != 400 {
			t.Fatalf("status %d", code)
		}
		if f.Count(m["SubscribeURL"]) != 0 {
			t.Fatal("visited a SubscribeURL that is not an SNS URL")
		}
	})
}

// The signing certificate is fetched once and then cached; a verified
// message that is not an alarm is acknowledged without publishing.
func TestSNSCertificateCachedAndNonAlarms(t *testing.T) {
	ca := snstest.NewCA(t, snsNow)
	h, pub, f := snsHandler(t, ca, ca.LeafPEM)
	for _, id := range []string{"m1", "m2", "m1"} {
		if code := postSNS(t, h, ca.Sign(t, notification(id), "2", "2")); code != 200 {
			t.Fatalf("status %d", code)
		}
	}
	if n := f.Count(certURL); n != 1 {
		t.Fatalf("certificate fetched %d times, want 1", n)
	}
	got := pub.published()
	if len(got) != 3 || got[0].ID != got[2].ID || got[0].ID == got[1].ID {
		t.Fatal("a redelivered SNS message must keep its event id, another message get another")
	}
	m := notification("m3")
	m["Message"] = "hello from a test publish"
	if code := postSNS(t, h, ca.Sign(t, m, "2", "2")); code != 200 || len(pub.published()) != 3 {
		t.Fatalf("status %d, %d events", code, len(pub.published()))
	}
	// A wrong integration type is unknown.
	r := post(t, h, req{path: "/webhooks/sns/" + ghID, body: `{}`})
	if r.Code != 404 {
		t.Fatalf("a GitHub integration on the SNS path: %d", r.Code)
	}
}
