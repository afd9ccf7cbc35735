// Package auth authenticates callers of the catalog API with bearer JWTs issued by the
// platform's Authority (DESIGN §6 Auth, §10 JWT).
//
// Keys come from exactly one source: a JWKS URL (refreshed periodically and, rate-limited,
// when a token names an unknown kid), a PEM file of public keys, or — only with an
// explicit dev flag — an HS256 shared secret. The accepted signing methods follow from the
// key source, so an HS256 token can never be checked against an RSA public key.
package auth

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/MicahParks/keyfunc/v3"
	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"
)

// Scopes of the catalog API. Admin implies write, write implies read.
const (
	ScopeRead  = "integrations:read"
	ScopeWrite = "integrations:write"
	ScopeAdmin = "integrations:admin"
)

// Defaults; each can be overridden in Config.
const (
	DefaultTenantClaim         = "tenant_id"
	DefaultLeeway              = 30 * time.Second
	DefaultJWKSRefreshInterval = time.Hour
	// An unknown kid may trigger one JWKS fetch per interval: a flood of tokens with random
	// kids then costs the Authority one request a minute, while a key rotated in without
	// being pre-published is still picked up within a minute.
	DefaultJWKSUnknownKIDInterval = time.Minute
	DefaultJWKSFetchTimeout       = 10 * time.Second

	maxLeeway = 5 * time.Minute
	// Tokens are a few hundred bytes to a few KiB; parsing a megabyte header is work an
	// unauthenticated caller should not be able to ask for.
	maxTokenBytes   = 16 << 10
	minSecretLength = 32
)

// Config selects the key source and the claims a token must carry.
type Config struct {
	// Issuer and Audience must match the token's iss and aud claims.
	Issuer, Audience string
	// TenantClaim names the claim that holds the tenant id (a UUID); default "tenant_id".
	TenantClaim string

	// JWKSURL is the Authority's JWK Set (RS*/PS*/ES*/EdDSA keys). https is required unless
	// the host is loopback (tests, a sidecar) or DevMode is set: keys fetched over plain
	// http to a remote host could be swapped by anyone on the path.
	JWKSURL string
	// JWKSRefreshInterval is the periodic refresh; default 1h.
	JWKSRefreshInterval time.Duration
	// JWKSUnknownKIDInterval rate-limits the refresh a token with an unknown kid triggers;
	// default 1m.
	JWKSUnknownKIDInterval time.Duration
	// JWKSFetchTimeout bounds one JWKS request; default 10s.
	JWKSFetchTimeout time.Duration
	// HTTPClient fetches the JWKS (e.g. with a private CA); default: a client of our own.
	HTTPClient *http.Client

	// KeyFile is a PEM file of public keys (PUBLIC KEY, RSA PUBLIC KEY or CERTIFICATE
	// blocks), read once at New.
	KeyFile string

	// DevHS256Secret is an HS256 shared secret (at least 32 bytes), honoured only when
	// DevMode is set. Never use it outside `make run` and tests.
	DevHS256Secret []byte
	DevMode        bool

	// Leeway absorbs clock skew on exp, nbf and iat; default 30s, at most 5m.
	Leeway time.Duration
	Logger *slog.Logger
}

// Principal is the authenticated caller.
type Principal struct {
	Subject  string
	TenantID string // canonical lower-case UUID
	Scopes   []string
}

// Can reports whether the principal holds scope, directly or through a broader scope.
func (p Principal) Can(scope string) bool {
	for _, s := range p.Scopes {
		if s == scope {
			return true
		}
		switch s {
		case ScopeAdmin:
			if scope == ScopeWrite || scope == ScopeRead {
				return true
			}
		case ScopeWrite:
			if scope == ScopeRead {
				return true
			}
		}
	}
	return false
}

// Authenticator checks bearer tokens. It is safe for concurrent use.
type Authenticator struct {
	parser      *jwt.Parser
	methods     []string
	tenantClaim string
	keyfunc     func(ctx context.Context) jwt.Keyfunc
	log         *slog.Logger

	jwks      *jwksStore // nil unless the key source is a JWKS URL
	cancel    context.CancelFunc
	wg        sync.WaitGroup
	closeOnce sync.Once
}

