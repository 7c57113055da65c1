package faultsuite

import (
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/redsource/redsource/internal/faultenv"
)

func TestMain(m *testing.M) {
	faultenv.RunHelper(faultenv.Helpers{})
	goleak.VerifyTestMain(faultenv.Settled(m, 5*time.Second))
}
