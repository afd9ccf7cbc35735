package main

import (
	"strings"

	"inthub.dev/pkg/plugin"
	"inthub.dev/services/internal/cli"
)

// pluginConfig reads --plugin-dir (comma-separated) and the allow-list
// file of --plugin-checksums. Directories without an allow-list would
// refuse every binary: that is a usage error, said at start.
func pluginConfig(dirs, checksumsFile string) ([]string, []string, error) {
	var ds []string
	for _, d := range strings.Split(dirs, ",") {
		if d = strings.TrimSpace(d); d != "" {
			ds = append(ds, d)
		}
	}
	if len(ds) == 0 {
		return nil, nil, nil
	}
	if checksumsFile == "" {
		return nil, nil, cli.Usagef("--plugin-dir needs --plugin-checksums: a file of the SHA-256 sums of the allowed plugin binaries (sha256sum output)")
	}
	sums, err := plugin.ReadChecksumsFile(checksumsFile)
	if err != nil {
		return nil, nil, cli.Usagef("--plugin-checksums: %w", err)
	}
	return ds, sums, nil
}
