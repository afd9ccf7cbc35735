// Package schemas holds the JSON Schemas (draft 2020-12) of inthub's events
// and compiles them into a [Validator].
//
// The schemas are embedded so that every service, and every other team that
// imports inthub.dev/events, checks messages against the same contract
// without reading files at run time. They are the source of truth: the Go
// types in inthub.dev/events follow them, and tests there keep the two in
// step.
//
// Layout:
//
//	common.json             shared $defs (uuid, UTC timestamp, the integration object, enums)
//	events/envelope.json    the CloudEvents 1.0 envelope, named "envelope"
//	events/<subject>.json   one payload schema per subject, named by the subject
//
// A later issue adds config/<type>.json, the config schema of each
// integration type (scm.github, registry.harbor, ...), whose secret fields
// are marked "x-secret": true and must hold AuthRef URIs.
//
// A schema may carry "x-message" beside a keyword: it replaces the library's
// wording when that schema rejects a value, so that errors explain the rule
// ("must be a full commit SHA") and never echo the offending value, which
// could be a secret pasted into the wrong field.
package schemas
