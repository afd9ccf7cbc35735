package ingress

import (
	"context"
	"crypto"
	"crypto/rsa"
	"crypto/sha1" //nolint:gosec // SNS SignatureVersion 1 is SHA1withRSA; it is verified, never produced.
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"inthub.dev/events"
	"inthub.dev/pkg/egress"
	"inthub.dev/pkg/fault"
)

// There is no maintained Go verifier of SNS messages, so this follows
// AWS's documented procedure, with every check whose absence made a CVE in
// another stack: the certificate URL is https on an sns.<region>
// .amazonaws.com(.cn) host with no userinfo or port and the documented
// path; the certificate chains to a trusted root and names
// sns.amazonaws.com; SignatureVersion 1 is SHA1withRSA and 2 SHA256withRSA
// (PKCS #1 v1.5), and one is never accepted for the other; the TopicArn is
// on the integration's allow-list; SubscribeURL is visited only after all
// of that, through the SSRF-safe client.

// SNSConfig configures the SNS endpoint.
type SNSConfig struct {
	// Roots verify the signing certificates (default: the system's).
	Roots *x509.CertPool
	// CertName is the name the signing certificate must hold
	// (sns.amazonaws.com).
	CertName string
	// Get fetches a URL that passed the checks (signing certificates,
	// SubscribeURL) and returns at most limit bytes of its body. Default:
	// an HTTP client with the egress policy checked at dial time, no
	// proxy, no redirects and a 10 s timeout.
	Get func(ctx context.Context, url string, limit int64) ([]byte, error)
	// MaxAge refuses messages whose Timestamp is older (1h): a captured
	// message replayed later is refused even once the duplicate window
	// has passed.
	MaxAge time.Duration
	// CertTTL is how long a fetched certificate is cached (24h).
	CertTTL time.Duration
}

func (c SNSConfig) withDefaults() SNSConfig {
	if c.CertName == "" {
		c.CertName = "sns.amazonaws.com"
	}
	if c.Get == nil {
		c.Get = safeGet(egress.Policy{})
	}
	if c.MaxAge <= 0 {
		c.MaxAge = time.Hour
	}
	if c.CertTTL <= 0 {
		c.CertTTL = 24 * time.Hour
	}
	return c
}

// snsMessage is the JSON body SNS posts.
type snsMessage struct {
	Type             string
	MessageID        string `json:"MessageId"`
	Token            string
	TopicArn         string
	Subject          *string
	Message          string
	SubscribeURL     string
	Timestamp        string
	SignatureVersion string
	Signature        string
	SigningCertURL   string
	UnsubscribeURL   string
}

var (
	snsHostRE     = regexp.MustCompile(`^sns\.[a-z0-9-]+\.amazonaws\.com(\.cn)?$`)
	snsCertPathRE = regexp.MustCompile(`^/SimpleNotificationService-[A-Za-z0-9]+\.pem$`)
)

// CheckSNSURL checks that raw is an https URL on an SNS host: no userinfo,
// no port, host sns.<region>.amazonaws.com or .amazonaws.com.cn. With
// certPath, the path must be /SimpleNotificationService-<id>.pem and there
// must be no query.
func CheckSNSURL(raw string, certPath bool) error {
	u, err := url.Parse(raw)
	switch {
	case err != nil:
		return errors.New("not a URL")
	case u.Scheme != "https":
		return errors.New("not https")
	case u.User != nil:
		return errors.New("has userinfo")
	case u.Port() != "":
		return errors.New("has a port")
	case !snsHostRE.MatchString(u.Host):
		return errors.New("host is not sns.<region>.amazonaws.com")
	case u.Fragment != "" || u.Opaque != "":
		return errors.New("unexpected URL form")
	}
	if certPath && (!snsCertPathRE.MatchString(u.Path) || u.RawQuery != "") {
		return errors.New("path is not /SimpleNotificationService-<id>.pem")
	}
	return nil
}