var (
	asymmetricMethods = []string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
	devMethods        = []string{"HS256"}
)

// New validates cfg and prepares the key source. With a JWKS URL it fetches the set once;
// if that fails it logs and carries on (tokens are refused until a fetch succeeds, retried
// in the background), so the catalog does not crash-loop while the Authority is down.
// ctx bounds that first fetch only; the background refresh runs until Close.
func New(ctx context.Context, cfg Config) (*Authenticator, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	log = log.With("component", "auth")
	leeway := cfg.Leeway
	if leeway == 0 {
		leeway = DefaultLeeway
	}
	tenantClaim := cfg.TenantClaim
	if tenantClaim == "" {
		tenantClaim = DefaultTenantClaim
	}

	a := &Authenticator{
		tenantClaim: tenantClaim,
		log:         log,
		methods:     asymmetricMethods,
	}
	switch {
	case len(cfg.DevHS256Secret) > 0:
		a.methods = devMethods
		secret := slices.Clone(cfg.DevHS256Secret)
		kf := func(t *jwt.Token) (any, error) {
			if _, ok := t.Method.(*jwt.SigningMethodHMAC); !ok {
				return nil, fmt.Errorf("signing method %s does not fit the dev secret", t.Method.Alg())
			}
			return secret, nil
		}
		a.keyfunc = func(context.Context) jwt.Keyfunc { return kf }
		log.Warn("dev mode: accepting HS256 tokens signed with the dev secret; never use this in production")
	case cfg.KeyFile != "":
		keys, err := loadKeyFile(cfg.KeyFile)
		if err != nil {
			return nil, err
		}
		kf := keyFileKeyfunc(keys)
		a.keyfunc = func(context.Context) jwt.Keyfunc { return kf }
	default:
		// Detached: a startup context with a timeout must not end the refresh later on.
		bg, cancel := context.WithCancel(context.WithoutCancel(ctx))
		store := newJWKSStore(cfg, log)
		kf, err := keyfunc.New(keyfunc.Options{Ctx: bg, Storage: store})
		if err != nil {
			cancel()
			return nil, fmt.Errorf("auth: keyfunc: %w", err)
		}
		a.jwks = store
		a.cancel = cancel
		a.keyfunc = kf.KeyfuncCtx
		initialErr := store.refresh(ctx)
		if initialErr != nil {
			log.Error("initial JWKS fetch failed; tokens are refused until a fetch succeeds",
				"url", store.url, "error", initialErr)
		}
		a.wg.Add(1)
		go func() {
			defer a.wg.Done()
			store.run(bg, initialErr == nil)
		}()
	}

	a.parser = jwt.NewParser(
		jwt.WithValidMethods(a.methods),
		jwt.WithExpirationRequired(),
		jwt.WithIssuer(cfg.Issuer),
		jwt.WithAudience(cfg.Audience),
		jwt.WithIssuedAt(),
		jwt.WithLeeway(leeway),
	)
	return a, nil
}

