package main

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestCatalogHelp(t *testing.T) {
	tests := [][]string{
		{"integrations", "--help"}, {"types", "-h"}, {"help", "integrations"}, {"help", "migrate"},
		{"migrate", "--help"}, {"integrations", "list", "--help"}, {"integrations", "get", "-h"},
		{"integrations", "create", "--help"}, {"integrations", "update", "--help"},
		{"integrations", "delete", "--help"}, {"types", "list", "--help"}, {"types", "get", "--help"},
	}
	for _, args := range tests {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			// No token and no server: help needs neither.
			r := runWith(context.Background(), nil, args...)
			if r.code != exitOK || !strings.HasPrefix(r.stdout, "Usage: inthubctl") || r.stderr != "" {
				t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
			}
		})
	}
	r := runWith(context.Background(), nil, "--help")
	for _, want := range []string{"integrations list", "integrations update <id>", "types get <id>", "migrate ", "--server", "--token", "INTHUB_TOKEN", "DATABASE_URL"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("inthubctl --help lacks %q:\n%s", want, r.stdout)
		}
	}
	r = runWith(context.Background(), nil, "integrations", "update", "--help")
	for _, want := range []string{"--if-match VERSION", "--config JSON", "--auth-ref URI", "--status STATUS", "--name NAME", "--server URL", "--token TOKEN", "-o FORMAT"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("integrations update --help lacks %q:\n%s", want, r.stdout)
		}
	}
	if strings.Contains(r.stdout, "--nats-url") {
		t.Errorf("integrations update --help offers --nats-url, which it does not use:\n%s", r.stdout)
	}
	r = runWith(context.Background(), nil, "migrate", "--help")
	if !strings.Contains(r.stdout, "--database-url URL") || strings.Contains(r.stdout, "--token") {
		t.Errorf("migrate --help:\n%s", r.stdout)
	}
}

// Usage errors exit 2 before any request reaches the API.
func TestCatalogUsageErrors(t *testing.T) {
	f := newFakeCatalog(t)
	cfgFile := filepath.Join(t.TempDir(), "list.json")
	if err := os.WriteFile(cfgFile, []byte(`[1, 2]`), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"integrations"}, "missing integrations command"},
		{[]string{"integrations", "rename"}, "unknown integrations command"},
		{[]string{"types", "delete"}, "unknown types command"},
		{[]string{"integrations", "list", "--bogus"}, "bogus"},
		{[]string{"integrations", "list", "--nats-url", "nats://x"}, "nats-url"},
		{[]string{"integrations", "list", "extra"}, "unexpected argument"},
		{[]string{"integrations", "list", "-o", "yaml"}, "not table or json"},
		{[]string{"integrations", "list", "--limit", "-1"}, "--limit"},
		{[]string{"integrations", "list", "--limit", "501"}, "--limit"},
		{[]string{"integrations", "list", "--limit", "many"}, "limit"},
		{[]string{"integrations", "get"}, "exactly one <id>"},
		{[]string{"integrations", "get", "a", "b"}, "exactly one <id>"},
		{[]string{"integrations", "create", "--name", "x"}, "--type required"},
		{[]string{"integrations", "create", "--type", "scm.github"}, "--name required"},
		{[]string{"integrations", "create"}, "--type and --name required"},
		{[]string{"integrations", "create", "--type", "scm.github", "--name", "x", "--config", "{not json"}, "--config"},
		{[]string{"integrations", "create", "--type", "scm.github", "--name", "x", "--config", "[1]"}, "JSON object"},
		{[]string{"integrations", "create", "--type", "scm.github", "--name", "x", "--config", "null"}, "JSON object"},
		{[]string{"integrations", "create", "--type", "scm.github", "--name", "x", "--config", "@" + cfgFile}, "JSON object"},
		{[]string{"integrations", "create", "--type", "scm.github", "--name", "x", "--config", "@/nonexistent/cfg.json"}, "no such file"},
		{[]string{"integrations", "create", "--type", "scm.github", "--name", "x", "--status", "paused"}, "--status"},
		{[]string{"integrations", "update", "some-id"}, "nothing to change"},
		{[]string{"integrations", "update", "--name", "x"}, "exactly one <id>"},
		{[]string{"integrations", "update", "some-id", "--name", ""}, "cannot be empty"},
		{[]string{"integrations", "update", "some-id", "--name", "x", "--if-match", "latest"}, "--if-match"},
		{[]string{"integrations", "update", "some-id", "--name", "x", "--if-match", "0"}, "--if-match"},
		{[]string{"integrations", "delete", "some-id", "--if-match", "v2"}, "--if-match"},
		{[]string{"types", "get"}, "exactly one <id>"},
		{[]string{"types", "list", "scm.github"}, "unexpected argument"},
		{[]string{"--server", "ftp://host", "types", "list"}, "--server"},
		{[]string{"types", "list", "--server", "127.0.0.1:8080"}, "--server"},
		{[]string{"types", "list", "--server", "http://user:pw@host"}, "--server"},
		{[]string{"migrate", "extra"}, "unexpected argument"},
		{[]string{"migrate", "--server", "http://x"}, "server"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			before := len(f.reqs())
			r := f.run(tt.args...)
			if r.code != exitUsage || !strings.Contains(r.stderr, tt.want) || !strings.Contains(r.stderr, "--help") {
				t.Fatalf("exit %d, stderr %q; want exit 2 with %q and a pointer to --help", r.code, r.stderr, tt.want)
			}
			if n := len(f.reqs()) - before; n != 0 {
				t.Errorf("a usage error sent %d requests", n)
			}
		})
	}
}

