package main

import "inthub.dev/services/internal/devfleet"

// fleet lists the services `inthub dev` runs, in start order. Each later
// issue appends its service here (catalog, health-poller, annotation, ...)
// and nothing else in this command has to change. This command is the one
// place allowed to import several services: it only assembles them, they
// still talk to each other through JetStream alone.
var fleet = []devfleet.Builder{}
