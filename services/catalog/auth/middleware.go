package auth

import (
	"context"
	"net/http"
)

// Middleware authenticates every request except those whose path is exactly one of public
// (e.g. /healthz, /readyz, /metrics), and puts the Principal in the request context.
// Failures are 401 problem documents with a WWW-Authenticate challenge.
//
// Paths match exactly: "/healthz/../api/v1/integrations" is not "/healthz".
func Middleware(a *Authenticator, public ...string) func(http.Handler) http.Handler {
	open := make(map[string]struct{}, len(public))
	for _, p := range public {
		open[p] = struct{}{}
	}
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if _, ok := open[r.URL.Path]; ok {
				next.ServeHTTP(w, r)
				return
			}
			values := r.Header.Values("Authorization")
			if len(values) > 1 {
				// Two credentials: refuse rather than guess which one a proxy or the
				// handler would read.
				writeError(w, unauthenticated("malformed authorization header", nil))
				return
			}
			var header string
			if len(values) == 1 {
				header = values[0]
			}
			p, err := a.Authenticate(r.Context(), header)
			if err != nil {
				writeError(w, err)
				return
			}
			next.ServeHTTP(w, r.WithContext(WithPrincipal(r.Context(), p)))
		})
	}
}

// RequireScope returns nil when the principal in ctx holds scope, an *Error wrapping
// ErrForbidden (403) when it does not, and one wrapping ErrUnauthenticated (401) when ctx
// carries no principal at all (the middleware is missing: fail closed).
func RequireScope(ctx context.Context, scope string) error {
	p, ok := PrincipalFrom(ctx)
	if !ok {
		return unauthenticated(reasonNoToken, nil)
	}
	if !p.Can(scope) {
		return forbidden(scope)
	}
	return nil
}

// ScopeMiddleware is RequireScope for plain http handlers, placed inside Middleware.
func ScopeMiddleware(scope string) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if err := RequireScope(r.Context(), scope); err != nil {
				writeError(w, err)
				return
			}
			next.ServeHTTP(w, r)
		})
	}
}
