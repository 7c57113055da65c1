package snapshot_test

import (
	"testing"

	"github.com/redsource/redsource/internal/testenv"
)

// Every goroutine a test starts (retry timers, the test proxy, clients)
// must be gone when the tests end.
func TestMain(m *testing.M) { testenv.VerifyTestMain(m) }
