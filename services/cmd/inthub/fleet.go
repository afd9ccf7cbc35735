package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"inthub.dev/services/annotation"
	"inthub.dev/services/catalog"
	"inthub.dev/services/catalog/auth"
	"inthub.dev/services/enrichment"
	"inthub.dev/services/healthpoller"
	"inthub.dev/services/internal/cli"
	"inthub.dev/services/internal/devfleet"
)

// fleet lists the services `inthub dev` runs, in start order. Each later
// issue appends its service here (health-poller, annotation, ...) and
// nothing else in this command has to change. This command is the one
// place allowed to import several services: it only assembles them, they
// still talk to each other through JetStream alone.
var fleet = []devfleet.Builder{
	{Name: "catalog", Build: buildCatalog},
	{Name: "health-poller", Build: buildHealthPoller},
	{Name: "annotation", Build: buildAnnotation},
	{Name: "enrichment", Build: buildEnrichment},
}

// Dev identity: one demo tenant and an admin of it.
const (
	devIssuer   = "inthub-dev"
	devAudience = "inthub"
	devSubject  = "dev-admin"
	devTenant   = "00000000-0000-4000-8000-00000000d3e0"
)

func buildCatalog(d devfleet.Deps) (devfleet.Component, error) {
	if d.DatabaseURL == "" {
		return nil, errors.New("the catalog needs PostgreSQL: start it (pg_ctlcluster ... start) or point --database-url at one")
	}
	secret, err := devSecret(d.DataDir)
	if err != nil {
		return nil, err
	}
	svc, err := catalog.New(catalog.Config{
		Listen:      d.CatalogListen,
		DatabaseURL: d.DatabaseURL,
		Streams:     d.Streams,
		Auth: auth.Config{Issuer: devIssuer, Audience: devAudience, DevMode: true,
			DevHS256Secret: secret, Logger: d.Log},
		Logger:          d.Log,
		TracerProvider:  d.Tracing.Service("catalog"),
		PluginDirs:      d.PluginDirs,
		PluginChecksums: d.PluginChecksums,
		DoctorPacksDir:  d.DoctorPacksDir,
		Vault:           d.Vault,
	}, d.NATS)
	if err != nil {
		return nil, err
	}
	svc.AllowLoopbackEndpoints()
	if d.Vault != nil {
		d.Log.Info("authref://vault references are read from this Vault", "vault", *d.Vault)
	}
	token, err := auth.DevToken(secret, devIssuer, devAudience, devSubject, devTenant,
		[]string{"integrations:read", "integrations:write", "integrations:admin"}, 30*24*time.Hour)
	if err != nil {
		return nil, err
	}
	return devfleet.Func{N: "catalog", F: func(ctx context.Context) error {
		go func() {
			select {
			case <-svc.Ready():
			case <-ctx.Done():
				return
			}
			base := "http://" + svc.Addr().String()
			fmt.Fprintf(d.Out, `
Catalog API  %s/api/v1  (OpenAPI: %s/api/v1/openapi.json)
Dev token    (tenant %s, all scopes, 30 days)
  export INTHUB_TOKEN=%s
  curl -s -H "Authorization: Bearer $INTHUB_TOKEN" %s/api/v1/integrations
  curl -s -H "Authorization: Bearer $INTHUB_TOKEN" %s/api/v1/integration-types
`, base, base, devTenant, token, base, base)
			if d.Demo {
				client := &http.Client{Timeout: 10 * time.Second}
				demo, err := seedDemo(ctx, client, base, token)
				client.CloseIdleConnections()
				if err != nil {
					if ctx.Err() == nil {
						d.Log.Warn("demo integrations not created", "error", err.Error())
					}
					return
				}
				printDemo(d.Out, base, d.NATSURL, demo, d.HealthInterval)
			}
		}()
		return svc.Run(ctx)
	}}, nil
}

// devSecret keeps the HS256 secret of dev tokens in the data directory, so
// a token printed once keeps working across restarts of inthub dev.
func devSecret(dataDir string) ([]byte, error) {
	path := filepath.Join(dataDir, "dev-jwt-secret")
	if b, err := os.ReadFile(path); err == nil && len(b) >= 64 {
		return b, nil
	}
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return nil, err
	}
	secret := []byte(hex.EncodeToString(raw))
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return nil, fmt.Errorf("dev secret: %w", err)
	}
	if err := os.WriteFile(path, secret, 0o600); err != nil {
		return nil, fmt.Errorf("dev secret: %w", err)
	}
	return secret, nil
}

