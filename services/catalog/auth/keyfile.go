package auth

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/golang-jwt/jwt/v5"
)

const minRSABits = 2048

// loadKeyFile reads PEM public keys. A private key in the file is refused: the catalog
// only verifies, and a private key lying in its config is a key that can mint tokens.
func loadKeyFile(path string) ([]any, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("auth: read KeyFile: %w", err)
	}
	var keys []any
	for n := 1; ; n++ {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			break
		}
		k, err := parsePublicBlock(block)
		if err != nil {
			return nil, fmt.Errorf("auth: KeyFile %s, PEM block %d (%s): %w", path, n, block.Type, err)
		}
		keys = append(keys, k)
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("auth: KeyFile %s holds no PEM public key (want PUBLIC KEY, RSA PUBLIC KEY or CERTIFICATE blocks)", path)
	}
	return keys, nil
}

func parsePublicBlock(b *pem.Block) (any, error) {
	var (
		key any
		err error
	)
	switch {
	case b.Type == "PUBLIC KEY":
		key, err = x509.ParsePKIXPublicKey(b.Bytes)
	case b.Type == "RSA PUBLIC KEY":
		key, err = x509.ParsePKCS1PublicKey(b.Bytes)
	case b.Type == "CERTIFICATE":
		var c *x509.Certificate
		c, err = x509.ParseCertificate(b.Bytes)
		if err == nil {
			key = c.PublicKey
		}
	case strings.Contains(b.Type, "PRIVATE KEY"):
		return nil, errors.New("a private key: give the catalog the public key only (openssl pkey -pubout)")
	default:
		return nil, errors.New("unsupported PEM block type")
	}
	if err != nil {
		return nil, err
	}
	switch k := key.(type) {
	case *rsa.PublicKey:
		if k.N.BitLen() < minRSABits {
			return nil, fmt.Errorf("RSA key of %d bits, want at least %d", k.N.BitLen(), minRSABits)
		}
	case *ecdsa.PublicKey, ed25519.PublicKey:
	default:
		return nil, fmt.Errorf("unsupported key type %T", key)
	}
	return key, nil
}

// keyFileKeyfunc offers the token every file key of the method's family. PEM keys carry no
// kid, so the kid in the token is not used to pick one.
func keyFileKeyfunc(keys []any) jwt.Keyfunc {
	return func(t *jwt.Token) (any, error) {
		var set jwt.VerificationKeySet
		for _, k := range keys {
			if keyFits(t.Method, k) {
				set.Keys = append(set.Keys, k)
			}
		}
		if len(set.Keys) == 0 {
			return nil, fmt.Errorf("no key in the key file for %s", t.Method.Alg())
		}
		return set, nil
	}
}

func keyFits(m jwt.SigningMethod, key any) bool {
	switch m := m.(type) {
	case *jwt.SigningMethodRSA, *jwt.SigningMethodRSAPSS:
		_, ok := key.(*rsa.PublicKey)
		return ok
	case *jwt.SigningMethodECDSA:
		k, ok := key.(*ecdsa.PublicKey)
		return ok && k.Curve.Params().BitSize == m.CurveBits
	case *jwt.SigningMethodEd25519:
		_, ok := key.(ed25519.PublicKey)
		return ok
	default:
		return false
	}
}
