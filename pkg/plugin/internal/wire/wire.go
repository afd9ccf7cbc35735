// Package wire is what the host (package plugin) and the plugin side
// (package sdk) share: the go-plugin handshake, the plugin set for version
// negotiation, and the mapping of connectors' values and error classes to
// the protobuf messages and back.
package wire

import (
	"context"
	"errors"
	"net/netip"
	"time"

	goplugin "github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"

	"inthub.dev/pkg/connectors"
	"inthub.dev/pkg/egress"
	"inthub.dev/pkg/fault"
	"inthub.dev/pkg/plugin/internal/pluginpb"
)

// ProtocolVersion is the version of connector.proto's contract. A change
// that an older plugin cannot serve adds version 2 beside 1 in
// VersionedPlugins, so that go-plugin picks the highest version both sides
// speak and old plugins keep working.
const ProtocolVersion = 1

// PluginName is the name the connector service is dispensed under.
const PluginName = "connector"

// Handshake is checked by both sides before anything else: a binary
// started by mistake (not a plugin) sees no cookie and exits with a
// message instead of serving, and a plugin started outside a host refuses.
// It is not a security measure: the checksum allow-list is.
var Handshake = goplugin.HandshakeConfig{
	// Only the fallback for hosts that do not negotiate: VersionedPlugins
	// wins when both sides set it.
	ProtocolVersion:  ProtocolVersion,
	MagicCookieKey:   "INTHUB_CONNECTOR_PLUGIN",
	MagicCookieValue: "b5f3c1d2-7a4e-4f0b-9c36-inthub-connector",
}

// VersionedPlugins is the plugin set per protocol version. impl is the
// plugin's server (nil on the host side).
func VersionedPlugins(impl pluginpb.ConnectorServer) map[int]goplugin.PluginSet {
	return map[int]goplugin.PluginSet{
		ProtocolVersion: {PluginName: &GRPCPlugin{Impl: impl}},
	}
}

// GRPCPlugin is the go-plugin glue of the Connector service.
type GRPCPlugin struct {
	goplugin.NetRPCUnsupportedPlugin
	Impl pluginpb.ConnectorServer
}

var _ goplugin.GRPCPlugin = (*GRPCPlugin)(nil)

// GRPCServer registers the plugin's implementation.
func (p *GRPCPlugin) GRPCServer(_ *goplugin.GRPCBroker, s *grpc.Server) error {
	if p.Impl == nil {
		return errors.New("plugin: no connector implementation to serve")
	}
	pluginpb.RegisterConnectorServer(s, p.Impl)
	return nil
}

// GRPCClient returns the host's client of the plugin.
func (p *GRPCPlugin) GRPCClient(_ context.Context, _ *goplugin.GRPCBroker, c *grpc.ClientConn) (any, error) {
	return pluginpb.NewConnectorClient(c), nil
}

// RemoteError is a failure that a plugin reported. Its text is the
// plugin's message; the class travels beside it and is restored around it
// (fault.Error), so errors.As and fault.ClassOf work on the host as they
// did in the plugin.
type RemoteError struct {
	Message string
}

func (e *RemoteError) Error() string { return e.Message }

// ErrorToPB encodes a failure; nil stays nil.
func ErrorToPB(err error) *pluginpb.Error {
	if err == nil {
		return nil
	}
	e := &pluginpb.Error{Message: err.Error(), RetryAfterMs: fault.RetryAfterOf(err).Milliseconds()}
	if c := fault.ClassOf(err); c != fault.ClassUnknown {
		e.Class = c.String()
	}
	return e
}

// ErrorFromPB decodes a failure: a *RemoteError wrapped in its class.
func ErrorFromPB(e *pluginpb.Error) error {
	if e == nil {
		return nil
	}
	return Classify(fault.ParseClass(e.Class), time.Duration(e.RetryAfterMs)*time.Millisecond, &RemoteError{Message: e.Message})
}

// Classify wraps err in class c (unchanged for ClassUnknown).
func Classify(c fault.Class, retryAfter time.Duration, err error) error {
	switch c {
	case fault.ClassTransient:
		return fault.RetryAfter(err, retryAfter)
	case fault.ClassPermanent:
		return fault.Permanent(err)
	case fault.ClassOffline:
		return fault.Offline(err)
	default:
		return err
	}
}

