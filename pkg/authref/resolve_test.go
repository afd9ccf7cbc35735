package authref_test

import (
	"bytes"
	"context"
	"errors"
	"math/rand"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"testing/quick"
	"time"

	"inthub.dev/pkg/authref"
	"inthub.dev/pkg/fault"
)

func TestResolveEnv(t *testing.T) {
	const secret = "ghp_envSecretValue0123456789"
	lc := newLeakCheck(t, secret)
	t.Setenv("INTHUB_TEST_TOKEN", secret)
	t.Setenv("INTHUB_TEST_EMPTY", "")
	r := authref.NewResolver(authref.WithLogger(lc.logger()))

	tests := []struct {
		name    string
		ref     string
		want    string
		errHas  string
		errNot  string
		wantCls fault.Class
	}{
		{name: "present", ref: "authref://env/INTHUB_TEST_TOKEN", want: secret},
		{name: "missing", ref: "authref://env/INTHUB_TEST_MISSING", errHas: "INTHUB_TEST_MISSING", wantCls: fault.ClassPermanent},
		{name: "empty", ref: "authref://env/INTHUB_TEST_EMPTY", errHas: "INTHUB_TEST_EMPTY is empty", wantCls: fault.ClassPermanent},
		{name: "invalid ref", ref: "authref://env/lower", errHas: "invalid AuthRef", wantCls: fault.ClassPermanent},
		// A secret pasted where a reference belongs is refused without
		// being quoted.
		{name: "secret instead of a ref", ref: secret, errHas: "invalid AuthRef", wantCls: fault.ClassPermanent},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := r.Resolve(t.Context(), tt.ref)
			lc.err(err)
			if tt.errHas == "" {
				if err != nil {
					t.Fatalf("Resolve: %v", err)
				}
				if string(got) != tt.want {
					t.Fatalf("Resolve returned the wrong value (%d bytes)", len(got))
				}
				return
			}
			if err == nil {
				t.Fatal("Resolve succeeded")
			}
			if !strings.Contains(err.Error(), tt.errHas) {
				t.Errorf("error %q does not say %q", err, tt.errHas)
			}
			if c := fault.ClassOf(err); c != tt.wantCls {
				t.Errorf("class %v, want %v", c, tt.wantCls)
			}
		})
	}
}

func TestResolveFile(t *testing.T) {
	const secret = "-----BEGIN KEY-----\nfileSecretValue42\n-----END KEY-----"
	lc := newLeakCheck(t, "fileSecretValue42")
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	plain := write("plain.pem", secret)
	nl := write("nl.pem", secret+"\n")
	crlf := write("crlf.pem", secret+"\r\n")
	twoNL := write("two.pem", secret+"\n\n")
	exact := write("exact.bin", strings.Repeat("k", authref.MaxFileSize))
	large := write("large.bin", strings.Repeat("k", authref.MaxFileSize+1))
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	unreadable := write("unreadable.pem", secret)
	if err := os.Chmod(unreadable, 0); err != nil {
		t.Fatal(err)
	}

	r := authref.NewResolver(authref.WithLogger(lc.logger()))
	ref := func(p string) string { return "authref://file" + p }
	tests := []struct {
		name     string
		path     string
		want     string
		errHas   string
		skipRoot bool
	}{
		{name: "present", path: plain, want: secret},
		{name: "trailing newline trimmed", path: nl, want: secret},
		{name: "trailing CRLF trimmed", path: crlf, want: secret},
		{name: "only one newline trimmed", path: twoNL, want: secret + "\n"},
		{name: "exactly the limit", path: exact, want: strings.Repeat("k", authref.MaxFileSize)},
		{name: "too large", path: large, errHas: "larger than"},
		{name: "missing", path: filepath.Join(dir, "nope.pem"), errHas: filepath.Join(dir, "nope.pem") + " does not exist"},
		{name: "directory", path: dir, errHas: "not a regular file"},
		{name: "fifo does not block", path: fifo, errHas: "not a regular file"},
		{name: "unreadable", path: unreadable, errHas: "not readable", skipRoot: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.skipRoot && os.Geteuid() == 0 {
				t.Skip("root reads any file")
			}
			got, err := r.Resolve(t.Context(), ref(tt.path))
			lc.err(err)
			if tt.errHas == "" {
				if err != nil {
					t.Fatalf("Resolve: %v", err)
				}
				if string(got) != tt.want {
					t.Fatalf("Resolve returned %d bytes, want %d", len(got), len(tt.want))
				}
				return
			}
			if err == nil {
				t.Fatal("Resolve succeeded")
			}
			if !strings.Contains(err.Error(), tt.errHas) {
				t.Errorf("error %q does not say %q", err, tt.errHas)
			}
			if c := fault.ClassOf(err); c != fault.ClassPermanent {
				t.Errorf("class %v, want permanent", c)
			}
		})
	}
}

