package faultenv_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/rueidis"
	"github.com/stretchr/testify/require"

	"github.com/redsource/redsource/eventstore"
	"github.com/redsource/redsource/internal/faultenv"
	"github.com/redsource/redsource/internal/testenv"
)

func newStore(t *testing.T, c rueidis.Client) *eventstore.Store {
	t.Helper()
	s, err := eventstore.New(c, eventstore.Config{Namespace: "h", Partitions: 4})
	require.NoError(t, err)
	return s
}

func add(n int) eventstore.EventData {
	return eventstore.EventData{Type: "Add", Data: fmt.Appendf(nil, "%d", n)}
}

// Writers race on a few aggregates with exact expected versions while
// replies are dropped; unknown outcomes are retried with the same event
// IDs. The log keeps every promise, and the report says so.
func TestHistoryCheckClean(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	s := faultenv.Start(t, faultenv.Options{AOF: "everysec"})
	d := faultenv.NewDropper(42)
	d.Only("EVALSHA", "EVAL")
	d.SetRate(0.2)
	store := newStore(t, dropClient(t, s.URL(), d))

	var h faultenv.History
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for i := range 30 {
				st := eventstore.StreamID{Category: "acc", ID: fmt.Sprintf("a%d", i%3)}
				v, err := store.Version(ctx, st)
				if err != nil {
					continue // a dropped reply on a read that was not retried
				}
				events := []eventstore.EventData{add(w), add(i)}
				for range 5 { // retry an unknown outcome with the same IDs
					_, err = h.Append(ctx, store, st, eventstore.Exact(v), events...)
					if faultenv.Classify(err) != faultenv.Unknown {
						break
					}
					last := h.Attempts()[len(h.Attempts())-1]
					for j := range events {
						events[j].ID = last.EventIDs[j]
					}
				}
			}
		})
	}
	wg.Wait()
	d.SetRate(0)

	rep, err := h.Check(ctx, store)
	require.NoError(t, err)
	t.Log(rep)
	require.NoError(t, rep.Err())
	require.Positive(t, rep.Acknowledged)
	require.Positive(t, rep.Failed, "conflicts")
	require.Positive(t, rep.Unknown+rep.UnknownStored+d.Stats().Dropped, "dropped replies")
	require.Zero(t, rep.Lost)
	require.Zero(t, rep.Duplicated)
	require.Contains(t, rep.String(), fmt.Sprintf("ops=%d acked=%d lost=0 duplicated=0 detected=0", rep.Operations, rep.Acknowledged))
}

// A power loss after acknowledged appends: the report counts the lost
// events and names them; marked detected, they no longer fail the check.
func TestHistoryCheckFindsLoss(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	s := faultenv.Start(t, faultenv.Options{AOF: "everysec"})
	store := newStore(t, testenv.RedisAt(t, s.URL()))
	var h faultenv.History
	st := eventstore.StreamID{Category: "acc", ID: "x"}
	appendFor := func(d time.Duration) {
		for start := time.Now(); time.Since(start) < d; {
			_, err := h.Append(ctx, store, st, eventstore.Any, add(1))
			require.NoError(t, err)
		}
	}
	appendFor(100 * time.Millisecond)
	cutFrom := time.Now()
	before := len(h.Attempts())
	appendFor(100 * time.Millisecond)
	_, err := s.CutAOFBack(time.Since(cutFrom))
	require.NoError(t, err)
	total := len(h.Attempts())

	rep, err := h.Check(ctx, store)
	require.NoError(t, err)
	t.Log(rep)
	// Everything after the cut, and the few of the last sample interval
	// before it.
	require.GreaterOrEqual(t, rep.Lost, total-before)
	require.Less(t, rep.Lost, total)
	require.Len(t, rep.LostEvents, rep.Lost)
	require.Zero(t, rep.Duplicated)
	require.Zero(t, rep.Gaps, "the log lost its tail: what remains is gapless")
	first := rep.LostEvents[0]
	v, err := store.Version(ctx, st)
	require.NoError(t, err)
	require.Equal(t, v+1, first.Version, "the tail is lost, from the first version missing")
	require.Error(t, rep.Err())

	rep.MarkDetected(rep.Lost + 5)
	require.Equal(t, rep.Lost, rep.Detected)
	require.NoError(t, rep.Err())
}

