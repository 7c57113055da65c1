package eventstore_test

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/redis/rueidis"
	"github.com/stretchr/testify/require"

	"github.com/redsource/redsource/eventstore"
	"github.com/redsource/redsource/internal/keys"
)

// aggregateIn returns an aggregate ID of category cat that falls in
// partition p, the first of "<prefix>0", "<prefix>1", ... that does.
func aggregateIn(s *eventstore.Store, cat, prefix string, p int) eventstore.StreamID {
	for i := 0; ; i++ {
		st := eventstore.StreamID{Category: cat, ID: prefix + strconv.Itoa(i)}
		if s.Partition(st) == p {
			return st
		}
	}
}

// xsetid moves a stream's last generated ID to id, as a server whose clock
// had run ahead would have left it.
func xsetid(t testing.TB, c rueidis.Client, key, id string) {
	t.Helper()
	require.NoError(t, c.Do(ctxT(t), c.B().Xsetid().Key(key).LastId(id).Build()).Error())
}

// serverMs is the Redis server's current time in milliseconds.
func serverMs(t testing.TB, c rueidis.Client) uint64 {
	t.Helper()
	tm, err := c.Do(ctxT(t), c.B().Time().Build()).AsStrSlice()
	require.NoError(t, err)
	sec, err := strconv.ParseUint(tm[0], 10, 64)
	require.NoError(t, err)
	us, err := strconv.ParseUint(tm[1], 10, 64)
	require.NoError(t, err)
	return sec*1000 + us/1000
}

// at is the position (ms, seq) as an event position.
func at(ms, seq uint64) eventstore.Position { return eventstore.Position{Ms: ms, Seq: seq} }

// where is an event's place in a category: what the merge orders by.
type where struct {
	Pos       eventstore.Position
	Partition int
}

func places(evs []eventstore.Event) []where {
	out := make([]where, len(evs))
	for i, e := range evs {
		out[i] = where{e.Position, e.Partition}
	}
	return out
}

func byPlace(a, b where) int {
	return cmp.Or(a.Pos.Compare(b.Pos), cmp.Compare(a.Partition, b.Partition))
}

func TestReadCategoryMergesPartitions(t *testing.T) {
	t.Parallel()
	ctx := ctxT(t)
	s := newStore(t, eventstore.Config{Partitions: 4})

	// Aggregates in every partition, appended to in an interleaved order.
	var appended []where
	ids := map[where]uuid.UUID{} // positions alone are not unique in a category
	for round := range 5 {
		for i := range 9 {
			st := eventstore.StreamID{Category: "order", ID: fmt.Sprintf("o-%d", (i*7+round)%9)}
			r, err := s.Append(ctx, st, eventstore.Any, ev("Placed", strconv.Itoa(round)), ev("Paid", strconv.Itoa(round)))
			require.NoError(t, err)
			for j, pos := range r.Positions {
				appended = append(appended, where{pos, r.Partition})
				ids[where{pos, r.Partition}] = r.EventIDs[j]
			}
		}
	}
	// Another category in the same namespace stays out of the read.
	_, err := s.Append(ctx, eventstore.StreamID{Category: "other", ID: "o-1"}, eventstore.Any, ev("X", ""))
	require.NoError(t, err)

	got := collect(t, s.ReadCategory(ctx, "order", eventstore.MinPosition, eventstore.MaxPosition))
	require.Len(t, got, len(appended))
	slices.SortFunc(appended, byPlace)
	require.Equal(t, appended, places(got), "every event once, in (position, partition) order")

	seen := map[int]bool{}
	lastVersion := map[string]uint64{}
	for _, e := range got {
		require.Equal(t, "order", e.Stream.Category)
		require.Equal(t, s.Partition(e.Stream), e.Partition)
		require.Equal(t, ids[where{e.Position, e.Partition}], e.ID)
		require.Equal(t, lastVersion[e.Stream.ID]+1, e.Version, "an aggregate's events in version order")
		lastVersion[e.Stream.ID] = e.Version
		seen[e.Partition] = true
	}
	require.Len(t, seen, 4, "the test spans every partition")
}

