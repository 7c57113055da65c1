package faultenv

import (
	"time"

	"go.uber.org/goleak"

	"github.com/redsource/redsource/internal/testenv"
)

// Settled wraps m for goleak.VerifyTestMain: after the tests ran, it waits
// up to wait for goroutines that outlive a closed rueidis client to end
// ([testenv.FindLeaks]; [testenv.LeakWait] says which and why) before
// goleak looks. Nothing is ignored: a goroutine still there after wait is
// reported. [testenv.VerifyTestMain] does the same as a whole TestMain:
//
//	func TestMain(m *testing.M) {
//		faultenv.RunHelper(helpers)
//		testenv.VerifyTestMain(m)
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
	_ = testenv.FindLeaks(s.wait, s.opts...) // goleak.VerifyTestMain reports
	return code
}
