package authref_test

import (
	"errors"
	"math/rand"
	"reflect"
	"strings"
	"testing"
	"testing/quick"

	"inthub.dev/pkg/authref"
)

func TestParse(t *testing.T) {
	valid := []struct {
		in   string
		want authref.Ref
	}{
		{"authref://env/GITHUB_TOKEN", authref.Ref{Scheme: authref.Env, Path: "GITHUB_TOKEN"}},
		{"authref://env/_X1", authref.Ref{Scheme: authref.Env, Path: "_X1"}},
		{"authref://file/etc/inthub/key.pem", authref.Ref{Scheme: authref.File, Path: "/etc/inthub/key.pem"}},
		{"authref://file/run/secrets/gh-app_1.pem", authref.Ref{Scheme: authref.File, Path: "/run/secrets/gh-app_1.pem"}},
		{"authref://file/.hidden", authref.Ref{Scheme: authref.File, Path: "/.hidden"}},
		{"authref://vault/secret/data/inthub/github#privateKey", authref.Ref{Scheme: authref.Vault, Path: "secret/data/inthub/github", Field: "privateKey"}},
		{"authref://vault/kv#f", authref.Ref{Scheme: authref.Vault, Path: "kv", Field: "f"}},
	}
	for _, tt := range valid {
		got, err := authref.Parse(tt.in)
		if err != nil {
			t.Errorf("Parse(%q): %v", tt.in, err)
			continue
		}
		if got != tt.want {
			t.Errorf("Parse(%q) = %+v, want %+v", tt.in, got, tt.want)
		}
		if s := got.String(); s != tt.in {
			t.Errorf("Parse(%q).String() = %q", tt.in, s)
		}
	}

	invalid := []struct{ name, in, why string }{
		{"empty", "", "empty"},
		{"plain secret", "ghp_abcdefghijklmnopqrstuvwxyz0123456789", "must start with"},
		{"other scheme", "vault://secret/x#y", "must start with"},
		{"upper-case scheme", "AUTHREF://env/X", "must start with"},
		{"unknown store", "authref://aws/X", "env, file or vault"},
		{"no store", "authref:///X", "env, file or vault"},
		{"userinfo", "authref://user@env/X", "userinfo"},
		{"port", "authref://env:80/X", "port"},
		{"query", "authref://env/X?y=1", "query"},
		{"percent", "authref://file/etc/%2e%2e/shadow", "percent"},
		{"backslash", `authref://file/etc\passwd`, "backslash"},
		{"nothing after store", "authref://env", "missing"},
		{"slash only", "authref://env/", "missing"},
		{"env lower", "authref://env/github_token", "[A-Z_]"},
		{"env digit first", "authref://env/1X", "[A-Z_]"},
		{"env slash", "authref://env/A/B", "[A-Z_]"},
		{"env field", "authref://env/X#y", "no #field"},
		{"env space", "authref://env/X Y", "spaces"},
		{"env NUL", "authref://env/X\x00", "control"},
		{"file dotdot", "authref://file/etc/../shadow", `".."`},
		{"file leading dotdot", "authref://file/../etc/shadow", `".."`},
		{"file dot", "authref://file/etc/./x", `"."`},
		{"file double slash", "authref://file//etc/x", "empty segments"},
		{"file trailing slash", "authref://file/etc/", "trailing slash"},
		{"file NUL", "authref://file/etc/x\x00.pem", "control"},
		{"file fragment", "authref://file/etc/x#y", "no #field"},
		{"vault no field", "authref://vault/secret/x", "#field"},
		{"vault empty field", "authref://vault/secret/x#", "#field"},
		{"vault empty path", "authref://vault/#f", "empty segments"},
		{"vault dotdot", "authref://vault/secret/../other#f", `".."`},
		{"vault bad char", "authref://vault/secret/a:b#f", "characters outside"},
		{"vault bad field", "authref://vault/secret/a#f/g", "vault field"},
		{"vault two fields", "authref://vault/secret/a#f#g", "vault field"},
	}
	for _, tt := range invalid {
		t.Run(tt.name, func(t *testing.T) {
			_, err := authref.Parse(tt.in)
			if err == nil {
				t.Fatalf("Parse(%q) succeeded", tt.in)
			}
			if !errors.Is(err, authref.ErrSyntax) {
				t.Errorf("error does not wrap ErrSyntax: %v", err)
			}
			var se *authref.SyntaxError
			if !errors.As(err, &se) {
				t.Errorf("error is not a *SyntaxError: %T", err)
			}
			msg := err.Error()
			if !strings.Contains(msg, tt.why) {
				t.Errorf("error %q does not say %q", msg, tt.why)
			}
			if !strings.Contains(msg, authref.Forms) {
				t.Errorf("error %q does not list the valid forms", msg)
			}
			if tt.in != "" && strings.Contains(strings.ReplaceAll(msg, authref.Forms, ""), tt.in) {
				t.Errorf("error %q quotes the input", msg)
			}
		})
	}
}