// Two partitions can hand out the same position; the merge breaks the tie
// by partition.
func TestReadCategoryEqualPositions(t *testing.T) {
	t.Parallel()
	ctx := ctxT(t)
	s := newStore(t, eventstore.Config{Partitions: 4, ReadBatch: 2})
	c := s.Client()
	p1 := aggregateIn(s, "acct", "a", 1)
	p2 := aggregateIn(s, "acct", "b", 2)
	p3 := aggregateIn(s, "acct", "c", 3)

	// XSETID needs the logs to exist.
	for _, st := range []eventstore.StreamID{p1, p2, p3} {
		_, err := s.Append(ctx, st, eventstore.NoStream, ev("Seed", ""))
		require.NoError(t, err)
	}
	future := serverMs(t, c) + 10*60*1000
	for _, p := range []int{1, 2, 3} {
		xsetid(t, c, s.LogKey("acct", p), fmt.Sprintf("%d-0", future))
	}
	// Appended in reverse partition order, so that append order cannot
	// explain the result.
	for _, st := range []eventstore.StreamID{p3, p2, p1} {
		r, err := s.Append(ctx, st, eventstore.Exact(1), ev("First", st.ID), ev("Second", st.ID))
		require.NoError(t, err)
		require.Equal(t, []eventstore.Position{at(future, 1), at(future, 2)}, r.Positions, "every partition issues the same positions")
	}

	want := []where{
		{at(future, 1), 1}, {at(future, 1), 2}, {at(future, 1), 3},
		{at(future, 2), 1}, {at(future, 2), 2}, {at(future, 2), 3},
	}
	got := collect(t, s.ReadCategory(ctx, "acct", at(future, 0), eventstore.MaxPosition))
	require.Equal(t, want, places(got))
	require.Equal(t, []eventstore.StreamID{p1, p2, p3, p1, p2, p3},
		[]eventstore.StreamID{got[0].Stream, got[1].Stream, got[2].Stream, got[3].Stream, got[4].Stream, got[5].Stream})

	// A range of exactly that one position returns all three, in order.
	got = collect(t, s.ReadCategory(ctx, "acct", at(future, 1), at(future, 1)))
	require.Equal(t, want[:3], places(got))

	// The seeds come first, then the ties.
	all := collect(t, s.ReadCategory(ctx, "acct", eventstore.MinPosition, eventstore.MaxPosition))
	require.Len(t, all, 9)
	require.True(t, slices.IsSortedFunc(places(all), byPlace))
	require.Equal(t, want, places(all[3:]))
}

func TestReadCategoryInclusiveBounds(t *testing.T) {
	t.Parallel()
	ctx := ctxT(t)
	s := newStore(t, eventstore.Config{Partitions: 1})
	st := eventstore.StreamID{Category: "c", ID: "x"}
	r, err := s.Append(ctx, st, eventstore.NoStream, ev("A", "0"), ev("A", "1"), ev("A", "2"), ev("A", "3"), ev("A", "4"))
	require.NoError(t, err)
	pos := r.Positions

	read := func(from, to eventstore.Position) []eventstore.Position {
		var out []eventstore.Position
		for _, e := range collect(t, s.ReadCategory(ctx, "c", from, to)) {
			out = append(out, e.Position)
		}
		return out
	}
	require.Equal(t, pos[1:4], read(pos[1], pos[3]), "from and to are both included")
	require.Equal(t, pos[2:3], read(pos[2], pos[2]), "a one-position range")
	require.Equal(t, pos[2:4], read(pos[1].Next(), pos[3]), "Next excludes the from position")
	require.Equal(t, pos[0:1], read(eventstore.MinPosition, pos[0]))
	require.Equal(t, pos[4:], read(pos[4], eventstore.MaxPosition))
	require.Empty(t, read(pos[3], pos[1]), "from after to")
	require.Empty(t, read(pos[4].Next(), eventstore.MaxPosition))

	// ReadPartition has the same bounds.
	var got []eventstore.Position
	for _, e := range collect(t, s.ReadPartition(ctx, "c", 0, pos[1], pos[3])) {
		got = append(got, e.Position)
	}
	require.Equal(t, pos[1:4], got)
}

