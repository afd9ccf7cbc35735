package e2e_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"inthub.dev/events"
	"inthub.dev/pkg/bus"
	"inthub.dev/pkg/connectors/github/githubtest"
	"inthub.dev/pkg/connectors/gitlab/gitlabtest"
	"inthub.dev/pkg/deadletter"
	"inthub.dev/pkg/natstest"
	"inthub.dev/pkg/pgtest"
	"inthub.dev/services/catalog/auth"
)

const (
	tenant = "0b5a3bb0-6a43-4d7e-9a39-6f1f9d9ae2e0"
	issuer = "inthub-e2e"
	// ghRepo is a repository of the fake GitHub with pull requests 1-100.
	ghRepo = "acme/api"
	// glProject and glMR are the fake GitLab's project and merge request.
	glProject = "acme/platform/api"
	glMR      = 7
	// glTokenEnv is the variable the annotation worker reads the GitLab
	// token from (authref://env/...).
	glTokenEnv = "E2E_GITLAB_TOKEN"
	glToken    = "glpat-e2e-0000000000000000"
)

var (
	jwtSecret = []byte("inthub-e2e-dev-secret-0123456789abcdef-0123")
	// ghSHA is the commit that statuses and check runs go to.
	ghSHA  = githubtest.SHA(ghRepo, "feature/x")
	glHead = gitlabtest.SHA("e2e-head")
)

// fleetOptions tune a fleet; zero values take the defaults noted.
type fleetOptions struct {
	// HealthInterval is the poller's --default-interval (1s).
	HealthInterval time.Duration
	// LeaseTTL is the poller's --lease-ttl (3s), renewed every second.
	LeaseTTL time.Duration
	// AckWait is the annotation worker's --ack-wait (5s): how soon the
	// requests a killed worker held come back.
	AckWait time.Duration
	// Concurrency is the annotation worker's --concurrency (8).
	Concurrency int
	// GitHubLatency delays every answer of the fake GitHub.
	GitHubLatency time.Duration
	// Cluster runs the fleet on a NATS cluster of three embedded servers
	// (natstest.Cluster), every process given all three URLs and every
	// stream and bucket three replicas; off by default: one server.
	Cluster bool
	// Enrichment adds the enrichment service (webhook ingress, mapper,
	// correlator) to the fleet; off by default, since only the data
	// journey needs it.
	Enrichment bool
}

// fleet is the deployment under test: catalog, health-poller and
// annotation worker as processes, an embedded NATS server, a PostgreSQL
// database of its own, a fake GitHub (GHES-style root, TLS that the
// processes trust through SSL_CERT_FILE) and a fake GitLab.
type fleet struct {
	t    testing.TB
	ctx  context.Context
	dir  string
	nats *natstest.Server
	db   *pgtest.DB
	nc   *nats.Conn
	js   jetstream.JetStream
	dl   *deadletter.Store
	gh   *githubtest.Server
	gl   *gitlabtest.Server
	// ghProxy stands between the processes and the fake GitHub, to crash
	// a worker at the worst moment.
	ghProxy *crashProxy
	// cluster is the NATS cluster with fleetOptions.Cluster; nats is nil
	// then.
	cluster *natstest.TestCluster

	catalog, poller, annotation *process
	// enrichment is nil unless fleetOptions.Enrichment.
	enrichment *process
	env        []string // of every process
	api        string   // the catalog's base URL
	// webhooks is the enrichment service's webhook base URL.
	webhooks string
	token    string
	http     *http.Client

	ghEndpoint string // https://localhost:<port>/api/v3
	ghKeyRef   string // authref://file/... of the app's key
}

