package aggregate_test

import (
	"context"
	"errors"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/redsource/redsource/aggregate"
	"github.com/redsource/redsource/eventstore"
	"github.com/redsource/redsource/internal/testenv"
	"github.com/redsource/redsource/snapshot"
)

// snapshotStores runs f against each snapshot store.
func snapshotStores(t *testing.T, f func(t *testing.T, store *eventstore.Store, snaps snapshot.Store)) {
	t.Run("redis", func(t *testing.T) {
		t.Parallel()
		store := newStore(t)
		f(t, store, snapshot.NewRedis(store))
	})
	t.Run("postgres", func(t *testing.T) {
		t.Parallel()
		store := newStore(t)
		pool, schema := testenv.Postgres(t)
		snaps, err := snapshot.NewPostgres(ctxT(t), pool, snapshot.PostgresConfig{Schema: schema, Namespace: store.Namespace()})
		require.NoError(t, err)
		f(t, store, snaps)
	})
}

func snapshotting(snaps snapshot.Store, every uint64) aggregate.Config[*account] {
	cfg := accountConfig()
	cfg.Snapshots = aggregate.Snapshots[*account]{Store: snaps, Every: every, Marshal: accountSnapshots, Unmarshal: accountRestore}
	return cfg
}

func state(a *account) accountState { return accountState{a.owner, a.open, a.balance} }

func TestSnapshotLoadEqualsEventLoad(t *testing.T) {
	t.Parallel()
	snapshotStores(t, func(t *testing.T, store *eventstore.Store, snaps snapshot.Store) {
		ctx := ctxT(t)
		log, logs := newLogger()
		cfg := snapshotting(snaps, 10)
		cfg.Logger = log
		withSnaps, plain := newRepo(t, store, cfg), newRepo(t, store, accountConfig())

		rng := rand.New(rand.NewPCG(1, 2))
		_, err := withSnaps.Update(ctx, "a1", func(a *account) error { return a.Open("ada") })
		require.NoError(t, err)
		for range 94 {
			_, err := withSnaps.Update(ctx, "a1", func(a *account) error {
				if rng.IntN(3) == 0 && a.balance > 0 {
					return a.Withdraw(1 + rng.Int64N(a.balance))
				}
				return a.Deposit(1 + rng.Int64N(100))
			})
			require.NoError(t, err)
		}
		s, err := snaps.Get(ctx, withSnaps.Stream("a1"))
		require.NoError(t, err)
		require.Equal(t, uint64(90), s.Version, "one snapshot every 10 events")
		require.Equal(t, 1, s.Schema)

		fromSnap, err := withSnaps.Load(ctx, "a1")
		require.NoError(t, err)
		fromEvents, err := plain.Load(ctx, "a1")
		require.NoError(t, err)
		require.Equal(t, uint64(95), fromSnap.Version())
		require.Equal(t, fromEvents.Version(), fromSnap.Version())
		require.Equal(t, state(fromEvents), state(fromSnap))
		require.NotContains(t, logs.String(), "level=WARN")

		// Saving after a snapshot load continues correctly.
		require.NoError(t, fromSnap.Deposit(1))
		require.NoError(t, withSnaps.Save(ctx, fromSnap))
		fromEvents, err = plain.Load(ctx, "a1")
		require.NoError(t, err)
		require.Equal(t, state(fromEvents), state(fromSnap))
	})
}

func TestSnapshotIsUsed(t *testing.T) {
	t.Parallel()
	snapshotStores(t, func(t *testing.T, store *eventstore.Store, snaps snapshot.Store) {
		ctx := ctxT(t)
		repo := newRepo(t, store, snapshotting(snaps, 1000))
		a := repo.New("a1")
		require.NoError(t, a.Open("ada"))
		require.NoError(t, a.Deposit(10))
		require.NoError(t, repo.Save(ctx, a))
		evs := streamEvents(t, ctx, store, repo.Stream("a1"))

		// A doctored snapshot at the real version 2: only the tail is replayed on top.
		payload, err := accountSnapshots(&account{owner: "snap", open: true, balance: 1_000_000})
		require.NoError(t, err)
		require.NoError(t, snaps.Put(ctx, snapshot.Snapshot{Stream: repo.Stream("a1"), Version: 2, Position: evs[1].Position, Schema: 1, Payload: payload}))
		require.NoError(t, a.Deposit(5))
		require.NoError(t, repo.Save(ctx, a))

		b, err := repo.Load(ctx, "a1")
		require.NoError(t, err)
		require.Equal(t, accountState{"snap", true, 1_000_005}, state(b))
		require.Equal(t, uint64(3), b.Version())
	})
}

