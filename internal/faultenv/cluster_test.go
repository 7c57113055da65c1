package faultenv_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/redsource/redsource/eventstore"
	"github.com/redsource/redsource/internal/faultenv"
	"github.com/redsource/redsource/internal/testenv"
)

// A master with a replica is killed under appends: the replica is
// promoted, appends to its slots resume, and the log holds no duplicate
// and no gap. The test measures how long appends were refused, on the
// dead master's slots and elsewhere.
func TestClusterFailover(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	start := time.Now()
	c := faultenv.StartCluster(t, faultenv.ClusterOptions{Masters: 3, ReplicasPerMaster: 1, NodeTimeout: 2 * time.Second, AOF: "everysec"})
	t.Logf("3 masters + 3 replicas up in %v", time.Since(start).Round(time.Millisecond))
	require.Len(t, c.Nodes(), 6)

	client := testenv.RedisAt(t, c.URL())
	store, err := eventstore.New(client, eventstore.Config{Namespace: "fo", Partitions: 8})
	require.NoError(t, err)
	masters, err := c.Masters(ctx)
	require.NoError(t, err)
	require.Len(t, masters, 3)

	// One aggregate on the master to kill, one on another master.
	var doomed *faultenv.Server
	streams := map[string]eventstore.StreamID{}
	for i := 0; len(streams) < 2 && i < 1000; i++ {
		st := eventstore.StreamID{Category: "acc", ID: fmt.Sprintf("a%d", i)}
		m, err := c.MasterOf(ctx, store.LogKey("acc", store.Partition(st)))
		require.NoError(t, err)
		switch {
		case doomed == nil:
			doomed, streams["dead master"] = m, st
		case m != doomed && streams["other master"].ID == "":
			streams["other master"] = st
		}
	}
	require.Len(t, streams, 2)
	replica, err := c.ReplicaOf(ctx, doomed)
	require.NoError(t, err)
	require.NotNil(t, replica)

	var h faultenv.History
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for _, st := range streams {
		wg.Go(func() {
			tick := time.NewTicker(5 * time.Millisecond)
			defer tick.Stop()
			for {
				actx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
				_, _ = h.Append(actx, store, st, eventstore.Any, eventstore.EventData{Type: "Tick", Data: []byte("+1")})
				cancel()
				select {
				case <-stop:
					return
				case <-tick.C:
				}
			}
		})
	}
	// ackedSince counts each stream's acknowledged appends that ended after t.
	ackedSince := func(t time.Time) map[eventstore.StreamID]int {
		n := map[eventstore.StreamID]int{}
		for _, a := range h.Attempts() {
			if a.Outcome == faultenv.Acked && a.End.After(t) {
				n[a.Stream]++
			}
		}
		return n
	}
	everyStream := func(t time.Time) bool {
		n := ackedSince(t)
		return n[streams["dead master"]] > 0 && n[streams["other master"]] > 0
	}
	require.Eventually(t, func() bool { return everyStream(start) }, 20*time.Second, 5*time.Millisecond)

	killed := time.Now()
	require.NoError(t, doomed.Kill())
	promoted, err := c.WaitFailover(ctx, doomed)
	require.NoError(t, err)
	failedOver := time.Now()
	require.Equal(t, replica, promoted, "its replica took over")
	masters, err = c.Masters(ctx)
	require.NoError(t, err)
	require.Contains(t, masters, promoted)
	require.NotContains(t, masters, doomed)
	require.Eventually(t, func() bool { return everyStream(failedOver) }, 20*time.Second, 5*time.Millisecond,
		"appends resume on both masters")
	close(stop)
	wg.Wait()

	// The longest stretch without an acknowledged append, per stream.
	for name, st := range streams {
		var longest time.Duration
		var from, prev time.Time
		errs := map[string]int{}
		for _, a := range h.Attempts() {
			if a.Stream != st {
				continue
			}
			if a.Err != nil && a.End.After(killed) {
				errs[fmt.Sprintf("%s: %v", a.Outcome, errors.Unwrap(a.Err))]++
			}
			if a.Outcome != faultenv.Acked {
				continue
			}
			if !prev.IsZero() && a.End.Sub(prev) > longest {
				longest, from = a.End.Sub(prev), prev
			}
			prev = a.End
		}
		t.Logf("appends to the %s's slots: none acknowledged for %v, from %v after the kill; errors: %v", name,
			longest.Round(time.Millisecond), from.Sub(killed).Round(time.Millisecond), errs)
	}
	t.Logf("replica promoted and cluster_state:ok everywhere %v after the kill", failedOver.Sub(killed).Round(time.Millisecond))

	rep, err := h.Check(ctx, store)
	require.NoError(t, err)
	t.Logf("history: %s", rep)
	for _, d := range rep.Details {
		t.Log(d)
	}
	// Replication is asynchronous: the replica may lack the last writes the
	// dead master acknowledged. Nothing may be doubled, torn or out of order.
	require.Zero(t, rep.Duplicated)
	require.Zero(t, rep.Partial)
	require.Zero(t, rep.Gaps)
	require.Zero(t, rep.Phantom)
	require.Zero(t, rep.Misplaced)

	// The killed master comes back as a replica of the promoted one.
	require.NoError(t, doomed.Restart())
	require.Eventually(t, func() bool {
		r, err := c.ReplicaOf(ctx, promoted)
		return err == nil && r == doomed
	}, 20*time.Second, 20*time.Millisecond)
}