// stringToSign is AWS's canonical form of a message: the named fields, in
// this order, each as "Name\nvalue\n"; Subject only when present.
func (m *snsMessage) stringToSign() (string, error) {
	var fields [][2]string
	switch m.Type {
	case "Notification":
		fields = [][2]string{{"Message", m.Message}, {"MessageId", m.MessageID}}
		if m.Subject != nil {
			fields = append(fields, [2]string{"Subject", *m.Subject})
		}
		fields = append(fields, [2]string{"Timestamp", m.Timestamp}, [2]string{"TopicArn", m.TopicArn}, [2]string{"Type", m.Type})
	case "SubscriptionConfirmation", "UnsubscribeConfirmation":
		fields = [][2]string{{"Message", m.Message}, {"MessageId", m.MessageID}, {"SubscribeURL", m.SubscribeURL},
			{"Timestamp", m.Timestamp}, {"Token", m.Token}, {"TopicArn", m.TopicArn}, {"Type", m.Type}}
	default:
		return "", fmt.Errorf("unknown message type")
	}
	var b strings.Builder
	for _, f := range fields {
		b.WriteString(f[0])
		b.WriteByte('\n')
		b.WriteString(f[1])
		b.WriteByte('\n')
	}
	return b.String(), nil
}

// snsVerifier checks signatures with cached certificates.
type snsVerifier struct {
	cfg SNSConfig
	now func() time.Time

	mu    sync.Mutex
	certs map[string]cachedCert
}

type cachedCert struct {
	cert    *x509.Certificate
	expires time.Time
}

// maxCachedCerts bounds the cache: AWS rotates its certificates rarely,
// and only URLs on SNS hosts are ever fetched.
const maxCachedCerts = 64

func (v *snsVerifier) verify(ctx context.Context, m *snsMessage) error {
	if err := CheckSNSURL(m.SigningCertURL, true); err != nil {
		return fmt.Errorf("SigningCertURL: %w", err)
	}
	var hash crypto.Hash
	switch m.SignatureVersion {
	case "1":
		hash = crypto.SHA1
	case "2":
		hash = crypto.SHA256
	default:
		return errors.New("signature version must be 1 or 2")
	}
	sig, err := base64.StdEncoding.DecodeString(m.Signature)
	if err != nil || len(sig) == 0 {
		return errors.New("signature is not base64")
	}
	s, err := m.stringToSign()
	if err != nil {
		return err
	}
	cert, err := v.cert(ctx, m.SigningCertURL)
	if err != nil {
		return err
	}
	pub, ok := cert.PublicKey.(*rsa.PublicKey)
	if !ok {
		return errors.New("signing certificate has no RSA key")
	}
	var digest []byte
	if hash == crypto.SHA1 {
		d := sha1.Sum([]byte(s)) //nolint:gosec // see the import
		digest = d[:]
	} else {
		d := sha256.Sum256([]byte(s))
		digest = d[:]
	}
	if err := rsa.VerifyPKCS1v15(pub, hash, digest, sig); err != nil {
		return errors.New("signature does not verify")
	}
	ts, err := time.Parse(time.RFC3339Nano, m.Timestamp)
	if err != nil {
		return errors.New("timestamp is not RFC 3339")
	}
	if age := v.now().Sub(ts); age > v.cfg.MaxAge || age < -5*time.Minute {
		return errors.New("timestamp is too old or in the future")
	}
	return nil
}

