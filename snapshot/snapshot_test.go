package snapshot_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/redsource/redsource/eventstore"
	"github.com/redsource/redsource/internal/testenv"
	"github.com/redsource/redsource/snapshot"
)

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func newEventStore(t testing.TB) *eventstore.Store {
	c := testenv.Redis(t)
	s, err := eventstore.New(c, eventstore.Config{Namespace: testenv.Namespace(t, c)})
	require.NoError(t, err)
	return s
}

func newPostgres(t testing.TB, namespace string) (*snapshot.Postgres, string) {
	pool, schema := testenv.Postgres(t)
	s, err := snapshot.NewPostgres(ctxT(t), pool, snapshot.PostgresConfig{Schema: schema, Namespace: namespace})
	require.NoError(t, err)
	return s, schema
}

// TestStores is the behaviour every Store must have.
func TestStores(t *testing.T) {
	t.Parallel()
	stores := map[string]func(t *testing.T) snapshot.Store{
		"redis": func(t *testing.T) snapshot.Store { return snapshot.NewRedis(newEventStore(t)) },
		"postgres": func(t *testing.T) snapshot.Store {
			s, _ := newPostgres(t, "")
			return s
		},
	}
	for name, open := range stores {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			testStore(t, open(t))
		})
	}
}

func testStore(t *testing.T, s snapshot.Store) {
	ctx := ctxT(t)
	acc := eventstore.StreamID{Category: "account", ID: "a-1"}

	_, err := s.Get(ctx, acc)
	require.ErrorIs(t, err, snapshot.ErrNotFound)
	require.ErrorContains(t, err, "account/a-1")

	payload := make([]byte, 256)
	for i := range payload {
		payload[i] = byte(i) // any bytes: NUL, invalid UTF-8
	}
	want := snapshot.Snapshot{Stream: acc, Version: 1 << 40, Position: eventstore.Position{Ms: 1700000000000, Seq: 3}, Schema: 7, Payload: payload}
	require.NoError(t, s.Put(ctx, want))
	got, err := s.Get(ctx, acc)
	require.NoError(t, err)
	require.Equal(t, want, got)

	// Last writer wins, even with an older version.
	older := snapshot.Snapshot{Stream: acc, Version: 5, Position: eventstore.Position{Ms: 9}, Schema: 1, Payload: []byte{}}
	require.NoError(t, s.Put(ctx, older))
	got, err = s.Get(ctx, acc)
	require.NoError(t, err)
	require.Equal(t, older, got, "an empty payload is a payload")

	// Streams are independent.
	for _, other := range []eventstore.StreamID{{Category: "account", ID: "a-2"}, {Category: "loan", ID: "a-1"}} {
		_, err := s.Get(ctx, other)
		require.ErrorIs(t, err, snapshot.ErrNotFound, other.String())
	}

	require.NoError(t, s.Delete(ctx, acc))
	_, err = s.Get(ctx, acc)
	require.ErrorIs(t, err, snapshot.ErrNotFound)
	require.NoError(t, s.Delete(ctx, acc), "deleting nothing is fine")

	// Bad input never reaches the server.
	pos := eventstore.Position{Ms: 1}
	for name, bad := range map[string]snapshot.Snapshot{
		"version 0": {Stream: acc, Version: 0, Position: pos, Schema: 1},
		"huge":      {Stream: acc, Version: 1 << 63, Position: pos, Schema: 1},
		"position":  {Stream: acc, Version: 1, Schema: 1},
		"schema":    {Stream: acc, Version: 1, Position: pos, Schema: 0},
	} {
		require.ErrorIs(t, s.Put(ctx, bad), snapshot.ErrInvalid, name)
	}
	for _, stream := range []eventstore.StreamID{{Category: "a:b", ID: "x"}, {Category: "a", ID: "x{y}"}, {Category: "a", ID: ""}} {
		require.ErrorIs(t, s.Put(ctx, snapshot.Snapshot{Stream: stream, Version: 1, Position: pos, Schema: 1}), eventstore.ErrInvalidName)
		_, err := s.Get(ctx, stream)
		require.ErrorIs(t, err, eventstore.ErrInvalidName)
		require.ErrorIs(t, s.Delete(ctx, stream), eventstore.ErrInvalidName)
	}
}

