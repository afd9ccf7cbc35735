package connect

import (
	"context"

	"inthub.dev/pkg/authref"
	"inthub.dev/pkg/fault"
)

// Call is what a secret resolution is done for. The Builder puts it in the
// context of every call its connectors make, where the hook of the
// caller's authref.Resolver finds it with CallFrom.
type Call struct {
	TenantID      string
	IntegrationID string
	// Actor is who asked (WithActor); "" when the service acts on its own
	// (a scheduled health check).
	Actor string
}

type callKey struct{}
type actorKey struct{}

func withCall(ctx context.Context, c Call) context.Context {
	return context.WithValue(ctx, callKey{}, c)
}

// CallFrom returns the call a resolution is done for. It is false for a
// resolution made outside a Builder's connector, which a hook that audits
// cannot attribute.
func CallFrom(ctx context.Context) (Call, bool) {
	c, ok := ctx.Value(callKey{}).(Call)
	return c, ok
}

// WithActor names who asks for the connector operations done with ctx (an
// API caller's subject); the Call of every secret resolution carries it.
func WithActor(ctx context.Context, actor string) context.Context {
	return context.WithValue(ctx, actorKey{}, actor)
}

func actorFrom(ctx context.Context) string {
	a, _ := ctx.Value(actorKey{}).(string)
	return a
}

// secrets resolves an integration's AuthRefs with its call in the context,
// so that the resolver's hook knows whom a resolution is for.
type secrets struct {
	r *authref.Resolver
	c Call
}

func (s secrets) Resolve(ctx context.Context, ref string) ([]byte, error) {
	if s.r == nil {
		return nil, fault.Permanentf("no secret resolver is configured")
	}
	return s.r.Resolve(withCall(ctx, s.c), ref)
}
