// Package eventstore is redsource's event log on Redis Streams: it appends
// events to aggregate streams with optimistic concurrency and reads them
// back, one aggregate at a time or a whole category between two positions.
// Every other package (aggregate, snapshot, projection) stands on it.
//
// # A store
//
// [New] takes a rueidis client, which stays yours to close, and a [Config]
// whose zero fields take documented defaults (namespace "rs", 8 partitions
// per category, 1 MiB per event):
//
//	client, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{"127.0.0.1:6379"}})
//	...
//	store, err := eventstore.New(client, eventstore.Config{Namespace: "bank"})
//
// A [Store] is safe for concurrent use. Every call that does I/O takes a
// context first.
//
// # Appending
//
// An aggregate's events form its stream, named by a [StreamID]: a category
// (the aggregate type) and an ID. [Store.Append] appends one or more
// [EventData] atomically, if the stream is at the [Expected] version:
//
//	acct := eventstore.StreamID{Category: "account", ID: "acc-1"}
//	res, err := store.Append(ctx, acct, eventstore.Exact(2),
//		eventstore.EventData{Type: "Withdrawn", Data: []byte(`{"amount":30}`)})
//
// Versions count the events of a stream from 1. [Exact](n) expects n events
// so far ([NoStream] is Exact(0)); [StreamExists] expects at least one;
// [Any] takes the stream as it is. When the stream is elsewhere, nothing is
// written and the error is a [*ConflictError] (errors.Is [ErrConflict])
// carrying the actual version: reload, decide again, append again.
//
// Each event carries a UUID ([EventData.ID]; a UUIDv7 is generated when it
// is zero). Sending the same append again, with the same IDs, after a
// timeout or a lost reply returns the original [AppendResult] with
// Duplicate set instead of writing twice; with Exact and NoStream that
// holds however many events came after, with Any and StreamExists it is
// best effort (the newest events are compared). Keep the IDs across
// retries to get this.
//
// Bad input never reaches Redis: names are checked ([ErrInvalidName],
// [NameError]), sizes too ([ErrEventTooLarge], [SizeError]), and an empty
// or malformed batch is [ErrInvalidAppend].
//
// # Reading an aggregate
//
// [Store.Read] returns an iterator over a stream's events from a version
// (inclusive; 0 and 1 both mean the start). It pages through Redis
// ([Config.ReadBatch] entries per page, two round trips each), so memory stays flat however
// long the stream; breaking out of the loop stops it. An error ends the
// iteration and is yielded once:
//
//	for e, err := range store.Read(ctx, acct, 0) {
//		if err != nil {
//			return err
//		}
//		fmt.Println(e.Version, e.Type, string(e.Data))
//	}
//
// After a snapshot, [Store.ReadFrom] starts at the snapshot's own event
// (its position and version) without paging through the earlier ones, and
// says [ErrPositionMismatch] when the stream no longer holds it there.
//
// [Store.Version] returns the current version without reading events.
//
// # Positions and categories
//
// Every event also has a [Position] in its category's partition log: the
// Redis stream ID ("ms-seq") that Redis assigned when it was appended. The
// aggregate stream uses the same ID. Redis keeps IDs growing when the
// server's clock goes back, so a position is an order, not a clock; the
// event's wall-clock time is [Event.RecordedAt], the server's time at
// append.
//
// A category is split into partitions by [Store.Partition] (a stable hash of
// the aggregate ID), each with its own log, so a position is unique within
// a partition but not across a category: two partitions can issue the same
// one. [Store.ReadCategory] merges the partitions in (position, partition)
// order between two positions, both inclusive; [Store.ReadPartition] reads
// one. Anything that resumes a category read keeps one position per
// partition.
//
// Time windows are positions too: [PositionAt] is the first position of a
// millisecond and [LastPositionAt] the last, so
//
//	from, to := eventstore.PositionAt(start), eventstore.LastPositionAt(end)
//	for e, err := range store.ReadCategory(ctx, "account", from, to) { ... }
//
// reads what was appended from start to end, both milliseconds included
// (as Redis timestamped it: after a clock rollback, IDs run ahead of the
// clock). [ParsePosition] reads a position strictly; [MinPosition] and
// [MaxPosition] bound every position.
//
// # Stored format and errors on read
//
// The layout of keys and entries is a wire format, versioned by
// [FormatVersion] and described in docs/format.md; [DecodeEntry] decodes
// one log entry for tools that read the log directly ([Store.LogKey]). An
// entry that cannot be decoded is [ErrCorruptEntry]; an aggregate-stream
// entry whose log entry was deleted or trimmed is [ErrMissingEntry]. A
// store configured with another partition count than the one recorded for
// a category gets [ErrPartitionMismatch].
package eventstore
