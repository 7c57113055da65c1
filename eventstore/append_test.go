package eventstore_test

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/google/uuid"
	"github.com/redis/rueidis"
	"github.com/stretchr/testify/require"

	"github.com/redsource/redsource/eventstore"
	"github.com/redsource/redsource/internal/faultenv"
	"github.com/redsource/redsource/internal/testenv"
)

func TestAppendAndRead(t *testing.T) {
	t.Parallel()
	ctx := ctxT(t)
	s := newStore(t, eventstore.Config{})
	st := eventstore.StreamID{Category: "account", ID: "a1"}

	res, err := s.Append(ctx, st, eventstore.NoStream,
		eventstore.EventData{Type: "Opened", Data: []byte(`{"owner":"ann"}`), Metadata: map[string]string{"correlation": "c1"}},
		ev("Deposited", `{"amount":5}`))
	require.NoError(t, err)
	require.Equal(t, uint64(1), res.FirstVersion)
	require.Equal(t, uint64(2), res.LastVersion)
	require.Len(t, res.Positions, 2)
	require.Equal(t, -1, res.Positions[0].Compare(res.Positions[1]))
	require.False(t, res.Duplicate)
	require.False(t, res.RecordedAt.IsZero())
	require.Equal(t, s.Partition(st), res.Partition)

	got := collect(t, s.Read(ctx, st, 0))
	require.Len(t, got, 2)
	require.Equal(t, st, got[0].Stream)
	require.Equal(t, uint64(1), got[0].Version)
	require.Equal(t, "Opened", got[0].Type)
	require.Equal(t, `{"owner":"ann"}`, string(got[0].Data))
	require.Equal(t, map[string]string{"correlation": "c1"}, got[0].Metadata)
	require.Equal(t, res.EventIDs[0], got[0].ID)
	require.Equal(t, res.Positions[1], got[1].Position)
	require.Equal(t, res.RecordedAt, got[1].RecordedAt)
	require.Nil(t, got[1].Metadata)

	v, err := s.Version(ctx, st)
	require.NoError(t, err)
	require.Equal(t, uint64(2), v)
}

func TestExpectedVersionSemantics(t *testing.T) {
	t.Parallel()
	ctx := ctxT(t)
	s := newStore(t, eventstore.Config{})
	st := eventstore.StreamID{Category: "c", ID: "x"}

	// StreamExists on an empty stream is a conflict at version 0.
	_, err := s.Append(ctx, st, eventstore.StreamExists, ev("A", "1"))
	var ce *eventstore.ConflictError
	require.ErrorAs(t, err, &ce)
	require.ErrorIs(t, err, eventstore.ErrConflict)
	require.Equal(t, uint64(0), ce.Actual)
	require.Equal(t, eventstore.StreamExists, ce.Expected)

	_, err = s.Append(ctx, st, eventstore.NoStream, ev("A", "1"))
	require.NoError(t, err)
	_, err = s.Append(ctx, st, eventstore.NoStream, ev("A", "2"))
	require.ErrorAs(t, err, &ce)
	require.Equal(t, uint64(1), ce.Actual)
	require.Contains(t, err.Error(), "expected no stream, actual 1")

	r, err := s.Append(ctx, st, eventstore.StreamExists, ev("B", "3"))
	require.NoError(t, err)
	require.Equal(t, uint64(2), r.FirstVersion)
	r, err = s.Append(ctx, st, eventstore.Any, ev("C", "4"), ev("D", "5"))
	require.NoError(t, err)
	require.Equal(t, uint64(3), r.FirstVersion)
	require.Equal(t, uint64(4), r.LastVersion)

	_, err = s.Append(ctx, st, eventstore.Exact(3), ev("E", "6"))
	require.ErrorAs(t, err, &ce)
	require.Equal(t, uint64(4), ce.Actual)
	_, err = s.Append(ctx, st, eventstore.Exact(9), ev("E", "6"))
	require.ErrorAs(t, err, &ce)
	require.Equal(t, uint64(4), ce.Actual)
	r, err = s.Append(ctx, st, eventstore.Exact(4), ev("E", "6"))
	require.NoError(t, err)
	require.Equal(t, uint64(5), r.FirstVersion)
}

