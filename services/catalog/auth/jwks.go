package auth

import (
	"context"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/MicahParks/jwkset"
	"golang.org/x/time/rate"
)

const maxJWKSBytes = 1 << 20

// jwksStore is the jwkset.Storage behind keyfunc: an in-memory set refreshed from the
// Authority periodically and when a token names an unknown kid.
//
// jwkset's own HTTPClient (RefreshUnknownKID) is not used because it waits on the rate
// limiter: a request with an unknown kid blocks until the next refresh slot (up to
// RateLimitWaitMax), and that same deadline bounds the refresh itself. Here an unknown kid
// refreshes only when the limiter allows it right now; otherwise the token is refused at
// once, so a flood of random kids neither queues requests nor reaches the Authority more
// than once per interval.
type jwksStore struct {
	*jwkset.MemoryJWKSet

	url       string
	client    *http.Client
	ownClient bool
	timeout   time.Duration
	every     time.Duration
	retry     time.Duration
	limiter   *rate.Limiter
	// fetching holds one token while a fetch runs; callers with an unknown kid wait for a
	// running fetch (it may bring their key) but give up when their context ends.
	fetching chan struct{}
	log      *slog.Logger
}

func newJWKSStore(cfg Config, log *slog.Logger) *jwksStore {
	s := &jwksStore{
		MemoryJWKSet: jwkset.NewMemoryStorage(),
		url:          cfg.JWKSURL,
		client:       cfg.HTTPClient,
		timeout:      orDefault(cfg.JWKSFetchTimeout, DefaultJWKSFetchTimeout),
		every:        orDefault(cfg.JWKSRefreshInterval, DefaultJWKSRefreshInterval),
		retry:        orDefault(cfg.JWKSUnknownKIDInterval, DefaultJWKSUnknownKIDInterval),
		fetching:     make(chan struct{}, 1),
		log:          log,
	}
	s.limiter = rate.NewLimiter(rate.Every(s.retry), 1)
	if s.client == nil {
		s.client = &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone()}
		s.ownClient = true
	}
	return s
}

func orDefault(d, def time.Duration) time.Duration {
	if d == 0 {
		return def
	}
	return d
}

// KeyRead overrides the memory storage's lookup with a rate-limited refresh on a miss.
func (s *jwksStore) KeyRead(ctx context.Context, kid string) (jwkset.JWK, error) {
	k, err := s.MemoryJWKSet.KeyRead(ctx, kid)
	if !errors.Is(err, jwkset.ErrKeyNotFound) {
		return k, err
	}
	select {
	case s.fetching <- struct{}{}:
	case <-ctx.Done():
		return jwkset.JWK{}, fmt.Errorf("%w (gave up waiting for a JWKS refresh: %w)", err, ctx.Err())
	}
	defer func() { <-s.fetching }()
	// A fetch that ended while we waited may have brought the key.
	if k, err2 := s.MemoryJWKSet.KeyRead(ctx, kid); err2 == nil {
		return k, nil
	}
	if !s.limiter.Allow() {
		return jwkset.JWK{}, fmt.Errorf("%w (JWKS refresh rate-limited)", err)
	}
	// Detached from the caller so a client hanging up does not waste the refresh slot.
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.timeout)
	defer cancel()
	if ferr := s.fetch(fctx); ferr != nil {
		s.log.Warn("JWKS refresh for an unknown kid failed", "url", s.url, "error", ferr)
		return jwkset.JWK{}, fmt.Errorf("%w (JWKS refresh failed: %w)", err, ferr)
	}
	return s.MemoryJWKSet.KeyRead(ctx, kid)
}

// refresh fetches the set now, waiting for a fetch already running.
func (s *jwksStore) refresh(ctx context.Context) error {
	select {
	case s.fetching <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-s.fetching }()
	fctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	return s.fetch(fctx)
}

// run refreshes every s.every; after a failure it retries every s.retry until a fetch
// succeeds, so a JWKS that was down at start is picked up without waiting an hour.
func (s *jwksStore) run(ctx context.Context, lastOK bool) {
	next := func(ok bool) time.Duration {
		if ok {
			return s.every
		}
		return s.retry
	}
	t := time.NewTimer(next(lastOK))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		err := s.refresh(ctx)
		if err != nil && ctx.Err() == nil {
			s.log.Warn("JWKS refresh failed; keeping the keys we have", "url", s.url, "error", err)
		}
		t.Reset(next(err == nil))
	}
}

// fetch replaces the key set with the Authority's. A document that cannot be read keeps
// the current keys; a single key that cannot be used is skipped, so one odd entry does not
// lock everybody out.
func (s *jwksStore) fetch(ctx context.Context) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.url, nil)
	if err != nil {
		return fmt.Errorf("jwks request: %w", err)
	}
	req.Header.Set("Accept", "application/jwk-set+json, application/json")
	resp, err := s.client.Do(req)
	if err != nil {
		return fmt.Errorf("jwks fetch: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10))
		return fmt.Errorf("jwks fetch: status %d", resp.StatusCode)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxJWKSBytes+1))
	if err != nil {
		return fmt.Errorf("jwks read: %w", err)
	}
	if len(body) > maxJWKSBytes {
		return fmt.Errorf("jwks document larger than %d bytes", maxJWKSBytes)
	}
	var set jwkset.JWKSMarshal
	if err := json.Unmarshal(body, &set); err != nil {
		return fmt.Errorf("jwks decode: %w", err)
	}
	keys := make([]jwkset.JWK, 0, len(set.Keys))
	for _, m := range set.Keys {
		k, err := usableKey(m)
		if err != nil {
			s.log.Warn("skipping JWKS key", "kid", m.KID, "reason", err.Error())
			continue
		}
		keys = append(keys, k)
	}
	if err := s.KeyReplaceAll(ctx, keys); err != nil {
		return fmt.Errorf("jwks store: %w", err)
	}
	s.log.Debug("JWKS refreshed", "url", s.url, "keys", len(keys))
	return nil
}

// usableKey admits public signature keys only. Private parts are not even parsed
// (Private: false), and symmetric "oct" keys are dropped: a shared secret has no place in a
// public key set, and admitting one would reopen the HS256 door.
func usableKey(m jwkset.JWKMarshal) (jwkset.JWK, error) {
	if m.USE == jwkset.UseEnc {
		return jwkset.JWK{}, errors.New(`use is "enc"`)
	}
	switch m.KTY {
	case jwkset.KtyRSA, jwkset.KtyEC, jwkset.KtyOKP:
	default:
		return jwkset.JWK{}, fmt.Errorf("key type %q is not a public signature key type", m.KTY)
	}
	k, err := jwkset.NewJWKFromMarshal(m, jwkset.JWKMarshalOptions{}, jwkset.JWKValidateOptions{})
	if err != nil {
		return jwkset.JWK{}, err
	}
	if pk, ok := k.Key().(*rsa.PublicKey); ok && pk.N.BitLen() < minRSABits {
		return jwkset.JWK{}, fmt.Errorf("RSA key of %d bits, want at least %d", pk.N.BitLen(), minRSABits)
	}
	return k, nil
}

func (s *jwksStore) close() {
	if s.ownClient {
		s.client.CloseIdleConnections()
	}
}

func isLoopbackHost(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
