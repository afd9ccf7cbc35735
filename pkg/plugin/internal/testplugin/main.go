// Command testplugin is the connector plugin of pkg/plugin's tests: type
// "test.plugin", whose test and health checks GET <endpoint>/ping with the
// AuthRef's secret as a bearer token, so that a test server decides the
// outcome (a pass, a refusal, a hang to kill the plugin in).
//
// -ldflags "-X main.protocol=2" builds it for a protocol the host does
// not speak; "-X main.pluginType=..." for another type.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	goplugin "github.com/hashicorp/go-plugin"

	"inthub.dev/pkg/connectors"
	"inthub.dev/pkg/fault"
	"inthub.dev/pkg/plugin/internal/wire"
	"inthub.dev/pkg/plugin/sdk"
)

var (
	protocol   = "1"
	pluginType = "test.plugin"
	version    = "0.1.0"
)

const schema = `{"$schema":"https://json-schema.org/draft/2020-12/schema","type":"object",
"additionalProperties":false,"required":["endpoint"],
"properties":{"endpoint":{"type":"string","format":"uri"},"token":{"type":"string","x-secret":true}}}`

func main() {
	p := sdk.Plugin{
		ID:      "testplugin",
		Version: version,
		Info: connectors.Info{Type: pluginType, Provider: "testplugin", DisplayName: "Test plugin",
			Description: "pkg/plugin's test connector", Capabilities: []string{"ping", "repos"},
			ConfigSchema: []byte(schema)},
		New: func(cfg connectors.Config) (connectors.Connector, error) { return newConn(cfg) },
	}
	if protocol == "1" {
		sdk.Serve(p)
		return
	}
	v, _ := strconv.Atoi(protocol)
	goplugin.Serve(&goplugin.ServeConfig{
		HandshakeConfig:  wire.Handshake,
		VersionedPlugins: map[int]goplugin.PluginSet{v: wire.VersionedPlugins(sdk.NewServer(p))[wire.ProtocolVersion]},
		GRPCServer:       goplugin.DefaultGRPCServer,
	})
}

type conf struct {
	Endpoint string `json:"endpoint"`
	Token    string `json:"token,omitempty"`
}

type conn struct {
	cfg  connectors.Config
	conf conf
}

func newConn(cfg connectors.Config) (*conn, error) {
	c := &conn{cfg: cfg}
	dec := json.NewDecoder(bytes.NewReader(cfg.Config))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c.conf); err != nil {
		return nil, fault.Permanent(fmt.Errorf("test.plugin: config: %w", err))
	}
	return c, nil
}

func (c *conn) Type() string     { return pluginType }
func (c *conn) Provider() string { return "testplugin" }
func (c *conn) Close() error     { return nil }

func (c *conn) Validate() error {
	if c.conf.Endpoint == "" {
		return fault.Permanent(errors.New("endpoint: is required"))
	}
	return nil
}

func (c *conn) ping(ctx context.Context) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.conf.Endpoint+"/ping", nil)
	if err != nil {
		return "", fault.Permanent(err)
	}
	ref := c.conf.Token
	if ref == "" {
		ref = c.cfg.AuthRef
	}
	if ref != "" {
		tok, err := c.cfg.Secrets.Resolve(ctx, ref)
		if err != nil {
			return "", err
		}
		req.Header.Set("Authorization", "Bearer "+string(tok))
	}
	resp, err := connectors.Do(c.cfg.HTTPClient, req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	return "pong", nil
}

func (c *conn) TestConnection(ctx context.Context) connectors.Result {
	start := time.Now()
	return connectors.NewResult([]connectors.Check{connectors.RunCheck(ctx, "ping", c.ping)}, start)
}

func (c *conn) CheckHealth(ctx context.Context) connectors.Result { return c.TestConnection(ctx) }

func (c *conn) ListRepositories(ctx context.Context, _ connectors.ListOptions) (connectors.Page[connectors.Repository], error) {
	if _, err := c.ping(ctx); err != nil {
		return connectors.Page[connectors.Repository]{}, err
	}
	return connectors.Page[connectors.Repository]{Items: []connectors.Repository{{ID: "1", FullName: "acme/api"}}}, nil
}

func (c *conn) ListBranches(context.Context, string, connectors.ListOptions) (connectors.Page[connectors.Branch], error) {
	return connectors.Page[connectors.Branch]{}, fault.Permanentf("no branches here")
}

func (c *conn) ListTags(context.Context, string, connectors.ListOptions) (connectors.Page[connectors.Tag], error) {
	return connectors.Page[connectors.Tag]{}, fault.Permanentf("no tags here")
}