func TestResolveFileRoot(t *testing.T) {
	const secret = "rootedSecretValue77"
	lc := newLeakCheck(t, secret)
	root := t.TempDir()
	outside := t.TempDir()
	if err := os.WriteFile(filepath.Join(root, "in.pem"), []byte(secret), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(outside, "out.pem"), []byte(secret), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(outside, "out.pem"), filepath.Join(root, "link.pem")); err != nil {
		t.Fatal(err)
	}
	r := authref.NewResolver(authref.WithFileRoot(root), authref.WithLogger(lc.logger()))
	if err := r.Validate(); err != nil {
		t.Fatal(err)
	}
	got, err := r.Resolve(t.Context(), "authref://file"+filepath.Join(root, "in.pem"))
	if lc.err(err) != nil || string(got) != secret {
		t.Fatalf("inside the root: %v", err)
	}
	for name, p := range map[string]string{
		"outside":               filepath.Join(outside, "out.pem"),
		"symlink out":           filepath.Join(root, "link.pem"),
		"the root's own prefix": root + "x/in.pem",
	} {
		_, err := r.Resolve(t.Context(), "authref://file"+p)
		lc.err(err)
		if err == nil || !strings.Contains(err.Error(), "outside the directory") {
			t.Errorf("%s: error %v, want outside the directory", name, err)
		}
		if fault.ClassOf(err) != fault.ClassPermanent {
			t.Errorf("%s: class %v", name, fault.ClassOf(err))
		}
	}
	if err := authref.NewResolver(authref.WithFileRoot("relative/dir")).Validate(); err == nil {
		t.Error("a relative file root passed Validate")
	}
}

func TestCacheTTL(t *testing.T) {
	lc := newLeakCheck(t, "value-one-xyz", "value-two-xyz")
	clock := newClock()
	var h hookLog
	t.Setenv("INTHUB_TTL", "value-one-xyz")
	r := authref.NewResolver(authref.WithNow(clock.Now), authref.WithTTL(time.Minute),
		authref.WithHook(h.hook), authref.WithLogger(lc.logger()))
	const ref = "authref://env/INTHUB_TTL"

	resolve := func(want string, cached bool) {
		t.Helper()
		got, err := r.Resolve(t.Context(), ref)
		if lc.err(err) != nil {
			t.Fatal(err)
		}
		if string(got) != want {
			t.Fatalf("got the wrong value (%d bytes)", len(got))
		}
		if ev := h.last(t); ev.Cached != cached {
			t.Fatalf("Cached = %v, want %v", ev.Cached, cached)
		}
	}
	resolve("value-one-xyz", false)
	os.Setenv("INTHUB_TTL", "value-two-xyz")
	resolve("value-one-xyz", true)
	clock.Advance(time.Minute - time.Nanosecond)
	resolve("value-one-xyz", true)
	clock.Advance(time.Nanosecond)
	resolve("value-two-xyz", false)
	resolve("value-two-xyz", true)

	// Rotation: Forget and Purge make the next call read the store.
	os.Setenv("INTHUB_TTL", "value-one-xyz")
	r.Forget(ref)
	resolve("value-one-xyz", false)
	os.Setenv("INTHUB_TTL", "value-two-xyz")
	r.Purge()
	resolve("value-two-xyz", false)

	// TTL 0: no cache at all.
	r0 := authref.NewResolver(authref.WithNow(clock.Now), authref.WithTTL(0), authref.WithHook(h.hook))
	for range 3 {
		if _, err := r0.Resolve(t.Context(), ref); err != nil {
			t.Fatal(err)
		}
		if h.last(t).Cached {
			t.Fatal("TTL 0 served from the cache")
		}
	}
}

