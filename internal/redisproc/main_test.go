package redisproc_test

import (
	"testing"

	"github.com/redsource/redsource/internal/testenv"
)

func TestMain(m *testing.M) { testenv.VerifyTestMain(m) }
