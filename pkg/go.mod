module inthub.dev/pkg

go 1.26.8

require (
	inthub.dev/events v0.0.0-00010101000000-000000000000
	inthub.dev/schemas v0.0.0-00010101000000-000000000000
)

replace inthub.dev/schemas => ../schemas

replace inthub.dev/events => ../events