func TestIdempotentRetry(t *testing.T) {
	t.Parallel()
	ctx := ctxT(t)
	s := newStore(t, eventstore.Config{})
	st := eventstore.StreamID{Category: "c", ID: "idem"}
	batch := []eventstore.EventData{
		{ID: uuid.Must(uuid.NewV7()), Type: "A", Data: []byte("1")},
		{ID: uuid.Must(uuid.NewV7()), Type: "B", Data: []byte("2")},
	}
	first, err := s.Append(ctx, st, eventstore.NoStream, batch...)
	require.NoError(t, err)

	// The same append again (a retry after a timeout): the original result.
	again, err := s.Append(ctx, st, eventstore.NoStream, batch...)
	require.NoError(t, err)
	require.True(t, again.Duplicate)
	require.Equal(t, first.Positions, again.Positions)
	require.Equal(t, first.FirstVersion, again.FirstVersion)

	// Still the original result after later events were appended.
	_, err = s.Append(ctx, st, eventstore.Exact(2), ev("C", "3"), ev("D", "4"), ev("E", "5"))
	require.NoError(t, err)
	again, err = s.Append(ctx, st, eventstore.NoStream, batch...)
	require.NoError(t, err)
	require.True(t, again.Duplicate)
	require.Equal(t, first.Positions, again.Positions)

	// Any: best effort on the last k events.
	tail := []eventstore.EventData{{ID: uuid.Must(uuid.NewV7()), Type: "F", Data: []byte("6")}}
	r1, err := s.Append(ctx, st, eventstore.Any, tail...)
	require.NoError(t, err)
	r2, err := s.Append(ctx, st, eventstore.Any, tail...)
	require.NoError(t, err)
	require.True(t, r2.Duplicate)
	require.Equal(t, r1.Positions, r2.Positions)

	// A partial match is a conflict: the first event matches, the second not.
	partial := []eventstore.EventData{batch[0], {ID: uuid.Must(uuid.NewV7()), Type: "B", Data: []byte("2")}}
	_, err = s.Append(ctx, st, eventstore.NoStream, partial...)
	require.ErrorIs(t, err, eventstore.ErrConflict)

	n := len(collect(t, s.Read(ctx, st, 0)))
	require.Equal(t, 6, n, "no duplicates written")
}

func TestConcurrentExactAppenders(t *testing.T) {
	t.Parallel()
	ctx := ctxT(t)
	s := newStore(t, eventstore.Config{})
	st := eventstore.StreamID{Category: "counter", ID: "shared"}
	const writers, each = 24, 20

	var mu sync.Mutex
	acked := map[uuid.UUID]uint64{}
	var wg sync.WaitGroup
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for done := 0; done < each; {
				v, err := s.Version(ctx, st)
				if err != nil {
					t.Error(err)
					return
				}
				id := uuid.Must(uuid.NewV7())
				r, err := s.Append(ctx, st, eventstore.Exact(v), eventstore.EventData{ID: id, Type: "Inc", Data: []byte(fmt.Sprint(w))})
				var ce *eventstore.ConflictError
				switch {
				case errors.As(err, &ce):
					if ce.Actual <= v {
						t.Errorf("conflict at expected %d carries actual %d", v, ce.Actual)
						return
					}
					continue
				case err != nil:
					t.Error(err)
					return
				}
				if r.FirstVersion != v+1 {
					t.Errorf("appended at %d expecting %d", r.FirstVersion, v)
				}
				mu.Lock()
				acked[id] = r.FirstVersion
				mu.Unlock()
				done++
			}
		}()
	}
	wg.Wait()

	got := collect(t, s.Read(ctx, st, 0))
	require.Len(t, got, writers*each)
	for i, e := range got {
		require.Equal(t, uint64(i+1), e.Version, "versions 1..N without gap or duplicate")
		v, ok := acked[e.ID]
		require.True(t, ok, "every stored event was acknowledged")
		require.Equal(t, v, e.Version)
		if i > 0 {
			require.Equal(t, 1, e.Position.Compare(got[i-1].Position))
		}
	}
	require.Len(t, acked, writers*each, "every acknowledged event is present")
}

