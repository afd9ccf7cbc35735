package doctor_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"inthub.dev/pkg/doctor"
)

// TestAllowList: read-only diagnostics pass; anything that could change
// something, or run something else, is refused.
func TestAllowList(t *testing.T) {
	for _, argv := range [][]string{
		{"dig", "+short", "{{host}}"},
		{"nslookup", "{{host}}"},
		{"openssl", "s_client", "-connect", "{{host}}:{{port}}", "-servername", "{{host}}", "-brief"},
		{"curl", "-I", "-s", "--max-time", "5", "{{endpoint}}"},
		{"curl", "--head", "https://status.example.com/"},
		{"nc", "-z", "-w", "3", "{{host}}", "{{port}}"},
	} {
		if err := doctor.Allowed(argv); err != nil {
			t.Errorf("%q refused: %v", argv, err)
		}
	}
	for _, tc := range []struct {
		argv []string
		want string
	}{
		{[]string{"rm", "-rf", "/"}, "not on the doctor's allow-list"},
		{[]string{"curl", "-X", "DELETE", "https://api.example.com/x"}, "option -X is not allowed"},
		{[]string{"curl", "-I", "-X", "DELETE", "https://api.example.com/x"}, "option -X is not allowed"},
		{[]string{"curl", "-I", "--request=DELETE", "https://api.example.com/x"}, "option --request is not allowed"},
		{[]string{"curl", "https://api.example.com/x"}, "needs -I or --head"},
		{[]string{"curl", "-I", "-o", "/etc/passwd", "https://x"}, "option -o is not allowed"},
		{[]string{"curl", "-I", "file:///etc/shadow"}, "only http(s) URLs"},
		{[]string{"curl", "-I", "-d", "x=1", "https://x"}, "option -d is not allowed"},
		{[]string{"sh", "-c", "curl -I https://x"}, "not on the doctor's allow-list"},
		{[]string{"bash", "-c", "dig x"}, "not on the doctor's allow-list"},
		{[]string{"/usr/bin/curl", "-I", "https://x"}, "bare name"},
		{[]string{"./dig", "x"}, "bare name"},
		{[]string{"openssl", "req", "-new"}, "only openssl s_client"},
		{[]string{"openssl", "s_client", "-connect", "x:443", "-sess_out", "/tmp/s"}, "option -sess_out is not allowed"},
		{[]string{"nc", "-l", "4444"}, "option -l is not allowed"},
		{[]string{"nc", "x", "22"}, "needs -z"},
		{[]string{"nc", "-z", "-e", "/bin/sh", "x", "1"}, "option -e is not allowed"},
		{[]string{"dig", "-f", "/etc/shadow"}, "option -f is not allowed"},
		{[]string{}, "empty"},
	} {
		err := doctor.Allowed(tc.argv)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: %v, want an error saying %q", tc.argv, err, tc.want)
		}
	}
}

func writePack(t *testing.T, dir, name, body string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
}

const goodPack = `name: http
description: the endpoint answers a HEAD request
checks:
  - id: head
    name: HEAD of the endpoint
    run:
      exec: [curl, -I, -s, --max-time, "5", "{{endpoint}}/"]
    parse:
      regex: '^HTTP/[0-9.]+ 2[0-9][0-9]'
    how_to_fix:
      summary: look at the answer
      commands: ["curl -I -v {{endpoint}}/"]
  - id: teapot
    run:
      exec: [curl, -I, -s, --max-time, "5", "{{endpoint}}/teapot"]
    parse:
      regex: '^HTTP/[0-9.]+ 2[0-9][0-9]'
      noMatch: warn
    how_to_fix:
      commands: ["curl -I -v {{endpoint}}/teapot"]
`

