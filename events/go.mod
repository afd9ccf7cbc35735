module inthub.dev/events

go 1.26.0

require inthub.dev/schemas v0.0.0-00010101000000-000000000000

require (
	github.com/google/uuid v1.6.0
	github.com/santhosh-tekuri/jsonschema/v6 v6.0.3 // indirect
	golang.org/x/text v0.43.0 // indirect
)

replace inthub.dev/schemas => ../schemas