// Duplicates, gaps and phantoms are found in a log doctored by hand.
func TestHistoryCheckFindsDoctoredLog(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	s := faultenv.Start(t, faultenv.Options{})
	store := newStore(t, testenv.RedisAt(t, s.URL()))
	var h faultenv.History
	st := eventstore.StreamID{Category: "acc", ID: "x"}
	for i := range 3 {
		_, err := h.Append(ctx, store, st, eventstore.Exact(uint64(i)), add(i))
		require.NoError(t, err)
	}
	// An append whose writer believed it refused, but that is in the log.
	res, err := store.Append(ctx, eventstore.StreamID{Category: "acc", ID: "y"}, eventstore.NoStream, add(9))
	require.NoError(t, err)
	h.Record(faultenv.Attempt{Stream: eventstore.StreamID{Category: "acc", ID: "y"}, EventIDs: res.EventIDs, Outcome: faultenv.Failed})

	// A second copy of version 2 appended to the partition log.
	logKey := store.LogKey("acc", store.Partition(st))
	entries, err := s.Do(ctx, "XRANGE", logKey, "-", "+")
	require.NoError(t, err)
	var fields []string
	for _, e := range entries.([]any) {
		e := e.([]any)
		fv := e[1].([]any)
		for i := 0; i < len(fv); i += 2 {
			// The h2 header holds the version after the 16-byte event
			// UUID (docs/format.md).
			if h, _ := fv[i+1].(string); fv[i] == "h2" && len(h) > 16 && strings.HasPrefix(h[16:], "2 ") {
				for _, x := range fv {
					fields = append(fields, x.(string))
				}
			}
		}
	}
	require.NotEmpty(t, fields, "found version 2 in the log (its h2 header)")
	_, err = s.Do(ctx, append([]string{"XADD", logKey, "*"}, fields...)...)
	require.NoError(t, err)

	rep, err := h.Check(ctx, store)
	require.NoError(t, err)
	t.Log(rep)
	for _, d := range rep.Details {
		t.Log(d)
	}
	require.Equal(t, 1, rep.Duplicated)
	require.Equal(t, 1, rep.Phantom)
	require.Equal(t, 1, rep.Gaps, "versions 1 2 3 2 in the log, and the index disagrees")
	require.Zero(t, rep.Lost)
	require.Error(t, rep.Err())
}

func TestClassify(t *testing.T) {
	t.Parallel()
	require.Equal(t, faultenv.Acked, faultenv.Classify(nil))
	require.Equal(t, faultenv.Failed, faultenv.Classify(fmt.Errorf("x: %w", &eventstore.ConflictError{})))
	require.Equal(t, faultenv.Unknown, faultenv.Classify(context.DeadlineExceeded))
	require.Equal(t, faultenv.Unknown, faultenv.Classify(fmt.Errorf("x: %w", faultenv.ErrReplyDropped)))
}

func TestFoldEqual(t *testing.T) {
	t.Parallel()
	require.NoError(t, faultenv.FoldEqual(map[string]int64{"a": 1}, map[string]int64{"a": 1}))
	require.NoError(t, faultenv.FoldEqual(nil, map[string]int64{}))
	err := faultenv.FoldEqual(map[string]int64{"a": 1, "b": 2, "c": 3}, map[string]int64{"a": 1, "b": 5, "d": 0})
	require.EqualError(t, err, "faultenv: fold differs on 3 of 4 keys:\nb: want 2, got 5\nc: want 3, missing\nd: want nothing, got 0")
}
