package eventstore_test

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/google/uuid"
	"github.com/redis/rueidis"
	"github.com/stretchr/testify/require"

	"github.com/redsource/redsource/eventstore"
	"github.com/redsource/redsource/internal/keys"
	"github.com/redsource/redsource/internal/testenv"
)

// memoryWitness remembers identities in memory: what a PostgreSQL schema
// does across processes (projection.NewWitness, tested there).
type memoryWitness struct {
	mu  sync.Mutex
	ids map[string]string
}

func (w *memoryWitness) Remembered(_ context.Context, ns string) (string, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.ids[ns], nil
}

func (w *memoryWitness) Remember(_ context.Context, ns, id string) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.ids == nil {
		w.ids = map[string]string{}
	}
	if old := w.ids[ns]; old != "" && old != id {
		return fmt.Errorf("already remembers %s", old)
	}
	w.ids[ns] = id
	return nil
}

func (w *memoryWitness) String() string { return "the test's witness" }

func get(t *testing.T, c rueidis.Client, key string) string {
	t.Helper()
	v, err := c.Do(context.Background(), c.B().Get().Key(key).Build()).ToString()
	if rueidis.IsRedisNil(err) {
		return ""
	}
	require.NoError(t, err)
	return v
}

func del(t *testing.T, c rueidis.Client, key string) {
	t.Helper()
	require.NoError(t, c.Do(context.Background(), c.B().Del().Key(key).Build()).Error())
}

// The first append creates the namespace's identity (a UUIDv7) and the
// partition's meta key; every store of the namespace then works with that
// identity.
func TestNamespaceIdentity(t *testing.T) {
	t.Parallel()
	ctx := ctxT(t)
	s := newStore(t, eventstore.Config{})
	c := s.Client()
	layout := keys.Layout{NS: s.Namespace()}
	st := eventstore.StreamID{Category: "acc", ID: "a1"}
	require.Empty(t, get(t, c, layout.Identity()), "nothing before the first write")

	_, err := s.Append(ctx, st, eventstore.NoStream, ev("A", "1"))
	require.NoError(t, err)
	id := get(t, c, layout.Identity())
	u, err := uuid.Parse(id)
	require.NoError(t, err)
	require.Equal(t, uuid.Version(7), u.Version())
	require.Equal(t, id+"/8", get(t, c, layout.PartitionMeta("acc", s.Partition(st))))

	other, err := eventstore.New(c, eventstore.Config{Namespace: s.Namespace()})
	require.NoError(t, err)
	got, err := other.Identity(ctx)
	require.NoError(t, err)
	require.Equal(t, id, got)
	_, err = other.Append(ctx, st, eventstore.Exact(1), ev("B", "2"))
	require.NoError(t, err)
}