func (cfg Config) validate() error {
	var errs []error
	if cfg.Issuer == "" {
		errs = append(errs, errors.New("auth: Issuer is empty: set it to the Authority's issuer (the iss claim of its tokens)"))
	}
	if cfg.Audience == "" {
		errs = append(errs, errors.New("auth: Audience is empty: set it to the audience the Authority issues catalog tokens for"))
	}
	sources := 0
	for _, set := range []bool{cfg.JWKSURL != "", cfg.KeyFile != "", len(cfg.DevHS256Secret) > 0} {
		if set {
			sources++
		}
	}
	if sources != 1 {
		errs = append(errs, fmt.Errorf("%d key sources set: set exactly one of JWKSURL, KeyFile or (with DevMode) DevHS256Secret", sources))
	}
	if len(cfg.DevHS256Secret) > 0 {
		if !cfg.DevMode {
			errs = append(errs, errors.New("auth: DevHS256Secret is set without DevMode: HS256 is for development only; use JWKSURL or KeyFile"))
		}
		if len(cfg.DevHS256Secret) < minSecretLength {
			errs = append(errs, fmt.Errorf("DevHS256Secret is %d bytes: use at least %d random bytes", len(cfg.DevHS256Secret), minSecretLength))
		}
	}
	if cfg.JWKSURL != "" {
		if err := checkJWKSURL(cfg.JWKSURL, cfg.DevMode); err != nil {
			errs = append(errs, err)
		}
	}
	if cfg.Leeway < 0 || cfg.Leeway > maxLeeway {
		errs = append(errs, fmt.Errorf("auth: Leeway %s is out of range: use 0 (default %s) up to %s", cfg.Leeway, DefaultLeeway, maxLeeway))
	}
	for name, d := range map[string]time.Duration{
		"JWKSRefreshInterval":    cfg.JWKSRefreshInterval,
		"JWKSUnknownKIDInterval": cfg.JWKSUnknownKIDInterval,
		"JWKSFetchTimeout":       cfg.JWKSFetchTimeout,
	} {
		if d < 0 {
			errs = append(errs, fmt.Errorf("%s is negative: use 0 for the default", name))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("auth: invalid config: %w", err)
	}
	return nil
}

func checkJWKSURL(raw string, dev bool) error {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return fmt.Errorf("JWKSURL %q is not an absolute URL", raw)
	}
	switch u.Scheme {
	case "https":
		return nil
	case "http":
		if dev || isLoopbackHost(u.Hostname()) {
			return nil
		}
		return fmt.Errorf("JWKSURL %q uses http: use https (keys fetched in clear can be replaced in transit)", raw)
	default:
		return fmt.Errorf("JWKSURL %q: scheme must be https", raw)
	}
}

// Close stops the background JWKS refresh. It is safe to call more than once.
func (a *Authenticator) Close() {
	a.closeOnce.Do(func() {
		if a.cancel != nil {
			a.cancel()
		}
		a.wg.Wait()
		if a.jwks != nil {
			a.jwks.close()
		}
	})
}

// Authenticate checks the value of an Authorization header and returns the caller.
// Every failure is an *Error wrapping ErrUnauthenticated, with a reason safe to show.
func (a *Authenticator) Authenticate(ctx context.Context, authorizationHeader string) (Principal, error) {
	p, err := a.authenticate(ctx, authorizationHeader)
	if err != nil {
		var ae *Error
		if errors.As(err, &ae) {
			// The cause may name the token's kid (caller-chosen) but never holds the token.
			a.log.LogAttrs(ctx, slog.LevelDebug, "authentication failed",
				slog.String("reason", ae.Reason), slog.Any("error", ae.cause))
		}
		return Principal{}, err
	}
	return p, nil
}

func (a *Authenticator) authenticate(ctx context.Context, header string) (Principal, error) {
	raw, err := bearerToken(header)
	if err != nil {
		return Principal{}, err
	}
	claims := jwt.MapClaims{}
	tok, err := a.parser.ParseWithClaims(raw, claims, a.keyfunc(ctx))
	if err != nil {
		return Principal{}, unauthenticated(a.reasonFor(tok, claims, err), err)
	}

	sub, err := claims.GetSubject()
	if err != nil {
		return Principal{}, unauthenticated("malformed subject claim", err)
	}
	if sub == "" {
		return Principal{}, unauthenticated("missing subject", nil)
	}
	tenant, err := tenantFrom(claims, a.tenantClaim)
	if err != nil {
		return Principal{}, err
	}
	scopes, err := scopesFrom(claims)
	if err != nil {
		return Principal{}, err
	}
	return Principal{Subject: sub, TenantID: tenant, Scopes: scopes}, nil
}

