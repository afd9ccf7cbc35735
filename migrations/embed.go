// Package migrations holds inthub's numbered PostgreSQL migrations
// (NNNN_name.sql), embedded so every binary carries the schema it expects,
// and Apply, which brings a database up to date.
package migrations

import "embed"

// FS holds every migration; names sort in the order they apply.
//
//go:embed *.sql
var FS embed.FS
