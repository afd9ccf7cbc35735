// Command registry-quay is the example out-of-process connector plugin:
// the registry.quay type (Quay's instance health, its API with a bearer
// token, and the namespace's repositories), served to the inthub host by
// pkg/plugin/sdk. `make build` puts it in bin/plugins/; docs/plugins.md
// says how to allow and load it.
package main

import (
	_ "embed"

	"inthub.dev/pkg/connectors"
	"inthub.dev/pkg/plugin/sdk"
)

// version is set by the build (-ldflags "-X main.version=...").
var version = "1.0.0"

//go:embed schema.json
var schema []byte

func main() {
	sdk.Serve(Plugin())
}

// Plugin describes the plugin to the sdk.
func Plugin() sdk.Plugin {
	return sdk.Plugin{
		ID:      "quay",
		Version: version,
		Info: connectors.Info{
			Type:         Type,
			Provider:     "quay",
			DisplayName:  "Quay",
			Description:  "A Quay registry (quay.io or self-hosted) with a bearer token: instance health, API, repositories (out-of-process plugin).",
			Capabilities: []string{CheckHealth, CheckAPI, CheckRepos},
			ConfigSchema: schema,
		},
		New: func(cfg connectors.Config) (connectors.Connector, error) { return New(cfg) },
	}
}