func TestRefusedAppendWritesNothing(t *testing.T) {
	t.Parallel()
	ctx := ctxT(t)
	s := newStore(t, eventstore.Config{MaxEventBytes: 1024, MaxAppendEvents: 5})
	st := eventstore.StreamID{Category: "c", ID: "r"}
	_, err := s.Append(ctx, st, eventstore.NoStream, ev("A", "ok"))
	require.NoError(t, err)

	cases := []struct {
		name   string
		stream eventstore.StreamID
		events []eventstore.EventData
		is     error
		text   string
	}{
		{"too large", st, []eventstore.EventData{ev("A", "x"), ev("B", strings.Repeat("y", 2048))}, eventstore.ErrEventTooLarge, "event 1 is 2049 bytes"},
		{"too many", st, []eventstore.EventData{ev("A", ""), ev("A", ""), ev("A", ""), ev("A", ""), ev("A", ""), ev("A", "")}, eventstore.ErrInvalidAppend, "6 events"},
		{"none", st, nil, eventstore.ErrInvalidAppend, "no events"},
		{"bad category", eventstore.StreamID{Category: "a{b", ID: "r"}, []eventstore.EventData{ev("A", "")}, eventstore.ErrInvalidName, "category"},
		{"empty id", eventstore.StreamID{Category: "c", ID: ""}, []eventstore.EventData{ev("A", "")}, eventstore.ErrInvalidName, "aggregate ID"},
		{"bad type", st, []eventstore.EventData{ev("A", ""), ev("bad\ntype", "")}, eventstore.ErrInvalidName, "event type"},
		{"empty type", st, []eventstore.EventData{ev("", "")}, eventstore.ErrInvalidName, "event type"},
		{"bad metadata", st, []eventstore.EventData{{Type: "A", Metadata: map[string]string{"k": "\xff"}}}, eventstore.ErrInvalidAppend, "metadata"},
		{"duplicate id", st, func() []eventstore.EventData {
			id := uuid.Must(uuid.NewV7())
			return []eventstore.EventData{{ID: id, Type: "A"}, {ID: id, Type: "A"}}
		}(), eventstore.ErrInvalidAppend, "same ID"},
	}
	for _, tc := range cases {
		_, err := s.Append(ctx, tc.stream, eventstore.Exact(1), tc.events...)
		require.ErrorIs(t, err, tc.is, tc.name)
		require.Contains(t, err.Error(), tc.text, tc.name)
	}
	// A conflict writes nothing either.
	_, err = s.Append(ctx, st, eventstore.Exact(0), ev("A", "1"), ev("B", "2"))
	require.ErrorIs(t, err, eventstore.ErrConflict)

	got := collect(t, s.Read(ctx, st, 0))
	require.Len(t, got, 1)
	all := collect(t, s.ReadCategory(ctx, "c", eventstore.MinPosition, eventstore.MaxPosition))
	require.Len(t, all, 1, "the partition log holds nothing of the refused appends")
}

func TestPartitionCountIsFixed(t *testing.T) {
	t.Parallel()
	ctx := ctxT(t)
	s := newStore(t, eventstore.Config{Partitions: 4})
	_, err := s.Append(ctx, eventstore.StreamID{Category: "c", ID: "1"}, eventstore.Any, ev("A", ""))
	require.NoError(t, err)

	other, err := eventstore.New(s.Client(), eventstore.Config{Namespace: s.Namespace(), Partitions: 8})
	require.NoError(t, err)
	_, err = other.Append(ctx, eventstore.StreamID{Category: "c", ID: "1"}, eventstore.Any, ev("A", ""))
	require.ErrorIs(t, err, eventstore.ErrPartitionMismatch)
	require.Contains(t, err.Error(), `category "c" has 4 partitions in Redis, this store is configured with 8`)
	for _, err := range other.ReadCategory(ctx, "c", eventstore.MinPosition, eventstore.MaxPosition) {
		require.ErrorIs(t, err, eventstore.ErrPartitionMismatch)
	}
	cats, err := s.Categories(ctx)
	require.NoError(t, err)
	require.Equal(t, []string{"c"}, cats)
}