func TestSnapshotOfAnotherSchemaIsIgnored(t *testing.T) {
	t.Parallel()
	snapshotStores(t, func(t *testing.T, store *eventstore.Store, snaps snapshot.Store) {
		ctx := ctxT(t)
		v1 := newRepo(t, store, snapshotting(snaps, 2))
		a := v1.New("a1")
		require.NoError(t, a.Open("ada"))
		require.NoError(t, a.Deposit(10))
		require.NoError(t, v1.Save(ctx, a))
		s, err := snaps.Get(ctx, v1.Stream("a1"))
		require.NoError(t, err)
		require.Equal(t, 1, s.Schema)

		// Version 2 of the payload format reads differently; the old
		// snapshot must not reach its Unmarshal.
		log, logs := newLogger()
		cfg := snapshotting(snaps, 2)
		cfg.Logger = log
		cfg.Snapshots.Schema = 2
		cfg.Snapshots.Unmarshal = func(a *account, b []byte) error {
			a.balance = -999 // what a misread would look like
			return nil
		}
		v2 := newRepo(t, store, cfg)
		b, err := v2.Load(ctx, "a1")
		require.NoError(t, err)
		require.Equal(t, accountState{"ada", true, 10}, state(b))
		require.Contains(t, logs.String(), "snapshot of another schema version ignored")

		// The next Save past the policy replaces it with a version 2 snapshot.
		require.NoError(t, b.Deposit(1))
		require.NoError(t, v2.Save(ctx, b))
		s, err = snaps.Get(ctx, v2.Stream("a1"))
		require.NoError(t, err)
		require.Equal(t, 2, s.Schema)
		require.Equal(t, uint64(3), s.Version)
	})
}

func TestSnapshotNotMatchingTheStreamIsIgnored(t *testing.T) {
	t.Parallel()
	snapshotStores(t, func(t *testing.T, store *eventstore.Store, snaps snapshot.Store) {
		ctx := ctxT(t)
		log, logs := newLogger()
		cfg := snapshotting(snaps, 1000)
		cfg.Logger = log
		repo := newRepo(t, store, cfg)
		a := repo.New("a1")
		require.NoError(t, a.Open("ada"))
		require.NoError(t, a.Deposit(10))
		require.NoError(t, a.Deposit(20))
		require.NoError(t, repo.Save(ctx, a))
		evs := streamEvents(t, ctx, store, repo.Stream("a1"))
		bogus, err := accountSnapshots(&account{owner: "lost", open: true, balance: 777})
		require.NoError(t, err)

		// Newer than the stream: Redis lost the events it was taken after.
		// Loading would silently take the aggregate back: an error, and
		// the snapshot stays as evidence.
		ahead := snapshot.Snapshot{Stream: repo.Stream("a1"), Version: 50,
			Position: eventstore.Position{Ms: evs[2].Position.Ms + 10_000}, Schema: 1, Payload: bogus}
		require.NoError(t, snaps.Put(ctx, ahead))
		_, err = repo.Load(ctx, "a1")
		require.ErrorIs(t, err, aggregate.ErrSnapshotAhead)
		require.ErrorIs(t, err, eventstore.ErrDataLoss)
		var sa *aggregate.SnapshotAheadError
		require.ErrorAs(t, err, &sa)
		require.Equal(t, uint64(50), sa.SnapshotVersion)
		require.Equal(t, uint64(3), sa.StreamVersion)
		_, err = repo.Update(ctx, "a1", func(a *account) error { return a.Deposit(1) })
		require.ErrorIs(t, err, aggregate.ErrSnapshotAhead, "nor is anything appended over it")
		kept, err := snaps.Get(ctx, repo.Stream("a1"))
		require.NoError(t, err)
		require.Equal(t, uint64(50), kept.Version)
		require.Len(t, streamEvents(t, ctx, store, repo.Stream("a1")), 3)
		require.NoError(t, snaps.Delete(ctx, repo.Stream("a1")), "accepting the loss")

		// Same version, another event there: the stream was rewritten.
		require.NoError(t, snaps.Put(ctx, snapshot.Snapshot{Stream: repo.Stream("a1"), Version: 2,
			Position: evs[1].Position.Next(), Schema: 1, Payload: bogus}))
		b, err := repo.Load(ctx, "a1")
		require.NoError(t, err)
		require.Equal(t, accountState{"ada", true, 30}, state(b))
		require.Contains(t, logs.String(), "the stream holds another event at its version")
		_, err = snaps.Get(ctx, repo.Stream("a1"))
		require.ErrorIs(t, err, snapshot.ErrNotFound)
	})
}

// brokenSnapshots fails every call.
type brokenSnapshots struct{}

var errSnapshotsDown = errors.New("snapshot store down")

func (brokenSnapshots) Get(context.Context, eventstore.StreamID) (snapshot.Snapshot, error) {
	return snapshot.Snapshot{}, errSnapshotsDown
}
func (brokenSnapshots) Put(context.Context, snapshot.Snapshot) error      { return errSnapshotsDown }
func (brokenSnapshots) Delete(context.Context, eventstore.StreamID) error { return errSnapshotsDown }

// nopSnapshots has no snapshots and drops writes.
type nopSnapshots struct{}

func (nopSnapshots) Get(_ context.Context, s eventstore.StreamID) (snapshot.Snapshot, error) {
	return snapshot.Snapshot{}, snapshot.ErrNotFound
}
func (nopSnapshots) Put(context.Context, snapshot.Snapshot) error      { return nil }
func (nopSnapshots) Delete(context.Context, eventstore.StreamID) error { return nil }

