package eventstore_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/redsource/redsource/eventstore"
	"github.com/redsource/redsource/internal/keys"
)

// TestClockRollback (I1): when the server's clock is behind the log's last
// ID (it went back, or it ran ahead before), positions keep growing from
// that ID, the aggregate stream reuses them, and RecordedAt stays the real
// server time. The log is moved an hour ahead with XSETID, which is what a
// clock that ran an hour fast leaves behind (failure-modes.md §4 #15).
func TestClockRollback(t *testing.T) {
	t.Parallel()
	ctx := ctxT(t)
	s := newStore(t, eventstore.Config{Partitions: 2})
	c := s.Client()
	st := aggregateIn(s, "acct", "r", 1)
	other := aggregateIn(s, "acct", "q", 1) // same partition, another aggregate

	seed, err := s.Append(ctx, st, eventstore.NoStream, ev("Opened", ""))
	require.NoError(t, err)
	now := serverMs(t, c)
	future := now + 3600000
	xsetid(t, c, s.LogKey(st.Category, 1), fmt.Sprintf("%d-0", future))

	r1, err := s.Append(ctx, st, eventstore.Exact(1), ev("Deposited", "1"), ev("Deposited", "2"))
	require.NoError(t, err)
	r2, err := s.Append(ctx, other, eventstore.NoStream, ev("Opened", ""))
	require.NoError(t, err)
	r3, err := s.Append(ctx, st, eventstore.Exact(3), ev("Withdrawn", "3"))
	require.NoError(t, err)

	// Same millisecond, sequence + 1, across aggregates of the partition.
	require.Equal(t, []eventstore.Position{at(future, 1), at(future, 2)}, r1.Positions)
	require.Equal(t, []eventstore.Position{at(future, 3)}, r2.Positions)
	require.Equal(t, []eventstore.Position{at(future, 4)}, r3.Positions)

	// The aggregate stream holds the same IDs as the log.
	aggKey := keys.Layout{NS: s.Namespace()}.Aggregate(st.Category, 1, st.ID)
	var aggIDs []string
	for _, e := range xrange(t, c, aggKey) {
		aggIDs = append(aggIDs, e.ID)
	}
	require.Equal(t, []string{seed.Positions[0].String(), at(future, 1).String(), at(future, 2).String(), at(future, 4).String()}, aggIDs)
	var logIDs []string
	for _, e := range xrange(t, c, s.LogKey(st.Category, 1)) {
		logIDs = append(logIDs, e.ID)
	}
	require.Equal(t, []string{seed.Positions[0].String(), at(future, 1).String(), at(future, 2).String(), at(future, 3).String(), at(future, 4).String()}, logIDs)

	// RecordedAt is the server's clock, not the ID's millisecond, and
	// reads see the same.
	for _, r := range []eventstore.AppendResult{r1, r2, r3} {
		require.WithinDuration(t, time.UnixMilli(int64(now)), r.RecordedAt, time.Minute)
	}
	got := collect(t, s.Read(ctx, st, 0))
	require.Len(t, got, 4)
	for i, e := range got {
		require.Equal(t, uint64(i+1), e.Version)
		require.WithinDuration(t, time.UnixMilli(int64(now)), e.RecordedAt, time.Minute, "version %d", e.Version)
		if i > 0 {
			require.Equal(t, future, e.Position.Ms)
			require.True(t, e.RecordedAt.Before(e.Position.Time()), "after a rollback RecordedAt is earlier than the position's millisecond")
		}
	}
	require.Equal(t, at(future, 4), got[3].Position)
	require.Equal(t, r3.RecordedAt, got[3].RecordedAt)

	// An idempotent retry across the rollback returns the original result.
	again, err := s.Append(ctx, st, eventstore.Exact(1), eventstore.EventData{ID: r1.EventIDs[0], Type: "Deposited", Data: []byte("1")},
		eventstore.EventData{ID: r1.EventIDs[1], Type: "Deposited", Data: []byte("2")})
	require.NoError(t, err)
	require.True(t, again.Duplicate)
	require.Equal(t, r1.Positions, again.Positions)
}

