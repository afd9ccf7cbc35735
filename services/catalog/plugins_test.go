package catalog_test

import (
	"context"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"inthub.dev/events"
	"inthub.dev/pkg/bus"
	"inthub.dev/pkg/egress"
	"inthub.dev/pkg/natstest"
	"inthub.dev/pkg/pgtest"
	"inthub.dev/services/catalog"
	"inthub.dev/services/catalog/auth"
	"inthub.dev/services/plugins/registry-quay/quaytest"
)

// The example plugin end to end: dropped into the plugin directory it is
// discovered, announced and usable through /test; killed in the middle of
// a test the call fails transient and the plugin comes back; removed it
// is unregistered; a binary whose checksum is not allowed is refused.
func TestPluginDiscoveryEndToEnd(t *testing.T) {
	bin, sum := quaytest.Build(t)
	quay := quaytest.New(t, "quay-token", "acme", "api", "web")
	t.Setenv("QUAY_TEST_TOKEN", "quay-token")
	u, _ := url.Parse(quay.URL)
	port, _ := strconv.Atoi(u.Port())

	db := pgtest.New(t)
	srv := natstest.Start(t)
	js, _ := srv.JetStream()
	dir := t.TempDir()
	nc := srv.Connect()
	svc, err := catalog.New(catalog.Config{
		Listen: "127.0.0.1:0", DatabaseURL: db.OwnerURL, SkipMigrations: true,
		Auth:       auth.Config{Issuer: "test", Audience: "inthub", DevMode: true, DevHS256Secret: secret},
		Egress:     egress.Policy{AllowLoopback: true, AllowHTTP: true, AllowPorts: []int{port}},
		PluginDirs: []string{dir}, PluginChecksums: []string{sum},
		Logger: testLogger(),
	}, nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("catalog: %v", err)
		}
	})
	select {
	case <-svc.Ready():
	case err := <-done:
		t.Fatalf("catalog stopped: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("catalog not ready")
	}
	admin, err := auth.DevToken(secret, "test", "inthub", "admin", tenant, []string{"integrations:admin"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	f := &fleet{t: t, srv: srv, js: js, db: db, base: "http://" + svc.Addr().String(), token: admin}

	sub, err := js.OrderedConsumer(context.Background(), bus.StreamIntegrations, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{"plugin.>"}})
	if err != nil {
		t.Fatal(err)
	}
	next := func(want string) events.Event {
		t.Helper()
		m, err := sub.Next(jetstream.FetchMaxWait(15 * time.Second))
		if err != nil {
			t.Fatalf("waiting for %s: %v", want, err)
		}
		e, err := events.Parse(m.Data())
		if err != nil || e.Type != want || e.TenantID != "" {
			t.Fatalf("event = %+v, %v; want a valid %s without tenant", e, err, want)
		}
		return e
	}

	// Nothing in the directory yet.
	code, out := f.call("GET", "/api/v1/plugins", nil, "")
	if code != http.StatusOK || len(out["items"].([]any)) != 0 {
		t.Fatalf("GET /plugins = %d %v", code, out)
	}

	// Drop it in: discovered, recorded, announced, a type like the others.
	install(t, bin, filepath.Join(dir, "registry-quay"))
	code, out = f.call("POST", "/api/v1/plugins/discover", nil, "")
	if code != http.StatusOK {
		t.Fatalf("discover = %d %v", code, out)
	}
	reg := out["registered"].([]any)
	if len(reg) != 1 || reg[0].(map[string]any)["type"] != "registry.quay" || reg[0].(map[string]any)["checksum"] != sum {
		t.Fatalf("registered = %v", out)
	}
	var registered events.PluginRegistered
	if err := next(events.SubjectPluginRegistered).Decode(&registered); err != nil || registered.Type != "registry.quay" ||
		registered.PluginID != "quay" || registered.Checksum != sum {
		t.Fatalf("plugin.registered = %+v, %v", registered, err)
	}
	code, out = f.call("GET", "/api/v1/integration-types/registry.quay", nil, "")
	if code != http.StatusOK || out["builtin"] != false || out["provider"] != "quay" {
		t.Fatalf("type = %d %v", code, out)
	}

	code, it := f.call("POST", "/api/v1/integrations", map[string]any{"type": "registry.quay", "name": "quay",
		"config": map[string]any{"endpoint": quay.URL, "namespace": "acme"}, "authRef": "authref://env/QUAY_TEST_TOKEN"}, "")
	if code != http.StatusCreated {
		t.Fatalf("create = %d %v", code, it)
	}
	testPath := "/api/v1/integrations/" + it["id"].(string) + "/test?fresh=true"
	code, res := f.call("POST", testPath, nil, "")
	if code != http.StatusOK || res["success"] != true {
		t.Fatalf("test = %d %v", code, res)
	}

	// Kill the plugin in the middle of a test.
	code, out = f.call("GET", "/api/v1/plugins", nil, "")
	pid := int(out["items"].([]any)[0].(map[string]any)["pid"].(float64))
	if code != http.StatusOK || pid == 0 {
		t.Fatalf("plugins = %d %v", code, out)
	}
	quay.Hang.Store(true)
	type reply struct {
		code int
		body map[string]any
	}
	inFlight := make(chan reply, 1)
	go func() {
		code, body := f.call("POST", testPath, nil, "")
		inFlight <- reply{code, body}
	}()
	select {
	case <-quay.Entered:
	case <-time.After(15 * time.Second):
		t.Fatal("the test never reached Quay")
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	r := <-inFlight
	quay.Release()
	if r.code != http.StatusOK || r.body["success"] != false || r.body["errorClass"] != "transient" {
		t.Fatalf("test in flight when the plugin died = %d %v", r.code, r.body)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		code, res = f.call("POST", testPath, nil, "")
		if code == http.StatusOK && res["success"] == true {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("test after the crash = %d %v", code, res)
		}
		time.Sleep(100 * time.Millisecond) // polling the outcome with a deadline
	}
	_, out = f.call("GET", "/api/v1/plugins", nil, "")
	if p := out["items"].([]any)[0].(map[string]any); p["restarts"] != 1.0 || p["running"] != true || p["pid"] == float64(pid) {
		t.Fatalf("after restart = %v", p)
	}

	// A binary that is not on the allow-list is refused, and logged.
	b, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "tampered"), append(b, 0), 0o755); err != nil {
		t.Fatal(err)
	}
	code, out = f.call("POST", "/api/v1/plugins/discover", nil, "")
	refused := out["refused"].([]any)
	if code != http.StatusOK || len(refused) != 1 || refused[0].(map[string]any)["file"] != "tampered" ||
		len(out["registered"].([]any)) != 0 || len(out["plugins"].([]any)) != 1 {
		t.Fatalf("discover with an unlisted binary = %d %v", code, out)
	}

	// Remove it: unregistered and announced.
	if err := os.Remove(filepath.Join(dir, "registry-quay")); err != nil {
		t.Fatal(err)
	}
	code, out = f.call("POST", "/api/v1/plugins/discover", nil, "")
	unreg := out["unregistered"].([]any)
	if code != http.StatusOK || len(unreg) != 1 || unreg[0].(map[string]any)["type"] != "registry.quay" || len(out["plugins"].([]any)) != 0 {
		t.Fatalf("discover after removal = %d %v", code, out)
	}
	var unregistered events.PluginUnregistered
	if err := next(events.SubjectPluginUnregistered).Decode(&unregistered); err != nil || unregistered.Type != "registry.quay" {
		t.Fatalf("plugin.unregistered = %+v, %v", unregistered, err)
	}
	if code, res = f.call("POST", testPath, nil, ""); code < 400 {
		t.Fatalf("test of a removed plugin's integration = %d %v", code, res)
	}

	// Discovery needs the admin scope.
	writer, _ := auth.DevToken(secret, "test", "inthub", "w", tenant, []string{"integrations:write"}, time.Hour)
	f.token = writer
	if code, out = f.call("POST", "/api/v1/plugins/discover", nil, ""); code != http.StatusForbidden {
		t.Fatalf("discover as a writer = %d %v", code, out)
	}
}

func install(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o755); err != nil {
		t.Fatal(err)
	}
}
