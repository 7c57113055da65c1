//go:build soak

package faultsuite

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/rueidis"
	"github.com/stretchr/testify/require"

	"github.com/redsource/redsource/aggregate"
	"github.com/redsource/redsource/eventstore"
	"github.com/redsource/redsource/internal/faultenv"
)

var (
	soakDuration = flag.Duration("soak.duration", time.Minute, "how long TestSoak injects faults")
	soakSeed     = flag.Uint64("soak.seed", 0, "seed of TestSoak's faults and load; 0: from the clock")
)

var scSoak = scenario{
	Name:     "Soak",
	Injected: "for -soak.duration, every 1–3 s one of: SIGKILL + restart, SIGSTOP for 1 s, 3% of append replies dropped for 1 s, power loss (CutAOFBack 500 ms), torn tail (CutAOF 50); appendfsync everysec",
	Property: "as in the scenarios: every acknowledged update in the log or its loss detected (or seen by nothing durable), no duplicate, no partial append, read model = fold(log)",
}

// faultKind is one of the soak's faults.
type faultKind string

const (
	faultKill  faultKind = "kill+restart"
	faultPause faultKind = "pause 1s"
	faultDrop  faultKind = "drop replies"
	faultPower faultKind = "power loss"
	faultTorn  faultKind = "torn tail"
)

var faultKinds = []faultKind{faultKill, faultPause, faultDrop, faultPower, faultTorn}

// faultFigures are the soak's figures for one kind of fault.
type faultFigures struct {
	Count, Lost, Detected, Unseen, Rebuilds int
}

// TestSoak runs repository writers (with Update's retries), a projection
// runner and readers against one Redis while it injects random faults,
// then checks everything as the scenarios do. After a fault that loses
// events it waits for the writers in flight, accounts for the loss (what
// the projector had applied must be reported stopped), rewrites the AOF
// (see TestFaultTornTailRestartedAgain) and, when a partition stopped,
// accepts the loss as an operator would: an in-place rebuild.
//
//	go test -tags soak -race -run TestSoak -v ./internal/faultsuite/ -soak.duration 5m
func TestSoak(t *testing.T) {
	seed := *soakSeed
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	t.Logf("soak: seed %d, duration %v", seed, *soakDuration)
	rng := rand.New(rand.NewPCG(seed, 1))
	w := newWorld(t, scSoak)
	ctx, cancel := context.WithTimeout(context.Background(), *soakDuration+5*time.Minute)
	defer cancel()
	w.ctx = ctx

	srv := faultenv.Start(t, faultenv.Options{AOF: "everysec"})
	d := faultenv.NewDropper(seed)
	d.Only("EVALSHA")
	store := newStore(t, client(t, srv.URL(), func(o *rueidis.ClientOption) { o.DialCtxFn = d.Dial }))
	runStore := newStore(t, client(t, srv.URL()))
	run := w.runProjector(runStore)
	ld := w.startRepoWriters(store, loadOptions{Seed: seed, Writers: 6, Timeout: 3 * time.Second})

	// Readers load aggregates now and then.
	var reads atomic.Int64
	var readErrs errorTally
	stopReads := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		repo := newRepo(store)
		r := rand.New(rand.NewPCG(seed, 2))
		for {
			select {
			case <-stopReads:
				return
			case <-time.After(20 * time.Millisecond): // pace the reads
			}
			rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			_, err := repo.Load(rctx, fmt.Sprintf("r%03d", r.IntN(aggregates)))
			cancel()
			reads.Add(1)
			if err != nil && !errors.Is(err, aggregate.ErrNotFound) {
				readErrs.add(err)
			}
		}
	})

	figures := map[faultKind]*faultFigures{}
	for _, k := range faultKinds {
		figures[k] = &faultFigures{}
	}
	ld.runFor(2 * time.Second) // a power loss must not reach back to the namespace's creation
	deadline := time.Now().Add(*soakDuration)
	for time.Now().Before(deadline) {
		roundStart := time.Now()
		time.Sleep(time.Second + time.Duration(rng.Int64N(int64(2*time.Second)))) // load between faults
		kind := faultKinds[rng.IntN(len(faultKinds))]
		f := figures[kind]
		f.Count++
		t.Logf("soak: %s at %s (position %s)", kind, time.Now().Format("15:04:05.000"), eventstore.PositionAt(time.Now()))
		switch kind {
		case faultKill:
			require.NoError(t, srv.Kill())
			require.NoError(t, srv.Restart())
		case faultPause:
			require.NoError(t, srv.Pause())
			time.Sleep(time.Second) // the fault lasts 1s
			require.NoError(t, srv.Resume())
		case faultDrop:
			d.SetRate(0.03)
			time.Sleep(time.Second) // the fault lasts 1s
			d.SetRate(0)
		case faultPower, faultTorn:
			var err error
			if kind == faultPower {
				_, err = srv.CutAOFBack(500 * time.Millisecond)
			} else {
				_, err = srv.CutAOF(50)
			}
			require.NoError(t, err)
			func() {
				ld.quiesce()
				defer ld.resume() // also when an assertion fails: halt needs the writers free
				soakAccount(t, w, runStore, roundStart, f)
				rewriteAOF(t, w, srv)
			}()
		}
	}
	ld.halt()
	close(stopReads)
	wg.Wait()

	require.NoError(t, w.catchUp(runStore))
	require.NoError(t, run.stop(30*time.Second))
	rep := w.check(runStore)
	requireClean(t, rep)
	var lost, detected, unseen int
	var lines []string
	for _, k := range faultKinds {
		f := figures[k]
		lost, detected, unseen = lost+f.Lost, detected+f.Detected, unseen+f.Unseen
		lines = append(lines, fmt.Sprintf("%s ×%d: lost %d, detected %d, seen by nothing durable %d, rebuilds %d", k, f.Count, f.Lost, f.Detected, f.Unseen, f.Rebuilds))
	}
	require.Equal(t, lost, rep.Lost, "every loss happened at a fault that loses events, and was accounted there")
	rep.MarkDetected(detected)
	w.checkFold(runStore, nil)
	for _, l := range lines {
		t.Log(l)
	}
	for _, kind := range []string{"refused", "other", "unknown outcome", "unavailable", "conflict", "timeout"} {
		if ex := ld.errs.example(kind); ex != "" {
			t.Logf("an update that gave up (%s): %s", kind, ex)
		}
	}
	t.Logf("reads: %d (errors: %s)", reads.Load(), readErrs.seen())
	w.report(scSoak, rep, unseen, fmt.Sprintf("seed %d, %v; %s; %d reads (errors: %s); updates that gave up: %d (%s)",
		seed, *soakDuration, strings.Join(lines, "; "), reads.Load(), readErrs.seen(), ld.gaveUp.Load(), ld.errs.seen()))
}