func TestSnapshotFailuresNeverFailLoadOrSave(t *testing.T) {
	t.Parallel()
	ctx, store := ctxT(t), newStore(t)
	log, logs := newLogger()
	cfg := snapshotting(brokenSnapshots{}, 1)
	cfg.Logger = log
	repo := newRepo(t, store, cfg)

	a, err := repo.Update(ctx, "a1", func(a *account) error { return a.Open("ada") })
	require.NoError(t, err)
	require.Equal(t, uint64(1), a.Version())
	require.Contains(t, logs.String(), "snapshot not written")
	require.Contains(t, logs.String(), "snapshot store down")

	b, err := repo.Load(ctx, "a1")
	require.NoError(t, err)
	require.True(t, b.open)
	require.Contains(t, logs.String(), "snapshot unreadable")

	// A state that cannot be marshalled: logged too.
	cfg = snapshotting(snapshot.NewRedis(store), 1)
	cfg.Logger = log
	cfg.Snapshots.Marshal = func(*account) ([]byte, error) { return nil, errors.New("no can do") }
	repo = newRepo(t, store, cfg)
	_, err = repo.Update(ctx, "a1", func(a *account) error { return a.Deposit(3) })
	require.NoError(t, err)
	require.Contains(t, logs.String(), "marshal failed")

	// A payload that cannot be read: logged, events used.
	require.NoError(t, snapshot.NewRedis(store).Put(ctx, snapshot.Snapshot{Stream: repo.Stream("a1"), Version: 2,
		Position: streamEvents(t, ctx, store, repo.Stream("a1"))[1].Position, Schema: 1, Payload: []byte("{")}))
	b, err = repo.Load(ctx, "a1")
	require.NoError(t, err)
	require.Equal(t, int64(3), b.balance)
	require.Contains(t, logs.String(), "snapshot payload unreadable")
}

func TestSnapshotPredicate(t *testing.T) {
	t.Parallel()
	ctx, store := ctxT(t), newStore(t)
	snaps := snapshot.NewRedis(store)
	var sinces []uint64
	cfg := snapshotting(snaps, 0)
	cfg.Snapshots.When = func(a *account, since uint64) bool {
		sinces = append(sinces, since)
		return a.balance >= 100 // snapshot rich accounts only
	}
	repo := newRepo(t, store, cfg)
	for _, amount := range []int64{0, 50, 60, 1} {
		_, err := repo.Update(ctx, "a1", func(a *account) error {
			if amount == 0 {
				return a.Open("ada")
			}
			return a.Deposit(amount)
		})
		require.NoError(t, err)
	}
	require.Equal(t, []uint64{1, 2, 3, 1}, sinces, "counted from the last snapshot")
	s, err := snaps.Get(ctx, repo.Stream("a1"))
	require.NoError(t, err)
	require.Equal(t, uint64(4), s.Version)
}

// A snapshot kept in PostgreSQL outlives a Redis that lost the namespace:
// loading the aggregate then fails instead of starting it afresh, in a
// long-lived process (the snapshot is ahead of the now empty stream) and
// in a new one (the snapshot belongs to another incarnation of the
// namespace than the one Redis now holds).
func TestPostgresSnapshotOutlivesALostNamespace(t *testing.T) {
	t.Parallel()
	ctx, store := ctxT(t), newStore(t)
	pool, schema := testenv.Postgres(t)
	snaps, err := snapshot.NewPostgres(ctx, pool, snapshot.PostgresConfig{Schema: schema, Namespace: store.Namespace()})
	require.NoError(t, err)
	repo := newRepo(t, store, snapshotting(snaps, 2))
	_, err = repo.Update(ctx, "a1", func(a *account) error { return a.Open("ada") })
	require.NoError(t, err)
	_, err = repo.Update(ctx, "a1", func(a *account) error { return a.Deposit(5) })
	require.NoError(t, err)
	s, err := snaps.Get(ctx, repo.Stream("a1"))
	require.NoError(t, err)
	id, err := store.Identity(ctx)
	require.NoError(t, err)
	require.Equal(t, id, s.Identity, "the snapshot records the namespace identity")

	testenv.DeleteNamespace(store.Client(), store.Namespace())

	_, err = repo.Load(ctx, "a1")
	require.ErrorIs(t, err, eventstore.ErrDataLoss)
	require.ErrorIs(t, err, aggregate.ErrSnapshotAhead, "the long-lived store still knows the old identity")

	fresh, err := eventstore.New(store.Client(), eventstore.Config{Namespace: store.Namespace()})
	require.NoError(t, err)
	repo2 := newRepo(t, fresh, snapshotting(snaps, 2))
	_, err = repo2.Update(ctx, "a1", func(a *account) error { return a.Open("ada") })
	require.ErrorIs(t, err, eventstore.ErrNamespaceLost)
	require.Contains(t, err.Error(), "the snapshot of account/a1 (version 2) remembers identity "+id)
}