func TestRedisKeyIsInTheAggregateSlot(t *testing.T) {
	t.Parallel()
	ctx, store := ctxT(t), newEventStore(t)
	s := snapshot.NewRedis(store)
	for _, id := range []string{"a-1", "a-2", "zz", "ünïcode"} {
		stream := eventstore.StreamID{Category: "account", ID: id}
		log := store.LogKey("account", store.Partition(stream))
		tag := strings.TrimSuffix(log, ":log") // <ns>:{account:<p>}
		require.Equal(t, tag+":snap:"+id, s.Key(stream))
	}

	// The hash, as documented in redis.go.
	stream := eventstore.StreamID{Category: "account", ID: "a-1"}
	require.NoError(t, s.Put(ctx, snapshot.Snapshot{Stream: stream, Version: 12, Position: eventstore.Position{Ms: 5, Seq: 1}, Schema: 2, Payload: []byte(`{"x":1}`)}))
	c := store.Client()
	m, err := c.Do(ctx, c.B().Hgetall().Key(s.Key(stream)).Build()).AsStrMap()
	require.NoError(t, err)
	require.Equal(t, map[string]string{"v": "1", "ver": "12", "pos": "5-1", "schema": "2", "data": `{"x":1}`, "nsid": ""}, m)

	// A hash this build cannot read is reported, not guessed at.
	for field, value := range map[string]string{"v": "2", "ver": "x", "pos": "5", "schema": "0"} {
		require.NoError(t, s.Put(ctx, snapshot.Snapshot{Stream: stream, Version: 12, Position: eventstore.Position{Ms: 5, Seq: 1}, Schema: 2}))
		require.NoError(t, c.Do(ctx, c.B().Hset().Key(s.Key(stream)).FieldValue().FieldValue(field, value).Build()).Error())
		_, err := s.Get(ctx, stream)
		require.ErrorIs(t, err, snapshot.ErrCorrupt, field)
	}
	require.NoError(t, c.Do(ctx, c.B().Hdel().Key(s.Key(stream)).Field("data").Build()).Error())
	_, err = s.Get(ctx, stream)
	require.ErrorIs(t, err, snapshot.ErrCorrupt)
}

func TestPostgresNamespacesAndMigration(t *testing.T) {
	t.Parallel()
	ctx := ctxT(t)
	pool, schema := testenv.Postgres(t)
	prod, err := snapshot.NewPostgres(ctx, pool, snapshot.PostgresConfig{Schema: schema, Namespace: "prod"})
	require.NoError(t, err)
	staging, err := snapshot.NewPostgres(ctx, pool, snapshot.PostgresConfig{Schema: schema, Namespace: "staging"})
	require.NoError(t, err, "a second store migrates nothing")

	stream := eventstore.StreamID{Category: "account", ID: "a-1"}
	require.NoError(t, prod.Put(ctx, snapshot.Snapshot{Stream: stream, Version: 3, Position: eventstore.Position{Ms: 1}, Schema: 1, Payload: []byte("p")}))
	_, err = staging.Get(ctx, stream)
	require.ErrorIs(t, err, snapshot.ErrNotFound, "namespaces share the table, not the rows")

	var n int
	require.NoError(t, pool.QueryRow(ctx, "SELECT count(*) FROM "+schema+".snapshots WHERE namespace = 'prod' AND version = 3").Scan(&n))
	require.Equal(t, 1, n)

	_, err = snapshot.NewPostgres(ctx, pool, snapshot.PostgresConfig{Schema: schema, Namespace: "bad{ns}"})
	require.ErrorIs(t, err, eventstore.ErrInvalidName)
}
