package egress_test

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"inthub.dev/pkg/egress"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeResolver answers from a table; a host with several answers gets them
// one call after another (the last one repeats), as a rebinding DNS server
// would hand them out.
type fakeResolver struct {
	mu      sync.Mutex
	answers map[string][][]netip.Addr
	calls   map[string]int
}

func newResolver(answers map[string][]string) *fakeResolver {
	r := &fakeResolver{answers: map[string][][]netip.Addr{}, calls: map[string]int{}}
	for host, seq := range answers {
		for _, a := range seq {
			var addrs []netip.Addr
			for _, s := range strings.Split(a, ",") {
				addrs = append(addrs, netip.MustParseAddr(s))
			}
			r.answers[host] = append(r.answers[host], addrs)
		}
	}
	return r
}

func (r *fakeResolver) LookupNetIP(_ context.Context, _, host string) ([]netip.Addr, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	seq, ok := r.answers[host]
	if !ok {
		return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
	}
	i := min(r.calls[host], len(seq)-1)
	r.calls[host]++
	return seq[i], nil
}

type timeoutResolver struct{}

func (timeoutResolver) LookupNetIP(context.Context, string, string) ([]netip.Addr, error) {
	return nil, &net.DNSError{Err: "i/o timeout", IsTimeout: true}
}