// Redis loses the namespace under a long-lived store (a restart without
// persistence, emulated by deleting every key of the namespace): the store
// refuses to append into a fresh, empty stream, and reads say so instead
// of returning nothing.
func TestLongLivedStoreNoticesALostNamespace(t *testing.T) {
	t.Parallel()
	ctx := ctxT(t)
	s := newStore(t, eventstore.Config{})
	st := eventstore.StreamID{Category: "acc", ID: "a1"}
	_, err := s.Append(ctx, st, eventstore.NoStream, ev("A", "1"), ev("A", "2"))
	require.NoError(t, err)

	testenv.DeleteNamespace(s.Client(), s.Namespace())

	for _, expected := range []eventstore.Expected{eventstore.NoStream, eventstore.Any, eventstore.Exact(2)} {
		_, err = s.Append(ctx, st, expected, ev("A", "3"))
		require.ErrorIs(t, err, eventstore.ErrNamespaceLost, expected.String())
		require.ErrorIs(t, err, eventstore.ErrDataLoss)
		var ne *eventstore.NamespaceError
		require.ErrorAs(t, err, &ne)
		require.Empty(t, ne.Found)
		require.Contains(t, err.Error(), "Redis has no identity for the namespace")
	}
	// Also for a partition it never wrote to.
	_, err = s.Append(ctx, eventstore.StreamID{Category: "acc", ID: "elsewhere-7"}, eventstore.NoStream, ev("A", "1"))
	require.ErrorIs(t, err, eventstore.ErrNamespaceLost)
	_, err = s.Append(ctx, eventstore.StreamID{Category: "other", ID: "x"}, eventstore.NoStream, ev("A", "1"))
	require.ErrorIs(t, err, eventstore.ErrNamespaceLost)

	n, err := s.Client().Do(ctx, s.Client().B().Exists().Key(keys.Layout{NS: s.Namespace()}.Identity()).Build()).AsInt64()
	require.NoError(t, err)
	require.Zero(t, n, "no identity was created again")

	for _, err := range s.Read(ctx, st, 0) {
		require.ErrorIs(t, err, eventstore.ErrNamespaceLost)
	}
	for _, err := range s.ReadCategory(ctx, "acc", eventstore.MinPosition, eventstore.MaxPosition) {
		require.ErrorIs(t, err, eventstore.ErrNamespaceLost)
	}

	// A namespace created again by another process is just as foreign.
	fresh, err := eventstore.New(s.Client(), eventstore.Config{Namespace: s.Namespace()})
	require.NoError(t, err)
	_, err = fresh.Append(ctx, st, eventstore.NoStream, ev("A", "new"))
	require.NoError(t, err, "a process that never saw the namespace cannot tell it from a new one")
	_, err = s.Append(ctx, st, eventstore.Exact(1), ev("A", "3"))
	var ne *eventstore.NamespaceError
	require.ErrorAs(t, err, &ne)
	require.NotEmpty(t, ne.Found)
	require.NotEqual(t, ne.Found, ne.Remembered)
}

// With a Witness, even a process that never saw the namespace refuses a
// Redis that lost it: it neither reads an empty stream nor writes one.
func TestWitnessRemembersTheNamespace(t *testing.T) {
	t.Parallel()
	ctx := ctxT(t)
	w := &memoryWitness{}
	s := newStore(t, eventstore.Config{Witness: w})
	st := eventstore.StreamID{Category: "acc", ID: "a1"}
	_, err := s.Append(ctx, st, eventstore.NoStream, ev("A", "1"))
	require.NoError(t, err)
	id, err := s.Identity(ctx)
	require.NoError(t, err)
	remembered, _ := w.Remembered(ctx, s.Namespace())
	require.Equal(t, id, remembered)

	testenv.DeleteNamespace(s.Client(), s.Namespace())

	next, err := eventstore.New(s.Client(), eventstore.Config{Namespace: s.Namespace(), Witness: w})
	require.NoError(t, err)
	for _, err := range next.Read(ctx, st, 0) {
		require.ErrorIs(t, err, eventstore.ErrNamespaceLost)
		require.Contains(t, err.Error(), "the test's witness remembers identity "+id)
	}
	_, err = next.Append(ctx, st, eventstore.NoStream, ev("A", "1"))
	require.ErrorIs(t, err, eventstore.ErrNamespaceLost)
	require.Empty(t, get(t, s.Client(), keys.Layout{NS: s.Namespace()}.Identity()), "nothing written")

	// A witness that remembers nothing yet learns the identity Redis has.
	w2 := &memoryWitness{}
	s2 := newStore(t, eventstore.Config{})
	_, err = s2.Append(ctx, st, eventstore.NoStream, ev("A", "1"))
	require.NoError(t, err)
	late, err := eventstore.New(s2.Client(), eventstore.Config{Namespace: s2.Namespace(), Witness: w2})
	require.NoError(t, err)
	require.Len(t, collect(t, late.Read(ctx, st, 0)), 1)
	id2, _ := s2.Identity(ctx)
	got, _ := w2.Remembered(ctx, s2.Namespace())
	require.Equal(t, id2, got)
}

