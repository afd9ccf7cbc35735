// Package events is inthub's public event contract: the subjects, the
// CloudEvents 1.0 envelope (structured JSON mode) and the payload types.
// Other teams import this module alone, so it depends only on the standard
// library, inthub.dev/schemas and github.com/google/uuid.
//
// Events are named by their subject (the envelope's type), never by a Go
// type name. Every event is checked against the JSON Schemas in
// inthub.dev/schemas when it is built ([New]) and when it is read
// ([Parse]); an event that fails is poison and must not be retried. A type
// that has no schema here (another team's subject) is checked as an
// envelope only, and its data is carried as opaque JSON.
//
// The human-readable contract is docs/events.md.
package events
