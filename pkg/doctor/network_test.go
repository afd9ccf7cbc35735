package doctor_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"math/big"
	"net"
	"strings"
	"testing"
	"time"

	"inthub.dev/pkg/doctor"
)

// pki is a CA and a way to make leaf certificates it signs.
type pki struct {
	ca   *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
}

func newPKI(t *testing.T) *pki {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "doctor test CA"},
		NotBefore: time.Now().Add(-365 * 24 * time.Hour), NotAfter: time.Now().Add(365 * 24 * time.Hour),
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true, IsCA: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	return &pki{ca: ca, key: key, pool: pool}
}

func (p *pki) leaf(t *testing.T, host string, notBefore, notAfter time.Time) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: host},
		NotBefore: notBefore, NotAfter: notAfter, DNSNames: []string{host},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.ca, &key.PublicKey, p.key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der, p.ca.Raw}, PrivateKey: key}
}

// tlsServer accepts TLS connections with cert until the test ends and
// returns a dialer that sends every address to it.
func tlsServer(t *testing.T, cert tls.Certificate) func(ctx context.Context, network, addr string) (net.Conn, error) {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			// Completes the handshake, then waits for the client to close.
			_ = c.(*tls.Conn).Handshake()
			_, _ = bufio.NewReader(c).ReadByte()
			c.Close()
		}
	}()
	t.Cleanup(func() { ln.Close(); <-done })
	return func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, ln.Addr().String())
	}
}

func checkNamed(t *testing.T, rep doctor.Report, name string) doctor.CheckResult {
	t.Helper()
	for _, c := range rep.Checks {
		if c.Name == name {
			return c
		}
	}
	t.Fatalf("no %s check in %+v", name, rep.Checks)
	return doctor.CheckResult{}
}

// TestTLS: a certificate that expires in 3 days warns, an expired one
// fails, one for another host name fails, one from an unknown CA fails,
// a good one passes; each failure or warning says how to look at it.
func TestTLS(t *testing.T) {
	p := newPKI(t)
	now := time.Now()
	const host = "api.example.test"
	for _, tc := range []struct {
		name      string
		cert      tls.Certificate
		roots     *x509.CertPool
		want      doctor.Status
		wantMsg   string
		wantTotal doctor.Overall
	}{
		{name: "valid", cert: p.leaf(t, host, now.Add(-time.Hour), now.Add(90*24*time.Hour)), roots: p.pool,
			want: doctor.StatusPass, wantMsg: "chain verified", wantTotal: doctor.Healthy},
		{name: "expires in 3 days", cert: p.leaf(t, host, now.Add(-80*24*time.Hour), now.Add(3*24*time.Hour+time.Hour)), roots: p.pool,
			want: doctor.StatusWarn, wantMsg: "expires in 3 days", wantTotal: doctor.Degraded},
		{name: "expired", cert: p.leaf(t, host, now.Add(-90*24*time.Hour), now.Add(-24*time.Hour)), roots: p.pool,
			want: doctor.StatusFail, wantMsg: "expired on", wantTotal: doctor.Unhealthy},
		{name: "wrong host name", cert: p.leaf(t, "other.example.test", now.Add(-time.Hour), now.Add(90*24*time.Hour)), roots: p.pool,
			want: doctor.StatusFail, wantMsg: "not valid for " + host, wantTotal: doctor.Unhealthy},
		{name: "unknown authority", cert: p.leaf(t, host, now.Add(-time.Hour), now.Add(90*24*time.Hour)), roots: x509.NewCertPool(),
			want: doctor.StatusFail, wantMsg: "unknown authority", wantTotal: doctor.Unhealthy},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := doctor.New(doctor.Options{Dial: tlsServer(t, tc.cert), RootCAs: tc.roots, Command: "go test"})
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			rep, ev := d.Run(ctx, doctor.Target{IntegrationID: "i-1", Type: "scm.gitlab", Endpoint: "https://" + host + ":8443/api/v4"})
			if c := checkNamed(t, rep, doctor.CheckConnectivity); c.Status != doctor.StatusPass {
				t.Fatalf("connectivity: %+v", c)
			}
			c := checkNamed(t, rep, doctor.CheckTLS)
			if c.Status != tc.want || !strings.Contains(c.Message, tc.wantMsg) {
				t.Errorf("tls = %s %q, want %s with %q", c.Status, c.Message, tc.want, tc.wantMsg)
			}
			if tc.want != doctor.StatusPass && (c.HowToFix == nil || len(c.HowToFix.Commands) == 0 ||
				!strings.HasPrefix(c.HowToFix.Commands[0], "openssl s_client -connect "+host+":8443 -servername "+host)) {
				t.Errorf("how_to_fix = %+v", c.HowToFix)
			}
			if rep.OverallStatus != tc.wantTotal {
				t.Errorf("overall %s, want %s", rep.OverallStatus, tc.wantTotal)
			}
			// One JSON line per probe: start, dial, handshake, summary.
			lines := bytes.Split(bytes.TrimSpace(ev.Bytes()), []byte("\n"))
			if len(lines) != 4 {
				t.Fatalf("evidence has %d lines:\n%s", len(lines), ev.Bytes())
			}
			var first, hs map[string]any
			if json.Unmarshal(lines[0], &first) != nil || json.Unmarshal(lines[2], &hs) != nil {
				t.Fatalf("evidence is not JSON lines:\n%s", ev.Bytes())
			}
			if first["doctor_command"] != "go test" || hs["probe"] != "tls_handshake" || hs["target"] != "https://"+host+":8443" ||
				hs["status"] != string(tc.want) || hs["runId"] != rep.RunID {
				t.Errorf("evidence lines %v / %v", first, hs)
			}
			if bytes.Contains(ev.Bytes(), []byte("/api/v4")) {
				t.Errorf("the evidence names the endpoint's path:\n%s", ev.Bytes())
			}
		})
	}
}

// TestConnectivityRefused: nothing listens → connectivity fails with the
// commands to look, TLS is skipped, the report is unhealthy.
func TestConnectivityRefused(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	d := doctor.New(doctor.Options{})
	rep, _ := d.Run(context.Background(), doctor.Target{Type: "registry.oci", Endpoint: "https://" + addr})
	c := checkNamed(t, rep, doctor.CheckConnectivity)
	if c.Status != doctor.StatusFail || !strings.Contains(c.Message, "connection refused") || c.HowToFix == nil ||
		c.HowToFix.Commands[1] != "nc -z -v -w 5 127.0.0.1 "+addr[strings.LastIndex(addr, ":")+1:] {
		t.Errorf("connectivity = %+v", c)
	}
	if tl := checkNamed(t, rep, doctor.CheckTLS); tl.Status != doctor.StatusSkip {
		t.Errorf("tls = %+v", tl)
	}
	if rep.OverallStatus != doctor.Unhealthy {
		t.Errorf("overall %s", rep.OverallStatus)
	}
}
