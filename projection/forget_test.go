package projection_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/redsource/redsource/eventstore"
	"github.com/redsource/redsource/internal/testenv"
	"github.com/redsource/redsource/projection"
)

// Redis restarts empty (emulated by deleting the namespace's keys) while a
// runner projects it: the runner stops every partition and Run returns an
// error matching eventstore.ErrNamespaceLost; a runner started afterwards
// is refused at once, even after a writer created the namespace anew.
// Nothing is applied from the new incarnation into the old read model.
func TestRunnerStopsWhenRedisLostTheNamespace(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 2)
	e.appendEvents(t, 4, 3, "n")
	r, err := projection.NewRunner(e.config(), e.ledger(t, "lost", "lost", nil))
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(e.ctx)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	e.waitCount(t, "lost", 12)

	testenv.DeleteNamespace(e.store.Client(), e.store.Namespace())
	select {
	case err := <-done:
		require.ErrorIs(t, err, eventstore.ErrNamespaceLost)
		require.ErrorIs(t, err, eventstore.ErrDataLoss)
		require.Contains(t, err.Error(), "PostgreSQL schema")
	case <-time.After(30 * time.Second):
		t.Fatal("the runner went on after Redis lost the namespace")
	}
	st, err := projection.NewAdmin(e.pool, e.schema).Status(e.ctx, e.store, "lost")
	require.NoError(t, err)
	for _, s := range st {
		require.Equal(t, "namespace_lost", s.Stopped, "partition %d", s.Partition)
		require.Contains(t, s.LastError, "namespace")
	}

	// A new process's writer cannot tell the empty Redis from a new one
	// (it has no witness) and starts the namespace again...
	fresh, err := eventstore.New(e.store.Client(), eventstore.Config{Namespace: e.store.Namespace(), Partitions: 2})
	require.NoError(t, err)
	_, err = fresh.Append(e.ctx, eventstore.StreamID{Category: "acc", ID: "n0"}, eventstore.NoStream, eventstore.EventData{Type: "Add", Data: []byte("+1")})
	require.NoError(t, err)
	// ...but the schema remembers: a runner refuses it at once.
	e.store = fresh
	r2, err := projection.NewRunner(e.config(), e.ledger(t, "lost", "lost", nil))
	require.NoError(t, err)
	start := time.Now()
	err = r2.Run(e.ctx)
	require.ErrorIs(t, err, eventstore.ErrNamespaceLost)
	var ne *eventstore.NamespaceError
	require.ErrorAs(t, err, &ne)
	require.NotEmpty(t, ne.Found)
	require.Less(t, time.Since(start), 10*time.Second)
	require.Equal(t, int64(12), e.count(t, "lost"), "nothing of the new incarnation applied")

	// So does CatchUp.
	err = projection.CatchUp(e.ctx, e.config(), e.ledger(t, "lost", "lost", nil), projection.RebuildOptions{})
	require.ErrorIs(t, err, eventstore.ErrNamespaceLost)
}

// A witness in the toolkit schema makes even a process that never saw the
// namespace refuse a Redis that lost it.
func TestWitnessInTheToolkitSchema(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 2)
	w := projection.NewWitness(e.pool, e.schema)
	s, err := eventstore.New(e.store.Client(), eventstore.Config{Namespace: e.store.Namespace(), Partitions: 2, Witness: w})
	require.NoError(t, err)
	st := eventstore.StreamID{Category: "acc", ID: "w1"}
	_, err = s.Append(e.ctx, st, eventstore.NoStream, eventstore.EventData{Type: "Add", Data: []byte("+1")})
	require.NoError(t, err)
	id, err := s.Identity(e.ctx)
	require.NoError(t, err)
	remembered, err := w.Remembered(e.ctx, s.Namespace())
	require.NoError(t, err)
	require.Equal(t, id, remembered)

	// The runner of the same schema agrees with the witness.
	r, err := projection.NewRunner(e.config(), e.ledger(t, "wit", "wit", nil))
	require.NoError(t, err)
	stop := e.start(t, r)
	e.waitCount(t, "wit", 1)
	stop()

	testenv.DeleteNamespace(e.store.Client(), e.store.Namespace())
	next, err := eventstore.New(e.store.Client(), eventstore.Config{Namespace: e.store.Namespace(), Partitions: 2, Witness: projection.NewWitness(e.pool, e.schema)})
	require.NoError(t, err)
	_, err = next.Append(e.ctx, st, eventstore.NoStream, eventstore.EventData{Type: "Add", Data: []byte("+1")})
	require.ErrorIs(t, err, eventstore.ErrNamespaceLost)
	require.Contains(t, err.Error(), `PostgreSQL schema "`+e.schema+`" remembers identity `+id)

	// A schema that holds another namespace is no witness for this one.
	_, err = projection.NewWitness(e.pool, e.schema).Remembered(e.ctx, "someone-else")
	require.ErrorContains(t, err, "holds the projections of namespace")
}