func startFleet(t testing.TB, o fleetOptions) *fleet {
	t.Helper()
	needFleet(t)
	if o.HealthInterval == 0 {
		o.HealthInterval = time.Second
	}
	if o.LeaseTTL == 0 {
		o.LeaseTTL = 3 * time.Second
	}
	if o.AckWait == 0 {
		o.AckWait = 5 * time.Second
	}
	if o.Concurrency == 0 {
		o.Concurrency = 8
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	f := &fleet{t: t, ctx: ctx, dir: t.TempDir(),
		http: &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}}

	f.db = pgtest.New(t)
	natsURL, replicas := "", "1"
	if o.Cluster {
		f.cluster = natstest.Cluster(t, 3)
		f.js, f.nc = f.cluster.JetStream()
		natsURL, replicas = f.cluster.URLs(), "3"
	} else {
		f.nats = natstest.Start(t)
		f.js, f.nc = f.nats.JetStream()
		natsURL = f.nats.URL()
	}
	// The harness purges its own probes; their audit records are noise.
	dl, err := deadletter.New(f.js, deadletter.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	f.dl = dl

	// A GitHub Enterprise Server at https://localhost:<port>/api/v3: the
	// processes dial it by its name, and trust its certificate because
	// SSL_CERT_FILE names it (Go reads that variable on Linux).
	f.gh = githubtest.New(t, githubtest.Options{Prefix: "/api/v3", Hosts: []string{"localhost"},
		// The budget of a large installation: the fleet's own write budget
		// and the fake's faults are what the tests look at, not this.
		RateLimit: 1_000_000})
	f.gh.SetLatency(o.GitHubLatency)
	_, port, _ := net.SplitHostPort(f.gh.Addr())
	f.ghProxy = newCrashProxy(t, f.gh)
	f.ghEndpoint = "https://localhost:" + f.ghProxy.port() + "/api/v3"
	caFile := filepath.Join(f.dir, "github-ca.pem")
	writeFile(t, caFile, peerCertPEM(t, f.gh.Addr()))
	keyFile := filepath.Join(f.dir, "github-app.pem")
	writeFile(t, keyFile, f.gh.KeyPEM())
	f.ghKeyRef = "authref://file" + keyFile // keyFile is absolute

	f.gl = gitlabtest.New(t, gitlabtest.Options{})
	f.gl.AddProject(gitlabtest.Project{Path: glProject, Branches: []string{"main"}})
	f.gl.AddToken(glToken, gitlabtest.Token{User: "inthub-bot", Bot: true, Member: []string{glProject}})
	base := gitlabtest.SHA("e2e-base")
	f.gl.AddMergeRequest(glProject, gitlabtest.MergeRequest{IID: glMR,
		DiffRefs: gitlabtest.DiffRefs{BaseSHA: base, StartSHA: base, HeadSHA: glHead},
		Diffs: []gitlabtest.Diff{{OldPath: "main.go", NewPath: "main.go",
			Diff: "@@ -10,5 +10,6 @@ func main() {\n a\n-b\n+B\n+C\n c\n d\n e\n"}}})

	_, glPort, _ := net.SplitHostPort(f.gl.Addr())
	f.env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + f.dir, "TZ=UTC",
		"SSL_CERT_FILE=" + caFile, glTokenEnv + "=" + glToken, webhookSecretEnv + "=" + webhookSecret,
		// The fakes listen on ports of their own; --dev allows loopback.
		"INTHUB_EGRESS_ALLOW_PORTS=" + f.ghProxy.port() + "," + port + "," + glPort}

	secretFile := filepath.Join(f.dir, "jwt-secret")
	writeFile(t, secretFile, jwtSecret)
	catAddr, pollAddr, annAddr := freeAddr(t), freeAddr(t), freeAddr(t)
	f.catalog = newProcess(t, "catalog", []string{
		"--listen", catAddr, "--database-url", f.db.OwnerURL, "--skip-migrations=true",
		"--nats-url", natsURL, "--stream-replicas", replicas, "--jwt-issuer", issuer, "--jwt-audience", "inthub",
		"--dev-hs256-secret-file", secretFile, "--dev=true",
	}, f.env, catAddr)
	f.poller = newProcess(t, "health-poller", []string{
		"--nats-url", natsURL, "--stream-replicas", replicas, "--listen", pollAddr, "--data-dir", filepath.Join(f.dir, "health-poller"),
		"--default-interval", o.HealthInterval.String(), "--lease-ttl", o.LeaseTTL.String(), "--lease-renew", "1s", "--dev=true",
	}, f.env, pollAddr)
	f.annotation = newProcess(t, "annotation", []string{
		"--nats-url", natsURL, "--stream-replicas", replicas, "--listen", annAddr, "--data-dir", filepath.Join(f.dir, "annotation"),
		"--ack-wait", o.AckWait.String(), "--concurrency", strconv.Itoa(o.Concurrency), "--max-deliver", "10",
		// GitHub's documented pace (1 write/s per installation) would make
		// every test a test of the budget, which the worker's own tests
		// cover; here the budget is out of the way.
		"--writes-per-second", "1000", "--writes-per-minute", "0", "--writes-per-hour", "0",
		"--host-writes-per-second", "1000", "--dev=true",
	}, f.env, annAddr)
	f.api = "http://" + catAddr
	if o.Enrichment {
		enrAddr, hookAddr := freeAddr(t), freeAddr(t)
		f.enrichment = newProcess(t, "enrichment", []string{
			"--nats-url", natsURL, "--stream-replicas", replicas, "--listen", enrAddr, "--webhook-listen", hookAddr,
			"--data-dir", filepath.Join(f.dir, "enrichment"), "--database-url", f.db.OwnerURL, "--dev=true",
		}, f.env, enrAddr)
		f.webhooks = "http://" + hookAddr
	}

	// The catalog first: it provisions the streams and the bucket the
	// workers read.
	f.catalog.start(t)
	f.catalog.ready(t, 60*time.Second)
	f.poller.start(t)
	f.annotation.start(t)
	f.poller.ready(t, 60*time.Second)
	f.annotation.ready(t, 60*time.Second)
	if f.enrichment != nil {
		f.enrichment.start(t)
		f.enrichment.ready(t, 60*time.Second)
	}

	f.token, err = auth.DevToken(jwtSecret, issuer, "inthub", "e2e-admin", tenant,
		[]string{"integrations:read", "integrations:write"}, 2*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// with is the fleet seen from a subtest: its helpers fail t, not the
// test that started the fleet.
func (f *fleet) with(t testing.TB) *fleet {
	g := *f
	g.t = t
	return &g
}

func writeFile(tb testing.TB, path string, b []byte) {
	tb.Helper()
	if err := os.WriteFile(path, b, 0o600); err != nil {
		tb.Fatal(err)
	}
}

// peerCertPEM fetches the certificate a TLS server at addr presents: the
// fake GitHub's is self-signed and its own authority, so it is the CA
// file the processes trust.
func peerCertPEM(tb testing.TB, addr string) []byte {
	tb.Helper()
	conn, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true, ServerName: "localhost"}) //nolint:gosec // reading the cert to trust it
	if err != nil {
		tb.Fatalf("read the fake GitHub's certificate: %v", err)
	}
	defer conn.Close()
	certs := conn.ConnectionState().PeerCertificates
	if len(certs) == 0 {
		tb.Fatal("the fake GitHub presented no certificate")
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: certs[0].Raw})
}

