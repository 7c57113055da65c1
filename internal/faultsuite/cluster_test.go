package faultsuite

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/rueidis"
	"github.com/stretchr/testify/require"

	"github.com/redsource/redsource/eventstore"
	"github.com/redsource/redsource/internal/faultenv"
)

var scFailover = scenario{
	Name:     "11. Cluster failover",
	Injected: "Redis Cluster, 3 masters + 1 replica each, node timeout 2 s: SIGKILL of a master during appends through aggregate.Repository (library defaults) and projection",
	Property: "appends resume after the promotion with no writer giving up; nothing acknowledged lost (the replica was in sync); projections catch up; read model = fold(log)",
}

func TestFaultClusterFailover(t *testing.T) {
	t.Parallel()
	w := newWorld(t, scFailover)
	c := faultenv.StartCluster(t, faultenv.ClusterOptions{Masters: 3, ReplicasPerMaster: 1, NodeTimeout: 2 * time.Second, AOF: "everysec"})
	cl := client(t, c.URL())
	// The library's defaults: 8 partitions, RetryUnavailable 30s, and
	// aggregate.Config's (10 attempts).
	store, err := eventstore.New(cl, eventstore.Config{Namespace: namespace})
	require.NoError(t, err)
	run := w.runProjector(store)
	repo := w.startRepoWriters(store, loadOptions{Seed: 11})
	repo.waitAcked(300, 30*time.Second)

	doomed, err := c.MasterOf(w.ctx, store.LogKey(category, 0))
	require.NoError(t, err)
	replica, err := c.ReplicaOf(w.ctx, doomed)
	require.NoError(t, err)
	require.NotNil(t, replica)
	onDoomed := map[int]bool{}
	for p := range partitions {
		m, err := c.MasterOf(w.ctx, store.LogKey(category, p))
		require.NoError(t, err)
		onDoomed[p] = m == doomed
	}

	// Probes append without retries, to see what Redis answers: one
	// aggregate on the master to kill, one elsewhere.
	bare, err := eventstore.New(cl, eventstore.Config{Namespace: namespace, RetryUnavailable: -1})
	require.NoError(t, err)
	probes := map[string]eventstore.StreamID{}
	for i := 0; len(probes) < 2; i++ {
		st := stream(fmt.Sprintf("p%d", i))
		key := map[bool]string{true: "dead master", false: "other master"}[onDoomed[store.Partition(st)]]
		if _, ok := probes[key]; !ok {
			probes[key] = st
		}
	}
	var ph faultenv.History
	stopProbes := make(chan struct{})
	var wg sync.WaitGroup
	for _, st := range probes {
		wg.Go(func() {
			for {
				ctx, cancel := context.WithTimeout(w.ctx, 300*time.Millisecond)
				_, _ = ph.Append(ctx, bare, st, eventstore.Any, eventstore.EventData{Type: "Added", Data: payload("probe")})
				cancel()
				select {
				case <-stopProbes:
					return
				case <-time.After(5 * time.Millisecond): // pace the probe
				}
			}
		})
	}
	ackedSince := func(st eventstore.StreamID, t time.Time) bool {
		for _, a := range ph.Attempts() {
			if a.Stream == st && a.Outcome == faultenv.Acked && a.Start.After(t) {
				return true
			}
		}
		return false
	}
	w.waitFor(10*time.Second, "both probes to append", func() bool {
		return ackedSince(probes["dead master"], w.start) && ackedSince(probes["other master"], w.start)
	})

	killed := time.Now()
	require.NoError(t, doomed.Kill())
	promoted, err := c.WaitFailover(w.ctx, doomed)
	require.NoError(t, err)
	failedOver := time.Since(killed)
	require.Equal(t, replica, promoted, "its replica took over")
	w.waitFor(30*time.Second, "both probes to append again", func() bool {
		return ackedSince(probes["dead master"], killed.Add(failedOver)) && ackedSince(probes["other master"], killed.Add(failedOver))
	})
	repo.waitAcked(300, 30*time.Second)
	close(stopProbes)
	wg.Wait()
	repo.halt()
	repo.requireNoGiveUps()

	require.NoError(t, run.stop(30*time.Second))
	catchUpAfterFailover(t, w, store)
	rep := w.check(store)
	requireClean(t, rep)
	require.Zero(t, rep.Lost, "the replica was in sync")
	require.Zero(t, rep.Unknown)
	w.checkFold(store, nil)
	probeRep, err := ph.Check(w.ctx, store)
	require.NoError(t, err)
	require.Zero(t, probeRep.Duplicated)
	require.Zero(t, probeRep.Partial)

	// What the probes saw, and how long the repository's updates waited.
	var notes []string
	for _, name := range []string{"dead master", "other master"} {
		gap, errs := outage(ph.Attempts(), probes[name], killed)
		notes = append(notes, fmt.Sprintf("appends to the %s's slots: none acknowledged for %v (%s)", name, gap.Round(time.Millisecond), errs))
	}
	var slowest time.Duration
	for _, o := range w.ops.snapshot() {
		slowest = max(slowest, o.end.Sub(o.start))
	}
	w.report(scFailover, rep, 0, fmt.Sprintf("replica promoted and cluster_state:ok %v after the kill; %s; the longest repository update took %v; no update gave up",
		failedOver.Round(time.Millisecond), strings.Join(notes, "; "), slowest.Round(time.Millisecond)))
}

// catchUpAfterFailover runs CatchUp 12 times: each must succeed. After a
// failover the cluster client still knows the dead master, and a keyless
// command goes to a random known node (of 6 here), so a defect there
// shows in 12 tries with a probability of 1-(5/6)^12, 89%.
func catchUpAfterFailover(t *testing.T, w *world, store *eventstore.Store) {
	t.Helper()
	var failed []error
	for range 12 {
		err := w.catchUp(store)
		if errors.Is(err, syscall.ECONNREFUSED) {
			failed = append(failed, err)
			continue
		}
		require.NoError(t, err)
	}
	require.Less(t, len(failed), 12, "CatchUp never succeeded")
	if len(failed) > 0 {
		// projection.Runner's prepare (runner.go) PINGs through the
		// store's client first; on a cluster client rueidis sends a
		// keyless command to a random known node (cluster.go _pick,
		// InitSlot), here the dead master.
		w.defect("%d of 12 CatchUp calls after the failover failed at start: %v", len(failed), failed[0])
	}
}

// outage returns the longest stretch after killed without an
// acknowledged append to st, and the errors seen, by Redis error code
// or class.
func outage(attempts []faultenv.Attempt, st eventstore.StreamID, killed time.Time) (time.Duration, string) {
	var longest time.Duration
	var prev time.Time
	var tally errorTally
	codes := map[string]int{}
	for _, a := range attempts {
		if a.Stream != st {
			continue
		}
		if a.Err != nil && a.End.After(killed) {
			var re *rueidis.RedisError
			if errors.As(a.Err, &re) {
				code, _, _ := strings.Cut(re.Error(), " ")
				codes[code]++
			} else {
				tally.add(a.Err)
			}
		}
		if a.Outcome != faultenv.Acked {
			continue
		}
		if !prev.IsZero() && a.End.After(killed) && a.End.Sub(prev) > longest {
			longest = a.End.Sub(prev)
		}
		prev = a.End
	}
	var parts []string
	for code, n := range codes {
		parts = append(parts, fmt.Sprintf("%s ×%d", code, n))
	}
	if s := tally.String(); s != "" {
		parts = append(parts, s)
	}
	return longest, strings.Join(parts, ", ")
}
