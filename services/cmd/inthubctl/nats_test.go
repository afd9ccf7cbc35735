package main

import (
	"context"
	"strings"
	"testing"
)

// inthubctl reads --nats-url as the services do (cli.NATSServers): a list
// of several servers connects to one that is up; a URL that is not a NATS
// URL is a usage error; a password never reaches the message.
func TestNATSURLAsTheServicesReadIt(t *testing.T) {
	f := newFixture(t)
	dead := "nats://127.0.0.1:1"
	r := runWith(context.Background(), map[string]string{"NATS_URL": dead + ", " + f.url}, "dlq", "list")
	if r.code != 0 {
		t.Errorf("with a dead server first in the list: exit %d, stderr %q", r.code, r.stderr)
	}
	for _, tc := range []struct{ url, want string }{
		{"http://127.0.0.1:4222", "not nats, tls, ws or wss"},
		{"nats://u:hunter2@127.0.0.1:4222/path", "want nats://host:port"},
	} {
		r := runWith(context.Background(), map[string]string{"NATS_URL": tc.url}, "dlq", "list")
		if r.code != exitUsage || !strings.Contains(r.stderr, tc.want) || strings.Contains(r.stderr, "hunter2") {
			t.Errorf("%s: exit %d, stderr %q; want a usage error containing %q, without the password", tc.url, r.code, r.stderr, tc.want)
		}
	}
	r = runWith(context.Background(), map[string]string{"NATS_URL": "nats://u:hunter2@127.0.0.1:1"}, "dlq", "list")
	if r.code != exitError || strings.Contains(r.stderr, "hunter2") || !strings.Contains(r.stderr, "127.0.0.1:1") {
		t.Errorf("unreachable with a password: exit %d, stderr %q", r.code, r.stderr)
	}
}
