package connectors_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"inthub.dev/pkg/connectors"
	"inthub.dev/pkg/fault"
)

func TestNewResult(t *testing.T) {
	ok := func(c string) connectors.Check { return connectors.Check{Capability: c, OK: true, Message: "fine"} }
	bad := func(c string, err error) connectors.Check {
		return connectors.Check{Capability: c, Message: err.Error(), Class: fault.ClassOf(err), Err: err}
	}
	transient := fault.RetryAfter(errors.New("rate limited"), time.Minute)
	permanent := fault.Permanent(errors.New("401 Unauthorized"))
	offline := fault.Offline(errors.New("connection refused"))

	tests := []struct {
		name      string
		checks    []connectors.Check
		critical  []string
		status    connectors.Status
		class     fault.Class
		retry     time.Duration
		inMessage string
	}{
		{"none ran", nil, nil, connectors.StatusUnknown, fault.ClassUnknown, 0, "no check ran"},
		{"all pass", []connectors.Check{ok("repos"), ok("tags")}, nil, connectors.StatusHealthy, fault.ClassUnknown, 0, "all checks passed (repos, tags)"},
		{"one of two fails", []connectors.Check{ok("repos"), bad("tags", transient)}, nil, connectors.StatusDegraded, fault.ClassTransient, time.Minute, "1 of 2 checks failed: tags: rate limited"},
		{"a critical one fails", []connectors.Check{bad("app", permanent), ok("rate_limit")}, []string{"app"}, connectors.StatusUnhealthy, fault.ClassPermanent, 0, "app: 401 Unauthorized"},
		{"all fail, worst class wins", []connectors.Check{bad("a", transient), bad("b", offline), bad("c", permanent)}, nil, connectors.StatusUnhealthy, fault.ClassPermanent, 0, "a: rate limited; b: connection refused; c: 401"},
		{"offline beats transient", []connectors.Check{bad("a", transient), bad("b", offline)}, nil, connectors.StatusUnhealthy, fault.ClassOffline, 0, "b: connection refused"},
		{"a check without Err", []connectors.Check{{Capability: "x", Message: "broken", Class: fault.ClassPermanent}}, nil, connectors.StatusUnhealthy, fault.ClassPermanent, 0, "x: broken"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := connectors.NewResult(tc.checks, time.Now(), tc.critical...)
			if r.Status != tc.status || r.Class != tc.class {
				t.Errorf("status, class = %v, %v; want %v, %v", r.Status, r.Class, tc.status, tc.class)
			}
			if r.Latency <= 0 {
				t.Errorf("latency = %v", r.Latency)
			}
			if !strings.Contains(r.Message, tc.inMessage) {
				t.Errorf("message %q does not contain %q", r.Message, tc.inMessage)
			}
			if tc.class != fault.ClassUnknown && fault.ClassOf(r.Err) != tc.class {
				t.Errorf("Err class = %v, want %v", fault.ClassOf(r.Err), tc.class)
			}
			if fault.RetryAfterOf(r.Err) != tc.retry {
				t.Errorf("Err retry = %v, want %v", fault.RetryAfterOf(r.Err), tc.retry)
			}
			if r.OK() != (tc.status == connectors.StatusHealthy || tc.status == connectors.StatusDegraded) {
				t.Errorf("OK() = %v", r.OK())
			}
		})
	}
}

func TestRunCheck(t *testing.T) {
	c := connectors.RunCheck(t.Context(), "tags", func(context.Context) (string, error) { return "3 tags", nil })
	if !c.OK || c.Message != "3 tags" || c.Latency <= 0 || c.Capability != "tags" {
		t.Errorf("pass: %+v", c)
	}
	c = connectors.RunCheck(t.Context(), "repos", func(context.Context) (string, error) {
		return "", fault.Permanentf("404 Not Found")
	})
	if c.OK || c.Class != fault.ClassPermanent || c.Message != "404 Not Found" || c.Err == nil {
		t.Errorf("fail: %+v", c)
	}
	r := connectors.FailedResult(time.Now(), "auth", fault.Permanentf("the secret does not resolve"))
	if r.Status != connectors.StatusUnhealthy || r.Class != fault.ClassPermanent || len(r.Checks) != 1 || r.Checks[0].Capability != "auth" {
		t.Errorf("FailedResult: %+v", r)
	}
}