func TestCatalogMissingToken(t *testing.T) {
	f := newFakeCatalog(t)
	for _, args := range [][]string{{"integrations", "list"}, {"types", "list"}, {"integrations", "delete", "x"}} {
		r := runWith(context.Background(), map[string]string{"INTHUB_SERVER": f.srv.URL}, args...)
		if r.code != exitUsage || !strings.Contains(r.stderr, "no API token") || !strings.Contains(r.stderr, "--token") || !strings.Contains(r.stderr, "INTHUB_TOKEN") {
			t.Errorf("%v without a token: exit %d, %q", args, r.code, r.stderr)
		}
	}
	if n := len(f.reqs()); n != 0 {
		t.Errorf("%d requests sent without a token", n)
	}
	// The flag, before or after the command, stands in for the variable.
	for _, args := range [][]string{
		{"--token", f.token, "types", "list"},
		{"types", "list", "--token", f.token},
		{"--server", f.srv.URL, "--token", f.token, "types", "list"},
	} {
		r := runWith(context.Background(), map[string]string{"INTHUB_SERVER": f.srv.URL}, args...)
		if r.code != exitOK {
			t.Errorf("%v: exit %d, %s", args, r.code, r.stderr)
		}
	}
	// A token the server refuses: the problem, and what to do about it.
	r := runWith(context.Background(), map[string]string{"INTHUB_SERVER": f.srv.URL, "INTHUB_TOKEN": "expired"}, "integrations", "list")
	want := "error: Unauthorized (401): the token is not valid\nhint: the token was refused: check --token or INTHUB_TOKEN"
	if r.code != exitError || !strings.HasPrefix(r.stderr, want) || r.stdout != "" {
		t.Errorf("refused token: exit %d, stderr %q, want it to start %q", r.code, r.stderr, want)
	}
}

func tableRows(t *testing.T, out string) (header []string, rows [][]string) {
	t.Helper()
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	if len(lines) == 0 {
		t.Fatalf("no table:\n%s", out)
	}
	header = strings.Fields(lines[0])
	for _, l := range lines[1:] {
		rows = append(rows, strings.Fields(l))
	}
	return header, rows
}

var integrationHeader = []string{"ID", "NAME", "TYPE", "STATUS", "HEALTH", "VERSION", "UPDATED"}

