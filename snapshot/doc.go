// Package snapshot stores aggregate snapshots: an aggregate's state as of
// one version of its stream, so that loading it reads only the events after
// that version.
//
// A [Snapshot] holds the aggregate version, the log [eventstore.Position] of
// the event at that version, a schema version for the payload's format and
// the payload. A [Store] keeps the latest one per aggregate; there are two:
//
//   - [NewRedis] keeps it in a hash next to the aggregate's events, in the
//     same Redis Cluster slot (key <ns>:{<category>:<p>}:snap:<id>; format in
//     redis.go). Fast, and lost together with the events.
//   - [NewPostgres] keeps it in the snapshots table of the toolkit's schema
//     (default "redsource"), one row per namespace, category and aggregate.
//     The constructor runs the toolkit's migrations first.
//
// Snapshots are written and read by package aggregate (Config.Snapshots),
// which treats them as a cache, never as the truth: a snapshot of another
// schema version, or one that no longer matches its stream (the stream is
// shorter, or holds another event at the snapshot's version, as after a
// Redis data loss), is ignored and the aggregate rebuilt from its events;
// one that does not match its stream is deleted. That is why [Store.Put]
// simply replaces: last writer wins.
//
//	snaps := snapshot.NewRedis(store)
//	// or: snaps, err := snapshot.NewPostgres(ctx, pool, snapshot.PostgresConfig{Namespace: store.Namespace()})
//	accounts, err := aggregate.NewRepository(store, aggregate.Config[*Account]{
//		// ...
//		Snapshots: aggregate.Snapshots[*Account]{
//			Store:     snaps,
//			Every:     100,
//			Marshal:   func(a *Account) ([]byte, error) { return json.Marshal(a.state) },
//			Unmarshal: func(a *Account, b []byte) error { return json.Unmarshal(b, &a.state) },
//		},
//	})
package snapshot
