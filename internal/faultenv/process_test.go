package faultenv_test

import (
	"context"
	"errors"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/redsource/redsource/internal/faultenv"
)

func TestSpawnKill(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	p := faultenv.Spawn(t, "waiter", "FAULTENV_TEST_WORD=hello")
	require.Eventually(t, func() bool { return strings.Contains(p.Stdout.String(), "ready hello") },
		20*time.Second, 5*time.Millisecond, "the helper runs, with the extra environment")
	require.Equal(t, -1, p.ExitCode(), "still running")

	require.NoError(t, p.Pause())
	require.NoError(t, p.Resume())
	require.NoError(t, p.Kill())
	<-p.Done()
	err := p.Wait(ctx)
	var ee *exec.ExitError
	require.ErrorAs(t, err, &ee)
	require.Equal(t, syscall.SIGKILL, ee.Sys().(syscall.WaitStatus).Signal())
	require.ErrorIs(t, syscall.Kill(p.PID(), 0), syscall.ESRCH)
	require.NoError(t, p.Kill(), "killing it again does nothing")
}

// A paused helper does not react to SIGTERM until it is resumed.
func TestSpawnPauseTerminate(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	p := faultenv.Spawn(t, "waiter")
	require.Eventually(t, func() bool { return strings.Contains(p.Stdout.String(), "ready") }, 20*time.Second, 5*time.Millisecond)
	require.NoError(t, p.Pause())
	require.NoError(t, p.Signal(syscall.SIGTERM))
	short, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	require.ErrorIs(t, p.Wait(short), context.DeadlineExceeded, "paused: SIGTERM waits")
	require.NoError(t, p.Resume())
	require.NoError(t, p.Wait(ctx))
	require.Equal(t, 0, p.ExitCode())
	require.Contains(t, p.Stderr.String(), "terminated")
}

func TestSpawnExitCode(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	p := faultenv.Spawn(t, "exit3")
	var ee *exec.ExitError
	require.True(t, errors.As(p.Wait(ctx), &ee))
	require.Equal(t, 3, p.ExitCode())

	q := faultenv.Spawn(t, "no-such-helper")
	require.Error(t, q.Wait(ctx))
	require.Equal(t, 2, q.ExitCode())
	require.Contains(t, q.Stderr.String(), `no helper "no-such-helper"`)
}