func TestConfigValidation(t *testing.T) {
	t.Parallel()
	c := newStore(t, eventstore.Config{}).Client()
	_, err := eventstore.New(c, eventstore.Config{Namespace: "a{b"})
	require.ErrorIs(t, err, eventstore.ErrInvalidName)
	_, err = eventstore.New(c, eventstore.Config{Partitions: -1})
	require.ErrorContains(t, err, "Config.Partitions is -1")
	_, err = eventstore.New(nil, eventstore.Config{})
	require.Error(t, err)
	cfg := eventstore.Config{}
	s, err := eventstore.New(c, cfg)
	require.NoError(t, err)
	require.Equal(t, eventstore.Config{}, cfg, "the caller's config is not changed")
	require.Equal(t, "rs", s.Config().Namespace)
	require.Equal(t, 8, s.Config().Partitions)
}

// A re-send of an Any or StreamExists append whose outcome was unknown is
// recognised whatever was appended since: the store remembers appends of
// unknown outcome and flags their re-sends, which the script looks for in
// the aggregate (I4 for every expected-version mode).
func TestResendOfUnknownOutcomeIsRecognisedForEveryMode(t *testing.T) {
	t.Parallel()
	ctx := ctxT(t)
	srv := faultenv.Start(t, faultenv.Options{})
	d := faultenv.NewDropper(1)
	opt := testenv.RedisOption(t, srv.URL())
	opt.DialCtxFn = d.Dial
	c, err := rueidis.NewClient(opt)
	require.NoError(t, err)
	t.Cleanup(c.Close)
	// The store's own re-sends are off, so that the caller's re-send is
	// what is tested.
	s, err := eventstore.New(c, eventstore.Config{Namespace: "resend", RetryUnavailable: -1})
	require.NoError(t, err)
	other, err := eventstore.New(testenv.RedisAt(t, srv.URL()), eventstore.Config{Namespace: "resend"})
	require.NoError(t, err)

	for i, expected := range []eventstore.Expected{eventstore.Any, eventstore.StreamExists} {
		st := eventstore.StreamID{Category: "acc", ID: fmt.Sprint("a", i)}
		_, err := s.Append(ctx, st, eventstore.NoStream, ev("Opened", ""))
		require.NoError(t, err)
		batch := []eventstore.EventData{
			{ID: uuid.Must(uuid.NewV7()), Type: "Deposited", Data: []byte("1")},
			{ID: uuid.Must(uuid.NewV7()), Type: "Deposited", Data: []byte("2")},
		}
		d.Only("EVALSHA")
		d.DropNext(1)
		_, err = s.Append(ctx, st, expected, batch...)
		require.ErrorIs(t, err, eventstore.ErrUnknownOutcome, expected.String())
		// Meanwhile another writer appends.
		for range 3 {
			_, err = other.Append(ctx, st, eventstore.Any, ev("Other", ""))
			require.NoError(t, err)
		}
		res, err := s.Append(ctx, st, expected, batch...)
		require.NoError(t, err, expected.String())
		require.True(t, res.Duplicate, "%s: the re-send is recognised", expected)
		require.Equal(t, uint64(2), res.FirstVersion)
		all := collect(t, s.Read(ctx, st, 0))
		require.Len(t, all, 6, "%s: stored once", expected)
		require.Equal(t, batch[0].ID, all[1].ID)
		require.Equal(t, res.Positions[0], all[1].Position)
	}
}
