module inthub.dev/schemas

go 1.26.8
