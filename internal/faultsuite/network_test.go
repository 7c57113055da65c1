package faultsuite

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/redis/rueidis"
	"github.com/stretchr/testify/require"

	"github.com/redsource/redsource/eventstore"
	"github.com/redsource/redsource/internal/faultenv"
)

var (
	scDrops = scenario{
		Name:     "7. Lost replies",
		Injected: "2% of EVALSHA request writes have their reply dropped (Dropper: the append runs, the connection dies); raw Exact/NoStream appends and aggregate.Repository.Update",
		Property: "no duplicate, nothing lost, every unknown outcome resolved (the store re-sends exact appends with the same event IDs; Update re-sends after an unknown outcome); read model = fold(log)",
	}
	scPause = scenario{
		Name:     "8. Redis paused",
		Injected: "SIGSTOP of redis-server for 2 s under load; each append has a 500 ms deadline",
		Property: "callers see timeouts (unknown outcome) and re-send the same event IDs: no duplicate, nothing lost, every unknown resolved; read model = fold(log)",
	}
	scUnavailable = scenario{
		Name:     "10. Redis unavailable",
		Injected: "connections refused and open ones cut for 1 s (Dropper.Refuse + Reset), then SIGKILL and a restart 1 s later (always)",
		Property: "appends wait and succeed within RetryUnavailable (default 30 s); a store with RetryUnavailable 300 ms gives up with ErrUnavailable and writes nothing",
	}
)

func TestFaultLostReplies(t *testing.T) {
	t.Parallel()
	w := newWorld(t, scDrops)
	srv := faultenv.Start(t, faultenv.Options{})
	d := faultenv.NewDropper(7)
	d.Only("EVALSHA")
	store := newStore(t, client(t, srv.URL(), func(o *rueidis.ClientOption) { o.DialCtxFn = d.Dial }))
	// The runner has its own client: its lease scripts are EVALSHA too.
	run := w.runProjector(newStore(t, client(t, srv.URL())))
	raw := w.startWriters(store, loadOptions{Seed: 7, Writers: 4})
	repo := w.startRepoWriters(store, loadOptions{Seed: 17, Writers: 4})
	raw.waitAcked(100, 30*time.Second)
	d.SetRate(0.02)
	w.waitFor(30*time.Second, "40 replies dropped", func() bool { return d.Stats().Dropped >= 40 })
	d.SetRate(0)
	raw.waitAcked(100, 30*time.Second)
	raw.halt()
	repo.halt()
	repo.requireNoGiveUps()

	rep := w.check(store)
	requireClean(t, rep)
	require.Zero(t, rep.Lost)
	require.Zero(t, rep.Unknown, "every unknown outcome resolved")
	require.NoError(t, w.catchUp(store))
	require.NoError(t, run.stop(30*time.Second))
	w.checkFold(store, nil)
	st := d.Stats()
	w.report(scDrops, rep, 0, fmt.Sprintf("%d of %d EVALSHA writes dropped (%d connections cut in all); %d raw appends and %d repository updates acknowledged, %d re-sends recognised as duplicates; raw writers saw: %s",
		st.Dropped, st.Requests, st.Dials-1, raw.acked.Load(), repo.acked.Load(), duplicates(w), raw.errs.seen()))
}

// duplicates counts the acknowledged attempts that the store recognised
// as re-sends of an append already in the log.
func duplicates(w *world) int {
	n := 0
	for _, a := range w.h.Attempts() {
		if a.Outcome == faultenv.Acked && a.Result.Duplicate {
			n++
		}
	}
	return n
}

func TestFaultRedisPaused(t *testing.T) {
	t.Parallel()
	w := newWorld(t, scPause)
	srv := faultenv.Start(t, faultenv.Options{AOF: "everysec"})
	store := newStore(t, client(t, srv.URL()))
	run := w.runProjector(store)
	ld := w.startWriters(store, loadOptions{Seed: 8, Timeout: 500 * time.Millisecond})
	ld.waitAcked(400, 30*time.Second)
	require.NoError(t, srv.Pause())
	time.Sleep(2 * time.Second) // the fault lasts 2s
	require.NoError(t, srv.Resume())
	ld.waitAcked(400, 30*time.Second)
	ld.halt()

	rep := w.check(store)
	requireClean(t, rep)
	require.Zero(t, rep.Lost)
	require.Zero(t, rep.Unknown, "every unknown outcome resolved")
	require.Positive(t, ld.errs.count("timeout"), "callers saw timeouts")
	require.NoError(t, w.catchUp(store))
	require.NoError(t, run.stop(30*time.Second))
	w.checkFold(store, nil)
	w.report(scPause, rep, 0, fmt.Sprintf("writers saw %s; %d re-sends recognised as duplicates", ld.errs.seen(), duplicates(w)))
}