// cert returns the certificate at certURL, verified against the roots
// and the expected name, from the cache when it is there.
func (v *snsVerifier) cert(ctx context.Context, certURL string) (*x509.Certificate, error) {
	now := v.now()
	v.mu.Lock()
	c, ok := v.certs[certURL]
	v.mu.Unlock()
	if ok && now.Before(c.expires) && now.Before(c.cert.NotAfter) {
		return c.cert, nil
	}
	body, err := v.cfg.Get(ctx, certURL, 64<<10)
	if err != nil {
		return nil, fault.Transient(fmt.Errorf("fetch the signing certificate: %w", err))
	}
	var chain []*x509.Certificate
	for rest := body; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		crt, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, errors.New("signing certificate does not parse")
		}
		chain = append(chain, crt)
	}
	if len(chain) == 0 {
		return nil, errors.New("no certificate at SigningCertURL")
	}
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	if _, err := chain[0].Verify(x509.VerifyOptions{Roots: v.cfg.Roots, Intermediates: inter, DNSName: v.cfg.CertName,
		CurrentTime: now}); err != nil {
		return nil, fmt.Errorf("signing certificate not trusted: %w", err)
	}
	v.mu.Lock()
	if len(v.certs) >= maxCachedCerts {
		for k := range v.certs {
			delete(v.certs, k)
			break
		}
	}
	v.certs[certURL] = cachedCert{cert: chain[0], expires: now.Add(v.cfg.CertTTL)}
	v.mu.Unlock()
	return chain[0], nil
}