func TestCacheBound(t *testing.T) {
	clock := newClock()
	var h hookLog
	for _, v := range []string{"A", "B", "C"} {
		t.Setenv("INTHUB_BOUND_"+v, "v"+v)
	}
	r := authref.NewResolver(authref.WithNow(clock.Now), authref.WithMaxEntries(2), authref.WithHook(h.hook))
	cached := func(v string) bool {
		t.Helper()
		got, err := r.Resolve(t.Context(), "authref://env/INTHUB_BOUND_"+v)
		if err != nil || string(got) != "v"+v {
			t.Fatalf("Resolve %s: %q, %v", v, got, err)
		}
		return h.last(t).Cached
	}
	cached("A")
	cached("B")
	if !cached("A") { // A is now the most recently used
		t.Fatal("A not cached")
	}
	cached("C") // evicts B, the least recently used
	if !cached("A") || !cached("C") {
		t.Fatal("A or C was evicted instead of B")
	}
	if cached("B") {
		t.Fatal("B survived: the cache holds more than 2 entries")
	}
}

func TestResolveReturnsFreshCopy(t *testing.T) {
	t.Setenv("INTHUB_COPY", "copy-me-please")
	r := authref.NewResolver()
	for range 3 {
		got, err := r.Resolve(t.Context(), "authref://env/INTHUB_COPY")
		if err != nil || string(got) != "copy-me-please" {
			t.Fatalf("Resolve: %q, %v", got, err)
		}
		clear(got) // the caller zeroes its copy; the cache must not notice
	}
}

// TestHookSeesEveryResolution: cached, uncached, failed and malformed
// resolutions all reach the hook, with the reference and never the secret.
func TestHookSeesEveryResolution(t *testing.T) {
	lc := newLeakCheck(t, "hook-secret-value")
	clock := newClock()
	h := hookLog{lc: lc}
	t.Setenv("INTHUB_HOOK", "hook-secret-value")
	r := authref.NewResolver(authref.WithNow(clock.Now), authref.WithHook(h.hook), authref.WithLogger(lc.logger()))
	calls := []struct {
		ref    string
		wantEv authref.Resolution
		fails  bool
	}{
		{"authref://env/INTHUB_HOOK", authref.Resolution{Ref: "authref://env/INTHUB_HOOK", Scheme: authref.Env}, false},
		{"authref://env/INTHUB_HOOK", authref.Resolution{Ref: "authref://env/INTHUB_HOOK", Scheme: authref.Env, Cached: true}, false},
		{"authref://env/INTHUB_HOOK_NONE", authref.Resolution{Ref: "authref://env/INTHUB_HOOK_NONE", Scheme: authref.Env}, true},
		{"authref://file/nonexistent/x", authref.Resolution{Ref: "authref://file/nonexistent/x", Scheme: authref.File}, true},
		{"authref://vault/secret/x#y", authref.Resolution{Ref: "authref://vault/secret/x#y", Scheme: authref.Vault}, true},
		{"hook-secret-value", authref.Resolution{}, true},
	}
	for i, c := range calls {
		clock.Advance(time.Second)
		_, err := r.Resolve(t.Context(), c.ref)
		lc.err(err)
		evs := h.all()
		if len(evs) != i+1 {
			t.Fatalf("after %d calls the hook saw %d resolutions", i+1, len(evs))
		}
		ev := evs[i]
		if (ev.Err != nil) != c.fails || (err != nil) != c.fails {
			t.Errorf("%s: hook error %v, Resolve error %v", c.ref, ev.Err, err)
		}
		if ev.Err != nil && !errors.Is(err, ev.Err) && ev.Err.Error() != err.Error() {
			t.Errorf("%s: hook error %v differs from Resolve's %v", c.ref, ev.Err, err)
		}
		if !ev.At.Equal(clock.Now()) {
			t.Errorf("%s: At = %v, want %v", c.ref, ev.At, clock.Now())
		}
		ev.Err, ev.At = nil, time.Time{}
		if !reflect.DeepEqual(ev, c.wantEv) {
			t.Errorf("%s: hook saw %+v, want %+v", c.ref, ev, c.wantEv)
		}
	}
}