// cutPostgres terminates every connection to the fleet's database, as a
// PostgreSQL restart or failover does to its clients. The server itself
// is not restarted: other tests (and other packages' tests) share it.
func (f *fleet) cutPostgres() int {
	f.t.Helper()
	ctx, cancel := context.WithTimeout(f.ctx, 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, pgtest.AdminURL())
	if err != nil {
		f.t.Fatalf("cut PostgreSQL: %v", err)
	}
	defer conn.Close(ctx)
	var n int
	if err := conn.QueryRow(ctx, `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
		WHERE datname = $1 AND pid <> pg_backend_pid()`, f.db.Name).Scan(&n); err != nil {
		f.t.Fatalf("cut PostgreSQL: %v", err)
	}
	return n
}

// --- the catalog's API

// apiResult is one answer of the catalog.
type apiResult struct {
	status int
	body   []byte
	header http.Header
}

// call sends one request to the catalog; err is a transport error (the
// catalog down or killed mid-request).
func (f *fleet) call(ctx context.Context, method, path string, body any, header map[string]string) (apiResult, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return apiResult{}, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, f.api+path, rd)
	if err != nil {
		return apiResult{}, err
	}
	req.Header.Set("Authorization", "Bearer "+f.token)
	req.Header.Set("Content-Type", "application/json")
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := f.http.Do(req)
	if err != nil {
		return apiResult{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return apiResult{}, err
	}
	return apiResult{status: resp.StatusCode, body: b, header: resp.Header}, nil
}

// integration is the part of the API's document the tests read.
type integration struct {
	ID           string          `json:"id"`
	Type         string          `json:"type"`
	Name         string          `json:"name"`
	Config       json.RawMessage `json:"config"`
	Status       string          `json:"status"`
	HealthStatus string          `json:"healthStatus"`
	Version      int64           `json:"version"`
}

// mustCall is call for a request that must succeed with want.
func (f *fleet) mustCall(method, path string, body any, header map[string]string, want int, out any) apiResult {
	f.t.Helper()
	ctx, cancel := context.WithTimeout(f.ctx, 20*time.Second)
	defer cancel()
	r, err := f.call(ctx, method, path, body, header)
	if err != nil {
		f.t.Fatalf("%s %s: %v", method, path, err)
	}
	if r.status != want {
		f.t.Fatalf("%s %s: %d, want %d: %s", method, path, r.status, want, r.body)
	}
	if out != nil {
		if err := json.Unmarshal(r.body, out); err != nil {
			f.t.Fatalf("%s %s: %v: %s", method, path, err, r.body)
		}
	}
	return r
}

func (f *fleet) create(typ, name string, config map[string]any, status string) integration {
	f.t.Helper()
	body := map[string]any{"type": typ, "name": name, "config": config}
	if status != "" {
		body["status"] = status
	}
	var it integration
	f.mustCall("POST", "/api/v1/integrations", body, nil, http.StatusCreated, &it)
	return it
}

