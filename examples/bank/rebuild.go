package main

import (
	"context"
	"errors"
)

func cmdRebuild(ctx context.Context, e *env, args []string) int {
	return e.fail(errors.New("rebuild: not available yet"))
}
