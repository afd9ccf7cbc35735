package oci_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"inthub.dev/pkg/connectors/oci/ocitest"
	"oras.land/oras-go/v2/registry/remote"
	"oras.land/oras-go/v2/registry/remote/auth"
)

// registryBin is Debian's docker-registry (distribution v2.8); .ci/run
// installs it. The tests fail without it rather than skip: a skipped
// real-registry test is the "passes while real use fails" this suite is for.
const registryBin = "/usr/bin/docker-registry"

// realRegistry is a docker-registry process on a loopback port.
type realRegistry struct {
	Host     string // 127.0.0.1:port
	URL      string // http://127.0.0.1:port
	User     string
	Password string // "" when auth is off
}

// startRegistry runs docker-registry with a temp storage dir, htpasswd
// auth when user is not empty, and kills it at cleanup.
func startRegistry(t testing.TB, user, password string) *realRegistry {
	t.Helper()
	bin := registryBin
	if _, err := os.Stat(bin); err != nil {
		p, lookErr := exec.LookPath("docker-registry")
		if lookErr != nil {
			t.Fatalf("the real-registry tests need %s (Debian package docker-registry): "+
				"run `apt-get install -y docker-registry apache2-utils` (.ci/run does): %v", registryBin, err)
		}
		bin = p
	}
	dir := t.TempDir()
	authBlock := ""
	if user != "" {
		htpasswd, err := exec.LookPath("htpasswd")
		if err != nil {
			t.Fatalf("the basic-auth registry test needs htpasswd (Debian package apache2-utils): " +
				"run `apt-get install -y docker-registry apache2-utils` (.ci/run does)")
		}
		out, err := exec.Command(htpasswd, "-Bbn", user, password).Output()
		if err != nil {
			t.Fatalf("htpasswd -Bbn: %v", err)
		}
		if err := os.WriteFile(filepath.Join(dir, "htpasswd"), out, 0o600); err != nil {
			t.Fatal(err)
		}
		authBlock = fmt.Sprintf("auth:\n  htpasswd:\n    realm: inthub-test\n    path: %s\n", filepath.Join(dir, "htpasswd"))
	}

	// A free port can be taken between our probe and the registry's bind;
	// try a few times rather than flake.
	for attempt := 0; attempt < 3; attempt++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := l.Addr().String()
		l.Close()

		cfg := fmt.Sprintf(`version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: %s
  delete:
    enabled: true
http:
  addr: %s
  secret: inthub-test-secret
%s`, filepath.Join(dir, "storage"), addr, authBlock)
		cfgPath := filepath.Join(dir, "config.yml")
		if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
		var out ocitest.Buffer
		cmd := exec.Command(bin, "serve", cfgPath)
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatalf("start %s: %v", bin, err)
		}
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		stop := func() {
			_ = cmd.Process.Kill()
			<-exited
		}
		if err := waitV2(addr, exited, 15*time.Second); err != nil {
			stop()
			if strings.Contains(out.String(), "address already in use") {
				continue
			}
			t.Fatalf("docker-registry did not come up: %v\n%s", err, out.String())
		}
		t.Cleanup(stop)
		return &realRegistry{Host: addr, URL: "http://" + addr, User: user, Password: password}
	}
	t.Fatal("docker-registry: no free loopback port after 3 attempts")
	return nil
}

// waitV2 polls /v2/ until it answers (200 or 401) or the deadline.
func waitV2(addr string, exited <-chan error, within time.Duration) error {
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: time.Second}
	deadline := time.After(within)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		resp, err := client.Get("http://" + addr + "/v2/")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK || resp.StatusCode == http.StatusUnauthorized {
				return nil
			}
		}
		select {
		case err := <-exited:
			return fmt.Errorf("exited: %v", err)
		case <-deadline:
			return fmt.Errorf("no answer on /v2/ within %s (last error %v)", within, err)
		case <-tick.C:
		}
	}
}