func TestIsRef(t *testing.T) {
	if !authref.IsRef("authref://nope") || authref.IsRef("hunter2") {
		t.Fatal("IsRef does not go by the prefix")
	}
}

// validRef is a generator of references that Parse must accept.
type validRef struct{ authref.Ref }

const (
	upper     = "ABCDEFGHIJKLMNOPQRSTUVWXYZ_"
	upperNum  = upper + "0123456789"
	vaultChar = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-"
	fileChar  = vaultChar + "~+=@,:"
)

func word(r *rand.Rand, alphabet string, n int) string {
	var sb strings.Builder
	for range n {
		sb.WriteByte(alphabet[r.Intn(len(alphabet))])
	}
	return sb.String()
}

// segment draws a path segment that is not "." or "..".
func segment(r *rand.Rand, alphabet string) string {
	for {
		if s := word(r, alphabet, 1+r.Intn(12)); s != "." && s != ".." {
			return s
		}
	}
}

func segments(r *rand.Rand, alphabet string) string {
	parts := make([]string, 1+r.Intn(5))
	for i := range parts {
		parts[i] = segment(r, alphabet)
	}
	return strings.Join(parts, "/")
}

func (validRef) Generate(r *rand.Rand, _ int) reflect.Value {
	var ref authref.Ref
	switch r.Intn(3) {
	case 0:
		ref = authref.Ref{Scheme: authref.Env, Path: word(r, upper, 1) + word(r, upperNum, r.Intn(20))}
	case 1:
		ref = authref.Ref{Scheme: authref.File, Path: "/" + segments(r, fileChar)}
	default:
		ref = authref.Ref{Scheme: authref.Vault, Path: segments(r, vaultChar), Field: segment(r, vaultChar)}
	}
	return reflect.ValueOf(validRef{ref})
}

// TestRoundTrip: for every well-formed reference, rendering and parsing
// again gives the same reference.
func TestRoundTrip(t *testing.T) {
	prop := func(v validRef) bool {
		got, err := authref.Parse(v.String())
		if err != nil {
			t.Logf("Parse(%q): %v", v.String(), err)
			return false
		}
		return got == v.Ref
	}
	if err := quick.Check(prop, &quick.Config{MaxCount: 500}); err != nil {
		t.Fatal(err)
	}
}

// TestParseNeverEchoes: whatever string is given, an error does not contain it.
func TestParseNeverEchoes(t *testing.T) {
	prop := func(s string) bool {
		s = "authref://" + s + "SECRETxyz"
		_, err := authref.Parse(s)
		return err == nil || !strings.Contains(err.Error(), "SECRETxyz")
	}
	if err := quick.Check(prop, &quick.Config{MaxCount: 500}); err != nil {
		t.Fatal(err)
	}
}
