package faultenv_test

import "github.com/redsource/redsource/internal/faultenv"

var helpers = faultenv.Helpers{}
