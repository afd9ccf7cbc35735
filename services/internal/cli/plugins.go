package cli

import (
	"strings"

	"inthub.dev/pkg/plugin"
)

// PluginFlags are the options of every binary that builds connectors:
// where out-of-process connector plugins live and which binaries may run.
// scanned says when the directories are read ("at start and on POST
// /api/v1/plugins/discover" for the catalog, which records and announces
// plugins; "at start and every minute" for the workers, which only use
// them).
func PluginFlags(scanned string) []Option {
	return []Option{
		Flag("plugin-dir", "INTHUB_PLUGIN_DIRS", "",
			"directories of connector plugins, comma-separated, scanned "+scanned+"; no plugin host when empty"),
		Flag("plugin-checksums", "INTHUB_PLUGIN_CHECKSUMS", "",
			"file of the SHA-256 sums of the plugin binaries allowed to run (sha256sum output); needed with --plugin-dir"),
	}
}

// Plugins reads the options of PluginFlags: the directories and the
// allow-list. Both are nil without directories (no plugin host).
func (v Values) Plugins() (dirs, checksums []string, err error) {
	return ParsePlugins(v.String)
}

// ParsePlugins is Values.Plugins for a command that parses its flags
// itself (inthub dev); get returns an option's value by name.
// Directories without an allow-list would refuse every binary: that is a
// usage error, said at start, as is an allow-list that does not read.
func ParsePlugins(get func(name string) string) (dirs, checksums []string, err error) {
	for d := range strings.SplitSeq(get("plugin-dir"), ",") {
		if d = strings.TrimSpace(d); d != "" {
			dirs = append(dirs, d)
		}
	}
	if len(dirs) == 0 {
		return nil, nil, nil
	}
	file := get("plugin-checksums")
	if file == "" {
		return nil, nil, Usagef("--plugin-dir needs --plugin-checksums: a file of the SHA-256 sums of the allowed plugin binaries (sha256sum output)")
	}
	sums, err := plugin.ReadChecksumsFile(file)
	if err != nil {
		return nil, nil, Usagef("--plugin-checksums: %w", err)
	}
	return dirs, sums, nil
}