func bearerToken(header string) (string, error) {
	header = strings.TrimSpace(header)
	if header == "" {
		return "", unauthenticated(reasonNoToken, nil)
	}
	scheme, token, ok := strings.Cut(header, " ")
	if !strings.EqualFold(scheme, "Bearer") {
		return "", unauthenticated("unsupported authorization scheme, use Bearer", nil)
	}
	token = strings.TrimSpace(token)
	if !ok || token == "" || strings.ContainsAny(token, " \t") {
		return "", unauthenticated("malformed authorization header", nil)
	}
	if len(token) > maxTokenBytes {
		return "", unauthenticated("token too large", nil)
	}
	return token, nil
}

// reasonFor turns a parser error into a reason a caller may see. The first matching
// check wins, from the outermost layer (format, method, key, signature) to the claims.
func (a *Authenticator) reasonFor(tok *jwt.Token, claims jwt.MapClaims, err error) string {
	switch {
	case errors.Is(err, jwt.ErrTokenMalformed):
		return "malformed token"
	case tok != nil && !slices.Contains(a.methods, fmt.Sprint(tok.Header["alg"])):
		return "signing method not allowed"
	case errors.Is(err, jwt.ErrTokenUnverifiable) && !errors.Is(err, jwt.ErrTokenInvalidClaims):
		return "unknown signing key"
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		return "bad signature"
	case errors.Is(err, jwt.ErrInvalidType):
		return "malformed claims"
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing):
		for _, c := range []struct{ claim, reason string }{
			{"exp", "missing expiry"}, {"iss", "missing issuer"}, {"aud", "missing audience"},
		} {
			if _, ok := claims[c.claim]; !ok {
				return c.reason
			}
		}
		return "missing required claim"
	case errors.Is(err, jwt.ErrTokenExpired):
		return "token expired"
	case errors.Is(err, jwt.ErrTokenNotValidYet):
		return "token not valid yet"
	case errors.Is(err, jwt.ErrTokenUsedBeforeIssued):
		return "token issued in the future"
	case errors.Is(err, jwt.ErrTokenInvalidIssuer):
		return "wrong issuer"
	case errors.Is(err, jwt.ErrTokenInvalidAudience):
		return "wrong audience"
	default:
		return "invalid token"
	}
}

func tenantFrom(claims jwt.MapClaims, name string) (string, error) {
	v, ok := claims[name]
	if !ok || v == nil || v == "" {
		return "", unauthenticated("missing tenant claim", nil)
	}
	s, ok := v.(string)
	if !ok {
		return "", unauthenticated("malformed tenant claim", nil)
	}
	// Only the canonical 36-character form: uuid.Parse also takes urn:uuid:, braces and
	// bare hex, and one tenant must have one spelling.
	id, err := uuid.Parse(s)
	if err != nil || len(s) != 36 || id == uuid.Nil {
		return "", unauthenticated("malformed tenant claim", err)
	}
	return id.String(), nil
}

// scopesFrom reads "scope" (RFC 8693/9068: a space-separated string) and "scp" (an array,
// or a string in some Authorities), and returns their union, sorted.
func scopesFrom(claims jwt.MapClaims) ([]string, error) {
	var out []string
	for _, name := range []string{"scope", "scp"} {
		v, ok := claims[name]
		if !ok || v == nil {
			continue
		}
		switch v := v.(type) {
		case string:
			out = append(out, strings.Fields(v)...)
		case []any:
			for _, e := range v {
				s, ok := e.(string)
				if !ok {
					return nil, unauthenticated("malformed scope claim", nil)
				}
				out = append(out, strings.Fields(s)...)
			}
		default:
			return nil, unauthenticated("malformed scope claim", nil)
		}
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

type principalKey struct{}

// WithPrincipal returns a context carrying p.
func WithPrincipal(ctx context.Context, p Principal) context.Context {
	return context.WithValue(ctx, principalKey{}, p)
}

// PrincipalFrom returns the principal the middleware put in ctx.
func PrincipalFrom(ctx context.Context) (Principal, bool) {
	p, ok := ctx.Value(principalKey{}).(Principal)
	return p, ok
}
