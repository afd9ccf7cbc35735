package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"
)

// demoIntegration is one integration `inthub dev` creates in the demo
// tenant, through the catalog's API like any client would.
type demoIntegration struct {
	Name   string
	Config map[string]any
	About  string
}

// demoIntegrations are in-memory doubles: they call nothing. With the dev
// health interval of 10 s, demo-flaky turns unhealthy within about a minute
// of any moment and recovers 40 s later: its script steps every 10 s
// through 3 healthy and 4 unhealthy steps. Four unhealthy checks in a row
// pass the poller's failure threshold (3) and stay below its breaker's (5),
// so the breaker does not hold it unhealthy for its 10 minutes.
var demoIntegrations = []demoIntegration{
	{
		Name:   "demo-always-healthy",
		Config: map[string]any{"healthy": true},
		About:  "always healthy",
	},
	{
		Name: "demo-flaky",
		Config: map[string]any{
			"script":            []string{"healthy", "healthy", "healthy", "unhealthy", "unhealthy", "unhealthy", "unhealthy"},
			"scriptStepSeconds": 10,
		},
		About: "healthy for 30 s, failing for 40 s, over and over",
	},
	{
		Name:   "demo-slow",
		Config: map[string]any{"healthy": true, "latencyMs": 1500},
		About:  "healthy, 1.5 s to answer",
	},
}

// seeded is a demo integration as the catalog holds it.
type seeded struct {
	demoIntegration
	ID      string
	Created bool
}

// seedDemo creates the demo integrations that the token's tenant lacks, by
// name, so a restart of inthub dev creates no duplicates (and a demo
// integration deleted by hand comes back at the next start; --demo=false
// stops that).
func seedDemo(ctx context.Context, client *http.Client, base, token string) ([]seeded, error) {
	have, err := integrationsByName(ctx, client, base, token)
	if err != nil {
		return nil, err
	}
	out := make([]seeded, 0, len(demoIntegrations))
	for _, d := range demoIntegrations {
		if id, ok := have[d.Name]; ok {
			out = append(out, seeded{demoIntegration: d, ID: id})
			continue
		}
		var created struct {
			ID string `json:"id"`
		}
		code, err := apiCall(ctx, client, http.MethodPost, base+"/api/v1/integrations", token,
			map[string]any{"type": "test.inmemory", "name": d.Name, "config": d.Config}, &created)
		switch {
		case err != nil:
			return out, fmt.Errorf("create %s: %w", d.Name, err)
		case code == http.StatusConflict:
			// Created meanwhile (another inthub dev on the same database).
			have, err = integrationsByName(ctx, client, base, token)
			if err != nil {
				return out, err
			}
			out = append(out, seeded{demoIntegration: d, ID: have[d.Name]})
		case code != http.StatusCreated:
			return out, fmt.Errorf("create %s: HTTP %d", d.Name, code)
		default:
			out = append(out, seeded{demoIntegration: d, ID: created.ID, Created: true})
		}
	}
	return out, nil
}

// integrationsByName lists the tenant's integrations, every page.
func integrationsByName(ctx context.Context, client *http.Client, base, token string) (map[string]string, error) {
	have := map[string]string{}
	cursor := ""
	for {
		var page struct {
			Items []struct {
				ID   string `json:"id"`
				Name string `json:"name"`
			} `json:"items"`
			NextCursor string `json:"nextCursor"`
		}
		u := base + "/api/v1/integrations?limit=200"
		if cursor != "" {
			u += "&cursor=" + url.QueryEscape(cursor)
		}
		code, err := apiCall(ctx, client, http.MethodGet, u, token, nil, &page)
		if err != nil {
			return nil, fmt.Errorf("list integrations: %w", err)
		}
		if code != http.StatusOK {
			return nil, fmt.Errorf("list integrations: HTTP %d", code)
		}
		for _, it := range page.Items {
			have[it.Name] = it.ID
		}
		if page.NextCursor == "" {
			return have, nil
		}
		cursor = page.NextCursor
	}
}

func apiCall(ctx context.Context, client *http.Client, method, u, token string, body, out any) (int, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return 0, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return resp.StatusCode, err
	}
	if resp.StatusCode < 300 && out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			return resp.StatusCode, fmt.Errorf("response: %w", err)
		}
	}
	return resp.StatusCode, nil
}

// printDemo tells a newcomer where to watch health change.
func printDemo(w io.Writer, base, natsURL string, demo []seeded, interval time.Duration) {
	fmt.Fprintf(w, "\nDemo tenant  %d in-memory integrations, health checked every %s:\n", len(demo), interval)
	var flaky, healthy string
	for _, d := range demo {
		note := ""
		if d.Created {
			note = " (created)"
		}
		fmt.Fprintf(w, "  %-20s %s  %s%s\n", d.Name, d.ID, d.About, note)
		switch d.Name {
		case "demo-flaky":
			flaky = d.ID
		case "demo-always-healthy":
			healthy = d.ID
		}
	}
	if flaky != "" {
		fmt.Fprintf(w, `Watch demo-flaky turn unhealthy and back (within a minute or so):
  curl -s -H "Authorization: Bearer $INTHUB_TOKEN" '%s/api/v1/integrations/%s/health?limit=5'
  curl -s -H "Authorization: Bearer $INTHUB_TOKEN" '%s/api/v1/integrations/%s'
  nats --server %s sub integration.health_changed
`, base, flaky, base, flaky, natsURL)
	}
	if healthy != "" {
		fmt.Fprintf(w, `Post an annotation as Scanner does (the in-memory provider answers) and see its result:
  ./bin/inthubctl annotate --nats-url %[1]s --tenant %[2]s --integration %[3]s --repo acme/api --pr 1 --comment 'hello from inthub' --key demo
A request for an integration that does not exist goes to the dead-letter queue; list and replay it:
  ./bin/inthubctl annotate --nats-url %[1]s --tenant %[2]s --integration 00000000-0000-4000-8000-000000000000 --repo acme/api --pr 1 --comment 'lost'
  ./bin/inthubctl dlq list --nats-url %[1]s
  ./bin/inthubctl dlq replay --nats-url %[1]s --subject scm.annotation.requested --operator "$USER"
`, natsURL, devTenant, healthy)
	}
}