// Time bounds use PositionAt and LastPositionAt. The log IDs are placed on
// chosen milliseconds with XSETID, so the test does not depend on timing.
func TestReadCategoryTimeWindow(t *testing.T) {
	t.Parallel()
	ctx := ctxT(t)
	s := newStore(t, eventstore.Config{Partitions: 2})
	c := s.Client()
	a0, a1 := aggregateIn(s, "t", "a", 0), aggregateIn(s, "t", "b", 1)
	for _, st := range []eventstore.StreamID{a0, a1} {
		_, err := s.Append(ctx, st, eventstore.NoStream, ev("Seed", ""))
		require.NoError(t, err)
	}
	base := serverMs(t, c) + 60*60*1000
	ms := []uint64{base, base + 10, base + 20}
	for i, m := range ms {
		for p, st := range []eventstore.StreamID{a0, a1} {
			xsetid(t, c, s.LogKey("t", p), fmt.Sprintf("%d-0", m))
			r, err := s.Append(ctx, st, eventstore.Exact(uint64(i+1)), ev("Tick", strconv.Itoa(i)))
			require.NoError(t, err)
			require.Equal(t, at(m, 1), r.Positions[0])
		}
	}
	tm := func(m uint64) time.Time { return time.UnixMilli(int64(m)) }
	window := func(from, to time.Time) []where {
		return places(collect(t, s.ReadCategory(ctx, "t", eventstore.PositionAt(from), eventstore.LastPositionAt(to))))
	}

	require.Equal(t, []where{{at(ms[1], 1), 0}, {at(ms[1], 1), 1}}, window(tm(ms[1]), tm(ms[1])),
		"one millisecond, whole, in both partitions")
	require.Equal(t, []where{{at(ms[1], 1), 0}, {at(ms[1], 1), 1}, {at(ms[2], 1), 0}, {at(ms[2], 1), 1}},
		window(tm(base+5), tm(ms[2])))
	require.Empty(t, window(tm(base+11), tm(base+19)))
	// Sub-millisecond parts of the bounds do not cut a millisecond short.
	require.Len(t, window(tm(ms[0]).Add(999*time.Microsecond), tm(ms[0]).Add(1)), 2)
	// The whole future window, without the seeds, which sit at the real time.
	require.Len(t, window(tm(base), tm(base+1000)), 6)
}

func TestReadPartition(t *testing.T) {
	t.Parallel()
	ctx := ctxT(t)
	s := newStore(t, eventstore.Config{Partitions: 3, ReadBatch: 4})
	for i := range 12 {
		st := eventstore.StreamID{Category: "p", ID: "agg-" + strconv.Itoa(i)}
		_, err := s.Append(ctx, st, eventstore.NoStream, ev("A", ""), ev("B", ""))
		require.NoError(t, err)
	}
	all := collect(t, s.ReadCategory(ctx, "p", eventstore.MinPosition, eventstore.MaxPosition))
	require.Len(t, all, 24)
	total := 0
	for p := range 3 {
		var want []eventstore.Event
		for _, e := range all {
			if e.Partition == p {
				want = append(want, e)
			}
		}
		require.NotEmpty(t, want, "partition %d has events", p)
		got := collect(t, s.ReadPartition(ctx, "p", p, eventstore.MinPosition, eventstore.MaxPosition))
		require.Equal(t, want, got, "partition %d: its events, in log order", p)
		total += len(got)
	}
	require.Equal(t, 24, total)

	// An invalid category is refused before Redis is asked.
	for _, err := range s.ReadPartition(ctx, "a{b", 0, eventstore.MinPosition, eventstore.MaxPosition) {
		require.ErrorIs(t, err, eventstore.ErrInvalidName)
	}
}

