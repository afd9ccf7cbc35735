// Package authref parses AuthRef URIs: the only form in which inthub stores
// a credential. An AuthRef names where a secret lives, never the secret:
//
//	authref://env/GITHUB_APP_KEY                 an environment variable of the worker
//	authref://file/etc/inthub/github-app.pem     the file /etc/inthub/github-app.pem
//	authref://vault/secret/data/inthub/gh#token  field "token" of a Vault KV v2 secret
//
// The syntax is deliberately narrower than RFC 3986: no userinfo, port,
// query, percent-encoding, "." or ".." segments. A reference that could be
// read two ways (by this parser and by whatever resolves it later) is how a
// tenant reaches a secret that is not theirs, so anything unusual is refused
// rather than normalised.
//
// Resolution (reading the secret, caching it briefly, auditing each read)
// belongs to the connectors and comes in a later issue; this package only
// says whether a string is a well-formed reference.
package authref

import (
	"errors"
	"regexp"
	"strings"
)

// Scheme says which store holds the secret. It is the host part of the URI.
type Scheme string

const (
	Env   Scheme = "env"
	File  Scheme = "file"
	Vault Scheme = "vault"
)

// Prefix starts every AuthRef URI.
const Prefix = "authref://"

// Forms lists the valid forms, for error messages shown to users.
const Forms = "authref://env/<VAR>, authref://file/<absolute path> or authref://vault/<kv-v2 path>#<field>"

// Ref is a parsed AuthRef URI.
type Ref struct {
	Scheme Scheme
	// Path is the variable name (Env), the absolute file path with its
	// leading slash (File), or the KV v2 path without a leading slash (Vault).
	Path string
	// Field is the key inside a Vault secret; empty for the other schemes.
	Field string
}

// ErrSyntax is wrapped by every error that Parse returns.
var ErrSyntax = errors.New("invalid AuthRef")

// SyntaxError says why a string is not an AuthRef URI. Its message never
// quotes the input: a user who got the syntax wrong may have pasted the
// secret itself.
type SyntaxError struct {
	Reason string
}

func (e *SyntaxError) Error() string {
	return "invalid AuthRef: " + e.Reason + "; the valid forms are " + Forms
}

func (e *SyntaxError) Unwrap() error { return ErrSyntax }

var (
	envVar = regexp.MustCompile(`^[A-Z_][A-Z0-9_]*$`)
	// Segment characters of a file path: enough for real paths, and free
	// of anything a shell, a URL parser or Vault would read specially.
	fileSegment  = regexp.MustCompile(`^[A-Za-z0-9._~+=@,:-]+$`)
	vaultSegment = regexp.MustCompile(`^[A-Za-z0-9._-]+$`)
)

// IsRef reports whether s claims to be an AuthRef (starts with the
// authref:// prefix), well-formed or not.
func IsRef(s string) bool { return strings.HasPrefix(s, Prefix) }

// Parse parses an AuthRef URI strictly. For any r that Parse returns,
// Parse(r.String()) returns r again.
func Parse(s string) (Ref, error) {
	fail := func(reason string) (Ref, error) { return Ref{}, &SyntaxError{Reason: reason} }
	if s == "" {
		return fail("empty")
	}
	rest, ok := strings.CutPrefix(s, Prefix)
	if !ok {
		return fail("must start with " + Prefix)
	}
	for _, r := range rest {
		if r < 0x21 || r == 0x7f {
			return fail("must not contain spaces or control characters")
		}
	}
	if strings.ContainsAny(rest, "?%\\") {
		return fail("must not contain a query, percent-encoding or backslashes")
	}
	host, path, ok := strings.Cut(rest, "/")
	if !ok || path == "" {
		return fail("missing the part after the store name")
	}
	switch Scheme(host) {
	case Env:
		if strings.Contains(path, "#") {
			return fail("env references take no #field")
		}
		if !envVar.MatchString(path) {
			return fail("the variable name must match [A-Z_][A-Z0-9_]*")
		}
		return Ref{Scheme: Env, Path: path}, nil
	case File:
		if strings.Contains(path, "#") {
			return fail("file references take no #field")
		}
		if err := checkSegments(path, fileSegment); err != "" {
			return fail("file path " + err)
		}
		return Ref{Scheme: File, Path: "/" + path}, nil
	case Vault:
		p, field, ok := strings.Cut(path, "#")
		if !ok || field == "" {
			return fail("vault references need a #field")
		}
		if err := checkSegments(p, vaultSegment); err != "" {
			return fail("vault path " + err)
		}
		if !vaultSegment.MatchString(field) {
			return fail("the vault field must match [A-Za-z0-9._-]+")
		}
		return Ref{Scheme: Vault, Path: p, Field: field}, nil
	}
	if strings.ContainsAny(host, "@:") {
		return fail("must not contain userinfo or a port")
	}
	return fail("the store must be env, file or vault")
}

// checkSegments returns why p is not a clean relative slash path of
// segments matching seg, or "" if it is.
func checkSegments(p string, seg *regexp.Regexp) string {
	for s := range strings.SplitSeq(p, "/") {
		switch {
		case s == "":
			return "must not have empty segments or a trailing slash"
		case s == "." || s == "..":
			return `must not have "." or ".." segments`
		case !seg.MatchString(s):
			return "has characters outside " + strings.Trim(seg.String(), "^$")
		}
	}
	return ""
}

// String renders r as a URI. It does not validate r; Parse does.
func (r Ref) String() string {
	switch r.Scheme {
	case File:
		return Prefix + string(File) + "/" + strings.TrimPrefix(r.Path, "/")
	case Vault:
		return Prefix + string(Vault) + "/" + r.Path + "#" + r.Field
	}
	return Prefix + string(r.Scheme) + "/" + r.Path
}
