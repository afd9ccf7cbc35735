// Package builtin picks the providers built into the binaries (the Caddy
// way: each provider registers itself with connectors.Default() in init();
// importing this package for its side effects registers them all). A
// service does
//
//	import _ "inthub.dev/pkg/connectors/builtin"
//
// and the core never names a provider.
package builtin

import (
	_ "inthub.dev/pkg/connectors/bitbucket"
	_ "inthub.dev/pkg/connectors/cloudwatch"
	_ "inthub.dev/pkg/connectors/github"
	_ "inthub.dev/pkg/connectors/gitlab"
	_ "inthub.dev/pkg/connectors/harbor"
	_ "inthub.dev/pkg/connectors/inmemory"
	_ "inthub.dev/pkg/connectors/oci"
)

// Types are the integration types this package registers, for tests and
// for tooling that checks a binary carries them.
var Types = []string{
	"monitoring.cloudwatch",
	"registry.harbor",
	"registry.oci",
	"scm.bitbucket",
	"scm.github",
	"scm.gitlab",
	"test.inmemory",
}
