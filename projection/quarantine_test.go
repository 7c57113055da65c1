package projection_test

import (
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/redsource/redsource/eventstore"
	"github.com/redsource/redsource/internal/keys"
	"github.com/redsource/redsource/projection"
)

func TestPoisonQuarantineParkRetrySkip(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 2)
	var broken atomic.Bool
	broken.Store(true)
	var calls atomic.Int64
	p := e.ledger(t, "poison", "poison", func(ev eventstore.Event) error {
		if string(ev.Data) == "+13" && broken.Load() {
			calls.Add(1)
			return errors.New("cannot handle 13")
		}
		if string(ev.Data) == "+99" {
			return errors.New("99 is never accepted")
		}
		return nil
	})
	r, err := projection.NewRunner(e.config(), p)
	require.NoError(t, err)
	e.start(t, r)

	bad := eventstore.StreamID{Category: "acc", ID: "bad"}
	e.appendEvents(t, 10, 3, "ok") // 30 healthy events
	_, err = e.store.Append(e.ctx, bad, eventstore.NoStream,
		eventstore.EventData{Type: "Add", Data: []byte("+1")},
		eventstore.EventData{Type: "Add", Data: []byte("+13")}, // version 2: poison
		eventstore.EventData{Type: "Add", Data: []byte("+1")},  // parked behind it
		eventstore.EventData{Type: "Add", Data: []byte("+1")})  // parked
	require.NoError(t, err)
	e.appendEvents(t, 10, 2, "ok") // other aggregates keep flowing

	e.waitCount(t, "poison", 50+1)
	admin := projection.NewAdmin(e.pool, e.schema)
	var held []projection.HeldEvent
	require.Eventually(t, func() bool {
		held, err = admin.Held(e.ctx, "poison")
		require.NoError(t, err)
		return len(held) == 3
	}, 30*time.Second, 20*time.Millisecond)
	require.Equal(t, "quarantined", held[0].Reason)
	require.Equal(t, uint64(2), held[0].Version)
	require.Equal(t, "bad", held[0].AggregateID)
	require.Equal(t, 3, held[0].Attempts, "MaxAttempts attempts")
	require.Contains(t, held[0].Error, "cannot handle 13")
	require.Equal(t, int64(3), calls.Load())
	require.Equal(t, []string{"parked", "parked"}, []string{held[1].Reason, held[2].Reason})
	require.Equal(t, []uint64{3, 4}, []uint64{held[1].Version, held[2].Version})

	// The dead-letter stream mirrors the quarantine.
	c := e.store.Client()
	dlq := keys.Layout{NS: e.store.Namespace()}.DLQ("acc", held[0].Partition, "poison")
	require.Eventually(t, func() bool {
		n, err := c.Do(e.ctx, c.B().Xlen().Key(dlq).Build()).AsInt64()
		return err == nil && n == 1
	}, 10*time.Second, 20*time.Millisecond)
	entries, err := c.Do(e.ctx, c.B().Xrange().Key(dlq).Start("-").End("+").Build()).AsXRange()
	require.NoError(t, err)
	require.Equal(t, held[0].Position.String(), entries[0].FieldValues["position"])
	require.Equal(t, "3", entries[0].FieldValues["attempts"])

	// A retry that still fails leaves it quarantined, with the error.
	_, err = admin.Request(e.ctx, "poison", "retry", "", -1, eventstore.Position{})
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		o, err := admin.Outcome(e.ctx, "poison", "acc", held[0].Partition, held[0].Position)
		require.NoError(t, err)
		return !o.Resolved && !o.Pending && o.Error == "cannot handle 13"
	}, 30*time.Second, 20*time.Millisecond)

	// After a fix, retry applies it and the parked events, in order.
	broken.Store(false)
	_, err = admin.Request(e.ctx, "poison", "retry", "acc", held[0].Partition, held[0].Position)
	require.NoError(t, err)
	e.waitCount(t, "poison", 54)
	o, err := admin.Outcome(e.ctx, "poison", "acc", held[0].Partition, held[0].Position)
	require.NoError(t, err)
	require.Equal(t, projection.Outcome{Resolved: true, Resolution: "retried", Error: "cannot handle 13"}, o)
	st, err := admin.Status(e.ctx, e.store, "poison")
	require.NoError(t, err)
	var applied int64
	for _, s := range st {
		applied += s.Applied
	}
	require.Equal(t, int64(54), applied, "events applied by the retry count too")
	require.Eventually(t, func() bool {
		n, err := c.Do(e.ctx, c.B().Xlen().Key(dlq).Build()).AsInt64()
		return err == nil && n == 0
	}, 10*time.Second, 20*time.Millisecond, "the resolved entry leaves the dead-letter stream")
	held, err = admin.Held(e.ctx, "poison")
	require.NoError(t, err)
	require.Empty(t, held)
	e.checkFold(t, "poison")

	// Later events of the aggregate flow again.
	_, err = e.store.Append(e.ctx, bad, eventstore.Exact(4), eventstore.EventData{Type: "Add", Data: []byte("+1")})
	require.NoError(t, err)
	e.waitCount(t, "poison", 55)

	// Skip: the poison event is left out, the parked one is applied.
	_, err = e.store.Append(e.ctx, bad, eventstore.Exact(5),
		eventstore.EventData{Type: "Add", Data: []byte("+99")},
		eventstore.EventData{Type: "Add", Data: []byte("+1")})
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		held, err = admin.Held(e.ctx, "poison")
		require.NoError(t, err)
		return len(held) == 2
	}, 30*time.Second, 20*time.Millisecond)
	e.skipped.Store("bad/6", true) // the ledger may now jump over version 6
	_, err = admin.Request(e.ctx, "poison", "skip", "acc", held[0].Partition, held[0].Position)
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		held, err = admin.Held(e.ctx, "poison")
		require.NoError(t, err)
		return len(held) == 0
	}, 30*time.Second, 20*time.Millisecond)
	var n, last int64
	require.NoError(t, e.pool.QueryRow(e.ctx, "SELECT n, last_version FROM poison WHERE agg = 'bad'").Scan(&n, &last))
	require.Equal(t, int64(6), n, "5 applied before, the skipped one left out, the parked one applied")
	require.Equal(t, int64(7), last)
}