func TestIntegrationsLifecycle(t *testing.T) {
	f := newFakeCatalog(t)

	// create: a one-row table.
	r := f.run("integrations", "create", "--type", "scm.github", "--name", "acme-gh",
		"--config", `{"appId": 42, "privateKey": "authref://vault/gh#key"}`, "--auth-ref", "authref://env/GH_TOKEN")
	if r.code != exitOK {
		t.Fatalf("create: exit %d: %s", r.code, r.stderr)
	}
	header, rows := tableRows(t, r.stdout)
	if !slices.Equal(header, integrationHeader) || len(rows) != 1 {
		t.Fatalf("create table:\n%s", r.stdout)
	}
	id := rows[0][0]
	wantRow := []string{id, "acme-gh", "scm.github", "active", "unknown", "1", fakeEpoch.Add(time.Minute).Format(time.RFC3339)}
	if !slices.Equal(rows[0], wantRow) {
		t.Errorf("create row = %q, want %q", rows[0], wantRow)
	}
	post := f.reqs()[0]
	if post.method != http.MethodPost || post.path != "/api/v1/integrations" ||
		post.body != `{"type":"scm.github","name":"acme-gh","config":{"appId":42,"privateKey":"authref://vault/gh#key"},"authRef":"authref://env/GH_TOKEN"}` {
		t.Errorf("POST = %+v", post)
	}

	// create -o json prints the API's document.
	r = f.run("integrations", "create", "--type", "test.inmemory", "--name", "double", "-o", "json")
	if r.code != exitOK {
		t.Fatalf("create -o json: exit %d: %s", r.code, r.stderr)
	}
	var created map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &created); err != nil {
		t.Fatalf("%v\n%s", err, r.stdout)
	}
	for _, k := range []string{"id", "tenantId", "type", "name", "config", "status", "healthStatus", "version", "createdAt", "updatedAt"} {
		if _, ok := created[k]; !ok {
			t.Errorf("create -o json lacks %q: %s", k, r.stdout)
		}
	}
	if created["name"] != "double" || created["version"] != 1.0 {
		t.Errorf("created = %v", created)
	}

	// list: both, in the API's order.
	r = f.run("integrations", "list")
	header, rows = tableRows(t, r.stdout)
	if r.code != exitOK || !slices.Equal(header, integrationHeader) || len(rows) != 2 || rows[0][0] != id || rows[1][1] != "double" {
		t.Fatalf("list: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	r = f.run("integrations", "list", "--type", "test.inmemory", "-o", "json")
	var page struct {
		Items []map[string]any `json:"items"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &page); err != nil || r.code != exitOK || len(page.Items) != 1 || page.Items[0]["type"] != "test.inmemory" {
		t.Fatalf("list --type -o json: exit %d, %v\n%s", r.code, err, r.stdout)
	}
	if q := f.reqs()[len(f.reqs())-1].query; q != "type=test.inmemory" {
		t.Errorf("list --type sent ?%s", q)
	}

	// get: every field and the config.
	r = f.run("integrations", "get", id)
	if r.code != exitOK {
		t.Fatalf("get: exit %d: %s", r.code, r.stderr)
	}
	for _, want := range []string{"ID:", id, "Name:", "acme-gh", "Tenant:", fakeTenant, "Auth ref:", "authref://env/GH_TOKEN",
		"Version:", "Created:", "by tester", "Config:", `"appId": 42`, `"privateKey": "authref://vault/gh#key"`} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("get lacks %q:\n%s", want, r.stdout)
		}
	}

	// update: GET, then PUT of the whole input with the GET's ETag.
	n := len(f.reqs())
	r = f.run("integrations", "update", id, "--name", "acme-github", "--status", "disabled")
	if r.code != exitOK {
		t.Fatalf("update: exit %d: %s", r.code, r.stderr)
	}
	_, rows = tableRows(t, r.stdout)
	if len(rows) != 1 || rows[0][1] != "acme-github" || rows[0][3] != "disabled" || rows[0][5] != "2" {
		t.Errorf("update table:\n%s", r.stdout)
	}
	reqs := f.reqs()[n:]
	if len(reqs) != 2 || reqs[0].method != http.MethodGet || reqs[1].method != http.MethodPut || reqs[1].ifMatch != `"1"` {
		t.Fatalf("update requests = %+v", reqs)
	}
	var put map[string]json.RawMessage
	if err := json.Unmarshal([]byte(reqs[1].body), &put); err != nil {
		t.Fatal(err)
	}
	wantPut := map[string]string{"type": `"scm.github"`, "name": `"acme-github"`, "status": `"disabled"`,
		"authRef": `"authref://env/GH_TOKEN"`, "config": `{"appId":42,"privateKey":"authref://vault/gh#key"}`}
	if len(put) != len(wantPut) {
		t.Errorf("PUT body = %s, want exactly the fields %v", reqs[1].body, wantPut)
	}
	for k, v := range wantPut {
		if string(put[k]) != v {
			t.Errorf("PUT %s = %s, want %s", k, put[k], v)
		}
	}

	// delete with a stale --if-match: 412, nothing deleted.
	r = f.run("integrations", "delete", id, "--if-match", "1")
	if r.code != exitError || !strings.HasPrefix(r.stderr, "error: Precondition Failed (412): the resource has changed since it was read\n  header.If-Match: ") {
		t.Fatalf("stale delete: exit %d, %q", r.code, r.stderr)
	}
	r = f.run("integrations", "delete", id, "--if-match", `"2"`)
	if r.code != exitOK || r.stdout != "deleted integration "+id+"\n" {
		t.Fatalf("delete: exit %d, %q, %s", r.code, r.stdout, r.stderr)
	}
	if last := f.reqs()[len(f.reqs())-1]; last.method != http.MethodDelete || last.ifMatch != `"2"` || last.path != "/api/v1/integrations/"+id {
		t.Errorf("DELETE = %+v", last)
	}
	r = f.run("integrations", "get", id)
	if r.code != exitError || r.stderr != "error: Not Found (404): not found\n" || r.stdout != "" {
		t.Errorf("get after delete: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	r = f.run("integrations", "delete", created["id"].(string), "-o", "json")
	if r.code != exitOK || strings.Join(strings.Fields(r.stdout), "") != `{"id":"`+created["id"].(string)+`","deleted":true}` {
		t.Errorf("delete -o json: exit %d, %q", r.code, r.stdout)
	}
}

func TestIntegrationsListPages(t *testing.T) {
	f := newFakeCatalog(t)
	var ids []string
	for _, name := range []string{"a", "b", "c", "d", "e"} {
		ids = append(ids, f.add("test.inmemory", name).ID)
	}
	f.add("scm.github", "gh")

	r := f.run("integrations", "list", "--limit", "2")
	_, rows := tableRows(t, r.stdout)
	if r.code != exitOK || len(rows) != 2 || rows[0][0] != ids[0] || rows[1][0] != ids[1] {
		t.Fatalf("one page: exit %d\n%s", r.code, r.stdout)
	}
	if !strings.Contains(r.stderr, "--cursor c2") || !strings.Contains(r.stderr, "--all") {
		t.Errorf("no pointer to the next page on stderr: %q", r.stderr)
	}
	r = f.run("integrations", "list", "--limit", "2", "--cursor", "c2")
	_, rows = tableRows(t, r.stdout)
	if r.code != exitOK || len(rows) != 2 || rows[0][0] != ids[2] {
		t.Fatalf("--cursor: exit %d\n%s", r.code, r.stdout)
	}

	n := len(f.reqs())
	r = f.run("integrations", "list", "--all", "--limit", "2", "--type", "test.inmemory")
	_, rows = tableRows(t, r.stdout)
	var got []string
	for _, row := range rows {
		got = append(got, row[0])
	}
	if r.code != exitOK || !slices.Equal(got, ids) || r.stderr != "" {
		t.Fatalf("--all: exit %d, ids %v, want %v\n%s", r.code, got, ids, r.stderr)
	}
	var queries []string
	for _, q := range f.reqs()[n:] {
		queries = append(queries, q.query)
	}
	if want := []string{"limit=2&type=test.inmemory", "cursor=c2&limit=2&type=test.inmemory", "cursor=c4&limit=2&type=test.inmemory"}; !slices.Equal(queries, want) {
		t.Errorf("--all queries = %q, want %q", queries, want)
	}

	r = f.run("integrations", "list", "--all", "--limit", "4", "-o", "json")
	var all map[string]json.RawMessage
	if err := json.Unmarshal([]byte(r.stdout), &all); err != nil || r.code != exitOK {
		t.Fatalf("--all -o json: exit %d, %v\n%s", r.code, err, r.stdout)
	}
	var items []map[string]any
	_ = json.Unmarshal(all["items"], &items)
	if _, ok := all["nextCursor"]; ok || len(items) != 6 || items[5]["name"] != "gh" {
		t.Errorf("--all -o json = %s", r.stdout)
	}

	// One page with -o json is the API's page, nextCursor included.
	r = f.run("integrations", "list", "--limit", "1", "-o", "json")
	var one struct {
		Items      []json.RawMessage `json:"items"`
		NextCursor string            `json:"nextCursor"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &one); err != nil || len(one.Items) != 1 || one.NextCursor != "c1" {
		t.Errorf("one page -o json = %s (%v)", r.stdout, err)
	}

	// An empty list is a header, or an empty items array.
	r = f.run("integrations", "list", "--cursor", "c6")
	if h, rows := tableRows(t, r.stdout); r.code != exitOK || !slices.Equal(h, integrationHeader) || len(rows) != 0 {
		t.Errorf("empty list:\n%s", r.stdout)
	}
	r = f.run("integrations", "list", "--cursor", "bogus")
	if r.code != exitError || !strings.HasPrefix(r.stderr, "error: Bad Request (400): bad cursor\n  query.cursor: ") {
		t.Errorf("bad cursor: exit %d, %q", r.code, r.stderr)
	}
}

// A change made by someone else between update's GET and its PUT makes the
// PUT fail with 412 instead of overwriting it.
func TestUpdateDoesNotOverwriteAConcurrentEdit(t *testing.T) {
	f := newFakeCatalog(t)
	it := f.add("test.inmemory", "mine")
	f.beforeWrite = func(it *fakeIntegration) {
		it.Name, it.Config = "theirs", json.RawMessage(`{"healthy":false}`)
		it.Version++
		f.beforeWrite = nil
	}
	r := f.run("integrations", "update", it.ID, "--config", `{"healthy": true}`)
	if r.code != exitError {
		t.Fatalf("exit %d, stdout %q; want 1", r.code, r.stdout)
	}
	want := "error: Precondition Failed (412): the resource has changed since it was read\n" +
		"  header.If-Match: does not match the current version; read it again and retry\n" +
		"hint: the integration changed since it was read: get it again and retry\n"
	if r.stderr != want {
		t.Errorf("stderr:\n%s\nwant:\n%s", r.stderr, want)
	}
	f.mu.Lock()
	name, cfg, v := it.Name, string(it.Config), it.Version
	f.mu.Unlock()
	if name != "theirs" || cfg != `{"healthy":false}` || v != 2 {
		t.Errorf("the concurrent edit was overwritten: name %q config %s version %d", name, cfg, v)
	}

	// Read again and retry: it goes through.
	r = f.run("integrations", "update", it.ID, "--config", `{"healthy": true}`, "-o", "json")
	var got map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &got); err != nil || r.code != exitOK {
		t.Fatalf("retry: exit %d, %v, %s", r.code, err, r.stderr)
	}
	if got["name"] != "theirs" || got["version"] != 3.0 || got["config"].(map[string]any)["healthy"] != true {
		t.Errorf("after retry: %v", got)
	}

	// --if-match pins the version the operator saw, not the one read now.
	r = f.run("integrations", "update", it.ID, "--name", "late", "--if-match", "2")
	if r.code != exitError || !strings.Contains(r.stderr, "(412)") {
		t.Errorf("stale --if-match: exit %d, %q", r.code, r.stderr)
	}
	if last := f.reqs()[len(f.reqs())-1]; last.method != http.MethodPut || last.ifMatch != `"2"` {
		t.Errorf("PUT with --if-match 2 sent If-Match %q", last.ifMatch)
	}
}

