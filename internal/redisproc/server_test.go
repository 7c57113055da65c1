package redisproc_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/redsource/redsource/internal/redisproc"
	"github.com/redsource/redsource/internal/testenv"
)

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// counter reads an integer key through a fresh admin connection.
func counter(t *testing.T, ctx context.Context, s *redisproc.Server, key string) int64 {
	t.Helper()
	r, err := s.Do(ctx, "GET", key)
	require.NoError(t, err)
	if r == nil {
		return 0
	}
	n, err := strconv.ParseInt(r.(string), 10, 64)
	require.NoError(t, err)
	return n
}

func incr(t *testing.T, ctx context.Context, s *redisproc.Server, key string, times int) {
	t.Helper()
	for range times {
		_, err := s.Do(ctx, "INCR", key)
		require.NoError(t, err)
	}
}

func TestStartSettings(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	s := redisproc.Start(t, redisproc.Options{AOF: "everysec", MaxMemory: "4mb"})
	for k, want := range map[string]string{
		"appendonly": "yes", "appendfsync": "everysec", "save": "", "maxmemory": "4194304",
		"maxmemory-policy": "noeviction", "dir": s.Dir(), "bind": "127.0.0.1",
	} {
		r, err := s.Do(ctx, "CONFIG", "GET", k)
		require.NoError(t, err)
		require.Equal(t, []any{k, want}, r, k)
	}
	require.NotZero(t, s.PID())
	require.Equal(t, fmt.Sprintf("redis://127.0.0.1:%d", s.Port()), s.URL())
	require.Contains(t, s.LogTail(5), "Ready to accept connections")

	c := testenv.RedisAt(t, s.URL())
	require.NoError(t, c.Do(ctx, c.B().Set().Key("k").Value("v").Build()).Error())
	require.Equal(t, "v", counterString(t, ctx, s, "k"))
}

func counterString(t *testing.T, ctx context.Context, s *redisproc.Server, key string) string {
	t.Helper()
	r, err := s.Do(ctx, "GET", key)
	require.NoError(t, err)
	v, _ := r.(string)
	return v
}

// With appendfsync always, a crash (SIGKILL) loses nothing and the
// restarted server has every acknowledged write.
func TestKillRestartKeepsData(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	s := redisproc.Start(t, redisproc.Options{AOF: "always"})
	incr(t, ctx, s, "n", 100)
	pid := s.PID()
	require.NoError(t, s.Kill())
	require.False(t, s.Running())
	require.Zero(t, s.PID())
	require.ErrorIs(t, syscall.Kill(pid, 0), syscall.ESRCH, "the old process is gone")
	_, err := s.Do(ctx, "PING")
	require.Error(t, err, "nothing listens while it is down")

	start := time.Now()
	require.NoError(t, s.Restart())
	t.Logf("restart with a %d-entry AOF took %v", 100, time.Since(start).Round(time.Millisecond))
	require.Equal(t, int64(100), counter(t, ctx, s, "n"))
	require.Error(t, s.Restart(), "restarting a running server is refused")

	// A clean stop keeps the data too.
	require.NoError(t, s.Stop())
	require.NoError(t, s.Restart())
	require.Equal(t, int64(100), counter(t, ctx, s, "n"))
}

func TestWipeLeavesItEmpty(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	s := redisproc.Start(t, redisproc.Options{AOF: "always"})
	incr(t, ctx, s, "n", 10)
	port := s.Port()
	require.NoError(t, s.Wipe())
	require.Equal(t, port, s.Port())
	n, err := s.Do(ctx, "DBSIZE")
	require.NoError(t, err)
	require.Equal(t, int64(0), n)
	incr(t, ctx, s, "n", 1)
	require.Equal(t, int64(1), counter(t, ctx, s, "n"))
}

// Without an AOF, a restart is a wipe.
func TestNoAOFLosesEverything(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	s := redisproc.Start(t, redisproc.Options{})
	incr(t, ctx, s, "n", 3)
	require.NoError(t, s.Kill())
	require.NoError(t, s.Restart())
	require.Equal(t, int64(0), counter(t, ctx, s, "n"))
	_, err := s.CutAOF(1)
	require.Error(t, err)
}

// A torn tail: the valid prefix loads, the torn command is gone.
func TestCutAOF(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	s := redisproc.Start(t, redisproc.Options{AOF: "always"})
	incr(t, ctx, s, "n", 50)
	cut, err := s.CutAOF(5) // inside the last INCR
	require.NoError(t, err)
	require.Equal(t, int64(5), cut)
	require.Equal(t, int64(49), counter(t, ctx, s, "n"))
	require.Contains(t, s.LogTail(30), "aof-load-truncated")

	// A script's effects go to the AOF as MULTI/EXEC; a cut inside it
	// reverts the whole script.
	_, err = s.Do(ctx, "EVAL", "redis.call('INCR', KEYS[1]); redis.call('INCR', KEYS[2]); return 1", "2", "a", "b")
	require.NoError(t, err)
	_, err = s.CutAOF(3) // inside the final EXEC
	require.NoError(t, err)
	require.Zero(t, counter(t, ctx, s, "a"))
	require.Zero(t, counter(t, ctx, s, "b"))
	require.Equal(t, int64(49), counter(t, ctx, s, "n"))

	// Cutting more than the incr file holds leaves the base.
	cut, err = s.CutAOF(1 << 30)
	require.NoError(t, err)
	require.Less(t, cut, int64(1<<30))
	require.Zero(t, counter(t, ctx, s, "n"))
}