// CatchUp (and everything that waits until a projection is done) returns
// the regression instead of waiting for a partition that cannot progress.
func TestCatchUpReturnsALogRegression(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 2)
	e.appendEvents(t, 6, 2, "c")
	p := e.ledger(t, "cu", "cu", nil)
	require.NoError(t, projection.CatchUp(e.ctx, e.config(), p, projection.RebuildOptions{}))
	require.Equal(t, int64(12), e.count(t, "cu"))

	// Partition 0 loses its tail (the checkpoint's entry).
	c := e.store.Client()
	log := e.store.LogKey("acc", 0)
	last, err := c.Do(e.ctx, c.B().Xrevrange().Key(log).End("+").Start("-").Count(1).Build()).AsXRange()
	require.NoError(t, err)
	require.NoError(t, c.Do(e.ctx, c.B().Xdel().Key(log).Id(last[0].ID).Build()).Error())

	// Nothing appended since: the checkpoint is past the log's end, which
	// looks caught up, and is not.
	err = projection.CatchUp(e.ctx, e.config(), p, projection.RebuildOptions{})
	require.ErrorIs(t, err, projection.ErrLogRegressed)
	e.appendEvents(t, 6, 1, "c")

	start := time.Now()
	err = projection.CatchUp(e.ctx, e.config(), p, projection.RebuildOptions{})
	require.ErrorIs(t, err, projection.ErrLogRegressed)
	require.ErrorIs(t, err, eventstore.ErrDataLoss)
	require.Contains(t, err.Error(), "acc partition 0")
	require.Less(t, time.Since(start), 20*time.Second)
}

// A partition stopped by a regression runs again by itself once Redis
// holds the checkpoint's entry again (restored from a backup), and says so.
func TestStoppedPartitionRunsAgainAfterRestore(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 1)
	e.appendEvents(t, 2, 2, "s")
	r, err := projection.NewRunner(e.config(), e.ledger(t, "restore", "restore", nil))
	require.NoError(t, err)
	e.start(t, r)
	e.waitCount(t, "restore", 4)

	c := e.store.Client()
	log := e.store.LogKey("acc", 0)
	backup, err := c.Do(e.ctx, c.B().Dump().Key(log).Build()).ToString()
	require.NoError(t, err)
	require.NoError(t, c.Do(e.ctx, c.B().Del().Key(log).Build()).Error())

	admin := projection.NewAdmin(e.pool, e.schema)
	status := func() projection.PartitionStatus {
		st, err := admin.Status(e.ctx, e.store, "restore")
		require.NoError(t, err)
		require.Len(t, st, 1)
		return st[0]
	}
	require.Equal(t, "log_regressed", status().Stopped, "Status checks the log itself")
	require.Contains(t, status().LastError, "log regressed")
	// The worker finds out too and records it.
	require.Eventually(t, func() bool {
		var stopped string
		require.NoError(t, e.pool.QueryRow(e.ctx, "SELECT stopped FROM checkpoints WHERE projection = 'restore'").Scan(&stopped))
		return stopped == "log_regressed"
	}, 30*time.Second, 20*time.Millisecond)

	require.NoError(t, c.Do(e.ctx, c.B().Restore().Key(log).Ttl(0).SerializedValue(backup).Replace().Build()).Error())
	require.Eventually(t, func() bool { s := status(); return s.Stopped == "" && s.LastError == "" }, 30*time.Second, 20*time.Millisecond)
	e.appendEvents(t, 2, 1, "s")
	e.waitCount(t, "restore", 6)
	e.checkFold(t, "restore")
}

// Accepting a loss: an in-place rebuild after a regression realigns the
// read model with what the log holds now and clears the stop.
func TestRebuildAfterARegression(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 1)
	e.appendEvents(t, 3, 2, "r")
	p := e.ledger(t, "accept", "accept", nil)
	p.Reset = func(ctx context.Context, tx pgxTx) error { _, err := tx.Exec(ctx, "TRUNCATE accept"); return err }
	require.NoError(t, projection.CatchUp(e.ctx, e.config(), p, projection.RebuildOptions{}))

	c := e.store.Client()
	log := e.store.LogKey("acc", 0)
	last, err := c.Do(e.ctx, c.B().Xrevrange().Key(log).End("+").Start("-").Count(1).Build()).AsXRange()
	require.NoError(t, err)
	require.NoError(t, c.Do(e.ctx, c.B().Xdel().Key(log).Id(last[0].ID).Build()).Error())
	r, err := projection.NewRunner(e.config(), p)
	require.NoError(t, err)
	stop := e.start(t, r)
	admin := projection.NewAdmin(e.pool, e.schema)
	require.Eventually(t, func() bool {
		var stopped string
		require.NoError(t, e.pool.QueryRow(e.ctx, "SELECT stopped FROM checkpoints WHERE projection = 'accept'").Scan(&stopped))
		return stopped == "log_regressed"
	}, 30*time.Second, 20*time.Millisecond)
	stop()

	require.NoError(t, projection.Rebuild(e.ctx, e.config(), p, projection.RebuildOptions{}))
	require.Equal(t, int64(5), e.count(t, "accept"), "the read model holds what the log holds now")
	st, err := admin.Status(e.ctx, e.store, "accept")
	require.NoError(t, err)
	require.Empty(t, st[0].Stopped)
	require.Empty(t, st[0].LastError)
}