// An identity key deleted while the namespace's data stayed is refused,
// not replaced by a new identity.
func TestIdentityGoneWhileDataRemains(t *testing.T) {
	t.Parallel()
	ctx := ctxT(t)
	s := newStore(t, eventstore.Config{})
	st := eventstore.StreamID{Category: "acc", ID: "a1"}
	_, err := s.Append(ctx, st, eventstore.NoStream, ev("A", "1"))
	require.NoError(t, err)
	del(t, s.Client(), keys.Layout{NS: s.Namespace()}.Identity())

	fresh, err := eventstore.New(s.Client(), eventstore.Config{Namespace: s.Namespace()})
	require.NoError(t, err)
	_, err = fresh.Append(ctx, st, eventstore.Exact(1), ev("A", "2"))
	require.ErrorIs(t, err, eventstore.ErrNamespaceLost)
	require.Contains(t, err.Error(), "identity key")
	require.Contains(t, err.Error(), "is gone while its categories")
}

// A category's partition count survives the categories hash losing it: a
// long-lived store goes on; a new one re-derives the count from the
// partitions' meta keys and records it again; a store configured with
// another count is refused and records nothing over the existing
// partitions; a read never comes back empty without an error.
func TestPartitionCountSurvivesLostCategoriesHash(t *testing.T) {
	t.Parallel()
	ctx := ctxT(t)
	s := newStore(t, eventstore.Config{})
	c := s.Client()
	layout := keys.Layout{NS: s.Namespace()}
	for i := range 40 {
		_, err := s.Append(ctx, eventstore.StreamID{Category: "acc", ID: fmt.Sprint("a", i)}, eventstore.NoStream, ev("A", "1"))
		require.NoError(t, err)
	}
	del(t, c, layout.Categories())

	_, err := s.Append(ctx, eventstore.StreamID{Category: "acc", ID: "a0"}, eventstore.Exact(1), ev("A", "2"))
	require.NoError(t, err, "the long-lived store knows the count")

	four, err := eventstore.New(c, eventstore.Config{Namespace: s.Namespace(), Partitions: 4})
	require.NoError(t, err)
	_, err = four.Append(ctx, eventstore.StreamID{Category: "acc", ID: "a1"}, eventstore.Exact(1), ev("A", "2"))
	require.ErrorIs(t, err, eventstore.ErrPartitionMismatch)
	for _, err := range four.ReadCategory(ctx, "acc", eventstore.MinPosition, eventstore.MaxPosition) {
		require.ErrorIs(t, err, eventstore.ErrPartitionMismatch)
	}
	n, err := four.RecordedPartitions(ctx, "acc")
	require.NoError(t, err)
	require.Equal(t, 8, n, "re-derived from the partitions, whatever this store's count")

	fresh, err := eventstore.New(c, eventstore.Config{Namespace: s.Namespace()})
	require.NoError(t, err)
	all := collect(t, fresh.ReadCategory(ctx, "acc", eventstore.MinPosition, eventstore.MaxPosition))
	require.Len(t, all, 41)
	cats, err := fresh.Categories(ctx)
	require.NoError(t, err)
	require.Equal(t, []string{"acc"}, cats, "recorded again")
	v, err := c.Do(ctx, c.B().Hget().Key(layout.Categories()).Field("acc").Build()).ToString()
	require.NoError(t, err)
	require.Equal(t, "8", v)
}