func TestUpdateChangesOnlyTheGivenFields(t *testing.T) {
	f := newFakeCatalog(t)
	f.mu.Lock()
	it := f.insert(fakeInput{Type: "scm.github", Name: "gh", Config: json.RawMessage(`{"appId":1}`), AuthRef: "authref://env/OLD", Status: "offline"})
	f.mu.Unlock()
	cfg := filepath.Join(t.TempDir(), "cfg.json")
	if err := os.WriteFile(cfg, []byte("{\n  \"appId\": 7,\n  \"privateKey\": \"authref://file/key.pem\"\n}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// An empty --auth-ref clears it; --config @file replaces the config.
	r := f.run("integrations", "update", it.ID, "--auth-ref", "", "--config", "@"+cfg)
	if r.code != exitOK {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	put := f.reqs()[len(f.reqs())-1]
	if want := `{"type":"scm.github","name":"gh","config":{"appId":7,"privateKey":"authref://file/key.pem"},"status":"offline"}`; put.body != want {
		t.Errorf("PUT body = %s\nwant       %s", put.body, want)
	}
}

func TestCatalogProblemOutput(t *testing.T) {
	f := newFakeCatalog(t)
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"unknown type", []string{"integrations", "create", "--type", "scm.nope", "--name", "x"},
			"error: Unprocessable Entity (422): unknown integration type\n  body.type: no such integration type; see GET /api/v1/integration-types\n"},
		{"secret in clear", []string{"integrations", "create", "--type", "test.inmemory", "--name", "x", "--config", `{"password":"hunter2"}`},
			"error: Unprocessable Entity (422): the request is not valid: see errors\n  body.config.password: looks like a secret in clear: use an AuthRef URI\n"},
		{"unknown type id", []string{"types", "get", "scm.nope"}, "error: Not Found (404): not found\n"},
	}
	f.add("test.inmemory", "taken")
	tests = append(tests, struct {
		name string
		args []string
		want string
	}{"duplicate name", []string{"integrations", "create", "--type", "test.inmemory", "--name", "taken"},
		"error: Conflict (409): the value is already taken\n  body.name: already used by another live entry of this tenant\n"})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := f.run(tt.args...)
			if r.code != exitError || r.stderr != tt.want || r.stdout != "" {
				t.Errorf("exit %d\nstdout %q\nstderr %q\nwant   %q", r.code, r.stdout, r.stderr, tt.want)
			}
			if strings.Contains(r.stderr, "hunter2") {
				t.Errorf("the secret is echoed: %q", r.stderr)
			}
		})
	}

	// Something that is not the catalog (a proxy) answers plain text.
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		w.WriteHeader(http.StatusBadGateway)
		_, _ = w.Write([]byte("upstream connect error\nor disconnect\n"))
	}))
	defer proxy.Close()
	r := runWith(context.Background(), map[string]string{"INTHUB_SERVER": proxy.URL, "INTHUB_TOKEN": "t"}, "types", "list")
	if r.code != exitError || r.stderr != "error: Bad Gateway (502): upstream connect error or disconnect\n" {
		t.Errorf("plain-text 502: exit %d, %q", r.code, r.stderr)
	}
}