// pusher pushes test images with oras-go's Repository (a different code
// path from the connector's, which only reads).
type pusher struct {
	t   testing.TB
	reg *realRegistry
	tr  *http.Transport
}

func newPusher(t testing.TB, reg *realRegistry) *pusher {
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	return &pusher{t: t, reg: reg, tr: tr}
}

func (p *pusher) repo(name string) *remote.Repository {
	p.t.Helper()
	r, err := remote.NewRepository(p.reg.Host + "/" + name)
	if err != nil {
		p.t.Fatal(err)
	}
	r.PlainHTTP = true
	r.Client = &auth.Client{
		Client:     &http.Client{Transport: p.tr},
		Credential: auth.StaticCredential(p.reg.Host, auth.Credential{Username: p.reg.User, Password: p.reg.Password}),
	}
	return r
}

func (p *pusher) blob(ctx context.Context, r *remote.Repository, mediaType string, b []byte) ocispec.Descriptor {
	p.t.Helper()
	d := ocispec.Descriptor{MediaType: mediaType, Digest: digest.FromBytes(b), Size: int64(len(b))}
	if err := r.Push(ctx, d, bytes.NewReader(b)); err != nil {
		p.t.Fatalf("push blob: %v", err)
	}
	return d
}

// image pushes a one-layer image with random content and returns its
// manifest's descriptor. docker selects the Docker v2 media types.
func (p *pusher) image(ctx context.Context, name string, docker bool, platform *ocispec.Platform) ocispec.Descriptor {
	p.t.Helper()
	r := p.repo(name)
	cfgType, layerType, manifestType := ocispec.MediaTypeImageConfig, ocispec.MediaTypeImageLayerGzip, ocispec.MediaTypeImageManifest
	if docker {
		cfgType = "application/vnd.docker.container.image.v1+json"
		layerType = "application/vnd.docker.image.rootfs.diff.tar.gzip"
		manifestType = "application/vnd.docker.distribution.manifest.v2+json"
	}
	layer := make([]byte, 512)
	_, _ = rand.Read(layer)
	config, _ := json.Marshal(map[string]any{"architecture": "amd64", "os": "linux", "rootfs": map[string]any{"type": "layers", "diff_ids": []string{digest.FromBytes(layer).String()}}})
	m := ocispec.Manifest{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: manifestType,
		Config:    p.blob(ctx, r, cfgType, config),
		Layers:    []ocispec.Descriptor{p.blob(ctx, r, layerType, layer)},
	}
	body, _ := json.Marshal(m)
	d := ocispec.Descriptor{MediaType: manifestType, Digest: digest.FromBytes(body), Size: int64(len(body)), Platform: platform}
	if err := r.Push(ctx, d, bytes.NewReader(body)); err != nil {
		p.t.Fatalf("push manifest: %v", err)
	}
	return d
}

// tag points tag at an existing manifest.
func (p *pusher) tag(ctx context.Context, name string, d ocispec.Descriptor, tag string) {
	p.t.Helper()
	if err := p.repo(name).Tag(ctx, d, tag); err != nil {
		p.t.Fatalf("tag %s:%s: %v", name, tag, err)
	}
}

// index pushes a two-platform OCI index.
func (p *pusher) index(ctx context.Context, name string) ocispec.Descriptor {
	p.t.Helper()
	amd := p.image(ctx, name, false, &ocispec.Platform{OS: "linux", Architecture: "amd64"})
	arm := p.image(ctx, name, false, &ocispec.Platform{OS: "linux", Architecture: "arm64"})
	idx := ocispec.Index{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: ocispec.MediaTypeImageIndex,
		Manifests: []ocispec.Descriptor{amd, arm},
	}
	body, _ := json.Marshal(idx)
	d := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageIndex, Digest: digest.FromBytes(body), Size: int64(len(body))}
	if err := p.repo(name).Push(ctx, d, bytes.NewReader(body)); err != nil {
		p.t.Fatalf("push index: %v", err)
	}
	return d
}