// When the aggregate stream is ahead of its partition log (here the log was
// deleted after a clock that ran ahead), the second XADD of the script
// fails; the script undoes what it wrote, so the append is all or nothing
// (I2) and the error says why.
func TestAppendUndoneWhenAggregateIsAheadOfLog(t *testing.T) {
	t.Parallel()
	ctx := ctxT(t)
	s := newStore(t, eventstore.Config{Partitions: 1})
	c := s.Client()
	st := eventstore.StreamID{Category: "u", ID: "x"}
	_, err := s.Append(ctx, st, eventstore.NoStream, ev("Seed", ""))
	require.NoError(t, err)
	logKey := s.LogKey("u", 0)
	xsetid(t, c, logKey, fmt.Sprintf("%d-0", serverMs(t, c)+3600000))
	_, err = s.Append(ctx, st, eventstore.Exact(1), ev("Ahead", ""))
	require.NoError(t, err)
	require.NoError(t, c.Do(ctx, c.B().Del().Key(logKey).Build()).Error())

	_, err = s.Append(ctx, st, eventstore.Exact(2), ev("A", ""), ev("B", ""))
	require.Error(t, err)
	require.NotErrorIs(t, err, eventstore.ErrConflict)
	require.ErrorContains(t, err, "append undone")
	require.ErrorContains(t, err, "equal or smaller")

	n, err := c.Do(ctx, c.B().Xlen().Key(logKey).Build()).AsInt64()
	require.NoError(t, err)
	require.Zero(t, n, "the log entry written before the failure is undone")
	v, err := s.Version(ctx, st)
	require.NoError(t, err)
	require.Equal(t, uint64(2), v, "the aggregate stream is unchanged")
}

// The undo of a failed append removes only what the append wrote: when
// the log's new entry takes the very ID an earlier event of the aggregate
// has (a log recreated within that event's millisecond) and indexing it
// fails, the earlier event's aggregate entry stays.
func TestAppendUndoKeepsAnEarlierEntryWithTheSameID(t *testing.T) {
	t.Parallel()
	ctx := ctxT(t)
	s := newStore(t, eventstore.Config{Partitions: 1})
	c := s.Client()
	st := eventstore.StreamID{Category: "u", ID: "x"}
	logKey := s.LogKey("u", 0)
	future := serverMs(t, c) + 600000
	_, err := s.Append(ctx, st, eventstore.NoStream, ev("First", ""))
	require.NoError(t, err)
	xsetid(t, c, logKey, fmt.Sprintf("%d-0", future))
	seed, err := s.Append(ctx, st, eventstore.Exact(1), ev("Seed", ""))
	require.NoError(t, err)
	require.Equal(t, fmt.Sprintf("%d-1", future), seed.Positions[0].String())
	xsetid(t, c, logKey, fmt.Sprintf("%d-0", future+3600000))
	_, err = s.Append(ctx, st, eventstore.Exact(2), ev("Ahead", ""))
	require.NoError(t, err)

	// The log is recreated just before Seed's ID: its next entry gets
	// Seed's ID, which the aggregate stream (ahead by an hour) refuses.
	require.NoError(t, c.Do(ctx, c.B().Del().Key(logKey).Build()).Error())
	require.NoError(t, c.Do(ctx, c.B().Xadd().Key(logKey).Id(fmt.Sprintf("%d-0", future)).FieldValue().FieldValue("x", "y").Build()).Error())
	require.NoError(t, c.Do(ctx, c.B().Xdel().Key(logKey).Id(fmt.Sprintf("%d-0", future)).Build()).Error())
	_, err = s.Append(ctx, st, eventstore.Exact(3), ev("A", ""))
	require.ErrorContains(t, err, "append undone")

	v, err := s.Version(ctx, st)
	require.NoError(t, err)
	require.Equal(t, uint64(3), v, "every earlier aggregate entry is still there")
}
