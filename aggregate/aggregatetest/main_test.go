package aggregatetest_test

import (
	"testing"

	"go.uber.org/goleak"
)

// Every goroutine a test starts (retry timers, the test proxy, clients)
// must be gone when the tests end.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
