package testenv

import (
	"fmt"
	"os"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// LeakWait is how long VerifyTestMain waits for goroutines to end after
// the tests pass before it calls them leaked.
//
// rueidis v1.0.79 leaves goroutines behind that end by themselves. Its
// NewClient first builds a cluster client, and every connection of that
// client has a hook that schedules a topology refresh when the connection
// fails (a refused dial, a bad password, a broken connection). The refresh
// runs in a goroutine that first sleeps a random delay of up to
// clusterRefreshAutoMaxDelay (1 s below 100 nodes), singleflight's
// (*call).DelayDo, and Close does not stop it. A cluster client that drops
// connections after a topology change closes them from a goroutine that
// sleeps 5 s first. goleak's own retries give up after about 0.4 s, so a
// test that saw a connection fail near the end of the run failed the
// package now and then. Waiting is the fix, not an ignore rule: a
// goroutine still there after LeakWait is reported.
const LeakWait = 10 * time.Second

// VerifyTestMain runs the tests and, when they pass, fails the run if
// goroutines other than the testing package's are still running after
// LeakWait. Use it as the whole TestMain:
//
//	func TestMain(m *testing.M) { testenv.VerifyTestMain(m) }
func VerifyTestMain(m *testing.M, options ...goleak.Option) {
	code := m.Run()
	if code == 0 {
		if err := FindLeaks(LeakWait, options...); err != nil {
			fmt.Fprintf(os.Stderr, "goleak: Errors on successful test run: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

// FindLeaks polls goleak.Find until it finds no unexpected goroutine or
// wait has passed, and returns its last error.
func FindLeaks(wait time.Duration, options ...goleak.Option) error {
	deadline := time.Now().Add(wait)
	for {
		// Find itself retries for about 0.4 s before it reports.
		err := goleak.Find(options...)
		if err == nil || time.Now().After(deadline) {
			return err
		}
	}
}
