package github_test

import (
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"inthub.dev/pkg/connectors"
	"inthub.dev/pkg/connectors/github"
	"inthub.dev/pkg/connectors/github/githubtest"
	"inthub.dev/pkg/egress"
	"inthub.dev/pkg/fault"
)

type outcome struct {
	class fault.Class
	retry time.Duration
	msg   string
	took  time.Duration
}

// The calls a fault is observed through.
func viaTest(t *testing.T, c *github.Connector) outcome {
	start := time.Now()
	r := c.TestConnection(t.Context())
	if r.Status != connectors.StatusUnhealthy || r.Err == nil {
		t.Fatalf("TestConnection: %s: %s, want unhealthy", r.Status, r.Message)
	}
	if fault.ClassOf(r.Err) != r.Class {
		t.Errorf("Result.Class %v, Err's class %v", r.Class, fault.ClassOf(r.Err))
	}
	return outcome{r.Class, fault.RetryAfterOf(r.Err), r.Message, time.Since(start)}
}

func viaHealth(t *testing.T, c *github.Connector) outcome {
	start := time.Now()
	r := c.CheckHealth(t.Context())
	if r.Status != connectors.StatusUnhealthy || r.Err == nil {
		t.Fatalf("CheckHealth: %s: %s, want unhealthy", r.Status, r.Message)
	}
	return outcome{r.Class, fault.RetryAfterOf(r.Err), r.Message, time.Since(start)}
}

func viaList(t *testing.T, c *github.Connector) outcome {
	start := time.Now()
	_, err := c.ListRepositories(t.Context(), connectors.ListOptions{})
	if err == nil {
		t.Fatal("ListRepositories succeeded")
	}
	return outcome{fault.ClassOf(err), fault.RetryAfterOf(err), err.Error(), time.Since(start)}
}

func viaBranches(repo string) func(*testing.T, *github.Connector) outcome {
	return func(t *testing.T, c *github.Connector) outcome {
		_, err := c.ListBranches(t.Context(), repo, connectors.ListOptions{})
		if err == nil {
			t.Fatal("ListBranches succeeded")
		}
		return outcome{fault.ClassOf(err), fault.RetryAfterOf(err), err.Error(), 0}
	}
}

