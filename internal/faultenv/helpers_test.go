package faultenv_test

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"testing"
	"time"

	"github.com/redsource/redsource/internal/faultenv"
)

// helpers are the child processes this package's tests spawn.
var helpers = faultenv.Helpers{
	// waiter says it is ready, then runs until SIGTERM.
	"waiter": func() int {
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
		defer stop()
		fmt.Println("ready", os.Getenv("FAULTENV_TEST_WORD"))
		<-ctx.Done()
		fmt.Fprintln(os.Stderr, "terminated")
		return 0
	},
	"exit3": func() int { return 3 },
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	t.Cleanup(cancel)
	return ctx
}
