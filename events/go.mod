module inthub.dev/events

go 1.26.8

require inthub.dev/schemas v0.0.0-00010101000000-000000000000

replace inthub.dev/schemas => ../schemas