// A partition log with events whose meta keys and count are all gone
// cannot be read or appended to as if it were new.
func TestPartitionCountLostEverywhereIsRefused(t *testing.T) {
	t.Parallel()
	ctx := ctxT(t)
	s := newStore(t, eventstore.Config{Partitions: 2})
	c := s.Client()
	layout := keys.Layout{NS: s.Namespace()}
	st := eventstore.StreamID{Category: "acc", ID: "a1"}
	_, err := s.Append(ctx, st, eventstore.NoStream, ev("A", "1"))
	require.NoError(t, err)
	del(t, c, layout.Categories())
	for p := range 2 {
		del(t, c, layout.PartitionMeta("acc", p))
	}

	fresh, err := eventstore.New(c, eventstore.Config{Namespace: s.Namespace(), Partitions: 2})
	require.NoError(t, err)
	for _, err := range fresh.ReadCategory(ctx, "acc", eventstore.MinPosition, eventstore.MaxPosition) {
		require.ErrorIs(t, err, eventstore.ErrDataLoss)
		require.Contains(t, err.Error(), "hold events but neither")
	}
	_, err = fresh.Append(ctx, st, eventstore.Exact(1), ev("A", "2"))
	require.ErrorIs(t, err, eventstore.ErrDataLoss)

	// The long-lived store knows the count, but the partition's meta key
	// is gone while its log holds events: refused too.
	_, err = s.Append(ctx, st, eventstore.Exact(1), ev("A", "2"))
	require.ErrorIs(t, err, eventstore.ErrDataLoss)
	require.Contains(t, err.Error(), "holds events but its meta key")
	require.Len(t, collect(t, s.ReadPartition(ctx, "acc", s.Partition(st), eventstore.MinPosition, eventstore.MaxPosition)), 1, "nothing written")
}

// A partition created within a window Redis then lost (its meta key and
// all its events gone, the namespace intact) takes appends again.
func TestEmptyPartitionGetsItsMetaAgain(t *testing.T) {
	t.Parallel()
	ctx := ctxT(t)
	s := newStore(t, eventstore.Config{})
	c := s.Client()
	layout := keys.Layout{NS: s.Namespace()}
	st := eventstore.StreamID{Category: "acc", ID: "a1"}
	_, err := s.Append(ctx, st, eventstore.NoStream, ev("A", "1"))
	require.NoError(t, err)
	p := s.Partition(st)
	del(t, c, layout.PartitionMeta("acc", p))
	del(t, c, layout.Log("acc", p))
	del(t, c, layout.Aggregate("acc", p, st.ID))

	_, err = s.Append(ctx, st, eventstore.NoStream, ev("A", "again"))
	require.NoError(t, err)
	id, _ := s.Identity(ctx)
	require.Equal(t, id+"/8", get(t, c, layout.PartitionMeta("acc", p)))
}

// A partition that belongs to another incarnation of the namespace, or
// says another partition count, takes no event.
func TestPartitionMetaMismatchIsRefused(t *testing.T) {
	t.Parallel()
	ctx := ctxT(t)
	s := newStore(t, eventstore.Config{})
	c := s.Client()
	layout := keys.Layout{NS: s.Namespace()}
	st := eventstore.StreamID{Category: "acc", ID: "a1"}
	_, err := s.Append(ctx, st, eventstore.NoStream, ev("A", "1"))
	require.NoError(t, err)
	key := layout.PartitionMeta("acc", s.Partition(st))
	id := get(t, c, layout.Identity())

	other := uuid.Must(uuid.NewV7()).String()
	require.NoError(t, c.Do(ctx, c.B().Set().Key(key).Value(other+"/8").Build()).Error())
	_, err = s.Append(ctx, st, eventstore.Exact(1), ev("A", "2"))
	require.ErrorIs(t, err, eventstore.ErrNamespaceLost)
	require.Contains(t, err.Error(), "belongs to namespace identity "+other)

	require.NoError(t, c.Do(ctx, c.B().Set().Key(key).Value(id+"/16").Build()).Error())
	_, err = s.Append(ctx, st, eventstore.Exact(1), ev("A", "2"))
	require.ErrorIs(t, err, eventstore.ErrPartitionMismatch)
	require.Contains(t, err.Error(), "has 16 partitions")
	require.Len(t, collect(t, s.Read(ctx, st, 0)), 1, "nothing written")
}
