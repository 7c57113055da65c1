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

	// The aggregate index holds the log IDs of its events, in order.
	aggKey := keys.Layout{NS: s.Namespace()}.Aggregate(st.Category, 1, st.ID)
	index, err := c.Do(ctx, c.B().Lrange().Key(aggKey).Start(0).Stop(-1).Build()).AsStrSlice()
	require.NoError(t, err)
	var aggIDs []string
	for _, el := range index {
		aggIDs = append(aggIDs, el[:len(el)-2]) // the log ID, then a two-byte fingerprint
	}
	require.Equal(t, []string{seed.Positions[0].String(), at(future, 1).String(), at(future, 2).String(), at(future, 4).String()}, aggIDs)
	var logIDs []string
	for _, e := range xrange(t, c, s.LogKey(st.Category, 1)) {
		logIDs = append(logIDs, e.ID)
	}
	require.Equal(t, []string{seed.Positions[0].String(), at(future, 1).String(), at(future, 2).String(), at(future, 3).String(), at(future, 4).String()}, logIDs)

	// RecordedAt is the position's millisecond: the server's clock at
	// append, or, after the clock went back, the last ID's millisecond
	// (positions never go back); reads see the same.
	for _, r := range []eventstore.AppendResult{r1, r2, r3} {
		require.Equal(t, r.Positions[0].Time(), r.RecordedAt)
	}
	require.WithinDuration(t, time.UnixMilli(int64(now)), seed.RecordedAt, time.Minute)
	got := collect(t, s.Read(ctx, st, 0))
	require.Len(t, got, 4)
	for i, e := range got {
		require.Equal(t, uint64(i+1), e.Version)
		require.Equal(t, e.Position.Time(), e.RecordedAt, "version %d", e.Version)
		if i > 0 {
			require.Equal(t, future, e.Position.Ms)
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

// A write that fails inside the script is undone: with the log's last ID
// one short of the largest possible, the first of two events takes it and
// the second cannot be added; the first is deleted again, the index is
// untouched, and the error says why (I2).
func TestAppendUndoneWhenAWriteFails(t *testing.T) {
	t.Parallel()
	ctx := ctxT(t)
	s := newStore(t, eventstore.Config{Partitions: 1})
	c := s.Client()
	st := eventstore.StreamID{Category: "u", ID: "x"}
	_, err := s.Append(ctx, st, eventstore.NoStream, ev("Seed", ""))
	require.NoError(t, err)
	logKey := s.LogKey("u", 0)
	xsetid(t, c, logKey, "18446744073709551615-18446744073709551614")

	_, err = s.Append(ctx, st, eventstore.Exact(1), ev("A", ""), ev("B", ""))
	require.ErrorIs(t, err, eventstore.ErrRefused)
	require.ErrorContains(t, err, "append undone")
	require.ErrorContains(t, err, "exhausted")

	n, err := c.Do(ctx, c.B().Xlen().Key(logKey).Build()).AsInt64()
	require.NoError(t, err)
	require.Equal(t, int64(1), n, "the log entry written before the failure is undone")
	v, err := s.Version(ctx, st)
	require.NoError(t, err)
	require.Equal(t, uint64(1), v, "the index is unchanged")
	require.Len(t, collect(t, s.Read(ctx, st, 0)), 1)

	// The log has no ID left: a one-event append fails at its first write,
	// refused, with nothing written.
	_, err = s.Append(ctx, st, eventstore.Exact(1), ev("C", ""))
	require.ErrorIs(t, err, eventstore.ErrRefused)
	require.ErrorContains(t, err, "exhausted")
	v, err = s.Version(ctx, st)
	require.NoError(t, err)
	require.Equal(t, uint64(1), v)
}
