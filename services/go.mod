module inthub.dev/services

go 1.26.8

require (
	inthub.dev/events v0.0.0-00010101000000-000000000000
	inthub.dev/migrations v0.0.0-00010101000000-000000000000
	inthub.dev/pkg v0.0.0-00010101000000-000000000000
	inthub.dev/schemas v0.0.0-00010101000000-000000000000
)

replace inthub.dev/schemas => ../schemas

replace inthub.dev/events => ../events

replace inthub.dev/pkg => ../pkg

replace inthub.dev/migrations => ../migrations
