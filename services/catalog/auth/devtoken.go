package auth

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"
)

// DevToken mints an HS256 token for `make run` and tests, accepted only by an Authenticator
// in DevMode with the same secret. The tenant goes in the default "tenant_id" claim and the
// scopes in "scope".
func DevToken(secret []byte, issuer, audience, subject, tenantID string, scopes []string, ttl time.Duration) (string, error) {
	var errs []error
	if len(secret) < minSecretLength {
		errs = append(errs, fmt.Errorf("secret is %d bytes, want at least %d", len(secret), minSecretLength))
	}
	if issuer == "" || audience == "" || subject == "" {
		errs = append(errs, errors.New("issuer, audience and subject must be set"))
	}
	if id, err := uuid.Parse(tenantID); err != nil || len(tenantID) != 36 || id == uuid.Nil {
		errs = append(errs, fmt.Errorf("tenant %q is not a UUID", tenantID))
	}
	if ttl <= 0 {
		errs = append(errs, fmt.Errorf("ttl %s must be positive", ttl))
	}
	if err := errors.Join(errs...); err != nil {
		return "", fmt.Errorf("auth: dev token: %w", err)
	}
	now := time.Now()
	claims := jwt.MapClaims{
		"iss":              issuer,
		"aud":              audience,
		"sub":              subject,
		DefaultTenantClaim: strings.ToLower(tenantID),
		"scope":            strings.Join(scopes, " "),
		"iat":              now.Unix(),
		"exp":              now.Add(ttl).Unix(),
		"jti":              uuid.NewString(),
	}
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString(secret)
	if err != nil {
		return "", fmt.Errorf("auth: dev token: %w", err)
	}
	return s, nil
}