func TestSkipModeLetsTheAggregateFlow(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 1)
	var seen []uint64
	p := e.ledger(t, "skipmode", "skipmode", nil)
	inner := p.Handler
	p.Mode = projection.Skip
	p.Handler = projection.HandlerFunc(func(ctx ctxT, tx pgxTx, ev eventstoreEvent) error {
		if string(ev.Data) == "+13" {
			return projection.Permanent(errors.New("bad payload"))
		}
		seen = append(seen, ev.Version)
		_, err := tx.Exec(ctx, "INSERT INTO skipmode (agg, n, last_version, total) VALUES ($1, 1, $2, 0) ON CONFLICT (agg) DO UPDATE SET n = skipmode.n + 1, last_version = $2", ev.Stream.ID, int64(ev.Version))
		return err
	})
	_ = inner
	r, err := projection.NewRunner(e.config(), p)
	require.NoError(t, err)
	e.start(t, r)
	_, err = e.store.Append(e.ctx, eventstore.StreamID{Category: "acc", ID: "s"}, eventstore.NoStream,
		eventstore.EventData{Type: "Add", Data: []byte("+1")},
		eventstore.EventData{Type: "Add", Data: []byte("+13")},
		eventstore.EventData{Type: "Add", Data: []byte("+1")})
	require.NoError(t, err)
	e.waitCount(t, "skipmode", 2)
	held, err := projection.NewAdmin(e.pool, e.schema).Held(e.ctx, "skipmode")
	require.NoError(t, err)
	require.Len(t, held, 1)
	require.Equal(t, 1, held[0].Attempts, "a permanent error is not retried")
}

