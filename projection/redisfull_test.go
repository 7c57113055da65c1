package projection_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/redsource/redsource/eventstore"
	"github.com/redsource/redsource/internal/faultenv"
	"github.com/redsource/redsource/internal/keys"
	"github.com/redsource/redsource/internal/testenv"
	"github.com/redsource/redsource/projection"
)

// memory returns used_memory and maxmemory from INFO memory, for the log.
func memory(ctx context.Context, t *testing.T, s *eventstore.Store) (used, limit int64) {
	c := s.Client()
	info, err := c.Do(ctx, c.B().Info().Section("memory").Build()).ToString()
	require.NoError(t, err)
	for _, line := range strings.Split(info, "\r\n") {
		if v, ok := strings.CutPrefix(line, "used_memory:"); ok {
			used, _ = strconv.ParseInt(v, 10, 64)
		}
		if v, ok := strings.CutPrefix(line, "maxmemory:"); ok {
			limit, _ = strconv.ParseInt(v, 10, 64)
		}
	}
	return used, limit
}

// A full Redis (maxmemory, noeviction) refuses appends, but the
// projections drain what the log holds: a runner started on it (a new
// process: new client, new store) takes its partitions, applies every
// event, quarantines a poison one and mirrors it into the dead-letter
// stream, and keeps its leases renewed for several LeaseTTLs. An in-place
// rebuild refuses to start (it would drop consumer groups that a full
// Redis does not let it create again).
func TestRedisFullProjectionsKeepDraining(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	url := faultenv.Start(t, faultenv.Options{MaxMemory: "8mb", Policy: "noeviction"}).URL()
	c := testenv.RedisAt(t, url)
	ns := testenv.Namespace(t, c)
	store, err := eventstore.New(c, eventstore.Config{Namespace: ns, Partitions: 2})
	require.NoError(t, err)
	pool, schema := testenv.Postgres(t)
	e := &env{ctx: ctx, store: store, pool: pool, schema: schema}
	p := e.ledger(t, "drain", "drain", func(ev eventstore.Event) error {
		if string(ev.Data) == "+13" {
			return projection.Permanent(errors.New("13 is poison"))
		}
		return nil
	})
	p.Reset = func(ctx context.Context, tx pgxTx) error { _, err := tx.Exec(ctx, "TRUNCATE drain"); return err }

	// The projection ran before Redis filled up: its consumer groups exist
	// (a full Redis refuses XGROUP CREATE).
	e.appendEvents(t, 4, 1, "f")
	first, err := projection.NewRunner(e.config(), p)
	require.NoError(t, err)
	stop := e.start(t, first)
	e.waitCount(t, "drain", 4)
	stop()

	_, err = store.Append(ctx, eventstore.StreamID{Category: "acc", ID: "poison"}, eventstore.NoStream,
		eventstore.EventData{Type: "Add", Data: []byte("+13")})
	require.NoError(t, err)
	appended := int64(4 + 1)
	pad := map[string]string{"pad": strings.Repeat("x", 1000)}
	fillStart := time.Now()
	var full error
	for i := 0; full == nil; i++ {
		require.Less(t, i, 10_000, "Redis never filled up: is maxmemory in force?")
		evs := make([]eventstore.EventData, 10)
		for j := range evs {
			evs[j] = eventstore.EventData{Type: "Add", Data: []byte("+1"), Metadata: pad}
		}
		if _, full = store.Append(ctx, eventstore.StreamID{Category: "acc", ID: fmt.Sprintf("f%d", i%50)}, eventstore.Any, evs...); full == nil {
			appended += int64(len(evs))
		}
	}
	require.ErrorContains(t, full, "OOM", "appends fail because Redis is full")
	require.ErrorIs(t, full, eventstore.ErrRefused, "refused for certain: not retried")
	used, limit := memory(ctx, t, store)
	t.Logf("Redis full after %d events in %s: used_memory %d, maxmemory %d", appended, time.Since(fillStart).Round(time.Millisecond), used, limit)

	// A new process starts on the full Redis.
	c2 := testenv.RedisAt(t, url)
	store2, err := eventstore.New(c2, eventstore.Config{Namespace: ns, Partitions: 2})
	require.NoError(t, err)
	r, err := projection.NewRunner(e.config(func(cfg *projection.Config) { cfg.Store = store2; cfg.WorkerID = "drainer" }), p)
	require.NoError(t, err)
	drainStart := time.Now()
	e.start(t, r)
	e.waitCount(t, "drain", appended-1)
	t.Logf("drained %d events on a full Redis in %s", appended-4, time.Since(drainStart).Round(time.Millisecond))
	require.Zero(t, e.violations.Load())

	admin := projection.NewAdmin(pool, schema)
	var held []projection.HeldEvent
	require.Eventually(t, func() bool {
		held, err = admin.Held(ctx, "drain")
		require.NoError(t, err)
		return len(held) == 1
	}, 30*time.Second, 20*time.Millisecond)
	require.Equal(t, "poison", held[0].AggregateID)
	layout := keys.Layout{NS: ns}
	dlq := layout.DLQ("acc", held[0].Partition, "drain")
	require.Eventually(t, func() bool {
		n, err := c.Do(ctx, c.B().Xlen().Key(dlq).Build()).AsInt64()
		return err == nil && n == 1
	}, 10*time.Second, 20*time.Millisecond, "the dead-letter mirror works on a full Redis")
	e.settled(t, "drain", 1)

	// Leases are renewed (they would lapse within a second otherwise) and
	// the heartbeat goes on, for four LeaseTTLs.
	leased := func() bool {
		for part := 0; part < 2; part++ {
			owner, err := c.Do(ctx, c.B().Get().Key(layout.Lease("acc", part, "drain")).Build()).ToString()
			if err != nil || owner != "drainer" {
				return false
			}
		}
		return true
	}
	require.Eventually(t, leased, 10*time.Second, 20*time.Millisecond)
	require.Never(t, func() bool { return !leased() }, 4*time.Second, 20*time.Millisecond, "a lease lapsed on a full Redis")
	live, err := c.Do(ctx, c.B().Zscore().Key(layout.Projection("drain", "workers")).Member("drainer").Build()).AsFloat64()
	require.NoError(t, err)
	require.Greater(t, live, float64(time.Now().UnixMilli()), "the heartbeat is current")

	// Nothing new was let in meanwhile: Redis is still full.
	_, err = store.Append(ctx, eventstore.StreamID{Category: "acc", ID: "late"}, eventstore.NoStream, eventstore.EventData{Type: "Add", Data: []byte("+1")})
	require.ErrorContains(t, err, "OOM")
	// An in-place rebuild does not start.
	err = projection.Rebuild(ctx, e.config(func(cfg *projection.Config) { cfg.WorkerID = "rebuilder" }), p, projection.RebuildOptions{})
	require.ErrorContains(t, err, "OOM")
	require.NotErrorIs(t, err, projection.ErrRebuildInProgress)
	require.True(t, leased())
	require.Equal(t, appended-1, e.count(t, "drain"))
}
