package faultsuite

import (
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/rueidis"
	"github.com/stretchr/testify/require"

	"github.com/redsource/redsource/internal/faultenv"
	"github.com/redsource/redsource/projection"
)

var (
	scKillAlways = scenario{
		Name:     "1. Redis crash, appendfsync always",
		Injected: "SIGKILL of redis-server under load (8 writers, a runner), restart on the same directory",
		Property: "nothing acknowledged lost; the same store appends again after the restart; read model = fold(log)",
	}
	scKillEverysec = scenario{
		Name:     "2. Redis crash, appendfsync everysec",
		Injected: "SIGKILL of redis-server under load, restart on the same directory",
		Property: "nothing acknowledged lost expected (the AOF write precedes the reply); any loss detected as in 3; read model = fold(log)",
	}
	scBlocked = scenario{
		Name:     "9. Redis restarts under blocked consumers",
		Injected: "SIGKILL while every partition worker is in XREADGROUP BLOCK, restart (always) with a 200,000-key AOF so clients see LOADING",
		Property: "the runner resumes by itself, nothing applied twice; read model = fold(log); nothing acknowledged lost",
	}
)

func TestFaultKillAOFAlways(t *testing.T) {
	t.Parallel()
	testKill(t, "always", scKillAlways)
}

func TestFaultKillAOFEverysec(t *testing.T) {
	t.Parallel()
	testKill(t, "everysec", scKillEverysec)
}

// testKill: writers and a runner work against a Redis with an AOF; the
// server is killed under load and restarted on its directory, and the
// same store keeps appending.
func testKill(t *testing.T, fsync string, sc scenario) {
	w := newWorld(t, sc)
	srv := faultenv.Start(t, faultenv.Options{AOF: fsync})
	store := newStore(t, client(t, srv.URL()))
	run := w.runProjector(store)
	ld := w.startWriters(store, loadOptions{Seed: 1})
	ld.waitAcked(600, 30*time.Second)

	require.NoError(t, srv.Kill())
	down := time.Now()
	require.NoError(t, srv.Restart())
	restarted := time.Now()
	ld.waitAcked(600, 30*time.Second) // the same store, through its retries
	ld.halt()

	rep := w.check(store)
	requireClean(t, rep)
	acc := w.awaitDetection(store, rep)
	rep.MarkDetected(acc.Detected)
	if fsync == "always" {
		require.Zero(t, rep.Lost, "appendfsync always lost acknowledged events: %v", rep.LostEvents)
	}
	require.Zero(t, rep.Unknown, "every unknown outcome resolved")
	if err := w.catchUp(store); len(acc.Stopped) == 0 {
		require.NoError(t, err)
	} else {
		require.ErrorIs(t, err, projection.ErrLogRegressed)
	}
	require.NoError(t, run.stop(30*time.Second))
	w.checkFold(store, acc.Stopped)
	w.report(sc, rep, acc.Unseen, fmt.Sprintf("down %v (kill to loaded); %s; writers saw: %s",
		restarted.Sub(down).Round(time.Millisecond), acc, ld.errs.seen()))
}

// Every partition worker waits in XREADGROUP BLOCK when Redis is killed;
// while it loads a large AOF again, clients get LOADING. The runner must
// come back by itself and apply everything once.
func TestFaultRestartUnderBlockedConsumers(t *testing.T) {
	t.Parallel()
	w := newWorld(t, scBlocked)
	srv := faultenv.Start(t, faultenv.Options{AOF: "always"})
	c := client(t, srv.URL())
	fillAOF(t, w, c, 200_000)
	store := newStore(t, c)
	run := w.runProjector(store)

	ld := w.startWriters(store, loadOptions{Seed: 9})
	ld.waitAcked(400, 30*time.Second)
	ld.halt()
	require.NoError(t, w.catchUp(store))
	w.waitFor(20*time.Second, "every partition worker blocked in XREADGROUP", func() bool {
		return blockedReaders(t, w, srv) >= partitions
	})
	blocked := blockedReaders(t, w, srv)

	// A probe sees what clients see while Redis loads.
	probe := client(t, srv.URL(), func(o *rueidis.ClientOption) { o.DisableRetry = true })
	var loading atomic.Int64
	var firstLoading, lastLoading atomic.Int64
	stopProbe := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-stopProbe:
				return
			default:
			}
			err := probe.Do(w.ctx, probe.B().Get().Key("probe").Build()).Error()
			if re, ok := rueidis.IsRedisErr(err); ok && strings.HasPrefix(re.Error(), "LOADING") {
				now := time.Now().UnixNano()
				loading.Add(1)
				firstLoading.CompareAndSwap(0, now)
				lastLoading.Store(now)
			}
			time.Sleep(2 * time.Millisecond) // pace the probe
		}
	})

	require.NoError(t, srv.Kill())
	ld2 := w.startWriters(store, loadOptions{Seed: 19, After: ld})
	require.NoError(t, srv.Restart())
	ld2.waitAcked(400, 30*time.Second)
	ld2.halt()
	close(stopProbe)
	wg.Wait()

	require.NoError(t, w.catchUp(store))
	returned, err := run.wait(0)
	require.False(t, returned, "the runner returned after the restart: %v", err)
	require.NoError(t, run.stop(30*time.Second))
	rep := w.check(store)
	requireClean(t, rep)
	require.Zero(t, rep.Lost)
	require.Zero(t, rep.Unknown)
	w.checkFold(store, nil)
	loadingFor := time.Duration(0)
	if n := loading.Load(); n > 0 {
		loadingFor = time.Duration(lastLoading.Load() - firstLoading.Load())
	}
	w.report(scBlocked, rep, 0, fmt.Sprintf("%d workers blocked at the kill; a probe got LOADING %d times over %v; writers saw: %s",
		blocked, loading.Load(), loadingFor.Round(time.Millisecond), ld2.errs.seen()))
}

// fillAOF writes n small keys outside the namespace, so that the AOF
// takes a moment to load.
func fillAOF(t *testing.T, w *world, c rueidis.Client, n int) {
	t.Helper()
	const batch = 1000
	for i := 0; i < n; i += batch {
		cmds := make(rueidis.Commands, 0, batch)
		for j := i; j < min(n, i+batch); j++ {
			cmds = append(cmds, c.B().Set().Key(fmt.Sprintf("filler:%d", j)).Value("0123456789abcdef0123456789abcdef").Build())
		}
		for _, r := range c.DoMulti(w.ctx, cmds...) {
			require.NoError(t, r.Error())
		}
	}
}

// blockedReaders counts the clients blocked in XREADGROUP.
func blockedReaders(t *testing.T, w *world, srv *faultenv.Server) int {
	t.Helper()
	r, err := srv.Do(w.ctx, "CLIENT", "LIST")
	require.NoError(t, err)
	list, _ := r.(string)
	n := 0
	for _, line := range strings.Split(list, "\n") {
		if strings.Contains(line, " cmd=xreadgroup") && strings.Contains(line, " flags=b") {
			n++
		}
	}
	return n
}
