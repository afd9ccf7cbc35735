package doctor

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"math"
	"net"
	"strings"
	"time"

	"inthub.dev/pkg/connectors"
)

// connectivity dials the endpoint once (TCP).
func (r *run) connectivity(ctx context.Context, endpointErr error) CheckResult {
	c := CheckResult{Name: CheckConnectivity}
	switch {
	case endpointErr != nil:
		c.Status, c.Message = StatusFail, endpointErr.Error()
		c.Suggestions = []string{"Set the integration's endpoint to the provider's root URL, e.g. https://gitlab.example.com."}
		return c
	case r.host == "":
		c.Status, c.Message = StatusSkip, "the integration has no network endpoint"
		return c
	}
	addr := net.JoinHostPort(r.host, r.port)
	c.Details = map[string]any{"address": addr}
	ctx, cancel := context.WithTimeout(ctx, r.d.o.Timeout)
	defer cancel()
	start := time.Now()
	conn, err := r.d.o.Dial(ctx, "tcp", addr)
	took := time.Since(start)
	c.DurationMs = ms(took)
	if err != nil {
		// ClassifyNet words it for users: a refusal by the egress policy
		// names no address.
		msg := connectors.ClassifyNet(err).Error()
		c.Status, c.Message = StatusFail, "cannot connect to "+addr+": "+strings.TrimPrefix(msg, addr+": ")
		c.Suggestions = []string{
			"Check that the host name is right and resolves from where the hub runs, and that no firewall blocks the port.",
			"An address refused by the egress policy needs an administrator to allow-list it.",
		}
		c.HowToFix = &HowToFix{Summary: "Check name resolution and the port from the hub's network", Commands: []string{
			"dig +short " + r.host,
			"nc -z -v -w 5 " + r.host + " " + r.port,
		}}
		r.ev.add(evidenceLine{Check: CheckConnectivity, Probe: "tcp_dial", Target: r.where(), Status: string(StatusFail),
			DurationMs: c.DurationMs, Message: c.Message})
		return c
	}
	_ = conn.Close()
	c.Status = StatusPass
	c.Message = fmt.Sprintf("TCP connection to %s in %d ms", addr, c.DurationMs)
	c.Details["connectMs"] = c.DurationMs
	r.ev.add(evidenceLine{Check: CheckConnectivity, Probe: "tcp_dial", Target: r.where(), Status: string(StatusPass),
		DurationMs: c.DurationMs, Message: c.Message})
	return c
}

// tls handshakes with the endpoint and judges its certificate: the chain
// must verify against the roots, the leaf must be valid now and for the
// host name; fewer than CertWarnDays days left warns. The handshake
// itself does not verify (so that a bad certificate can still be
// described); nothing is sent over it.
func (r *run) tls(ctx context.Context, connectivity Status) CheckResult {
	c := CheckResult{Name: CheckTLS}
	switch {
	case r.host == "":
		c.Status, c.Message = StatusSkip, "the integration has no network endpoint"
		return c
	case r.scheme != "https":
		c.Status, c.Message = StatusWarn, "the endpoint is plain http: credentials and data travel unencrypted"
		c.Suggestions = []string{"Use the provider's https URL."}
		return c
	case connectivity != StatusPass:
		c.Status, c.Message = StatusSkip, "not run: no TCP connection"
		return c
	}
	addr := net.JoinHostPort(r.host, r.port)
	ctx, cancel := context.WithTimeout(ctx, r.d.o.Timeout)
	defer cancel()
	start := time.Now()
	state, err := r.handshake(ctx, addr)
	c.DurationMs = ms(time.Since(start))
	if err != nil {
		c.Status = StatusFail
		c.Message = "TLS handshake with " + addr + " failed: " + strings.TrimPrefix(connectors.ClassifyNet(err).Error(), ": ")
		c.Suggestions = []string{"Check that the endpoint speaks TLS on this port (is it http:// rather than https://?)."}
		c.HowToFix = &HowToFix{Summary: "Look at the handshake from the hub's network", Commands: []string{
			"openssl s_client -connect " + addr + " -servername " + r.host + " -brief",
		}}
		r.ev.add(evidenceLine{Check: CheckTLS, Probe: "tls_handshake", Target: r.where(), Status: string(StatusFail),
			DurationMs: c.DurationMs, Message: c.Message})
		return c
	}
	c = r.judgeCertificate(c, state, addr)
	r.ev.add(evidenceLine{Check: CheckTLS, Probe: "tls_handshake", Target: r.where(), Status: string(c.Status),
		DurationMs: c.DurationMs, Message: c.Message})
	return c
}