// TestResolveCancelled: a caller whose context ends stops waiting even if
// the read it joined does not.
func TestResolveCancelled(t *testing.T) {
	fv := newFakeVault(t)
	block := make(chan struct{})
	defer close(block)
	fv.configure(func(c *fakeCfg) { c.block = block })
	var h hookLog
	r := authref.NewResolver(authref.WithVault(fv.tokenConfig()), authref.WithHook(h.hook))
	t.Cleanup(r.Close)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		_, err := r.Resolve(ctx, "authref://vault/secret/inthub/github#token")
		done <- err
	}()
	fv.waitRequests(t, 1)
	cancel()
	err := <-done
	if !errors.Is(err, context.Canceled) || fault.ClassOf(err) != fault.ClassTransient {
		t.Fatalf("error %v (class %v), want a transient cancellation", err, fault.ClassOf(err))
	}
	if ev := h.last(t); ev.Err == nil {
		t.Error("the hook did not see the cancelled resolution fail")
	}
}

// TestAuthenticationSupport is the "authentication support" property of
// DESIGN §9 as this package means it: for any credential held in an
// environment variable, Resolve(authref://env/NAME) returns exactly that
// credential, and nothing the Resolver logs contains it.
func TestAuthenticationSupport(t *testing.T) {
	lc := newLeakCheck(t)
	// No cache: two cases may draw the same name with different values.
	r := authref.NewResolver(authref.WithTTL(0), authref.WithLogger(lc.logger()))
	n := 0
	prop := func(c envCred) bool {
		n++
		lc.addSecret(c.Value)
		t.Setenv(c.Name, c.Value)
		ref := "authref://env/" + c.Name
		got, err := r.Resolve(t.Context(), ref)
		if lc.err(err) != nil {
			t.Logf("Resolve(%s): %v", ref, err)
			return false
		}
		if !bytes.Equal(got, []byte(c.Value)) {
			t.Logf("Resolve(%s) returned the wrong value", ref)
			return false
		}
		// The log is the one the leak check searches: it must really have
		// recorded this resolution for the search to mean anything.
		if !strings.Contains(lc.buf.String(), ref) {
			t.Logf("the log does not mention %s", ref)
			return false
		}
		if s := lc.find(); s != "" {
			t.Log(s)
			return false
		}
		return true
	}
	if err := quick.Check(prop, &quick.Config{MaxCount: 200}); err != nil {
		t.Fatal(err)
	}
	if n < 100 {
		t.Fatalf("only %d cases ran", n)
	}
}

// envCred is a generated environment variable: a valid name and a
// credential-like value of printable ASCII and some non-ASCII runes.
type envCred struct{ Name, Value string }

func (envCred) Generate(r *rand.Rand, _ int) reflect.Value {
	const (
		nameChars = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_"
		// No NUL (the environment cannot hold it).
		valueChars = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.~+/=!@#$%^&*()[]{}<>?,;:'\"\\| "
	)
	var name strings.Builder
	name.WriteString("INTHUB_PROP_")
	for range 1 + r.Intn(16) {
		name.WriteByte(nameChars[r.Intn(len(nameChars))])
	}
	var val strings.Builder
	// Long enough that it cannot occur in a log line by chance.
	for range 16 + r.Intn(48) {
		if r.Intn(10) == 0 {
			val.WriteRune([]rune("éß€漢🔑\t")[r.Intn(6)])
		} else {
			val.WriteByte(valueChars[r.Intn(len(valueChars))])
		}
	}
	return reflect.ValueOf(envCred{Name: name.String(), Value: val.String()})
}
