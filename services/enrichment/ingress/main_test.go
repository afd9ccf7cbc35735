package ingress_test

import (
	"testing"

	"go.uber.org/goleak"

	"inthub.dev/pkg/natstest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, natstest.LeakOptions(
		goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"),
	)...)
}
