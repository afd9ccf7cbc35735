package configcheck

import (
	"math"
	"net/url"
	"regexp"
	"strings"
)

// secretNames are the endings of key names that say "this is a
// credential", compared after lower-casing and dropping separators and a
// plural s: "api_key", "apiKey", "X-Api-Keys" all end in "apikey".
var secretNames = []string{
	"password", "passwd", "passphrase",
	"secret", // clientSecret, webhookSecret, secret_access_key is below
	"token",  // accessToken, api_token, jobToken, refreshToken
	"apikey", "privatekey", "accesskey", "secretkey", "secretaccesskey",
	"signingkey", "encryptionkey", "masterkey", "sharedkey",
	"credential", "authorization", "cookie", "sessionid",
}

func secretName(key string) bool {
	k := strings.NewReplacer("_", "", "-", "", ".", "", " ", "").Replace(strings.ToLower(key))
	k = strings.TrimSuffix(k, "s")
	for _, n := range secretNames {
		if strings.HasSuffix(k, n) {
			return true
		}
	}
	return false
}

// shapes are well-known credential formats, from the providers' own
// documentation of their token prefixes.
var shapes = []struct {
	what string
	re   *regexp.Regexp
}{
	{"a PEM private key", regexp.MustCompile(`-----BEGIN[A-Z0-9 ]* PRIVATE KEY-----`)},
	{"a PuTTY private key", regexp.MustCompile(`PuTTY-User-Key-File-`)},
	{"a GitHub token", regexp.MustCompile(`\b(ghp|gho|ghu|ghs|ghr)_[A-Za-z0-9]{30,}`)},
	{"a GitHub token", regexp.MustCompile(`\bgithub_pat_[A-Za-z0-9_]{22,}`)},
	{"a GitLab token", regexp.MustCompile(`\bgl(pat|dt|rt|ptt|cbt|oas|soat|ft|imt|agent)-[A-Za-z0-9_-]{20,}`)},
	{"an AWS access key id", regexp.MustCompile(`\b(AKIA|ASIA|ABIA|ACCA)[0-9A-Z]{16}\b`)},
	{"a Slack token", regexp.MustCompile(`\bxox[baprse]-[A-Za-z0-9-]{10,}`)},
	{"a Slack webhook URL", regexp.MustCompile(`hooks\.slack\.com/(services|workflows)/`)},
	{"a Google API key", regexp.MustCompile(`\bAIza[0-9A-Za-z_-]{35}\b`)},
	{"a Stripe key", regexp.MustCompile(`\b(sk|rk)_(live|test)_[0-9A-Za-z]{16,}`)},
	{"a JSON Web Token", regexp.MustCompile(`\beyJ[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*`)},
	{"a connection string with a password", regexp.MustCompile(`(?i)(^|;)\s*(password|pwd|accountkey|sharedaccesskey)\s*=`)},
}

// randomRun finds runs of token-like characters long enough to be keys.
var randomRun = regexp.MustCompile(`[A-Za-z0-9+/=_-]{32,}`)

// secretShape says what v looks like if it looks like a credential, or ""
// if it does not. entropy enables the guess on long random strings, for
// fields whose schema does not declare their shape.
func secretShape(v string, entropy bool) string {
	for _, s := range shapes {
		if s.re.MatchString(v) {
			return s.what
		}
	}
	if u, err := url.Parse(strings.TrimSpace(v)); err == nil && u.User != nil {
		if _, ok := u.User.Password(); ok {
			return "a URL with a password in it"
		}
	}
	if !entropy {
		return ""
	}
	lower := strings.ToLower(v)
	for _, p := range []string{"sha256:", "sha384:", "sha512:", "sha1:"} {
		if strings.HasPrefix(lower, p) {
			return "" // a content digest is public
		}
	}
	for _, run := range randomRun.FindAllString(v, -1) {
		if looksRandom(strings.TrimRight(run, "=")) {
			return "a random key or token"
		}
	}
	return ""
}

// looksRandom tells a key from a long word. Hex must mix letters and
// digits with near-maximal entropy. Base64 must mix upper case, lower case
// and digits, with high entropy, digits in more than one place and short
// runs of lower case: camel-case names ("ProjectNameForRelease2024") have
// entropy as high as a key but long lower-case runs and one digit run;
// paths, host names and UUIDs lack upper case.
func looksRandom(s string) bool {
	if len(s) < 32 {
		return false
	}
	var upper, lower, digit, hexLetter, other int
	var lowerRuns, digitRuns int
	prev := ' '
	for _, r := range s {
		switch {
		case r >= '0' && r <= '9':
			digit++
			if !(prev >= '0' && prev <= '9') {
				digitRuns++
			}
		case r >= 'a' && r <= 'z':
			lower++
			if r <= 'f' {
				hexLetter++
			}
			if !(prev >= 'a' && prev <= 'z') {
				lowerRuns++
			}
		case r >= 'A' && r <= 'Z':
			upper++
		default:
			other++
		}
		prev = r
	}
	h := shannon(s)
	if other == 0 && upper == 0 && lower == hexLetter {
		return digit > 0 && hexLetter > 0 && h >= 3.3
	}
	if upper < 2 || lower < 2 || digit < 2 || digitRuns < 2 || h < 4.0 {
		return false
	}
	return float64(lower)/float64(lowerRuns) <= 2.5
}

func shannon(s string) float64 {
	counts := map[rune]int{}
	n := 0
	for _, r := range s {
		counts[r]++
		n++
	}
	h := 0.0
	for _, c := range counts {
		p := float64(c) / float64(n)
		h -= p * math.Log2(p)
	}
	return h
}