func TestReadUnusedCategory(t *testing.T) {
	t.Parallel()
	ctx := ctxT(t)
	s := newStore(t, eventstore.Config{})
	require.Empty(t, collect(t, s.ReadCategory(ctx, "never", eventstore.MinPosition, eventstore.MaxPosition)))
	require.Empty(t, collect(t, s.ReadPartition(ctx, "never", 0, eventstore.MinPosition, eventstore.MaxPosition)))
	require.Empty(t, collect(t, s.Read(ctx, eventstore.StreamID{Category: "never", ID: "x"}, 0)))

	// Reading records nothing: the category is still free to take another
	// partition count.
	c := s.Client()
	layout := keys.Layout{NS: s.Namespace()}
	for _, k := range []string{layout.Categories(), layout.Identity()} { // one key per command: cluster-safe
		n, err := c.Do(ctx, c.B().Exists().Key(k).Build()).AsInt64()
		require.NoError(t, err)
		require.Zero(t, n, "reading an unused namespace writes nothing (%s)", k)
	}
	cats, err := s.Categories(ctx)
	require.NoError(t, err)
	require.Empty(t, cats)
}

func TestReadLongAggregate(t *testing.T) {
	t.Parallel()
	ctx := ctxT(t)
	s := newStore(t, eventstore.Config{})
	st := eventstore.StreamID{Category: "ledger", ID: "big"}
	const total, batch = 20000, 500
	ids := make([]uuid.UUID, 0, total)
	for v := uint64(0); v < total; v += batch {
		events := make([]eventstore.EventData, batch)
		for i := range events {
			events[i] = ev("Posted", strconv.FormatUint(v+uint64(i)+1, 10))
		}
		r, err := s.Append(ctx, st, eventstore.Exact(v), events...)
		require.NoError(t, err)
		require.Equal(t, v+1, r.FirstVersion)
		ids = append(ids, r.EventIDs...)
	}

	const from = 12345
	n := 0
	var last eventstore.Position
	for e, err := range s.Read(ctx, st, from) {
		require.NoError(t, err)
		want := uint64(from + n)
		require.Equal(t, want, e.Version)
		require.Equal(t, ids[want-1], e.ID)
		require.Equal(t, strconv.FormatUint(want, 10), string(e.Data))
		require.Equal(t, 1, e.Position.Compare(last))
		last = e.Position
		n++
	}
	require.Equal(t, total-from+1, n, "versions 12345..20000 exactly")

	require.Empty(t, collect(t, s.Read(ctx, st, total+1)), "beyond the end")
	require.Empty(t, collect(t, s.Read(ctx, st, 1<<62)), "far beyond the end")
	tail := collect(t, s.Read(ctx, st, total))
	require.Len(t, tail, 1)
	require.Equal(t, uint64(total), tail[0].Version)
	require.Len(t, collect(t, s.Read(ctx, st, 0)), total)

	// Breaking out of the loop stops the iterator: inside a page, and on
	// the last event of a page (where the next page would be fetched).
	for _, stop := range []int{3, eventstore.DefaultReadBatch} {
		n := 0
		for e, err := range s.Read(ctx, st, from) {
			require.NoError(t, err)
			n++
			if n == stop {
				require.Equal(t, uint64(from+stop-1), e.Version)
				break
			}
		}
		require.Equal(t, stop, n)
	}
	n = 0
	for _, err := range s.ReadCategory(ctx, "ledger", eventstore.MinPosition, eventstore.MaxPosition) {
		require.NoError(t, err)
		if n++; n == 700 {
			break
		}
	}
	require.Equal(t, 700, n)
}