// serveSNS receives an SNS HTTPS subscription of a monitoring.cloudwatch
// integration: it confirms the subscription and publishes each alarm state
// change as ingest.cloudwatch.alarm.
func (h *Handler) serveSNS(w http.ResponseWriter, r *http.Request) {
	const provider = "cloudwatch"
	id := r.PathValue("integrationId")
	log := h.log.With("provider", provider, "integrationId", id)
	outcome := func(o string) { h.reqs.WithLabelValues(provider, o).Inc() }
	if !h.ready() {
		outcome("unavailable")
		w.Header().Set("Retry-After", "5")
		reply(w, http.StatusServiceUnavailable, "starting, retry later")
		return
	}
	in, ok := h.cfg.Integrations.Lookup(id)
	if !ok || in.Type != "monitoring.cloudwatch" {
		outcome("unknown_integration")
		reply(w, http.StatusNotFound, "unknown integration")
		return
	}
	log = log.With("tenantId", in.TenantID)
	if r.ContentLength > h.cfg.MaxBody {
		outcome("too_large")
		reply(w, http.StatusRequestEntityTooLarge, "body too large")
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, h.cfg.MaxBody))
	if err != nil {
		outcome("too_large")
		reply(w, http.StatusRequestEntityTooLarge, "body too large")
		return
	}
	var m snsMessage
	if err := json.Unmarshal(body, &m); err != nil || m.Type == "" || m.MessageID == "" {
		outcome("bad_request")
		reply(w, http.StatusBadRequest, "not an SNS message")
		return
	}
	if t := r.Header.Get("X-Amz-Sns-Message-Type"); t != "" && t != m.Type {
		outcome("bad_request")
		reply(w, http.StatusBadRequest, "x-amz-sns-message-type disagrees with the message")
		return
	}
	var cfg struct {
		SNSTopicArns []string `json:"snsTopicArns"`
	}
	_ = json.Unmarshal(in.Config, &cfg)
	if !slices.Contains(cfg.SNSTopicArns, m.TopicArn) {
		h.sigs.WithLabelValues(provider).Inc()
		outcome("bad_signature")
		log.Warn("SNS message refused: topic not on the integration's snsTopicArns")
		reply(w, http.StatusForbidden, "topic not allowed")
		return
	}
	if err := h.sns.verify(r.Context(), &m); err != nil {
		if fault.ClassOf(err) == fault.ClassTransient {
			outcome("secret_unavailable")
			log.Warn("SNS signing certificate unavailable", "error", err)
			reply(w, http.StatusServiceUnavailable, "cannot verify now")
			return
		}
		h.sigs.WithLabelValues(provider).Inc()
		outcome("bad_signature")
		log.Warn("SNS message refused", "error", err, "remote", r.RemoteAddr)
		reply(w, http.StatusUnauthorized, "signature not verified")
		return
	}
	switch m.Type {
	case "SubscriptionConfirmation":
		if err := CheckSNSURL(m.SubscribeURL, false); err != nil {
			outcome("bad_request")
			reply(w, http.StatusBadRequest, "SubscribeURL is not an SNS URL")
			return
		}
		if _, err := h.sns.cfg.Get(r.Context(), m.SubscribeURL, 64<<10); err != nil {
			outcome("publish_failed")
			log.Warn("SNS subscription not confirmed", "error", err)
			reply(w, http.StatusServiceUnavailable, "cannot confirm the subscription now")
			return
		}
		outcome("subscription_confirmed")
		log.Info("SNS subscription confirmed", "topicArn", m.TopicArn)
		reply(w, http.StatusOK, "subscription confirmed")
		return
	case "UnsubscribeConfirmation":
		outcome("ignored")
		log.Info("SNS subscription ended", "topicArn", m.TopicArn)
		reply(w, http.StatusOK, "noted")
		return
	}
	var alarm struct {
		AlarmName       string
		NewStateValue   string
		AlarmArn        string
		StateChangeTime string
	}
	payload, err := jsonObject([]byte(m.Message))
	if err == nil {
		err = json.Unmarshal(payload, &alarm)
	}
	if err != nil || alarm.AlarmName == "" || alarm.NewStateValue == "" {
		// Verified, but not an alarm state change (a test message, another
		// publisher on the topic): acknowledged so SNS does not retry.
		outcome("ignored")
		reply(w, http.StatusOK, "not an alarm state change")
		return
	}
	sum := sha256.Sum256(body)
	now := h.cfg.Now().UTC().Truncate(time.Millisecond)
	headers := map[string]string{"TopicArn": m.TopicArn, "Type": m.Type, "Timestamp": m.Timestamp}
	if m.Subject != nil {
		headers["Subject"] = *m.Subject
	}
	ev, err := events.New(events.SubjectIngestCloudWatchAlarm, Source, in.TenantID, events.Ingested{
		IntegrationID: in.ID, TenantID: in.TenantID, Provider: provider, Kind: "alarm", DeliveryID: m.MessageID,
		Via: events.ViaSNS, ReceivedAt: now, Headers: headers, BodySHA256: hex.EncodeToString(sum[:]), Payload: payload})
	if err != nil {
		outcome("bad_request")
		reply(w, http.StatusBadRequest, "message does not form a valid event")
		return
	}
	ev.ID, ev.Time = EventID(provider, in.ID, m.MessageID), now
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), h.cfg.PublishTimeout)
	defer cancel()
	if err := h.cfg.Publisher.Publish(ctx, ev); err != nil {
		outcome("publish_failed")
		log.Error("SNS message not stored", "messageId", m.MessageID, "error", err)
		reply(w, http.StatusServiceUnavailable, "cannot store the message now, retry later")
		return
	}
	outcome("accepted")
	reply(w, http.StatusOK, "accepted")
}

// safeGet fetches with the egress policy checked at dial time (so a name
// that resolves to a private address is refused), no proxy, no redirects,
// a timeout and a body limit.
func safeGet(policy egress.Policy) func(ctx context.Context, url string, limit int64) ([]byte, error) {
	dialer := &net.Dialer{Timeout: 5 * time.Second, Control: policy.DialControl()}
	client := &http.Client{
		Timeout: 10 * time.Second,
		Transport: &http.Transport{Proxy: nil, DialContext: dialer.DialContext, TLSHandshakeTimeout: 5 * time.Second,
			ResponseHeaderTimeout: 5 * time.Second, MaxIdleConns: 4},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	return func(ctx context.Context, u string, limit int64) ([]byte, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		if err != nil {
			return nil, err
		}
		resp, err := client.Do(req)
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return nil, errors.New("status " + strconv.Itoa(resp.StatusCode))
		}
		return io.ReadAll(io.LimitReader(resp.Body, limit))
	}
}