// buildHealthPoller runs the poller on the dev data directory, with
// loopback and http:// endpoints allowed as the catalog allows them.
func buildHealthPoller(d devfleet.Deps) (devfleet.Component, error) {
	cfg := healthpoller.Config{
		Listen:          d.HealthPollerListen,
		DataDir:         filepath.Join(d.DataDir, "health-poller"),
		DefaultInterval: d.HealthInterval,
		Topology:        d.Streams.Topology,
		Logger:          d.Log,
		TracerProvider:  d.Tracing.Service("health-poller"),
		Resolver:        cli.Resolver(d.Vault, d.Log),
	}
	cfg.Egress.AllowLoopback = true
	cfg.Egress.AllowHTTP = true
	svc, err := healthpoller.New(cfg, d.NATS)
	if err != nil {
		return nil, err
	}
	return workerComponent("health-poller", d, svc, cfg.Resolver, func() string {
		return fmt.Sprintf("Health poller  http://%s/metrics  (/healthz, /readyz)", svc.Addr())
	}), nil
}

// buildAnnotation runs the annotation worker on the dev data directory,
// with loopback and http:// endpoints allowed as the catalog allows them.
func buildAnnotation(d devfleet.Deps) (devfleet.Component, error) {
	cfg := annotation.Config{
		Streams:        d.Streams,
		Listen:         d.AnnotationListen,
		DataDir:        filepath.Join(d.DataDir, "annotation"),
		Logger:         d.Log,
		TracerProvider: d.Tracing.Service("annotation"),
		Resolver:       cli.Resolver(d.Vault, d.Log),
	}
	cfg.Egress.AllowLoopback = true
	cfg.Egress.AllowHTTP = true
	svc, err := annotation.New(cfg, d.NATS)
	if err != nil {
		return nil, err
	}
	return workerComponent("annotation", d, svc, cfg.Resolver, func() string {
		return fmt.Sprintf("Annotation   http://%s/metrics  (/healthz, /readyz)", svc.Addr())
	}), nil
}

// buildEnrichment runs the webhook ingress, the mapper and the correlator
// (not the CloudWatch poller) on the dev database and data directory.
func buildEnrichment(d devfleet.Deps) (devfleet.Component, error) {
	if d.DatabaseURL == "" {
		return nil, errors.New("the enrichment service needs PostgreSQL for its correlation index: start it or point --database-url at one")
	}
	cfg := enrichment.Config{
		Listen:         d.EnrichmentListen,
		WebhookListen:  d.WebhookListen,
		DataDir:        filepath.Join(d.DataDir, "enrichment"),
		DatabaseURL:    d.DatabaseURL,
		Streams:        d.Streams,
		Logger:         d.Log,
		TracerProvider: d.Tracing.Service("enrichment"),
		Resolver:       cli.Resolver(d.Vault, d.Log),
	}
	cfg.Egress.AllowLoopback = true
	cfg.Egress.AllowHTTP = true
	svc, err := enrichment.New(cfg, d.NATS)
	if err != nil {
		return nil, err
	}
	return workerComponent("enrichment", d, svc, cfg.Resolver, func() string {
		return fmt.Sprintf("Enrichment   http://%s/metrics  (/healthz, /readyz); webhooks at http://%s/webhooks/{github,gitlab,sns}/{integrationId}",
			svc.Addr(), svc.WebhookAddr())
	}), nil
}

// worker is what the fleet's workers have in common for `inthub dev`.
type worker interface {
	Run(ctx context.Context) error
	Listening() <-chan struct{}
}

// workerComponent runs svc as a dev component: it prints banner once the
// service listens, and closes the service's secret resolver when it ends.
func workerComponent(name string, d devfleet.Deps, svc worker, resolver interface{ Close() }, banner func() string) devfleet.Component {
	return devfleet.Func{N: name, F: func(ctx context.Context) error {
		defer resolver.Close()
		go func() {
			select {
			case <-svc.Listening():
			case <-ctx.Done():
				return
			}
			fmt.Fprintln(d.Out, banner())
		}()
		return svc.Run(ctx)
	}}
}