// A tiny ReadBatch puts page boundaries everywhere: reads must be the same
// as with the default batch.
func TestReadPaging(t *testing.T) {
	t.Parallel()
	ctx := ctxT(t)
	small := newStore(t, eventstore.Config{Partitions: 3, ReadBatch: 7})
	big, err := eventstore.New(small.Client(), eventstore.Config{Namespace: small.Namespace(), Partitions: 3})
	require.NoError(t, err)

	// 49 events (7 full pages) and 50 (one more), appended in uneven batches.
	lengths := map[string]int{"seven-sevens": 49, "fifty": 50, "short": 3}
	for id, length := range lengths {
		st := eventstore.StreamID{Category: "pg", ID: id}
		for v := 0; v < length; {
			k := min(1+v%6, length-v)
			events := make([]eventstore.EventData, k)
			for i := range events {
				events[i] = ev("E", strconv.Itoa(v+i+1))
			}
			_, err := small.Append(ctx, st, eventstore.Exact(uint64(v)), events...)
			require.NoError(t, err)
			v += k
		}
	}

	for id, length := range lengths {
		st := eventstore.StreamID{Category: "pg", ID: id}
		for _, from := range []int{0, 1, 2, 6, 7, 8, 13, 14, 15, 43, 49, 50, 51} {
			got := collect(t, small.Read(ctx, st, uint64(from)))
			first := max(from, 1)
			require.Len(t, got, max(0, length-first+1), "%s from %d", id, from)
			for i, e := range got {
				require.Equal(t, uint64(first+i), e.Version, "%s from %d", id, from)
				require.Equal(t, strconv.Itoa(first+i), string(e.Data))
			}
			require.Equal(t, collect(t, big.Read(ctx, st, uint64(from))), got)
		}
	}

	want := collect(t, big.ReadCategory(ctx, "pg", eventstore.MinPosition, eventstore.MaxPosition))
	require.Len(t, want, 102)
	require.Equal(t, want, collect(t, small.ReadCategory(ctx, "pg", eventstore.MinPosition, eventstore.MaxPosition)))
	require.True(t, slices.IsSortedFunc(places(want), byPlace))
	// A window starting and ending inside pages.
	from, to := want[10].Position, want[90].Position
	require.Equal(t, filterRange(want, from, to), collect(t, small.ReadCategory(ctx, "pg", from, to)))
}

func filterRange(evs []eventstore.Event, from, to eventstore.Position) []eventstore.Event {
	var out []eventstore.Event
	for _, e := range evs {
		if e.Position.Compare(from) >= 0 && e.Position.Compare(to) <= 0 {
			out = append(out, e)
		}
	}
	return out
}

// An aggregate stream entry whose log entry was deleted is reported as
// ErrMissingEntry, not decoded as garbage and not a panic.
func TestReadMissingLogEntry(t *testing.T) {
	t.Parallel()
	ctx := ctxT(t)
	s := newStore(t, eventstore.Config{})
	st := eventstore.StreamID{Category: "m", ID: "holey"}
	r, err := s.Append(ctx, st, eventstore.NoStream, ev("A", "1"), ev("B", "2"), ev("C", "3"))
	require.NoError(t, err)
	c := s.Client()
	require.NoError(t, c.Do(ctx, c.B().Xdel().Key(s.LogKey("m", r.Partition)).Id(r.Positions[1].String()).Build()).Error())

	var got []eventstore.Event
	var readErr error
	for e, err := range s.Read(ctx, st, 0) {
		if err != nil {
			readErr = err
			continue // the iterator must not yield again after an error
		}
		got = append(got, e)
	}
	require.Len(t, got, 1)
	require.ErrorIs(t, readErr, eventstore.ErrMissingEntry)
	require.ErrorContains(t, readErr, r.Positions[1].String(), "the error names the missing entry")

	// From the version after the hole, the read goes on.
	rest := collect(t, s.Read(ctx, st, 3))
	require.Len(t, rest, 1)
	require.Equal(t, "C", rest[0].Type)
	// The category read shows what the log holds.
	require.Len(t, collect(t, s.ReadCategory(ctx, "m", eventstore.MinPosition, eventstore.MaxPosition)), 2)
}

