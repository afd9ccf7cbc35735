// Package egress decides which endpoints the hub may call on a user's
// behalf. A health check or a test connection is a request that the server
// makes to an address a tenant typed in, so without a policy any tenant can
// make the hub read the cloud metadata service, a database on the private
// network or the hub's own admin ports (SSRF).
//
// The policy is applied twice: [Policy.CheckURL] when a config is saved, so
// the user hears at once that an endpoint will never be called, and
// [Policy.DialControl] on every connection, because a name that resolved to
// a public address at save time may resolve to 127.0.0.1 a second later
// (DNS rebinding). The dial-time check is the one that protects; the
// save-time check is for the user. HTTP clients using DialControl must also
// set Transport.Proxy to nil: through a proxy the dialer sees only the proxy.
//
// The deny lists are code.dny.dev/ssrf's, generated from IANA's IPv4 and
// IPv6 special-purpose address registries: loopback, private, shared
// (CGNAT), link-local (so 169.254.169.254), "this network" (0.0.0.0/8),
// multicast, reserved, documentation and benchmarking ranges; for IPv6
// everything outside global unicast 2000::/3 (::, ::1, fe80::/10,
// fc00::/7, ff00::/8, NAT64) plus the special ranges inside it.
package egress

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"code.dny.dev/ssrf"
)

// Policy says which endpoints may be called. The zero value allows https
// on ports 443 and 80 to public addresses only.
type Policy struct {
	// AllowPrefixes are ranges a tenant has declared as its own on-prem
	// network; addresses inside them are allowed even if they are private.
	AllowPrefixes []netip.Prefix
	// AllowPorts are ports allowed besides 443 and 80.
	AllowPorts []int
	// AllowHTTP allows http:// endpoints (https only otherwise).
	AllowHTTP bool
	// AllowLoopback allows 127.0.0.0/8 and ::1. For development only: in
	// production it exposes every service on the hub's own host.
	AllowLoopback bool
	// AllowHubIdentity lets an integration authenticate as the hub itself
	// (its cloud role from the environment or instance metadata, e.g.
	// registry.ecr's authMode default). Off by default: any tenant could
	// otherwise reach whatever the hub's own identity may reach.
	AllowHubIdentity bool
}

// Resolver resolves host names. *net.Resolver satisfies it.
type Resolver interface {
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
}

var _ Resolver = net.DefaultResolver

// Message is what a user is told when an address is refused. It is
// deliberately the same for every address-level refusal (private,
// loopback, metadata, unresolvable): naming the resolved address or the
// range would let a tenant map the hub's internal network by trial.
const Message = "endpoint is not allowed by the egress policy: its host must resolve only to public addresses or to ranges on the tenant's allow-list"

// ErrDenied is wrapped by every *DeniedError.
var ErrDenied = errors.New("egress denied")

// DeniedError is a refusal by the policy. Error() and Reason are safe to
// show to the user; the detail, which may name the resolved address, is
// only in LogValue, for the operators' logs.
type DeniedError struct {
	// Field names the config field that held the endpoint, when known.
	Field string
	// Reason is the user-facing reason. It never contains a resolved
	// address.
	Reason string
	detail string
}

func (e *DeniedError) Error() string {
	if e.Field == "" {
		return e.Reason
	}
	return e.Field + ": " + e.Reason
}

func (e *DeniedError) Unwrap() error { return ErrDenied }

// LogValue gives the logs the detail that the user does not see.
func (e *DeniedError) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("field", e.Field),
		slog.String("reason", e.Reason),
		slog.String("detail", e.detail),
	)
}

var _ slog.LogValuer = (*DeniedError)(nil)

func deny(reason, detail string) *DeniedError {
	return &DeniedError{Reason: reason, detail: detail}
}