func TestCreateWithIdempotencyKey(t *testing.T) {
	f := newFakeCatalog(t)
	args := []string{"integrations", "create", "--type", "test.inmemory", "--name", "once", "--idempotency-key", "k-1", "-o", "json"}
	var ids []string
	for i := range 2 {
		r := f.run(args...)
		var got map[string]any
		if err := json.Unmarshal([]byte(r.stdout), &got); err != nil || r.code != exitOK {
			t.Fatalf("create %d: exit %d, %v, %s", i, r.code, err, r.stderr)
		}
		ids = append(ids, got["id"].(string))
		if replayed := strings.Contains(r.stderr, "nothing new was created"); replayed != (i == 1) {
			t.Errorf("create %d: stderr %q", i, r.stderr)
		}
	}
	if ids[0] != ids[1] {
		t.Errorf("the retry created another integration: %v", ids)
	}
	for _, q := range f.reqs() {
		if q.idemKey != "k-1" {
			t.Errorf("request without the Idempotency-Key: %+v", q)
		}
	}
}

func TestTypes(t *testing.T) {
	f := newFakeCatalog(t)
	r := f.run("types", "list")
	header, rows := tableRows(t, r.stdout)
	if r.code != exitOK || !slices.Equal(header, []string{"ID", "NAME", "PROVIDER", "BUILTIN", "CAPABILITIES"}) || len(rows) != 2 {
		t.Fatalf("types list: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	if rows[0][0] != "scm.github" || rows[0][len(rows[0])-1] != "repos,status" || rows[1][len(rows[1])-1] != "-" {
		t.Errorf("types list:\n%s", r.stdout)
	}

	r = f.run("types", "get", "scm.github")
	if r.code != exitOK {
		t.Fatalf("types get: exit %d: %s", r.code, r.stderr)
	}
	lines := strings.Split(r.stdout, "\n")
	find := func(prefix string) []string {
		for _, l := range lines {
			if fs := strings.Fields(l); len(fs) > 0 && fs[0] == prefix {
				return fs
			}
		}
		t.Errorf("types get: no line for %s:\n%s", prefix, r.stdout)
		return nil
	}
	if fs := find("privateKey"); fs != nil && !slices.Equal(fs[:5], []string{"privateKey", "string", "yes", "yes", "-"}) {
		t.Errorf("privateKey row = %q", fs)
	}
	if fs := find("appId"); fs != nil && !slices.Equal(fs[:5], []string{"appId", "integer", "yes", "-", "-"}) {
		t.Errorf("appId row = %q", fs)
	}
	// A $ref is followed to its definition.
	if fs := find("timeoutSeconds"); fs != nil && !slices.Equal(fs[:5], []string{"timeoutSeconds", "integer", "-", "-", "30"}) {
		t.Errorf("timeoutSeconds row = %q", fs)
	}
	if !strings.Contains(r.stdout, "Provider:") || !strings.Contains(r.stdout, "github") {
		t.Errorf("types get:\n%s", r.stdout)
	}

	r = f.run("types", "get", "scm.github", "-o", "json")
	var got struct {
		ID           string         `json:"id"`
		ConfigSchema map[string]any `json:"configSchema"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &got); err != nil || got.ID != "scm.github" || got.ConfigSchema["$defs"] == nil {
		t.Errorf("types get -o json: %v\n%s", err, r.stdout)
	}
	r = f.run("types", "list", "-o", "json")
	var list struct {
		Items []map[string]any `json:"items"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &list); err != nil || len(list.Items) != 2 {
		t.Errorf("types list -o json: %v\n%s", err, r.stdout)
	}
}

func TestCatalogUnreachable(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	url := "http://" + l.Addr().String()
	l.Close()
	r := runWith(context.Background(), map[string]string{"INTHUB_SERVER": url, "INTHUB_TOKEN": "secret-token-value"}, "integrations", "list")
	if r.code != exitError || !strings.Contains(r.stderr, url) || !strings.Contains(r.stderr, "INTHUB_SERVER") {
		t.Fatalf("exit %d, stderr %q; want 1 naming the server and INTHUB_SERVER", r.code, r.stderr)
	}
	if strings.Contains(r.stderr, "secret-token-value") {
		t.Errorf("the token is printed: %q", r.stderr)
	}
}