func (r *run) handshake(ctx context.Context, addr string) (tls.ConnectionState, error) {
	raw, err := r.d.o.Dial(ctx, "tcp", addr)
	if err != nil {
		return tls.ConnectionState{}, err
	}
	conn := tls.Client(raw, &tls.Config{
		ServerName: r.host,
		MinVersion: tls.VersionTLS12,
		// Verified by judgeCertificate, which reports what is wrong
		// instead of one handshake error; nothing is sent on the
		// connection.
		InsecureSkipVerify: true, //nolint:gosec // verified below
	})
	defer conn.Close()
	if err := conn.HandshakeContext(ctx); err != nil {
		return tls.ConnectionState{}, err
	}
	return conn.ConnectionState(), nil
}

func (r *run) judgeCertificate(c CheckResult, state tls.ConnectionState, addr string) CheckResult {
	if len(state.PeerCertificates) == 0 {
		c.Status, c.Message = StatusFail, "the server sent no certificate"
		return c
	}
	now := r.d.o.Now()
	leaf := state.PeerCertificates[0]
	daysLeft := int(math.Floor(leaf.NotAfter.Sub(now).Hours() / 24))
	c.Details = map[string]any{
		"subject":   leaf.Subject.String(),
		"issuer":    leaf.Issuer.String(),
		"notBefore": leaf.NotBefore.UTC().Format(time.RFC3339),
		"notAfter":  leaf.NotAfter.UTC().Format(time.RFC3339),
		"daysLeft":  daysLeft,
		"dnsNames":  leaf.DNSNames,
		"version":   tls.VersionName(state.Version),
	}
	inspect := "openssl s_client -connect " + addr + " -servername " + r.host + " -showcerts"
	var problems []string
	status := StatusPass

	expired := now.After(leaf.NotAfter)
	notYet := now.Before(leaf.NotBefore)
	switch {
	case expired:
		status = StatusFail
		problems = append(problems, fmt.Sprintf("the certificate expired on %s", leaf.NotAfter.UTC().Format(time.DateOnly)))
	case notYet:
		status = StatusFail
		problems = append(problems, fmt.Sprintf("the certificate is not valid before %s (is a clock wrong?)", leaf.NotBefore.UTC().Format(time.RFC3339)))
	}

	pool := x509.NewCertPool()
	for _, ic := range state.PeerCertificates[1:] {
		pool.AddCert(ic)
	}
	// Verified at a time inside the leaf's validity when it is expired, so
	// that an expired certificate is not also reported as untrusted.
	at := now
	if expired || notYet {
		at = leaf.NotBefore.Add(leaf.NotAfter.Sub(leaf.NotBefore) / 2)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: r.d.o.RootCAs, Intermediates: pool, CurrentTime: at,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
		status = StatusFail
		c.Details["chainError"] = chainReason(err)
		problems = append(problems, "the chain does not verify: "+chainReason(err))
	}
	if err := leaf.VerifyHostname(r.host); err != nil {
		status = StatusFail
		problems = append(problems, fmt.Sprintf("the certificate is not valid for %s (it names %s)", r.host, namesOf(leaf)))
	}
	if status == StatusPass && daysLeft < CertWarnDays {
		status = StatusWarn
		problems = append(problems, fmt.Sprintf("the certificate expires in %d days (%s)", daysLeft, leaf.NotAfter.UTC().Format(time.DateOnly)))
	}
	c.Status = status
	if len(problems) == 0 {
		c.Message = fmt.Sprintf("certificate for %s valid until %s (%d days), chain verified", r.host,
			leaf.NotAfter.UTC().Format(time.DateOnly), daysLeft)
		return c
	}
	c.Message = strings.Join(problems, "; ")
	c.Suggestions = []string{"Renew or replace the endpoint's certificate so that it chains to a trusted root, names the host and is within its validity.",
		"A private CA must be trusted by the hub (its system roots)."}
	c.HowToFix = &HowToFix{Summary: "Inspect the certificate the endpoint presents", Commands: []string{
		inspect,
		"openssl s_client -connect " + addr + " -servername " + r.host + " </dev/null 2>/dev/null | openssl x509 -noout -subject -issuer -dates -ext subjectAltName",
	}}
	return c
}

func chainReason(err error) string {
	var ua x509.UnknownAuthorityError
	var ci x509.CertificateInvalidError
	switch {
	case errors.As(err, &ua):
		return "signed by an unknown authority"
	case errors.As(err, &ci):
		return ci.Error()
	}
	return err.Error()
}

func namesOf(leaf *x509.Certificate) string {
	var names []string
	names = append(names, leaf.DNSNames...)
	for _, ip := range leaf.IPAddresses {
		names = append(names, ip.String())
	}
	if len(names) == 0 {
		if leaf.Subject.CommonName != "" {
			return "only the common name " + leaf.Subject.CommonName + ", which is not used for host names"
		}
		return "no host name"
	}
	return strings.Join(names, ", ")
}