func TestDeletedPendingEntryIsReportedAndAcked(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 1)
	e.appendEvents(t, 1, 5, "d")
	c := e.store.Client()
	log := e.store.LogKey("acc", 0)
	// A worker that read everything and died: all five are pending.
	require.NoError(t, c.Do(e.ctx, c.B().XgroupCreate().Key(log).Group("gone").Id("0").Build()).Error())
	msgs, err := c.Do(e.ctx, c.B().Xreadgroup().Group("gone", "0").Count(10).Streams().Key(log).Id(">").Build()).AsXRead()
	require.NoError(t, err)
	require.Len(t, msgs[log], 5)
	// Then the log lost the third entry.
	require.NoError(t, c.Do(e.ctx, c.B().Xdel().Key(log).Id(msgs[log][2].ID).Build()).Error())

	r, err := projection.NewRunner(e.config(), e.ledger(t, "gone", "gone", nil))
	require.NoError(t, err)
	e.start(t, r)
	admin := projection.NewAdmin(e.pool, e.schema)
	require.Eventually(t, func() bool {
		held, err := admin.Held(e.ctx, "gone", "missing")
		return err == nil && len(held) == 1 && held[0].Position.String() == msgs[log][2].ID
	}, 30*time.Second, 20*time.Millisecond)
	require.Eventually(t, func() bool {
		n, err := c.Do(e.ctx, c.B().Xpending().Key(log).Group("gone").Build()).ToArray()
		require.NoError(t, err)
		cnt, _ := n[0].AsInt64()
		return cnt == 0
	}, 10*time.Second, 20*time.Millisecond, "nothing left pending")
	// Versions 1, 2 applied; 4 and 5 cannot be (3 is lost): the ledger
	// refuses out-of-order versions, so it stops at 2 and says so.
	require.Equal(t, int64(2), e.count(t, "gone"))
}

func TestLogRegressionStopsThePartition(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 1)
	e.appendEvents(t, 1, 3, "r")
	r, err := projection.NewRunner(e.config(), e.ledger(t, "regress", "regress", nil))
	require.NoError(t, err)
	stop := e.start(t, r)
	e.waitCount(t, "regress", 3)
	stop()

	// Redis loses its tail: the checkpoint's entry is gone, and a new event
	// arrives.
	c := e.store.Client()
	log := e.store.LogKey("acc", 0)
	last, err := c.Do(e.ctx, c.B().Xrevrange().Key(log).End("+").Start("-").Count(1).Build()).AsXRange()
	require.NoError(t, err)
	require.NoError(t, c.Do(e.ctx, c.B().Xdel().Key(log).Id(last[0].ID).Build()).Error())
	e.appendEvents(t, 1, 1, "other")

	r2, err := projection.NewRunner(e.config(), e.ledger(t, "regress", "regress", nil))
	require.NoError(t, err)
	e.start(t, r2)
	admin := projection.NewAdmin(e.pool, e.schema)
	require.Eventually(t, func() bool {
		st, err := admin.Status(e.ctx, e.store, "regress")
		require.NoError(t, err)
		return len(st) == 1 && st[0].LastError != ""
	}, 30*time.Second, 20*time.Millisecond)
	st, err := admin.Status(e.ctx, e.store, "regress")
	require.NoError(t, err)
	require.Contains(t, st[0].LastError, "log regressed")
	require.Contains(t, st[0].LastError, fmt.Sprintf("checkpoint %s is gone", last[0].ID))
	require.Equal(t, int64(3), e.count(t, "regress"), "nothing applied over the regression")
}

// A running owner, idle or busy, re-checks the log now and then: a
// regression that happens while it runs stops the partition too.
func TestLogRegressionWhileRunning(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 1)
	e.appendEvents(t, 1, 3, "w")
	r, err := projection.NewRunner(e.config(), e.ledger(t, "live", "live", nil))
	require.NoError(t, err)
	e.start(t, r)
	e.waitCount(t, "live", 3)

	c := e.store.Client()
	log := e.store.LogKey("acc", 0)
	last, err := c.Do(e.ctx, c.B().Xrevrange().Key(log).End("+").Start("-").Count(1).Build()).AsXRange()
	require.NoError(t, err)
	require.NoError(t, c.Do(e.ctx, c.B().Xdel().Key(log).Id(last[0].ID).Build()).Error())

	admin := projection.NewAdmin(e.pool, e.schema)
	require.Eventually(t, func() bool {
		st, err := admin.Status(e.ctx, e.store, "live")
		require.NoError(t, err)
		return len(st) == 1 && strings.Contains(st[0].LastError, "log regressed")
	}, 30*time.Second, 20*time.Millisecond)
}
