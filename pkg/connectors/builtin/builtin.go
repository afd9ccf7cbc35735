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
	_ "inthub.dev/pkg/connectors/acr"
	_ "inthub.dev/pkg/connectors/bitbucket"
	_ "inthub.dev/pkg/connectors/cloudwatch"
	_ "inthub.dev/pkg/connectors/dockerhub"
	_ "inthub.dev/pkg/connectors/ecr"
	_ "inthub.dev/pkg/connectors/gcr"
	_ "inthub.dev/pkg/connectors/ghactions"
	_ "inthub.dev/pkg/connectors/ghcr"
	_ "inthub.dev/pkg/connectors/github"
	_ "inthub.dev/pkg/connectors/gitlab"
	_ "inthub.dev/pkg/connectors/gitlabci"
	_ "inthub.dev/pkg/connectors/harbor"
	_ "inthub.dev/pkg/connectors/inmemory"
	_ "inthub.dev/pkg/connectors/oci"
	_ "inthub.dev/pkg/connectors/vault"
)

// Types are the integration types this package registers, for tests and
// for tooling that checks a binary carries them.
var Types = []string{
	"ci.github_actions",
	"ci.gitlab_ci",
	"monitoring.cloudwatch",
	"registry.acr",
	"registry.dockerhub",
	"registry.ecr",
	"registry.gcr",
	"registry.ghcr",
	"registry.harbor",
	"registry.oci",
	"scm.bitbucket",
	"scm.github",
	"scm.gitlab",
	"test.inmemory",
	"vault.hashicorp",
}