// Reads stop with the context's error.
func TestReadCanceled(t *testing.T) {
	t.Parallel()
	s := newStore(t, eventstore.Config{ReadBatch: 2})
	st := eventstore.StreamID{Category: "x", ID: "y"}
	_, err := s.Append(ctxT(t), st, eventstore.NoStream, ev("A", ""), ev("B", ""), ev("C", ""))
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	n := 0
	var last error
	for _, err := range s.Read(ctx, st, 0) {
		if err != nil {
			last = err
			break
		}
		n++
		cancel()
	}
	require.Equal(t, 2, n, "the page in hand is delivered")
	require.ErrorIs(t, last, context.Canceled)
}

// An Any retry of a multi-event append is recognised (append.lua compares
// the newest entry first, then the last k): the reader sees each event
// once. A batch whose last event matches but an earlier one does not is a
// new append, as documented for Any (best effort).
func TestReadAfterAnyRetryOfBatch(t *testing.T) {
	t.Parallel()
	ctx := ctxT(t)
	s := newStore(t, eventstore.Config{})
	st := eventstore.StreamID{Category: "r", ID: "any"}
	_, err := s.Append(ctx, st, eventstore.Any, ev("Before", ""))
	require.NoError(t, err)
	batch := []eventstore.EventData{
		{ID: uuid.Must(uuid.NewV7()), Type: "A"}, {ID: uuid.Must(uuid.NewV7()), Type: "B"}, {ID: uuid.Must(uuid.NewV7()), Type: "C"},
	}
	first, err := s.Append(ctx, st, eventstore.Any, batch...)
	require.NoError(t, err)
	for _, exp := range []eventstore.Expected{eventstore.Any, eventstore.StreamExists} {
		again, err := s.Append(ctx, st, exp, batch...)
		require.NoError(t, err)
		require.True(t, again.Duplicate)
		require.Equal(t, first.Positions, again.Positions)
		require.Equal(t, uint64(2), again.FirstVersion)
	}
	require.Len(t, collect(t, s.Read(ctx, st, 0)), 4)

	r, err := s.Append(ctx, st, eventstore.Any, ev("X", ""), ev("Y", ""))
	require.NoError(t, err)
	require.False(t, r.Duplicate)
	// [B, C] is no longer the tail (the newest entry is Y): a new append.
	r, err = s.Append(ctx, st, eventstore.Any, batch[1:]...)
	require.NoError(t, err)
	require.False(t, r.Duplicate)
	require.Equal(t, uint64(7), r.FirstVersion)
	// The newest entry matches (C) but the one before does not: a new append.
	r, err = s.Append(ctx, st, eventstore.Any, eventstore.EventData{ID: uuid.Must(uuid.NewV7()), Type: "Z"}, batch[2])
	require.NoError(t, err)
	require.False(t, r.Duplicate)
	require.Equal(t, uint64(9), r.FirstVersion)
}

// A store configured with another partition count than the category's
// would look for an aggregate in the wrong partition and find nothing; it
// must say so instead of returning an empty stream.
func TestReadWithOtherPartitionCount(t *testing.T) {
	t.Parallel()
	ctx := ctxT(t)
	s := newStore(t, eventstore.Config{Partitions: 8})
	st := aggregateIn(s, "acct", "p", 5) // in partition 1 of 4
	_, err := s.Append(ctx, st, eventstore.NoStream, ev("Opened", ""))
	require.NoError(t, err)

	other, err := eventstore.New(s.Client(), eventstore.Config{Namespace: s.Namespace(), Partitions: 4})
	require.NoError(t, err)
	n := 0
	for _, err := range other.Read(ctx, st, 0) {
		require.ErrorIs(t, err, eventstore.ErrPartitionMismatch)
		n++
	}
	require.Equal(t, 1, n, "one error, no events")
	_, err = other.Version(ctx, st)
	require.ErrorIs(t, err, eventstore.ErrPartitionMismatch)
}
