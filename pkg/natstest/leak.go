package natstest

import "go.uber.org/goleak"

// LeakOptions are the goroutines an embedded nats-server leaves behind
// after Shutdown (process-wide, not the test's), for goleak.VerifyTestMain
// in packages that start one:
//
//	goleak.VerifyTestMain(m, natstest.LeakOptions()...)
func LeakOptions(extra ...goleak.Option) []goleak.Option {
	return append([]goleak.Option{
		goleak.IgnoreTopFunction("github.com/nats-io/nats-server/v2/server.(*Server).startGoRoutine.func1"),
		goleak.IgnoreAnyFunction("github.com/nats-io/nats-server/v2/server.(*fileStore).syncBlocks"),
		goleak.IgnoreAnyFunction("github.com/nats-io/nats-server/v2/server.ipQueue[...].pop"),
		goleak.IgnoreTopFunction("time.Sleep"),
	}, extra...)
}