// Power loss: writes of the last d are gone, earlier ones stay, and the
// server loads.
func TestCutAOFBack(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	s := redisproc.Start(t, redisproc.Options{AOF: "everysec"})
	// Writes spread over time on both sides of the cut: the samples
	// (every 5ms) put it at most one sample before the moment asked.
	writeFor := func(key string, d time.Duration) (n int64) {
		for start := time.Now(); time.Since(start) < d; n++ {
			incr(t, ctx, s, key, 1)
		}
		return n
	}
	oldN := writeFor("old", 100*time.Millisecond)
	recent := time.Now()
	newN := writeFor("new", 100*time.Millisecond)
	cut, err := s.CutAOFBack(time.Since(recent))
	require.NoError(t, err)
	require.Positive(t, cut)
	old := counter(t, ctx, s, "old")
	t.Logf("cut %d bytes: kept %d of %d older writes, lost all %d recent ones", cut, old, oldN, newN)
	require.Zero(t, counter(t, ctx, s, "new"))
	require.LessOrEqual(t, old, oldN)
	require.Greater(t, old, oldN/2)

	// After a kill, "d ago" still counts from the call: nothing written
	// since the kill, nothing to cut for a short d.
	incr(t, ctx, s, "new", 5)
	require.NoError(t, s.Kill())
	cut, err = s.CutAOFBack(0)
	require.NoError(t, err)
	require.Zero(t, cut)
	require.Equal(t, int64(5), counter(t, ctx, s, "new"))
	require.Equal(t, old, counter(t, ctx, s, "old"))
}

// The copy approach: what was written after the snapshot is gone after
// the restore; the manifest stays consistent.
func TestSnapshotRestoreAOF(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	s := redisproc.Start(t, redisproc.Options{AOF: "always"})
	incr(t, ctx, s, "n", 10)
	snap, err := s.SnapshotAOF()
	require.NoError(t, err)
	require.Positive(t, snap.Size)
	require.True(t, s.Running())
	require.False(t, s.Paused())
	incr(t, ctx, s, "n", 10)
	require.Equal(t, int64(20), counter(t, ctx, s, "n"))
	require.NoError(t, s.RestoreAOF(snap))
	require.Equal(t, int64(10), counter(t, ctx, s, "n"))
	_, err = os.Stat(filepath.Join(s.Dir(), "appendonlydir", "appendonly.aof.manifest"))
	require.NoError(t, err)
	incr(t, ctx, s, "n", 1)
	require.NoError(t, s.Kill())
	require.NoError(t, s.Restart())
	require.Equal(t, int64(11), counter(t, ctx, s, "n"))
}

// A paused server makes commands time out; resumed, it answers again on
// the same connection.
func TestPauseResume(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	s := redisproc.Start(t, redisproc.Options{})
	c := testenv.RedisAt(t, s.URL())
	require.NoError(t, s.Pause())
	require.True(t, s.Paused())
	short, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	err := c.Do(short, c.B().Set().Key("k").Value("1").Build()).Error()
	cancel()
	require.ErrorIs(t, err, context.DeadlineExceeded)

	require.NoError(t, s.Resume())
	require.False(t, s.Paused())
	require.NoError(t, c.Do(ctx, c.B().Set().Key("k").Value("2").Build()).Error())
	v, err := c.Do(ctx, c.B().Get().Key("k").Build()).ToString()
	require.NoError(t, err)
	// The timed-out SET may still have run, from the socket buffer, as the
	// server resumed.
	require.Contains(t, []string{"1", "2"}, v)
}

// A replica started with ReplicaOf is linked when Start returns.
func TestReplicaOf(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	m := redisproc.Start(t, redisproc.Options{})
	r := redisproc.Start(t, redisproc.Options{ReplicaOf: m})
	role, err := r.Do(ctx, "ROLE")
	require.NoError(t, err)
	require.Equal(t, "connected", role.([]any)[3])
	incr(t, ctx, m, "n", 3)
	// Not WAIT: each Do is a connection of its own, and WAIT waits only
	// for its own connection's writes.
	require.Eventually(t, func() bool { return counter(t, ctx, r, "n") == 3 }, 10*time.Second, 5*time.Millisecond)
}

// A server left paused is resumed when its test ends, before the cleanups
// registered ahead of Pause, which may still need it.
func TestPauseResumedAtCleanup(t *testing.T) {
	t.Parallel()
	var s *redisproc.Server
	var pong any
	t.Run("paused", func(t *testing.T) {
		s = redisproc.Start(t, redisproc.Options{})
		t.Cleanup(func() { pong, _ = s.Do(context.Background(), "PING") })
		require.NoError(t, s.Pause())
	})
	require.Equal(t, "PONG", pong)
	require.False(t, s.Running(), "killed after that")
}

// Command is for set-up: an ACL user, then a client that logs in as it.
func TestCommandUserURL(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	s := redisproc.Start(t, redisproc.Options{})
	require.Equal(t, "OK", s.Command(t, "ACL", "SETUSER", "app", "on", ">p@ss/w:rd", "~app:*", "+@all"))
	require.Equal(t, "", s.Command(t, "GET", "app:none"), "a null is empty")
	require.Equal(t, "master\n0\n", s.Command(t, "ROLE"), "master, offset 0, no replicas: one element a line")

	c := testenv.RedisAt(t, s.UserURL("app", "p@ss/w:rd"))
	who, err := c.Do(ctx, c.B().AclWhoami().Build()).ToString()
	require.NoError(t, err)
	require.Equal(t, "app", who)
}

// A server that wants a password is up once it refuses PING.
func TestStartRequirePass(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	s := redisproc.Start(t, redisproc.Options{Args: []string{"--requirepass", "pw"}})
	_, err := s.Do(ctx, "PING")
	require.ErrorContains(t, err, "NOAUTH")
	c := testenv.RedisAt(t, s.UserURL("default", "pw"))
	require.NoError(t, c.Do(ctx, c.B().Set().Key("k").Value("v").Build()).Error())
}