func classString(c fault.Class) string {
	if c == fault.ClassUnknown {
		return ""
	}
	return c.String()
}

// ResultToPB encodes a test or health result.
func ResultToPB(r connectors.Result) *pluginpb.ResultResponse {
	out := &pluginpb.ResultResponse{
		Status:    string(r.Status),
		Message:   r.Message,
		LatencyNs: int64(r.Latency),
		Details:   r.Details,
	}
	if r.Err != nil {
		out.Error = ErrorToPB(r.Err)
		if r.Class != fault.ClassUnknown {
			out.Error.Class = r.Class.String()
		}
	} else if r.Class != fault.ClassUnknown {
		out.Error = &pluginpb.Error{Class: r.Class.String(), Message: r.Message}
	}
	for _, c := range r.Checks {
		out.Checks = append(out.Checks, &pluginpb.Check{Capability: c.Capability, Ok: c.OK, Message: c.Message,
			LatencyNs: int64(c.Latency), Class: classString(c.Class)})
	}
	if r.CredentialExpiry != nil {
		out.CredentialExpiryUnix = r.CredentialExpiry.Unix()
	}
	if r.RateLimit != nil {
		out.RateLimit = &pluginpb.RateLimit{Limit: int64(r.RateLimit.Limit), Remaining: int64(r.RateLimit.Remaining),
			ResetUnix: r.RateLimit.Reset.Unix()}
	}
	return out
}

// ResultFromPB decodes a result; each failed check's Err and the result's
// Err carry their class again.
func ResultFromPB(p *pluginpb.ResultResponse) connectors.Result {
	r := connectors.Result{
		Status:  connectors.Status(p.GetStatus()),
		Message: p.GetMessage(),
		Latency: time.Duration(p.GetLatencyNs()),
		Details: p.GetDetails(),
	}
	if r.Status == "" {
		r.Status = connectors.StatusUnknown
	}
	if e := p.GetError(); e != nil {
		r.Class = fault.ParseClass(e.Class)
		r.Err = ErrorFromPB(e)
	}
	for _, c := range p.GetChecks() {
		ch := connectors.Check{Capability: c.Capability, OK: c.Ok, Message: c.Message,
			Latency: time.Duration(c.LatencyNs), Class: fault.ParseClass(c.Class)}
		if !c.Ok {
			ch.Err = Classify(ch.Class, 0, &RemoteError{Message: c.Capability + ": " + c.Message})
		}
		r.Checks = append(r.Checks, ch)
	}
	if p.GetCredentialExpiryUnix() != 0 {
		t := time.Unix(p.GetCredentialExpiryUnix(), 0).UTC()
		r.CredentialExpiry = &t
	}
	if rl := p.GetRateLimit(); rl != nil {
		r.RateLimit = &connectors.RateLimit{Limit: int(rl.Limit), Remaining: int(rl.Remaining),
			Reset: time.Unix(rl.ResetUnix, 0).UTC()}
	}
	return r
}

// EgressToPB encodes the host's egress policy.
func EgressToPB(p egress.Policy) *pluginpb.Egress {
	out := &pluginpb.Egress{AllowHttp: p.AllowHTTP, AllowLoopback: p.AllowLoopback}
	for _, pr := range p.AllowPrefixes {
		out.AllowPrefixes = append(out.AllowPrefixes, pr.String())
	}
	for _, port := range p.AllowPorts {
		out.AllowPorts = append(out.AllowPorts, int32(port))
	}
	return out
}

// EgressFromPB decodes the policy; a prefix that does not parse is
// dropped (allowing less, never more).
func EgressFromPB(e *pluginpb.Egress) egress.Policy {
	p := egress.Policy{AllowHTTP: e.GetAllowHttp(), AllowLoopback: e.GetAllowLoopback()}
	for _, s := range e.GetAllowPrefixes() {
		if pr, err := netip.ParsePrefix(s); err == nil {
			p.AllowPrefixes = append(p.AllowPrefixes, pr)
		}
	}
	for _, port := range e.GetAllowPorts() {
		p.AllowPorts = append(p.AllowPorts, int(port))
	}
	return p
}
