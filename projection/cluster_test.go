package projection_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/redsource/redsource/eventstore"
	"github.com/redsource/redsource/projection"
)

// Three workers share the partitions; one joins late, one leaves, while
// events keep arriving. No partition ever has two handlers running at once,
// every aggregate's versions arrive in order, and the totals match.
func TestWorkersShareAndHandOver(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 8)
	e.appendEvents(t, 40, 5, "w")
	var inFlight [8]atomic.Int32
	var overlaps atomic.Int64
	lastBy := sync.Map{} // partition -> worker that applied last
	handovers := atomic.Int64{}
	newWorker := func(name string) *projection.Runner {
		p := e.ledger(t, "shared", "shared", nil)
		inner := p.Handler
		p.Handler = projection.HandlerFunc(func(ctx context.Context, tx pgx.Tx, ev eventstore.Event) error {
			if inFlight[ev.Partition].Add(1) > 1 {
				overlaps.Add(1)
			}
			defer inFlight[ev.Partition].Add(-1)
			if prev, ok := lastBy.Swap(ev.Partition, name); ok && prev != name {
				handovers.Add(1)
			}
			return inner.Apply(ctx, tx, ev)
		})
		r, err := projection.NewRunner(e.config(func(c *projection.Config) {
			c.WorkerID = name
			c.BatchSize = 20
			// Long enough that a stall of the machine does not cost a lease
			// mid-handler (the fence would stop the commit, but the overlap
			// check below counts handlers, not commits).
			c.LeaseTTL = 3 * time.Second
		}), p)
		require.NoError(t, err)
		return r
	}

	stopAppend := make(chan struct{})
	var appended atomic.Int64
	appended.Store(200)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stopAppend:
				return
			default:
			}
			st := eventstore.StreamID{Category: "acc", ID: fmt.Sprintf("w%d", i%40)}
			if _, err := e.store.Append(e.ctx, st, eventstore.Any, eventstore.EventData{Type: "Add", Data: []byte("+1")}); err != nil {
				t.Error(err)
				return
			}
			appended.Add(1)
		}
	}()

	stopA := e.start(t, newWorker("A"))
	e.start(t, newWorker("B"))
	e.waitAtLeast(t, "shared", 200)
	e.start(t, newWorker("C")) // joins late
	admin := projection.NewAdmin(e.pool, e.schema)
	require.Eventually(t, func() bool { return len(owners(t, e, admin)) == 3 }, 30*time.Second, 50*time.Millisecond,
		"the late worker gets a share")
	stopA() // leaves
	require.Eventually(t, func() bool {
		o := owners(t, e, admin)
		return len(o) == 2 && o["A"] == 0
	}, 30*time.Second, 50*time.Millisecond, "the leaving worker's partitions move")
	close(stopAppend)
	wg.Wait()
	e.waitCount(t, "shared", appended.Load())
	e.checkFold(t, "shared")
	require.Zero(t, overlaps.Load(), "two handlers ran on one partition at once")
	require.Positive(t, handovers.Load())
}

// owners counts partitions per owner from the status.
func owners(t *testing.T, e *env, admin *projection.Admin) map[string]int {
	st, err := admin.Status(e.ctx, e.store, "shared")
	require.NoError(t, err)
	out := map[string]int{}
	for _, s := range st {
		if s.Owner != "" {
			out[s.Owner]++
		}
	}
	return out
}

// A PostgreSQL connection killed in the middle of a transaction: the
// batch is retried in place on another connection, nothing is applied
// twice, the event is not blamed and no delivery is counted.
func TestPostgresConnectionKilledMidTransaction(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 2)
	e.appendEvents(t, 10, 20, "k")
	var kills atomic.Int64
	var seen atomic.Int64
	var redelivered atomic.Int64
	p := e.ledger(t, "killed", "killed", nil)
	inner := p.Handler
	p.Handler = projection.HandlerFunc(func(ctx context.Context, tx pgx.Tx, ev eventstore.Event) error {
		if d, err := e.deliveries(ctx, "killed", ev); err != nil {
			t.Error(err)
		} else if d != 1 {
			redelivered.Add(1)
		}
		if seen.Add(1)%37 == 0 && kills.Load() < 3 {
			kills.Add(1)
			_, err := tx.Exec(ctx, "SELECT pg_terminate_backend(pg_backend_pid())")
			return err
		}
		return inner.Apply(ctx, tx, ev)
	})
	// A 3s lease: a lease lapsing on a starved machine would move a
	// partition and count a delivery for a reason other than the kills.
	r, err := projection.NewRunner(e.config(func(c *projection.Config) { c.BatchSize = 25; c.LeaseTTL = 3 * time.Second }), p)
	require.NoError(t, err)
	e.start(t, r)
	e.waitCount(t, "killed", 200)
	e.checkFold(t, "killed")
	require.Equal(t, int64(3), kills.Load())
	require.Zero(t, redelivered.Load(), "the handler saw an event delivered more than once")
	held, err := projection.NewAdmin(e.pool, e.schema).Held(e.ctx, "killed")
	require.NoError(t, err)
	require.Empty(t, held, "a dead connection is not the event's fault")
}

// A worker that lost its partition can still read new entries (">")
// before its next commit is fenced out; those entries then sit in the
// pending list where the new owner's reads never see them. The owner
// notices the hole before its checkpoint can move past it (its next batch
// does not follow the last one in the log), and catches up in order.
func TestEntriesReadByAnotherReaderAreApplied(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 1)
	p := e.ledger(t, "stolen", "stolen", func(eventstore.Event) error {
		time.Sleep(20 * time.Millisecond) // slow: the owner's reader waits with one batch in hand
		return nil
	})
	r, err := projection.NewRunner(e.config(func(c *projection.Config) { c.BatchSize = 1 }), p)
	require.NoError(t, err)
	e.start(t, r)
	e.appendEvents(t, 1, 5, "s")
	e.waitAtLeast(t, "stolen", 1)
	e.appendEvents(t, 1, 10, "s")

	c := e.store.Client()
	log := e.store.LogKey("acc", 0)
	got, err := c.Do(e.ctx, c.B().Xreadgroup().Group("stolen", "zombie").Count(100).Streams().Key(log).Id(">").Build()).AsXRead()
	require.NoError(t, err)
	require.NotEmpty(t, got[log], "the zombie read some entries first")
	// Later entries reach the owner: it must not move past the hole.
	e.appendEvents(t, 1, 5, "s")

	e.waitCount(t, "stolen", 20)
	e.checkFold(t, "stolen")
}