// soakAccount accounts for what a fault that loses events lost, with the
// writers quiesced: the updates acknowledged since roundStart that the
// log no longer holds. Those the projector had applied must be in
// partitions Admin.Status reports stopped; then the loss is accepted with
// an in-place rebuild.
func soakAccount(t *testing.T, w *world, store *eventstore.Store, roundStart time.Time, f *faultFigures) {
	t.Helper()
	inLog := map[string]bool{}
	for ev, err := range store.ReadCategory(w.ctx, category, eventstore.PositionAt(roundStart.Add(-2*time.Second)), eventstore.MaxPosition) {
		require.NoError(t, err)
		if op := ev.Metadata["op"]; op != "" {
			require.False(t, inLog[op], "operation %s stored twice", op)
			inLog[op] = true
		}
	}
	applied := map[string]int{} // op -> partition
	for _, a := range w.ledger.appliedEvents(t, w.ctx) {
		if a.op != "" {
			applied[a.op] = a.part
		}
	}
	var lost []op
	for _, o := range w.ops.snapshot() {
		if o.outcome == faultenv.Acked && o.end.After(roundStart) && !inLog[o.id] {
			lost = append(lost, o)
		}
	}
	need := map[int]bool{}
	for _, o := range lost {
		if p, ok := applied[o.id]; ok {
			need[p] = true
		}
	}
	var stopped map[int]bool
	w.waitFor(30*time.Second, "the partitions that lost applied events to stop", func() bool {
		stopped = w.stopped(store, "log_regressed")
		for p := range need {
			if !stopped[p] {
				return false
			}
		}
		return true
	})
	for _, o := range lost {
		f.Lost++
		if _, ok := applied[o.id]; ok {
			f.Detected++
		} else {
			f.Unseen++
		}
	}
	if len(stopped) == 0 {
		return
	}
	f.Rebuilds++
	w.acceptLoss(store)
	t.Logf("soak: %d lost (%d partitions had applied some: %v; stopped %v, now rebuilt)", len(lost), len(need), keys(need), keys(stopped))
}