// update writes a changed copy of it (If-Match its version) and returns
// the new document.
func (f *fleet) update(it integration, name string, config any) integration {
	f.t.Helper()
	var out integration
	f.mustCall("PUT", "/api/v1/integrations/"+it.ID, map[string]any{"type": it.Type, "name": name, "config": config,
		"status": it.Status}, map[string]string{"If-Match": strconv.Quote(strconv.FormatInt(it.Version, 10))},
		http.StatusOK, &out)
	return out
}

func (f *fleet) delete(id string) {
	f.t.Helper()
	f.mustCall("DELETE", "/api/v1/integrations/"+id, nil, nil, http.StatusNoContent, nil)
}

// githubIntegration registers the fake GitHub's installation. Its health
// is checked once a day: health checks would spend the fake's faults
// meant for annotations, and a health transition would drain spools.
func (f *fleet) githubIntegration(name, status string) integration {
	f.t.Helper()
	return f.create("scm.github", name, map[string]any{
		"endpoint": f.ghEndpoint, "appId": f.gh.AppID(), "installationId": f.gh.InstallationID(),
		"privateKey": f.ghKeyRef, "healthIntervalSeconds": 86400,
	}, status)
}

func (f *fleet) gitlabIntegration(name string) integration {
	f.t.Helper()
	return f.create("scm.gitlab", name, map[string]any{
		"endpoint": f.gl.URL(), "token": "authref://env/" + glTokenEnv, "healthIntervalSeconds": 86400,
	}, "")
}

// waitKnown waits until the integration's current version is in the
// INTEGRATIONS_STATE bucket the workers watch. The annotation worker's
// copy of the bucket follows a moment later: warmUp waits for that.
func (f *fleet) waitKnown(it integration) {
	f.t.Helper()
	kv, err := f.js.KeyValue(f.ctx, bus.BucketIntegrations)
	if err != nil {
		f.t.Fatal(err)
	}
	poll(f.t, 20*time.Second, fmt.Sprintf("integration %s v%d in INTEGRATIONS_STATE", it.ID, it.Version), func() bool {
		e, err := kv.Get(f.ctx, bus.IntegrationKey(tenant, it.ID))
		if err != nil {
			return false
		}
		var v struct {
			Version int64 `json:"version"`
		}
		return json.Unmarshal(e.Value(), &v) == nil && v.Version >= it.Version
	})
}

// warmUp sends one status for it and waits for its end (want: posted, or
// spooled for an offline integration). A probe that finds the
// integration unknown to the worker (its copy of the bucket a moment
// behind) is dead-lettered: that letter is purged and the probe sent
// again, so that the tests' requests never meet that race and the DLQ
// holds only what they put there. For GitHub it also fetches the
// installation token.
func (f *fleet) warmUp(t testing.TB, it integration, want string) {
	t.Helper()
	f.waitKnown(it)
	repo := events.Repository{Owner: "acme", Name: "api"}
	sha := ghSHA
	if it.Type == "scm.gitlab" {
		repo, sha = events.Repository{Owner: "acme/platform", Name: "api"}, glHead
	}
	deadline := time.Now().Add(30 * time.Second)
	for attempt := 1; ; attempt++ {
		id := f.send(t, events.AnnotationRequested{IntegrationID: it.ID, Operation: events.OpStatus, Repository: repo,
			CommitSHA: sha, Status: &events.CommitStatus{State: "success", Context: fmt.Sprintf("warm-up/%s/%d", it.Name, attempt)}})
		completed, failed := f.waitResults(t, 30*time.Second, id)
		switch {
		case want == endPosted && len(completed[id]) == 1:
			return
		case want == endSpool && len(failed[id]) == 1 && failed[id][0].Spooled:
			return
		case len(failed[id]) == 1 && failed[id][0].DeadLettered && strings.Contains(failed[id][0].Error, "is unknown to tenant") &&
			time.Now().Before(deadline):
			f.purgeDeadLetter(t, id)
			<-time.After(100 * time.Millisecond) // the worker's copy is catching up
		default:
			t.Fatalf("warm-up of %s: completed %v, failed %v; want %s", it.Name, completed[id], failed[id], want)
		}
	}
}

// purgeDeadLetter deletes the dead letter of request id.
func (f *fleet) purgeDeadLetter(t testing.TB, id string) {
	t.Helper()
	dlq, _, err := f.parked(f.ctx)
	if err != nil {
		t.Fatal(err)
	}
	var seqs []uint64
	for _, l := range dlq[id] {
		seqs = append(seqs, l.Seq)
	}
	if len(seqs) == 0 {
		t.Fatalf("no dead letter of %s to purge", id)
	}
	if _, err := f.dl.Purge(f.ctx, deadletter.Filter{}, deadletter.PurgeOptions{Seqs: seqs, Operator: "e2e-harness"}); err != nil {
		t.Fatal(err)
	}
}
