// Package projection keeps PostgreSQL read models up to date from the
// event log, effectively once and in order per aggregate, through crashes,
// restarts, paused workers and poison events.
//
// # A projection
//
// A [Projection] has a name, the categories it reads and a handler that
// applies events inside a pgx transaction. The per-event shape is a
// [Handler]; the fast shape is a [BatchHandler], which gets a whole batch
// (up to [Config].BatchSize events of one partition, in log order) for
// set-based SQL:
//
//	p := projection.Projection{
//		Name:       "balances",
//		Categories: []string{"account"},
//		Batch: projection.BatchHandlerFunc(func(ctx context.Context, tx pgx.Tx, evs []eventstore.Event) error {
//			// fold evs per account, then one INSERT … SELECT FROM unnest(…) ON CONFLICT …
//			return nil
//		}),
//		Reset: func(ctx context.Context, tx pgx.Tx) error { // for rebuilds
//			_, err := tx.Exec(ctx, "TRUNCATE balances")
//			return err
//		},
//	}
//
// # Running it
//
// A [Runner] runs projections until its context ends:
//
//	r, err := projection.NewRunner(projection.Config{Store: store, DB: pool}, p)
//	…
//	err = r.Run(ctx) // blocks; returns after every partition is handed back
//
// Start as many runners, in as many processes, as you like: they share the
// partitions through leases in Redis (one owner per partition at a time,
// a fair share each, a dead worker's partitions move within
// [Config].LeaseTTL).
//
// For each partition it owns, a worker reads the partition log through a
// Redis consumer group named after the projection, applies a batch and
// moves the checkpoint (the last applied log ID) in the same PostgreSQL
// transaction, commits, then acknowledges the batch with XACK. The
// checkpoint is the truth; the group's pending list is a hint. The
// checkpoint update is a compare-and-set on a fence that every new owner
// bumps, so a worker that lost its partition (paused, partitioned, slow)
// cannot commit. An entry redelivered at or below the checkpoint is
// acknowledged, not applied again.
//
// # Poison events
//
// A handler error is retried with backoff up to [Config].MaxAttempts times
// (errors marked with [Permanent], and undecodable entries, are not
// retried); a batch that fails is split so that the good events commit. An
// event that crashed its worker [Config].MaxDeliveries times is not handed
// to the handler again. Then the event is quarantined: recorded in
// PostgreSQL with the checkpoint, mirrored into the dead-letter stream
// <ns>:{<category>:<p>}:dlq:<projection>. In [Sequenced] mode (the
// default) the aggregate's later events are parked behind it for this
// projection while every other aggregate keeps flowing; [Skip] lets them
// through. [Admin] lists held events and files retry or skip requests,
// which the owning worker carries out in order.
//
// # When PostgreSQL fails
//
// Not every failed batch is the event's fault. A serialization failure,
// a deadlock or a lock timeout (SQLSTATE 40001, 40P01, 55P03) is
// transient: the batch is retried in place with backoff and logged at
// WARN. A missing table, column, schema or function, a missing privilege,
// a lost connection, a server shutting down or out of resources is
// infrastructure: the partition stops applying, logs an ERROR with the
// SQLSTATE at each retry, records it as its last error, and resumes by
// itself once the cause is fixed. Neither counts as a handler attempt or
// a delivery, and neither quarantines anything. statement_timeout (57014)
// in the handler counts as a handler attempt; on the runner's own
// statements it is transient. Handlers should return database errors
// wrapped with %w so the SQLSTATE can be seen.
//
// # Rebuilds and replay
//
// [Rebuild] rebuilds a projection in place from the start of the log,
// coordinated through Redis so that no runner anywhere applies an event of
// the old generation after the reset. For zero downtime, give the new read
// model a new [Projection].Version, build it with [CatchUp] while the old
// one serves, then [Admin.Switch] readers over in one transaction and
// [Admin.DropVersion] the old one. [Replay] hands a window of the log to a
// function without touching any checkpoint.
//
// # Health
//
// [Admin.Status] reports per partition: checkpoint, owner, lag and pending
// (from XINFO GROUPS), quarantined, parked and missing counts, last error.
// A partition whose log no longer holds the checkpoint's entry (Redis lost
// its tail) stops with [ErrLogRegressed] in its status instead of skipping
// anything.
package projection
