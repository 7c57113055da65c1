package eventstore_test

import (
	"testing"

	"github.com/redsource/redsource/internal/testenv"
)

// Every goroutine a test starts (and every client it opens) ends with it.
func TestMain(m *testing.M) { testenv.VerifyTestMain(m) }