func TestCheckURL(t *testing.T) {
	res := newResolver(map[string][]string{
		"api.example.com":      {"93.184.215.14"},
		"dual.example.com":     {"93.184.215.14,2606:2800:21f:cb07:6820:80da:af6b:8b2c"},
		"sneaky.example.com":   {"93.184.215.14,10.1.2.3"},
		"metadata.example.com": {"169.254.169.254"},
		"v6local.example.com":  {"fd00::1"},
		"ghe.corp.internal":    {"10.20.30.40"},
		"localhost":            {"127.0.0.1,::1"},
	})
	onPrem := egress.Policy{AllowPrefixes: []netip.Prefix{netip.MustParsePrefix("10.20.0.0/16")}}
	dev := egress.Policy{AllowLoopback: true, AllowHTTP: true, AllowPorts: []int{8080}}
	tests := []struct {
		name   string
		policy egress.Policy
		url    string
		reason string // "" = allowed; else a substring of the user-facing reason
	}{
		{"public https", egress.Policy{}, "https://api.example.com/api/v3", ""},
		{"dual stack", egress.Policy{}, "https://dual.example.com", ""},
		{"public literal", egress.Policy{}, "https://93.184.215.14/", ""},
		{"explicit 443", egress.Policy{}, "https://api.example.com:443/", ""},
		{"mapped loopback", egress.Policy{AllowHTTP: true}, "http://[::ffff:127.0.0.1]/", egress.Message},
		{"mapped loopback hex", egress.Policy{}, "https://[::ffff:7f00:1]/", egress.Message},
		{"unspecified v4", egress.Policy{}, "https://0.0.0.0/", egress.Message},
		{"unspecified v6", egress.Policy{}, "https://[::]/", egress.Message},
		{"loopback v6", egress.Policy{}, "https://[::1]/", egress.Message},
		{"loopback name", egress.Policy{}, "https://localhost/", egress.Message},
		{"metadata", egress.Policy{}, "https://169.254.169.254/latest/meta-data", egress.Message},
		{"metadata by name", egress.Policy{}, "https://metadata.example.com/", egress.Message},
		{"private 10/8", egress.Policy{}, "https://10.0.0.1", egress.Message},
		{"private 172.16/12", egress.Policy{}, "https://172.31.255.1", egress.Message},
		{"private 192.168/16", egress.Policy{}, "https://192.168.1.1", egress.Message},
		{"unique local v6", egress.Policy{}, "https://v6local.example.com", egress.Message},
		{"link-local v6 with zone", egress.Policy{}, "https://[fe80::1%25eth0]/", egress.Message},
		{"cgnat", egress.Policy{}, "https://100.64.0.1", egress.Message},
		{"multicast", egress.Policy{}, "https://224.0.0.1", egress.Message},
		{"broadcast", egress.Policy{}, "https://255.255.255.255", egress.Message},
		{"nat64 of loopback", egress.Policy{}, "https://[64:ff9b::7f00:1]/", egress.Message},
		{"one bad address of two", egress.Policy{}, "https://sneaky.example.com", egress.Message},
		{"decimal ipv4", egress.Policy{}, "https://2130706433/", egress.Message},
		{"hex ipv4", egress.Policy{}, "https://0x7f.1/", egress.Message},
		{"short ipv4", egress.Policy{}, "https://127.1/", egress.Message},
		{"no such host", egress.Policy{}, "https://nope.example.com", egress.Message},
		{"userinfo", egress.Policy{}, "https://user:pw@example.com", "credentials"},
		{"user only", egress.Policy{}, "https://token@api.example.com", "credentials"},
		{"http refused", egress.Policy{}, "http://api.example.com", "https"},
		{"ftp refused", egress.Policy{AllowHTTP: true}, "ftp://api.example.com", "https"},
		{"relative", egress.Policy{}, "api.example.com/x", "absolute"},
		{"empty", egress.Policy{}, "", "absolute"},
		{"empty host", egress.Policy{}, "https://:443/", "absolute"},
		{"port not allowed", egress.Policy{}, "https://api.example.com:8443/", "port 8443"},
		{"port zero", egress.Policy{}, "https://api.example.com:0/", "invalid port"},
		{"port allowed", egress.Policy{AllowPorts: []int{8443}}, "https://api.example.com:8443/", ""},
		{"on-prem allowed", onPrem, "https://ghe.corp.internal/api/v3", ""},
		{"on-prem literal", onPrem, "https://10.20.1.1/", ""},
		{"on-prem other range", onPrem, "https://10.21.0.1/", egress.Message},
		{"on-prem does not open metadata", onPrem, "https://169.254.169.254/", egress.Message},
		{"dev loopback", dev, "http://localhost:8080/", ""},
		{"dev mapped loopback", dev, "http://[::ffff:127.0.0.1]:8080/", ""},
		{"dev still no metadata", dev, "http://169.254.169.254/", egress.Message},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.policy.CheckURL(context.Background(), tt.url, res)
			if tt.reason == "" {
				if err != nil {
					t.Fatalf("CheckURL(%q) = %v, want allowed", tt.url, err)
				}
				return
			}
			var de *egress.DeniedError
			if !errors.As(err, &de) {
				t.Fatalf("CheckURL(%q) = %v, want *DeniedError", tt.url, err)
			}
			if !errors.Is(err, egress.ErrDenied) {
				t.Error("does not wrap ErrDenied")
			}
			if !strings.Contains(de.Reason, tt.reason) {
				t.Errorf("reason %q, want it to say %q", de.Reason, tt.reason)
			}
			for _, leak := range []string{"127.0.0.1", "169.254", "10.", "192.168", "::1", "fd00", "pw"} {
				if strings.Contains(err.Error(), leak) {
					t.Errorf("user-facing error %q reveals %q", err, leak)
				}
			}
		})
	}
}

func TestCheckURLResolverFailure(t *testing.T) {
	err := egress.Policy{}.CheckURL(context.Background(), "https://api.example.com", timeoutResolver{})
	if err == nil || errors.Is(err, egress.ErrDenied) {
		t.Fatalf("err = %v, want a resolver error that is not a policy refusal", err)
	}
}

// The detail (with the address) reaches the logs and only the logs.
func TestDeniedErrorLogValue(t *testing.T) {
	err := egress.Policy{}.CheckURL(context.Background(), "https://169.254.169.254/", nil)
	var de *egress.DeniedError
	if !errors.As(err, &de) {
		t.Fatal(err)
	}
	var sb strings.Builder
	slog.New(slog.NewJSONHandler(&sb, nil)).Info("denied", "err", de)
	if !strings.Contains(sb.String(), "169.254.169.254") || !strings.Contains(sb.String(), "link-local") {
		t.Errorf("log %s lacks the detail", sb.String())
	}
	if strings.Contains(de.Error(), "169.254") {
		t.Errorf("Error() %q reveals the address", de.Error())
	}
}

