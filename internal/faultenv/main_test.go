package faultenv_test

import (
	"testing"

	"github.com/redsource/redsource/internal/faultenv"
	"github.com/redsource/redsource/internal/testenv"
)

func TestMain(m *testing.M) {
	faultenv.RunHelper(helpers)
	testenv.VerifyTestMain(m)
}