func TestFaultRedisUnavailable(t *testing.T) {
	t.Parallel()
	w := newWorld(t, scUnavailable)
	srv := faultenv.Start(t, faultenv.Options{AOF: "always"})
	d := faultenv.NewDropper(10)
	c := client(t, srv.URL(), func(o *rueidis.ClientOption) { o.DialCtxFn = d.Dial })
	store := newStore(t, c)
	impatient := func() *eventstore.Store {
		return newStore(t, c, func(cfg *eventstore.Config) { cfg.RetryUnavailable = 300 * time.Millisecond })
	}
	warm := impatient()
	_, err := warm.Append(w.ctx, stream("warm-up"), eventstore.NoStream, eventstore.EventData{Type: "Added", Data: payload("warm")})
	require.NoError(t, err)
	ld := w.startWriters(store, loadOptions{Seed: 10})
	ld.waitAcked(300, 30*time.Second)

	// giveUp appends through a store with a 300ms budget while Redis is
	// away: it must give up within the budget with ErrUnavailable, having
	// written nothing. The context allows 2s, so that a store that waits
	// longer shows.
	giveUp := func(s *eventstore.Store, id string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(w.ctx, 2*time.Second)
		defer cancel()
		start := time.Now()
		_, err := w.h.Append(ctx, s, stream(id), eventstore.NoStream, eventstore.EventData{Type: "Added", Data: payload("impatient")})
		took := time.Since(start)
		require.Error(t, err)
		if !errors.Is(err, eventstore.ErrUnavailable) || took >= time.Second {
			// A store's first append reads the namespace identity with a
			// plain GET, which rueidis itself retries on connection
			// errors until the context ends: Config.RetryUnavailable
			// does not bound it.
			w.defect("%s: a store with RetryUnavailable 300ms gave up after %v with %v (%s), want ErrUnavailable within 1s",
				id, took.Round(time.Millisecond), err, describe(err))
			return
		}
		require.Equal(t, faultenv.Failed, faultenv.Classify(err))
		require.GreaterOrEqual(t, took, 300*time.Millisecond)
	}

	// Refused: no new connection, the open ones cut.
	d.Refuse(true)
	d.Reset()
	down := time.Now()
	giveUp(warm, "impatient-1")
	time.Sleep(time.Until(down.Add(time.Second))) // the outage lasts at least 1s
	d.Refuse(false)
	refusedFor := time.Since(down)
	ld.waitAcked(300, 30*time.Second)
	refusedWait := longestWait(w, down)

	// Killed, restarted a second later.
	require.NoError(t, srv.Kill())
	killed := time.Now()
	giveUp(warm, "impatient-2")
	time.Sleep(time.Until(killed.Add(time.Second))) // down for at least 1s
	require.NoError(t, srv.Restart())
	killedFor := time.Since(killed)
	ld.waitAcked(300, 30*time.Second)
	killedWait := longestWait(w, killed)

	// Refused again, for a store's very first append.
	d.Refuse(true)
	d.Reset()
	giveUp(impatient(), "fresh-1")
	giveUp(impatient(), "fresh-2")
	d.Refuse(false)
	ld.waitAcked(100, 30*time.Second)
	ld.halt()

	require.Empty(t, ld.errs.String(), "every append waited and succeeded")
	rep := w.check(store)
	requireClean(t, rep) // phantom 0: what the impatient stores gave up wrote nothing
	require.Zero(t, rep.Lost)
	require.Zero(t, rep.Unknown)
	require.Equal(t, 4, rep.Failed, "the appends given up")
	for _, id := range []string{"impatient-1", "impatient-2", "fresh-1", "fresh-2"} {
		v, err := store.Version(w.ctx, stream(id))
		require.NoError(t, err)
		require.Zero(t, v, "%s wrote nothing", id)
	}
	note := fmt.Sprintf("Redis refused for %v, then down for %v; longest acknowledged append %v and %v; a warmed-up store with RetryUnavailable 300 ms gave up with ErrUnavailable, nothing written",
		refusedFor.Round(time.Millisecond), killedFor.Round(time.Millisecond), refusedWait.Round(time.Millisecond), killedWait.Round(time.Millisecond))
	w.report(scUnavailable, rep, 0, note)
}

// longestWait is the longest acknowledged append that began within a
// second before t or after it.
func longestWait(w *world, t time.Time) time.Duration {
	var longest time.Duration
	for _, a := range w.h.Attempts() {
		if a.Outcome == faultenv.Acked && a.Start.After(t.Add(-time.Second)) {
			longest = max(longest, a.End.Sub(a.Start))
		}
	}
	return longest
}
