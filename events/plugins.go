package events

import "time"

// PluginRegistered is the payload of plugin.registered: the catalog
// loaded an out-of-process connector plugin, so its type is offered.
// Plugin events are global (no tenant); the envelope has no tenantid.
type PluginRegistered struct {
	PluginID     string    `json:"pluginId"`
	Type         string    `json:"type"` // the integration type it provides, e.g. "registry.quay"
	Version      string    `json:"version"`
	Capabilities []string  `json:"capabilities"`
	Checksum     string    `json:"checksum"` // SHA-256 of the binary, hex
	RegisteredAt time.Time `json:"registeredAt"`
}

// PluginUnregistered is the payload of plugin.unregistered: the plugin's
// binary was removed, replaced, or is no longer allowed.
type PluginUnregistered struct {
	PluginID       string    `json:"pluginId"`
	Type           string    `json:"type"`
	Version        string    `json:"version"`
	Checksum       string    `json:"checksum"`
	UnregisteredAt time.Time `json:"unregisteredAt"`
}

func (PluginRegistered) Subject() string   { return SubjectPluginRegistered }
func (PluginUnregistered) Subject() string { return SubjectPluginUnregistered }
