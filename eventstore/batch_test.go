package eventstore

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/redsource/redsource/internal/testenv"
)

// Appends that wait for their partition's call in flight go together in
// the next call, and each gets its own outcome: appended, conflict,
// duplicate of an earlier append, a multi-event Any append, and one whose
// context ended while it waited (not sent, nothing written). The test
// holds the partition busy itself, so that every append waits, then lets
// the queue go: one script call for all of them.
func TestWaitingAppendsShareOneCall(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := testenv.Redis(t)
	s, err := New(c, Config{Namespace: testenv.Namespace(t, c), Partitions: 1})
	require.NoError(t, err)
	data := func(typ string) EventData { return EventData{Type: typ, Data: []byte(`{}`)} }
	seed := EventData{ID: uuid.Must(uuid.NewV7()), Type: "Seeded", Data: []byte(`{}`)}
	first, err := s.Append(ctx, StreamID{Category: "b", ID: "seed"}, NoStream, seed)
	require.NoError(t, err)

	// Hold the partition: as many calls "in flight" as it may have.
	key := s.keys.Log("b", 0) + "\x00" + partitionMeta(s.ident, 1)
	s.appends.mu.Lock()
	g := &appendGroup{key: key, log: s.keys.Log("b", 0), meta: s.keys.PartitionMeta("b", 0), metaValue: partitionMeta(s.ident, 1), inflight: maxInFlight}
	s.appends.groups[key] = g
	s.appends.mu.Unlock()

	type outcome struct {
		res AppendResult
		err error
	}
	var wg sync.WaitGroup
	results := map[string]*outcome{}
	start := func(name string, ctx context.Context, stream string, expected Expected, events ...EventData) {
		o := &outcome{}
		results[name] = o
		wg.Add(1)
		go func() {
			defer wg.Done()
			o.res, o.err = s.Append(ctx, StreamID{Category: "b", ID: stream}, expected, events...)
		}()
	}
	const singles = 20
	for i := range singles {
		start(fmt.Sprintf("single-%d", i), ctx, fmt.Sprintf("a%d", i), NoStream, data("Opened"))
	}
	start("race-1", ctx, "x", NoStream, data("First"))
	start("race-2", ctx, "x", NoStream, data("Second"))
	start("duplicate", ctx, "seed", NoStream, seed)
	start("multi", ctx, "m", Any, data("M1"), data("M2"), data("M3"))
	short, cancelShort := context.WithCancel(ctx)
	start("gave-up", short, "gone", NoStream, data("Never"))
	queued := singles + 5
	require.Eventually(t, func() bool {
		s.appends.mu.Lock()
		defer s.appends.mu.Unlock()
		return len(g.queue) == queued
	}, 10*time.Second, time.Millisecond, "every append waits for the call in flight")
	cancelShort()
	require.Eventually(t, func() bool {
		s.appends.mu.Lock()
		defer s.appends.mu.Unlock()
		return len(g.queue) == queued-1
	}, 10*time.Second, time.Millisecond, "an append whose context ends leaves the queue")

	before := s.appends.calls.Load()
	s.appends.mu.Lock()
	g.inflight = 1 // one of the held calls ends unseen; the other ends now
	s.appends.mu.Unlock()
	s.releaseGroup(g)
	wg.Wait()
	require.Equal(t, uint64(1), s.appends.calls.Load()-before, "one script call for all the waiting appends")

	for i := range singles {
		o := results[fmt.Sprintf("single-%d", i)]
		require.NoError(t, o.err)
		require.Equal(t, uint64(1), o.res.FirstVersion)
		require.False(t, o.res.Duplicate)
	}
	r1, r2 := results["race-1"], results["race-2"]
	require.True(t, (r1.err == nil) != (r2.err == nil), "one of two NoStream appends to x wins: %v / %v", r1.err, r2.err)
	lost := r1.err
	if lost == nil {
		lost = r2.err
	}
	var conflict *ConflictError
	require.ErrorAs(t, lost, &conflict)
	require.Equal(t, uint64(1), conflict.Actual)

	dup := results["duplicate"]
	require.NoError(t, dup.err)
	require.True(t, dup.res.Duplicate)
	require.Equal(t, first.Positions, dup.res.Positions)

	multi := results["multi"]
	require.NoError(t, multi.err)
	require.Equal(t, uint64(1), multi.res.FirstVersion)
	require.Equal(t, uint64(3), multi.res.LastVersion)
	var got []string
	for e, err := range s.Read(ctx, StreamID{Category: "b", ID: "m"}, 0) {
		require.NoError(t, err)
		got = append(got, fmt.Sprintf("%d %s", e.Version, e.Type))
	}
	require.Equal(t, []string{"1 M1", "2 M2", "3 M3"}, got, "the script put the versions in")

	gave := results["gave-up"]
	require.ErrorIs(t, gave.err, context.Canceled)
	require.ErrorContains(t, gave.err, "not sent")
	v, err := s.Version(ctx, StreamID{Category: "b", ID: "gone"})
	require.NoError(t, err)
	require.Zero(t, v, "nothing of it was written")

	require.Eventually(t, func() bool {
		s.appends.mu.Lock()
		defer s.appends.mu.Unlock()
		return len(s.appends.groups) == 0
	}, 10*time.Second, time.Millisecond, "an idle partition leaves no state behind")
}

// Appends to one partition from many goroutines at once share calls, and
// nothing is lost, doubled or misnumbered: every aggregate's versions are
// 1..n in the order its owner appended them, at increasing positions.
func TestConcurrentAppendsShareCalls(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := testenv.Redis(t)
	s, err := New(c, Config{Namespace: testenv.Namespace(t, c), Partitions: 2})
	require.NoError(t, err)
	const writers, each = 32, 25
	before := s.appends.calls.Load()
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			st := StreamID{Category: "c", ID: fmt.Sprintf("w%d", w)}
			for i := range each {
				if _, err := s.Append(ctx, st, Exact(uint64(i)), EventData{Type: "N", Data: fmt.Appendf(nil, "%d", i)}); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	calls := s.appends.calls.Load() - before
	require.Less(t, calls, uint64(writers*each), "waiting appends shared calls")
	t.Logf("%d appends in %d script calls", writers*each, calls)
	for w := range writers {
		var last Position
		n := 0
		for e, err := range s.Read(ctx, StreamID{Category: "c", ID: fmt.Sprintf("w%d", w)}, 0) {
			require.NoError(t, err)
			require.Equal(t, uint64(n+1), e.Version)
			require.Equal(t, fmt.Sprint(n), string(e.Data))
			require.Equal(t, 1, e.Position.Compare(last))
			last = e.Position
			n++
		}
		require.Equal(t, each, n)
	}
}