// CheckURL checks an endpoint URL before it is saved: scheme, userinfo,
// port, and every address its host resolves to. A refusal is a
// *DeniedError; a resolver failure other than "no such host" is returned
// wrapped as is, since it says nothing about the endpoint.
func (p Policy) CheckURL(ctx context.Context, raw string, r Resolver) error {
	u, err := url.Parse(raw)
	if err != nil || !u.IsAbs() || u.Opaque != "" || u.Host == "" {
		return deny("endpoint must be an absolute URL such as https://api.example.com", "unparsable or relative URL")
	}
	switch u.Scheme {
	case "https":
	case "http":
		if !p.AllowHTTP {
			return deny("endpoint must use https", "http not allowed")
		}
	default:
		return deny("endpoint must use https", "scheme "+u.Scheme)
	}
	if u.User != nil {
		return deny("endpoint must not contain credentials; put them in an AuthRef", "userinfo in URL")
	}
	port := 443
	if u.Scheme == "http" {
		port = 80
	}
	if ps := u.Port(); ps != "" {
		n, err := strconv.Atoi(ps)
		if err != nil || n < 1 || n > 65535 {
			return deny("endpoint has an invalid port", "port "+ps)
		}
		port = n
	}
	if !p.portAllowed(port) {
		return deny(fmt.Sprintf("port %d is not allowed by the egress policy", port), "port "+strconv.Itoa(port))
	}

	host := u.Hostname()
	if host == "" {
		return deny("endpoint must be an absolute URL such as https://api.example.com", "empty host")
	}
	if a, err := netip.ParseAddr(host); err == nil {
		if why := p.addrDenied(a); why != "" {
			return deny(Message, a.String()+": "+why)
		}
		return nil
	}
	if looksNumeric(host) {
		// 2130706433, 0x7f.1, 127.1: some resolvers and URL parsers read
		// these as IPv4 addresses, others as names. Never guess.
		return deny(Message, "host is a non-canonical IPv4 form")
	}
	addrs, err := r.LookupNetIP(ctx, "ip", host)
	if err != nil {
		var dnsErr *net.DNSError
		if errors.As(err, &dnsErr) && dnsErr.IsNotFound {
			return deny(Message, "host does not resolve: "+err.Error())
		}
		return fmt.Errorf("egress: resolve endpoint host: %w", err)
	}
	if len(addrs) == 0 {
		return deny(Message, "host resolves to no address")
	}
	for _, a := range addrs {
		if why := p.addrDenied(a); why != "" {
			return deny(Message, fmt.Sprintf("host %s resolves to %s: %s", host, a, why))
		}
	}
	return nil
}

// DialControl returns a function for net.Dialer.Control that refuses, at
// connect time, any address the policy does not allow. The connection is
// never opened, so not even a SYN reaches a denied address.
func (p Policy) DialControl() func(network, address string, c syscall.RawConn) error {
	return func(network, address string, _ syscall.RawConn) error {
		if network != "tcp4" && network != "tcp6" {
			return deny(Message, "network "+network)
		}
		ap, err := netip.ParseAddrPort(address)
		if err != nil {
			return deny(Message, "unparsable address: "+err.Error())
		}
		if !p.portAllowed(int(ap.Port())) {
			return deny(fmt.Sprintf("port %d is not allowed by the egress policy", ap.Port()), "dial "+address)
		}
		if why := p.addrDenied(ap.Addr()); why != "" {
			return deny(Message, "dial "+address+": "+why)
		}
		return nil
	}
}

func (p Policy) portAllowed(port int) bool {
	return port == 443 || port == 80 || slices.Contains(p.AllowPorts, port)
}

// addrDenied returns why a is not allowed, or "" if it is.
func (p Policy) addrDenied(a netip.Addr) string {
	// ::ffff:127.0.0.1 is 127.0.0.1 to the kernel: check the IPv4 address,
	// so that the IPv4 lists and allow-list apply to it.
	a = a.Unmap().WithZone("")
	for _, pre := range p.AllowPrefixes {
		if pre.Contains(a) {
			return ""
		}
	}
	if p.AllowLoopback && a.IsLoopback() {
		return ""
	}
	if a.Is4() {
		for _, pre := range ssrf.IPv4DeniedPrefixes {
			if pre.Contains(a) {
				return category(a) + " (" + pre.String() + ")"
			}
		}
		return ""
	}
	if !ssrf.IPv6GlobalUnicast.Contains(a) {
		return category(a) + " (outside " + ssrf.IPv6GlobalUnicast.String() + ")"
	}
	for _, pre := range ssrf.IPv6DeniedPrefixes {
		if pre.Contains(a) {
			return category(a) + " (" + pre.String() + ")"
		}
	}
	return ""
}

var cgnat = netip.MustParsePrefix("100.64.0.0/10")

// category names the kind of address, for the operators' logs.
func category(a netip.Addr) string {
	switch {
	case a.IsUnspecified():
		return "unspecified"
	case a.IsLoopback():
		return "loopback"
	case a.IsLinkLocalUnicast():
		return "link-local (includes cloud metadata)"
	case a.IsPrivate():
		return "private"
	case cgnat.Contains(a):
		return "shared address space (CGNAT)"
	case a.IsMulticast(), a.IsLinkLocalMulticast(), a.IsInterfaceLocalMulticast():
		return "multicast"
	}
	return "special-purpose"
}

// looksNumeric reports whether the last label of host is a number, as the
// WHATWG URL standard decides whether a host is an IPv4 address.
func looksNumeric(host string) bool {
	host = strings.TrimSuffix(host, ".")
	last := host[strings.LastIndexByte(host, '.')+1:]
	if last == "" {
		return false
	}
	if h, ok := strings.CutPrefix(strings.ToLower(last), "0x"); ok {
		return strings.Trim(h, "0123456789abcdef") == ""
	}
	return strings.Trim(last, "0123456789") == ""
}
