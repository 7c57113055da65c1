package faultenv

import (
	"time"

	"go.uber.org/goleak"
)

// Settled wraps m for goleak.VerifyTestMain: after the tests ran, it gives
// goroutines that outlive a closed client up to wait to end before goleak
// looks. A rueidis cluster client leaves a topology refresh
// ((*call).DelayDo) sleeping up to 1s after Close when a connection
// failed, longer than goleak's own retries (about 0.4s in v1.3.0, not
// configurable). Nothing is ignored: a goroutine still there after wait is
// reported.
//
//	func TestMain(m *testing.M) {
//		faultenv.RunHelper(helpers)
//		goleak.VerifyTestMain(faultenv.Settled(m, 5*time.Second))
//	}
func Settled(m goleak.TestingM, wait time.Duration, opts ...goleak.Option) goleak.TestingM {
	return settled{m, wait, opts}
}

type settled struct {
	m    goleak.TestingM
	wait time.Duration
	opts []goleak.Option
}

func (s settled) Run() int {
	code := s.m.Run()
	// Find retries with backoff for a while before it reports, so this
	// loop polls without a sleep of its own.
	for deadline := time.Now().Add(s.wait); time.Now().Before(deadline); {
		if goleak.Find(s.opts...) == nil {
			break
		}
	}
	return code
}
