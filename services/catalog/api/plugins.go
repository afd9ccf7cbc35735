package api

// Plugins discovers and lists out-of-process connector plugins.
// (Filled in with the plugin host: POST /plugins/discover, GET /plugins.)
type Plugins interface{}

func (s *server) registerPlugins() {}