// listen starts a loopback listener that counts accepted connections.
func listen(t *testing.T) (port int, accepted func() int) {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	n := 0
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			n++
			mu.Unlock()
			c.Close()
		}
	}()
	t.Cleanup(func() { ln.Close(); <-done })
	return ln.Addr().(*net.TCPAddr).Port, func() int { mu.Lock(); defer mu.Unlock(); return n }
}

// TestDNSRebinding: the name resolves to a public address when the config
// is saved and to loopback when the hub connects; the save-time check
// passes and the dial-time check refuses, before any packet is sent.
func TestDNSRebinding(t *testing.T) {
	port, accepted := listen(t)
	res := newResolver(map[string][]string{"rebind.example.com": {"93.184.215.14", "127.0.0.1"}})
	p := egress.Policy{AllowPorts: []int{port}}
	ctx := context.Background()
	raw := "https://rebind.example.com:" + strconv.Itoa(port) + "/"

	if err := p.CheckURL(ctx, raw, res); err != nil {
		t.Fatalf("save-time CheckURL = %v, want allowed (the first answer is public)", err)
	}
	addrs, err := res.LookupNetIP(ctx, "ip", "rebind.example.com")
	if err != nil {
		t.Fatal(err)
	}
	d := net.Dialer{Timeout: 2 * time.Second, Control: p.DialControl()}
	conn, err := d.DialContext(ctx, "tcp", netip.AddrPortFrom(addrs[0], uint16(port)).String())
	if err == nil {
		conn.Close()
		t.Fatal("dial to the rebound loopback address succeeded")
	}
	var de *egress.DeniedError
	if !errors.As(err, &de) {
		t.Fatalf("dial error %v is not a *DeniedError", err)
	}
	if accepted() != 0 {
		t.Error("the listener accepted a connection")
	}
}

func TestDialControl(t *testing.T) {
	port, accepted := listen(t)
	addr := "127.0.0.1:" + strconv.Itoa(port)
	dial := func(p egress.Policy, network, addr string) error {
		d := net.Dialer{Timeout: 2 * time.Second, Control: p.DialControl()}
		c, err := d.DialContext(context.Background(), network, addr)
		if err == nil {
			c.Close()
		}
		return err
	}
	if err := dial(egress.Policy{AllowPorts: []int{port}}, "tcp", addr); !errors.Is(err, egress.ErrDenied) {
		t.Errorf("dial loopback = %v, want denied", err)
	}
	if err := dial(egress.Policy{AllowLoopback: true}, "tcp", addr); !errors.Is(err, egress.ErrDenied) {
		t.Errorf("dial loopback on a port not allowed = %v, want denied", err)
	}
	if accepted() != 0 {
		t.Fatal("a denied dial reached the listener")
	}
	// The same dialer lets an allowed address through, so the refusals
	// above are the policy's doing.
	if err := dial(egress.Policy{AllowLoopback: true, AllowPorts: []int{port}}, "tcp", addr); err != nil {
		t.Fatalf("dial with loopback allowed = %v", err)
	}
	if err := dial(egress.Policy{AllowLoopback: true, AllowPorts: []int{port}}, "udp", addr); !errors.Is(err, egress.ErrDenied) {
		t.Errorf("udp dial = %v, want denied", err)
	}

	control := egress.Policy{}.DialControl()
	for _, tt := range []struct {
		network, address string
		ok               bool
	}{
		{"tcp4", "93.184.215.14:443", true},
		{"tcp6", "[2606:2800:21f:cb07:6820:80da:af6b:8b2c]:443", true},
		{"tcp6", "[::ffff:127.0.0.1]:443", false},
		{"tcp6", "[::ffff:169.254.169.254]:80", false},
		{"tcp4", "0.0.0.0:443", false},
		{"tcp4", "93.184.215.14:22", false},
		{"tcp4", "not-an-address", false},
	} {
		err := control(tt.network, tt.address, nil)
		if (err == nil) != tt.ok {
			t.Errorf("control(%s, %s) = %v, want ok=%v", tt.network, tt.address, err, tt.ok)
		}
	}
}
