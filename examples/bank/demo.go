package main

import (
	"context"
	"errors"
)

func cmdDemo(ctx context.Context, e *env, args []string) int {
	return e.fail(errors.New("demo: not written yet"))
}
