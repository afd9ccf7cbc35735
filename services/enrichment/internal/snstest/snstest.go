// Package snstest signs SNS messages as AWS does, with a certificate
// authority made for the test, so the SNS endpoint can be tested without
// AWS: the CA's pool goes into ingress.SNSConfig.Roots and Fetcher serves
// the signing certificate in place of AWS's.
package snstest

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1" //nolint:gosec // SNS SignatureVersion 1 is SHA1withRSA.
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"math/big"
	"strings"
	"sync"
	"testing"
	"time"
)

// CertURL is where the messages say their signing certificate is.
const CertURL = "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-01d088a6f77103d0fe307c0069e40ed6.pem"

// CA is a root and a signing certificate for sns.amazonaws.com.
type CA struct {
	Pool    *x509.CertPool
	LeafPEM []byte
	key     *rsa.PrivateKey
}

// NewCA makes a CA whose certificates are valid around now.
func NewCA(tb testing.TB, now time.Time) *CA {
	tb.Helper()
	caKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		tb.Fatal(err)
	}
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "snstest root"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		tb.Fatal(err)
	}
	root, err := x509.ParseCertificate(caDER)
	if err != nil {
		tb.Fatal(err)
	}
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		tb.Fatal(err)
	}
	leafTmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "sns.amazonaws.com"},
		DNSNames: []string{"sns.amazonaws.com"}, NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	leafDER, err := x509.CreateCertificate(rand.Reader, leafTmpl, root, &key.PublicKey, caKey)
	if err != nil {
		tb.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(root)
	return &CA{Pool: pool, key: key, LeafPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: leafDER})}
}

// Message is an SNS message as posted: field name → value.
type Message map[string]string

// JSON encodes m as SNS posts it.
func (m Message) JSON() []byte {
	b, _ := json.Marshal(map[string]string(m))
	return b
}

// Sign returns a copy of m signed with version v's hash ("1" SHA1, "2"
// SHA256) and labelled SignatureVersion label (which a test may make
// disagree), with SigningCertURL CertURL unless m has one.
func (ca *CA) Sign(tb testing.TB, m Message, v, label string) Message {
	tb.Helper()
	keys := []string{"Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"}
	if m["Type"] == "Notification" {
		keys = []string{"Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"}
	}
	var b strings.Builder
	for _, k := range keys {
		if val, ok := m[k]; ok {
			b.WriteString(k + "\n" + val + "\n")
		}
	}
	var sig []byte
	var err error
	if v == "1" {
		d := sha1.Sum([]byte(b.String())) //nolint:gosec // see the import
		sig, err = rsa.SignPKCS1v15(rand.Reader, ca.key, crypto.SHA1, d[:])
	} else {
		d := sha256.Sum256([]byte(b.String()))
		sig, err = rsa.SignPKCS1v15(rand.Reader, ca.key, crypto.SHA256, d[:])
	}
	if err != nil {
		tb.Fatal(err)
	}
	out := Message{}
	for k, val := range m {
		out[k] = val
	}
	out["SignatureVersion"] = label
	out["Signature"] = base64.StdEncoding.EncodeToString(sig)
	if _, ok := out["SigningCertURL"]; !ok {
		out["SigningCertURL"] = CertURL
	}
	return out
}

// Notification is an SNS notification of message on topic.
func Notification(id, topic, subject, message string, at time.Time) Message {
	return Message{"Type": "Notification", "MessageId": id, "TopicArn": topic, "Subject": subject, "Message": message,
		"Timestamp":      at.UTC().Format("2006-01-02T15:04:05.000Z"),
		"UnsubscribeURL": "https://sns.eu-west-1.amazonaws.com/?Action=Unsubscribe&SubscriptionArn=" + topic + ":1"}
}

// Fetcher stands in for the SSRF-safe client: it serves a certificate for
// every .pem URL, answers ConfirmSubscription URLs, and records every URL
// asked for.
type Fetcher struct {
	Cert []byte
	mu   sync.Mutex
	urls []string
}

// Get implements ingress.SNSConfig.Get.
func (f *Fetcher) Get(_ context.Context, url string, _ int64) ([]byte, error) {
	f.mu.Lock()
	f.urls = append(f.urls, url)
	f.mu.Unlock()
	switch {
	case strings.HasSuffix(strings.SplitN(url, "?", 2)[0], ".pem"):
		return f.Cert, nil
	case strings.Contains(url, "Action=ConfirmSubscription"):
		return []byte("<ConfirmSubscriptionResponse/>"), nil
	}
	return nil, errors.New("404")
}

// URLs are the URLs fetched so far.
func (f *Fetcher) URLs() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.urls...)
}

// Count is how often url was fetched.
func (f *Fetcher) Count(url string) int {
	n := 0
	for _, u := range f.URLs() {
		if u == url {
			n++
		}
	}
	return n
}