// TestLoadPacks: a directory of packs loads in name order; one pack whose
// command is not allow-listed refuses the whole load, naming the file and
// the check; so do unknown fields and a bad parse rule.
func TestLoadPacks(t *testing.T) {
	dir := t.TempDir()
	writePack(t, dir, "10-http.yaml", goodPack)
	writePack(t, dir, "README.md", "not a pack")
	packs, err := doctor.LoadPacks(dir)
	if err != nil || len(packs) != 1 || packs[0].Name != "http" || len(packs[0].Checks) != 2 {
		t.Fatalf("LoadPacks = %+v, %v", packs, err)
	}
	for _, tc := range []struct{ name, body, want string }{
		{"rm", "name: evil\nchecks:\n  - id: wipe\n    run:\n      exec: [rm, -rf, /var/lib/inthub]\n", "check wipe: run.exec \"rm\" is not on the doctor's allow-list"},
		{"delete", "name: evil\nchecks:\n  - id: del\n    run:\n      exec: [curl, -X, DELETE, \"{{endpoint}}/api/v4/projects/1\"]\n", "option -X is not allowed"},
		{"shell", "name: evil\nchecks:\n  - id: sh\n    run:\n      exec: [sh, -c, \"curl -I x; rm -rf /\"]\n", "\"sh\" is not on the doctor's allow-list"},
		{"unknown field", "name: p\nchecks:\n  - id: a\n    run:\n      exec: [dig, x]\n      shell: true\n", "field shell not found"},
		{"bad parse", "name: p\nchecks:\n  - id: a\n    run:\n      exec: [dig, x]\n    parse:\n      regex: x\n      match: ok\n", "want pass, warn or fail"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			writePack(t, dir, "10-http.yaml", goodPack)
			writePack(t, dir, "20-bad.yaml", tc.body)
			packs, err := doctor.LoadPacks(dir)
			if err == nil || !strings.Contains(err.Error(), "20-bad.yaml") || !strings.Contains(err.Error(), tc.want) || packs != nil {
				t.Errorf("LoadPacks = %v, %v; want a refusal naming 20-bad.yaml and %q", packs, err, tc.want)
			}
		})
	}
}

// TestPackRun: a pack's checks run against the target (curl -I through
// the allow-list), their parse rules decide the status, how_to_fix
// commands get the target's values, and the evidence records the argv
// and a digest of the output but not the output.
func TestPackRun(t *testing.T) {
	if _, err := exec.LookPath("curl"); err != nil {
		t.Skip("curl is not installed")
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Marker", "output-text-not-for-the-log")
		if r.URL.Path == "/teapot" {
			w.WriteHeader(http.StatusTeapot)
		}
	}))
	defer srv.Close()
	dir := t.TempDir()
	writePack(t, dir, "http.yaml", goodPack)
	packs, err := doctor.LoadPacks(dir)
	if err != nil {
		t.Fatal(err)
	}
	d := doctor.New(doctor.Options{Packs: packs})
	rep, ev := d.Run(context.Background(), doctor.Target{Type: "registry.oci", Endpoint: srv.URL})
	head := checkNamed(t, rep, "pack:http/head")
	if head.Status != doctor.StatusPass {
		t.Errorf("head = %+v", head)
	}
	teapot := checkNamed(t, rep, "pack:http/teapot")
	if teapot.Status != doctor.StatusWarn || teapot.HowToFix == nil || teapot.HowToFix.Commands[0] != "curl -I -v "+srv.URL+"/teapot" {
		t.Errorf("teapot = %+v", teapot)
	}
	if rep.OverallStatus != doctor.Degraded {
		t.Errorf("overall %s (checks %+v)", rep.OverallStatus, rep.Checks)
	}
	log := string(ev.Bytes())
	if !strings.Contains(log, `"argv":["curl","-I","-s","--max-time","5","`+srv.URL+`/"]`) || !strings.Contains(log, `"outputSha256":"`) {
		t.Errorf("evidence:\n%s", log)
	}
	if strings.Contains(log, "output-text-not-for-the-log") {
		t.Errorf("the evidence holds the command's output:\n%s", log)
	}
}

// TestPackHostileHost: a host that would read as an option is not
// substituted; the check is skipped, nothing runs.
func TestPackHostileHost(t *testing.T) {
	p, err := doctor.ParsePack([]byte("name: dns\nchecks:\n  - id: a\n    run:\n      exec: [nslookup, \"{{host}}\"]\n"))
	if err != nil {
		t.Fatal(err)
	}
	d := doctor.New(doctor.Options{Packs: []doctor.Pack{p}})
	rep, _ := d.Run(context.Background(), doctor.Target{Type: "x", Endpoint: "https://-evil.invalid"})
	if c := checkNamed(t, rep, "pack:dns/a"); c.Status != doctor.StatusSkip || !strings.Contains(c.Message, "no usable host") {
		t.Errorf("check = %+v", c)
	}
}

// TestExamplePack: the example pack that docs/doctor.md points at loads.
func TestExamplePack(t *testing.T) {
	packs, err := doctor.LoadPacks("testdata/packs")
	if err != nil || len(packs) != 1 || len(packs[0].Checks) != 4 {
		t.Fatalf("LoadPacks(testdata/packs) = %+v, %v", packs, err)
	}
}