// Each fault → its class, its retry hint, a message that says what
// failed; nothing hangs, and no secret reaches a message or the logs.
func TestFaults(t *testing.T) {
	otherKey := githubtest.New(t, githubtest.Options{}).KeyPEM()
	for _, tc := range []struct {
		name      string
		opts      githubtest.Options
		fault     map[githubtest.Route]githubtest.Fault
		arrange   func(t *testing.T, srv *githubtest.Server, s *setup)
		call      func(*testing.T, *github.Connector) outcome
		class     fault.Class
		retryMin  time.Duration
		retryMax  time.Duration
		msg       string
		failedCap string // TestConnection: the check that failed
	}{
		{name: "app 401", fault: map[githubtest.Route]githubtest.Fault{githubtest.RouteApp: githubtest.Unauthorized()},
			call: viaTest, class: fault.ClassPermanent, msg: "the app's key or id was refused", failedCap: "app"},
		{name: "key of another app", arrange: func(_ *testing.T, _ *githubtest.Server, s *setup) { s.secrets.m[keyRef] = otherKey },
			call: viaTest, class: fault.ClassPermanent, msg: "the app's key or id was refused", failedCap: "app"},
		{name: "wrong app id", arrange: func(_ *testing.T, _ *githubtest.Server, s *setup) { s.conf["appId"] = 999 },
			call: viaTest, class: fault.ClassPermanent, msg: "is the key app 999's", failedCap: "app"},
		{name: "unknown installation", arrange: func(_ *testing.T, _ *githubtest.Server, s *setup) { s.conf["installationId"] = 999 },
			call: viaTest, class: fault.ClassPermanent, msg: "installation 999 of app 1 was not found", failedCap: "installation"},
		{name: "unknown installation, health", arrange: func(_ *testing.T, _ *githubtest.Server, s *setup) { s.conf["installationId"] = 999 },
			call: viaHealth, class: fault.ClassPermanent, msg: "installation 999 of app 1 was not found"},
		{name: "token exchange 401", fault: map[githubtest.Route]githubtest.Fault{githubtest.RouteAccessTokens: githubtest.Unauthorized()},
			call: viaList, class: fault.ClassPermanent, msg: "the app's key or id was refused"},
		{name: "token exchange 500", fault: map[githubtest.Route]githubtest.Fault{githubtest.RouteAccessTokens: githubtest.ServerError(500)},
			call: viaHealth, class: fault.ClassTransient, msg: "500"},
		{name: "token exchange 502", fault: map[githubtest.Route]githubtest.Fault{githubtest.RouteAccessTokens: githubtest.ServerError(502)},
			call: viaTest, class: fault.ClassTransient, msg: "502", failedCap: "installation"},
		{name: "installation token refused", fault: map[githubtest.Route]githubtest.Fault{githubtest.RouteRepos: githubtest.Unauthorized()},
			call: viaList, class: fault.ClassPermanent, msg: "refused the installation token"},
		{name: "permission missing", fault: map[githubtest.Route]githubtest.Fault{githubtest.RouteRepos: githubtest.Forbidden()},
			call: viaList, class: fault.ClassPermanent, msg: "lacks the permission"},
		{name: "secondary rate limit", fault: map[githubtest.Route]githubtest.Fault{githubtest.RouteRepos: githubtest.SecondaryLimit(90 * time.Second)},
			call: viaList, class: fault.ClassTransient, retryMin: 89 * time.Second, retryMax: 91 * time.Second, msg: "secondary rate limit"},
		{name: "secondary rate limit in a test", fault: map[githubtest.Route]githubtest.Fault{githubtest.RouteRepos: githubtest.SecondaryLimit(90 * time.Second)},
			call: viaTest, class: fault.ClassTransient, retryMin: 89 * time.Second, retryMax: 91 * time.Second, failedCap: "repos"},
		{name: "429 with Retry-After", fault: map[githubtest.Route]githubtest.Fault{githubtest.RouteRepos: githubtest.TooManyRequests(30 * time.Second)},
			call: viaList, class: fault.ClassTransient, retryMin: 29 * time.Second, retryMax: 31 * time.Second, msg: "rate-limited"},
		{name: "primary rate limit spent", arrange: func(_ *testing.T, srv *githubtest.Server, _ *setup) { srv.SetRemaining(0) },
			call: viaList, class: fault.ClassTransient, retryMin: 50 * time.Minute, retryMax: 61 * time.Minute, msg: "rate limit"},
		{name: "500", fault: map[githubtest.Route]githubtest.Fault{githubtest.RouteRepos: githubtest.ServerError(500)},
			call: viaList, class: fault.ClassTransient, msg: "500"},
		{name: "503 in health", fault: map[githubtest.Route]githubtest.Fault{githubtest.RouteRateLimit: githubtest.ServerError(503)},
			call: viaHealth, class: fault.ClassTransient, msg: "503"},
		{name: "404 on the installation endpoint", fault: map[githubtest.Route]githubtest.Fault{githubtest.RouteRepos: githubtest.NotFound()},
			call: viaList, class: fault.ClassPermanent, msg: "a GitHub API root"},
		{name: "unknown repository", call: viaBranches("acme/nope"), class: fault.ClassPermanent, msg: "repository acme/nope was not found"},
		{name: "slow rate_limit", fault: map[githubtest.Route]githubtest.Fault{githubtest.RouteRateLimit: githubtest.Slow()},
			arrange: func(_ *testing.T, _ *githubtest.Server, s *setup) { s.conf["timeoutSeconds"] = 1 },
			call:    viaHealth, class: fault.ClassTransient, msg: "did not answer within 1s"},
		{name: "slow token exchange", fault: map[githubtest.Route]githubtest.Fault{githubtest.RouteAccessTokens: githubtest.Slow()},
			arrange: func(_ *testing.T, _ *githubtest.Server, s *setup) { s.conf["timeoutSeconds"] = 1 },
			call:    viaList, class: fault.ClassTransient, msg: "did not answer within 1s"},
		{name: "slow app", fault: map[githubtest.Route]githubtest.Fault{githubtest.RouteApp: githubtest.Slow()},
			arrange: func(_ *testing.T, _ *githubtest.Server, s *setup) { s.conf["timeoutSeconds"] = 1 },
			call:    viaTest, class: fault.ClassTransient, msg: "did not answer within 1s", failedCap: "app"},
		{name: "redirect to another host", opts: githubtest.Options{Hosts: []string{"api.github.com", "evil.example.com"}},
			fault: map[githubtest.Route]githubtest.Fault{githubtest.RouteRepos: githubtest.Redirect("https://evil.example.com/steal")},
			call:  viaList, class: fault.ClassPermanent, msg: "redirected to another origin"},
		{name: "connection refused", arrange: func(_ *testing.T, srv *githubtest.Server, _ *setup) { srv.Close() },
			call: viaList, class: fault.ClassOffline, msg: "connection refused"},
		{name: "connection refused in a test", arrange: func(_ *testing.T, srv *githubtest.Server, _ *setup) { srv.Close() },
			call: viaTest, class: fault.ClassOffline, msg: "connection refused", failedCap: "app"},
		{name: "DNS failure", arrange: func(_ *testing.T, _ *githubtest.Server, s *setup) { s.conf["endpoint"] = "https://nowhere.example.net" },
			call: viaList, class: fault.ClassOffline, msg: "does not resolve"},
		{name: "untrusted certificate", arrange: func(t *testing.T, srv *githubtest.Server, s *setup) {
			tr := &http.Transport{DialContext: srv.DialContext, TLSClientConfig: &tls.Config{MinVersion: tls.VersionTLS12}}
			t.Cleanup(tr.CloseIdleConnections)
			s.cfg.HTTPClient = &http.Client{Transport: tr}
		}, call: viaTest, class: fault.ClassPermanent, msg: "certificate", failedCap: "app"},
		{name: "egress policy", arrange: func(t *testing.T, srv *githubtest.Server, s *setup) {
			// The port is allowed, so the address (loopback) is what is refused.
			_, port, _ := net.SplitHostPort(srv.Addr())
			p, _ := strconv.Atoi(port)
			d := &net.Dialer{Control: egress.Policy{AllowPorts: []int{p}}.DialControl()}
			tr := &http.Transport{Proxy: nil, DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
				return d.DialContext(ctx, network, srv.Addr())
			}}
			t.Cleanup(tr.CloseIdleConnections)
			s.cfg.HTTPClient = &http.Client{Transport: tr}
		}, call: viaList, class: fault.ClassPermanent, msg: egress.Message},
		{name: "key not in the store", arrange: func(_ *testing.T, _ *githubtest.Server, s *setup) { delete(s.secrets.m, keyRef) },
			call: viaTest, class: fault.ClassPermanent, msg: keyRef, failedCap: "app"},
		{name: "key not in the store, health", arrange: func(_ *testing.T, _ *githubtest.Server, s *setup) { delete(s.secrets.m, keyRef) },
			call: viaHealth, class: fault.ClassPermanent, msg: keyRef},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := githubtest.New(t, tc.opts)
			for route, f := range tc.fault {
				srv.Fail(route, f)
			}
			c, s := newConn(t, srv, func(s *setup) {
				if tc.arrange != nil {
					tc.arrange(t, srv, s)
				}
			})
			got := tc.call(t, c)
			t.Logf("%v (retry %v): %s", got.class, got.retry, got.msg)
			if got.class != tc.class {
				t.Errorf("class %v, want %v: %s", got.class, tc.class, got.msg)
			}
			if tc.retryMin > 0 && (got.retry < tc.retryMin || got.retry > tc.retryMax) {
				t.Errorf("retry after %v, want %v..%v", got.retry, tc.retryMin, tc.retryMax)
			}
			if tc.retryMin == 0 && got.retry > 0 && tc.class != fault.ClassTransient {
				t.Errorf("a %v failure with a retry hint %v", got.class, got.retry)
			}
			if !strings.Contains(got.msg, tc.msg) {
				t.Errorf("message %q does not say %q", got.msg, tc.msg)
			}
			if got.took > 5*time.Second {
				t.Errorf("took %v", got.took)
			}
			if tc.failedCap != "" {
				r := c.TestConnection(t.Context())
				ck, _ := checkByCap(r, tc.failedCap)
				if ck.OK || ck.Class != tc.class {
					t.Errorf("check %s = %+v, want failed with %v", tc.failedCap, ck, tc.class)
				}
				for _, later := range r.Checks {
					if !later.OK && later.Capability != tc.failedCap && later.Class != fault.ClassUnknown {
						t.Errorf("check %s failed too (%s); checks after a failed prerequisite are not run", later.Capability, later.Message)
					}
				}
			}
			for _, secret := range pemSecrets(srv.KeyPEM()) {
				if strings.Contains(got.msg, secret) || strings.Contains(s.logs.String(), secret) {
					t.Fatal("the private key appears in a message or the logs")
				}
			}
			if strings.Contains(got.msg, "ghs_") || strings.Contains(s.logs.String(), "ghs_") {
				t.Fatal("an installation token appears in a message or the logs")
			}
			if strings.Contains(got.msg, "127.0.0.1") {
				t.Errorf("the message names the internal address: %s", got.msg)
			}
			if tc.name == "redirect to another host" && srv.HostRequests("evil.example.com") != 0 {
				t.Error("the redirect was followed to another host")
			}
		})
	}
}

// After a secondary rate limit, go-github refuses further calls itself
// until Retry-After has passed: the connector reports that as transient
// with the remaining wait, and GitHub sees no more requests.
func TestSecondaryLimitHoldsOffLocally(t *testing.T) {
	srv := githubtest.New(t, githubtest.Options{})
	srv.Fail(githubtest.RouteRepos, githubtest.SecondaryLimit(120*time.Second))
	c, _ := newConn(t, srv, nil)
	if _, err := c.ListRepositories(t.Context(), connectors.ListOptions{}); fault.ClassOf(err) != fault.ClassTransient {
		t.Fatalf("first call: %v", err)
	}
	n := srv.Requests(githubtest.RouteRepos)
	srv.Clear()
	_, err := c.ListRepositories(t.Context(), connectors.ListOptions{})
	if fault.ClassOf(err) != fault.ClassTransient || fault.RetryAfterOf(err) <= 0 || fault.RetryAfterOf(err) > 120*time.Second {
		t.Errorf("second call: %v (class %v, retry %v)", err, fault.ClassOf(err), fault.RetryAfterOf(err))
	}
	if srv.Requests(githubtest.RouteRepos) != n {
		t.Error("the second call reached GitHub during the secondary limit's wait")
	}
}
