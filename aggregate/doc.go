// Package aggregate persists event-sourced aggregates in an
// [eventstore.Store]: load one (snapshot, then the events after it), run a
// command on it, append what it decided with optimistic concurrency, retry
// on conflict.
//
// # Writing an aggregate
//
// An aggregate is a plain Go type that embeds [Root] and has one method,
// Apply, that changes its state by one event. Decision methods check the
// rules and call [Root.Record], which applies the event at once and keeps
// it for the next save:
//
//	type Account struct {
//		aggregate.Root
//		balance int64
//	}
//
//	type Deposited struct{ Amount int64 }
//	type Withdrawn struct{ Amount int64 }
//
//	func (a *Account) Apply(event any) {
//		switch e := event.(type) {
//		case Deposited:
//			a.balance += e.Amount
//		case Withdrawn:
//			a.balance -= e.Amount
//		}
//	}
//
//	func (a *Account) Withdraw(amount int64) error {
//		if amount > a.balance {
//			return ErrInsufficientFunds // refused: record nothing
//		}
//		a.Record(Withdrawn{Amount: amount})
//		return nil
//	}
//
// *Account satisfies [Interface]; nothing else is required of it.
//
// # A repository per aggregate type
//
// [NewRepository] takes the event store and a [Config]: the category, a
// constructor and the event types, each a Go type under a stored name
// ([Event]). There is no global registry; a repository knows its own types,
// and [Repository.Registry] hands them to other readers such as projection
// handlers:
//
//	accounts, err := aggregate.NewRepository(store, aggregate.Config[*Account]{
//		Category: "account",
//		New:      func() *Account { return new(Account) },
//		Events: []aggregate.EventType{
//			aggregate.Event[Deposited]("deposited"),
//			aggregate.Event[Withdrawn]("withdrawn"),
//		},
//	})
//
// [Repository.Update] is the everyday call: it loads the aggregate, runs the
// decision, saves, and on [eventstore.ErrConflict] loads again and decides
// again, up to [Config.MaxAttempts] times with jittered backoff. The
// decision's own error comes back unchanged, and nothing is appended:
//
//	acc, err := accounts.Update(ctx, "acc-1", func(a *Account) error {
//		return a.Withdraw(30)
//	})
//
// [Repository.New], [Repository.Load] and [Repository.Save] are the parts of
// Update, for callers that need them apart. Save appends with
// eventstore.Exact(loaded version); the events get their UUIDs before the
// append and keep them until it succeeds, so saving the same aggregate again
// after a timeout appends them once (see [Repository.Save]).
//
// # Event types, codecs and schema evolution
//
// Events are stored as JSON ([JSONCodec]) unless [WithCodec] says otherwise.
// An event of a type the repository does not know is an error
// ([ErrUnknownEventType]) naming the type and the stream, on load and on
// save; it is never skipped. When an event's shape changes, bump its
// [SchemaVersion] and register an [Upcast] from each older version: stored
// events are never rewritten, old ones are brought up to date as they are
// read. The version is kept in the event's metadata under [MetaSchema];
// without it an event is version 1.
//
// # Metadata
//
// The context of a save carries metadata into every event it appends:
// [WithCorrelation], [WithCausation], [WithMetadata]. A handler that reacts
// to an event works under [CausedBy], so its events point back at the one
// that caused them; [CorrelationID] and [CausationID] read them back.
//
// # Snapshots
//
// With [Config.Snapshots], a repository writes a snapshot (from package
// snapshot, in Redis next to the events or in PostgreSQL) every
// [Snapshots.Every] events or when [Snapshots.When] says so, and Load starts
// from it. A snapshot is trusted only if its schema version is the current
// one and the stream still holds, at its version, the event it was taken
// after; otherwise it is ignored and the aggregate is rebuilt from its
// events (a snapshot that does not match its stream is also deleted, with a
// warning in the log). Snapshot failures are logged, never returned.
//
// # Testing decisions
//
// Package aggregatetest runs given/when/then scenarios on an aggregate
// without a server; [Config.Build] makes an aggregate from past events in
// memory.
package aggregate
