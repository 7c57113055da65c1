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

// withReset gives a ledger projection a Reset that empties its table.
func withReset(p projection.Projection, table string) projection.Projection {
	p.Reset = func(ctx context.Context, tx pgx.Tx) error {
		_, err := tx.Exec(ctx, "TRUNCATE "+table)
		return err
	}
	return p
}

func (e *env) checksum(t *testing.T, table string) string {
	var sum string
	require.NoError(t, e.pool.QueryRow(e.ctx, "SELECT coalesce(md5(string_agg(agg || ':' || n || ':' || last_version || ':' || total, ',' ORDER BY agg)), '') FROM "+table).Scan(&sum))
	return sum
}

// An incrementally built read model, an in-place rebuild and a blue/green
// rebuild of the same log are identical.
func TestRebuildsEqualIncremental(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 4)
	e.appendEvents(t, 30, 10, "x")
	r, err := projection.NewRunner(e.config(), e.ledger(t, "eq", "eq", nil))
	require.NoError(t, err)
	stop := e.start(t, r)
	e.waitCount(t, "eq", 300)
	stop()
	incremental := e.checksum(t, "eq")
	require.NotEmpty(t, incremental)

	// Damage the read model, then rebuild in place.
	_, err = e.pool.Exec(e.ctx, "UPDATE eq SET total = total + 1000")
	require.NoError(t, err)
	e.applied.Store(0)
	var last projection.Progress
	err = projection.Rebuild(e.ctx, e.config(), withReset(e.ledger(t, "eq", "eq", nil), "eq"),
		projection.RebuildOptions{Progress: func(p projection.Progress) { last = p }, ProgressEvery: 10 * time.Millisecond})
	require.NoError(t, err)
	require.Equal(t, incremental, e.checksum(t, "eq"))
	require.Equal(t, int64(300), e.applied.Load(), "each event applied once by the rebuild")
	require.Equal(t, projection.Progress{Done: 300, Total: 300}, projection.Progress{Done: last.Done, Total: last.Total})

	// Blue/green: version 2 builds its own table from the start.
	v2 := e.ledger(t, "eq", "eq_v2", nil)
	v2.Version = 2
	require.Equal(t, "eq@v2", v2.ID())
	require.NoError(t, projection.CatchUp(e.ctx, e.config(), v2, projection.RebuildOptions{}))
	require.Equal(t, incremental, e.checksum(t, "eq_v2"))
	e.checkFold(t, "eq_v2")
}

// During a blue/green rebuild readers keep the old version's answers
// while writers append; after the switch they get the new version's,
// including the events appended meanwhile.
func TestBlueGreenSwitch(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 2)
	e.appendEvents(t, 10, 10, "g")
	v1 := e.ledger(t, "bg", "bg_v1", nil)
	_, err := e.pool.Exec(e.ctx, "CREATE VIEW bg AS SELECT agg, n, 1 AS shape FROM bg_v1")
	require.NoError(t, err)
	r1, err := projection.NewRunner(e.config(), v1)
	require.NoError(t, err)
	e.start(t, r1)
	e.waitCount(t, "bg_v1", 100)

	var appended atomic.Int64
	appended.Store(100)
	stopAppend := make(chan struct{})
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
			_, err := e.store.Append(e.ctx, eventstore.StreamID{Category: "acc", ID: fmt.Sprintf("g%d", i%10)}, eventstore.Any,
				eventstore.EventData{Type: "Add", Data: []byte("+1")})
			if err != nil {
				t.Error(err)
				return
			}
			appended.Add(1)
		}
	}()
	shape := func() int {
		var s int
		require.NoError(t, e.pool.QueryRow(e.ctx, "SELECT coalesce(max(shape), 0) FROM bg").Scan(&s))
		return s
	}

	v2 := e.ledger(t, "bg", "bg_v2", nil)
	v2.Version = 2
	require.NoError(t, projection.CatchUp(e.ctx, e.config(), v2, projection.RebuildOptions{}))
	require.Equal(t, 1, shape(), "readers still see version 1")
	r2, err := projection.NewRunner(e.config(), v2) // the new version keeps up from now on
	require.NoError(t, err)
	e.start(t, r2)

	admin := projection.NewAdmin(e.pool, e.schema)
	require.NoError(t, admin.Switch(e.ctx, "bg", 2, func(ctx context.Context, tx pgx.Tx) error {
		_, err := tx.Exec(ctx, "CREATE OR REPLACE VIEW bg AS SELECT agg, n, 2 AS shape FROM bg_v2")
		return err
	}))
	require.Equal(t, 2, shape(), "readers see version 2 after the switch")
	v, err := admin.ActiveVersion(e.ctx, "bg")
	require.NoError(t, err)
	require.Equal(t, 2, v)

	close(stopAppend)
	wg.Wait()
	e.waitCount(t, "bg_v2", appended.Load())
	var viaView int64
	require.NoError(t, e.pool.QueryRow(e.ctx, "SELECT sum(n) FROM bg").Scan(&viaView))
	require.Equal(t, appended.Load(), viaView, "the new version has the events appended during the rebuild")
	e.checkFold(t, "bg_v2")

	// The old version can go.
	require.Error(t, admin.DropVersion(e.ctx, e.store, "bg", 2, nil), "the active version cannot be dropped")
	require.NoError(t, admin.DropVersion(e.ctx, e.store, "bg", 1, func(ctx context.Context, tx pgx.Tx) error {
		_, err := tx.Exec(ctx, "DROP TABLE bg_v1")
		return err
	}))
	names, err := admin.Projections(e.ctx)
	require.NoError(t, err)
	require.Equal(t, []string{"bg@v2"}, names)
}

