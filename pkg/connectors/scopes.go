package connectors

import (
	"context"
	"errors"
)

// ScopeReporter is implemented by connectors whose credentials carry
// scopes or permissions the provider can list (a GitHub App installation's
// permissions, a GitLab token's scopes). The doctor's authorization check
// asks it: a credential that authenticates but lacks a scope passes a test
// connection's reads and fails the first write.
type ScopeReporter interface {
	// Scopes asks the provider what the integration's credential may do
	// and compares it with what the integration needs. An error wrapping
	// ErrScopesNotReported means the credential kind has no scopes to read
	// (a CI job token); any other error is classified (fault) and fit for
	// users to read.
	Scopes(ctx context.Context) (ScopeReport, error)
}

// ErrScopesNotReported is wrapped when a credential has no scopes the
// provider would list.
var ErrScopesNotReported = errors.New("the provider does not report this credential's scopes")

// ScopeReport is what a credential may do against what it must.
type ScopeReport struct {
	// Granted are the credential's scopes as the provider names them,
	// sorted ("api", "checks:write").
	Granted []string `json:"granted"`
	// Required are the scopes the integration's operations need.
	Required []string `json:"required"`
	// Missing are the Required ones not Granted (a GitHub "read" where
	// "write" is needed counts as missing).
	Missing []string `json:"missing,omitempty"`
	// APIVersion is the provider's version or API version where it told
	// ("16.11.2", "2022-11-28"), "" when it did not.
	APIVersion string `json:"apiVersion,omitempty"`
	// VersionProblem says why APIVersion is not supported, "" when it is
	// or is unknown.
	VersionProblem string `json:"versionProblem,omitempty"`
	// Suggestions say, for people, how to grant what is missing.
	Suggestions []string `json:"suggestions,omitempty"`
	// Commands check or fix the credential from a shell. They are shown,
	// never run, and name no secret (a placeholder such as $GITLAB_TOKEN
	// stands for it).
	Commands []string `json:"commands,omitempty"`
}