// A worker started during an in-place rebuild waits, then resumes on the
// new generation; nothing of the old generation is applied after the
// reset.
func TestWorkerWaitsDuringRebuild(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 2)
	e.appendEvents(t, 20, 10, "q")
	p := withReset(e.ledger(t, "rb", "rb", nil), "rb")
	r, err := projection.NewRunner(e.config(func(c *projection.Config) { c.WorkerID = "old" }), p)
	require.NoError(t, err)
	e.start(t, r)
	e.waitCount(t, "rb", 200)

	rebuilding := make(chan struct{})
	var during atomic.Int64
	var rebuildStarted atomic.Bool
	late := e.ledger(t, "rb", "rb", nil)
	inner := late.Handler
	late.Handler = projection.HandlerFunc(func(ctx context.Context, tx pgx.Tx, ev eventstore.Event) error {
		if rebuildStarted.Load() {
			select {
			case <-rebuilding:
			default:
				during.Add(1)
			}
		}
		return inner.Apply(ctx, tx, ev)
	})
	slow := withReset(e.ledger(t, "rb", "rb", nil), "rb")
	slowInner := slow.Handler
	slow.Handler = projection.HandlerFunc(func(ctx context.Context, tx pgx.Tx, ev eventstore.Event) error {
		time.Sleep(2 * time.Millisecond) // long enough for the late worker to try
		return slowInner.Apply(ctx, tx, ev)
	})
	errc := make(chan error, 1)
	rebuildStarted.Store(true)
	go func() {
		errc <- projection.Rebuild(e.ctx, e.config(func(c *projection.Config) { c.WorkerID = "rebuilder" }), slow, projection.RebuildOptions{})
	}()
	// A worker that starts during the rebuild.
	r2, err := projection.NewRunner(e.config(func(c *projection.Config) { c.WorkerID = "late" }), late)
	require.NoError(t, err)
	e.start(t, r2)
	require.NoError(t, <-errc)
	close(rebuilding)
	require.Zero(t, during.Load(), "the late worker applied nothing during the rebuild")
	require.Equal(t, int64(200), e.count(t, "rb"))

	e.appendEvents(t, 20, 1, "q")
	e.waitCount(t, "rb", 220)
	e.checkFold(t, "rb")
	// The runners take the partitions back (a lease can lapse for a moment
	// on a starved machine, so wait for it rather than sample once).
	require.Eventually(t, func() bool {
		st, err := projection.NewAdmin(e.pool, e.schema).Status(e.ctx, e.store, "rb")
		require.NoError(t, err)
		for _, s := range st {
			if s.Owner != "old" && s.Owner != "late" {
				return false
			}
		}
		return len(st) == 2
	}, 30*time.Second, 20*time.Millisecond, "the runners took the partitions back")
}

// Replay by time window returns exactly the events whose IDs fall in it.
func TestReplayTimeWindow(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 4)
	var all []eventstore.Event
	for i := 0; i < 6; i++ {
		e.appendEvents(t, 8, 2, fmt.Sprintf("t%d-", i))
		time.Sleep(3 * time.Millisecond) // spread the appends over several milliseconds
	}
	for ev, err := range e.store.ReadCategory(e.ctx, "acc", eventstore.MinPosition, eventstore.MaxPosition) {
		require.NoError(t, err)
		all = append(all, ev)
	}
	from, to := all[len(all)/4].Position.Time(), all[3*len(all)/4].Position.Time()
	var want []eventstore.Event
	for _, ev := range all {
		if ms := ev.Position.Ms; ms >= uint64(from.UnixMilli()) && ms <= uint64(to.UnixMilli()) {
			want = append(want, ev)
		}
	}
	var got []eventstore.Event
	n, err := projection.Replay(e.ctx, e.store, projection.ReplaySpec{Category: "acc",
		From: eventstore.PositionAt(from), To: eventstore.LastPositionAt(to)},
		func(_ context.Context, ev eventstore.Event) error { got = append(got, ev); return nil })
	require.NoError(t, err)
	require.Equal(t, len(want), n)
	require.Equal(t, want, got)
	require.Less(t, len(got), len(all))

	// One aggregate, bounded by positions.
	agg := all[len(all)/2].Stream.ID
	var one []uint64
	_, err = projection.Replay(e.ctx, e.store, projection.ReplaySpec{Category: "acc", AggregateID: agg,
		From: all[0].Position, To: eventstore.MaxPosition},
		func(_ context.Context, ev eventstore.Event) error { one = append(one, ev.Version); return nil })
	require.NoError(t, err)
	require.Equal(t, []uint64{1, 2}, one)

	// Nothing was touched: no checkpoints, no groups.
	c := e.store.Client()
	for p := 0; p < 4; p++ {
		groups, err := c.Do(e.ctx, c.B().XinfoGroups().Key(e.store.LogKey("acc", p)).Build()).ToArray()
		require.NoError(t, err)
		require.Empty(t, groups)
	}
}
